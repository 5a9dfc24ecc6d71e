"""Shared access policies, as Azure Service Bus has them: a named key with Listen / Send / Manage rights, on the
namespace (every entity) or on one queue or topic (that entity, its subscriptions and dead-letter queues).

A client proves a policy with a shared access signature (``SharedAccessSignature sr=<uri>&sig=<HMAC-SHA256 of
"<url-encoded sr>\\n<se>" under the key>&se=<expiry>&skn=<policy>``) put on the ``$cbs`` node. The signature's
resource ``sr`` scopes it: a token for ``sb://ns/requests`` covers only ``requests``. The broker keeps the
connection's :class:`Grant`\\s and asks :meth:`AccessControl.denied` before an attach, a transfer or a
``$management`` operation; Azure's answer to a missing right is ``amqp:unauthorized-access`` ("'Send' claim(s)
are required"), which the SDK raises as ``ServiceBusAuthorizationError``. A token that does not verify is a
put-token 401 (``ServiceBusAuthenticationError``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, unquote_plus, urlsplit

from gcw_emulators.servicebus.config import ConfigError

LISTEN, SEND, MANAGE = "Listen", "Send", "Manage"
RIGHTS = (LISTEN, SEND, MANAGE)

ROOT_KEY_NAME = "RootManageSharedAccessKey"  # the namespace policy Azure creates, with Microsoft's emulator's key
ROOT_KEY_VALUE = "SAS_KEY_VALUE"

_POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,255}$")
_SAS_PREFIX = "SharedAccessSignature "


@dataclass(frozen=True)
class AccessPolicy:
    """A shared access policy. ``entity=None``: on the namespace. Manage implies Listen and Send (as in Azure)."""

    name: str
    key: str
    rights: frozenset[str]
    entity: str | None = None
    secondary_key: str | None = None

    def __post_init__(self) -> None:
        where = f"shared access policy {self.name!r}" + (f" on {self.entity!r}" if self.entity else "")
        if not isinstance(self.name, str) or not _POLICY_NAME.match(self.name):
            raise ConfigError(f"{where}: the name must be 1-256 letters, digits, '.', '-' or '_'")
        if not isinstance(self.key, str) or not self.key:
            raise ConfigError(f"{where}: the key must be a non-empty string")
        if self.secondary_key is not None and (not isinstance(self.secondary_key, str) or not self.secondary_key):
            raise ConfigError(f"{where}: the secondary key must be a non-empty string when given")
        rights = frozenset(self.rights)
        unknown = sorted(rights - set(RIGHTS))
        if unknown or not rights:
            raise ConfigError(f"{where}: rights must be one or more of {', '.join(RIGHTS)}, got {sorted(rights)}")
        object.__setattr__(self, "rights", frozenset({LISTEN, SEND, MANAGE}) if MANAGE in rights else rights)

    def describe(self) -> str:
        """``worker (Listen) on requests``: no key."""
        rights = "/".join(r for r in RIGHTS if r in self.rights)
        return f"{self.name} ({rights}) on {self.entity or 'the namespace'}"

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,) if self.secondary_key is None else (self.key, self.secondary_key)

    def applies_to(self, scope: str) -> bool:
        """Whether a token for ``scope`` (an entity path, '' for the namespace) may be signed with this policy."""
        if self.entity is None:
            return True
        return scope.split("/", 1)[0].lower() == self.entity.lower()


ROOT_POLICY = AccessPolicy(ROOT_KEY_NAME, ROOT_KEY_VALUE, frozenset({MANAGE}))


@dataclass(frozen=True)
class Grant:
    """What one verified token allows on a connection: ``rights`` on ``scope`` (and below) until ``expires``."""

    scope: str
    rights: frozenset[str]
    expires: float
    policy: str

    def covers(self, path: str) -> bool:
        scope, path = self.scope.lower(), path.lower()
        return not scope or path == scope or path.startswith(scope + "/")


class TokenRejected(Exception):
    """A put-token that does not verify: Azure answers status 401 with this description."""


@dataclass
class AccessControl:
    """The namespace's policies (always with ``RootManageSharedAccessKey``) and the checks the broker makes."""

    policies: Sequence[AccessPolicy] = ()
    clock: Any = field(default=time.time)

    def __post_init__(self) -> None:
        seen: set[tuple[str, str]] = set()
        all_policies = [ROOT_POLICY, *[p for p in self.policies if p != ROOT_POLICY]]
        for p in all_policies:
            ident = (p.name.lower(), (p.entity or "").lower())
            if ident in seen:
                where = f"entity {p.entity!r}" if p.entity else "the namespace"
                raise ConfigError(f"shared access policy {p.name!r} is declared twice on {where}")
            seen.add(ident)
        self.policies = all_policies

    def check_entities(self, entities: Iterable[str]) -> None:
        known = {e.lower() for e in entities}
        for p in self.policies:
            if p.entity is not None and p.entity.lower() not in known:
                raise ConfigError(
                    f"shared access policy {p.name!r} is on {p.entity!r}, which is not a declared queue or topic"
                )

    def policy(self, name: str, entity: str | None = None) -> AccessPolicy:
        for p in self.policies:
            if p.name.lower() == name.lower() and (p.entity or "").lower() == (entity or "").lower():
                return p
        raise KeyError(f"no shared access policy {name!r}" + (f" on {entity!r}" if entity else ""))

    def add(self, policy: AccessPolicy) -> None:
        """Add ``policy``, or replace the one of that name on that entity (the root policy cannot be replaced).

        The list is replaced, not changed in place, so a check running on the broker's thread sees one or the
        other."""
        if policy.name.lower() == ROOT_POLICY.name.lower() and policy.entity is None:
            raise ConfigError(f"{ROOT_POLICY.name} is the namespace's root policy and cannot be replaced")
        ident = (policy.name.lower(), (policy.entity or "").lower())
        self.policies = [p for p in self.policies if (p.name.lower(), (p.entity or "").lower()) != ident] + [policy]

    def remove(self, name: str, entity: str | None = None) -> None:
        """Remove a policy added with :meth:`add` (nothing if there is none; never the root policy)."""
        ident = (name.lower(), (entity or "").lower())
        self.policies = [
            p for p in self.policies if p is ROOT_POLICY or (p.name.lower(), (p.entity or "").lower()) != ident
        ]

    def grant(self, token: str) -> Grant:
        """Verify a put-token body; raise :class:`TokenRejected` with Azure's kind of description."""
        if not token.startswith(_SAS_PREFIX):
            return self._entra_grant(token)
        fields = _fields(token[len(_SAS_PREFIX) :])
        missing = [name for name in ("sr", "sig", "se", "skn") if name not in fields]
        if missing:
            raise TokenRejected(f"MalformedToken: the token lacks {', '.join(missing)}")
        try:
            expires = float(unquote_plus(fields["se"]))
        except ValueError:
            raise TokenRejected("MalformedToken: se is not a number of seconds since the epoch") from None
        if expires <= self.clock():
            raise TokenRejected(f"ExpiredToken: The token is expired. Expiration time: {int(expires)}")
        resource = unquote_plus(fields["sr"])
        scope = urlsplit(resource).path.strip("/") if "://" in resource else resource.strip("/")
        name = unquote_plus(fields["skn"])
        signature = unquote_plus(fields["sig"]).encode()
        signed = {f"{raw}\n{fields['se']}" for raw in (fields["sr"], quote_plus(resource))}
        for p in self.policies:
            if p.name.lower() != name.lower() or not p.applies_to(scope):
                continue
            for key in p.keys:
                for text in signed:
                    digest = hmac.new(key.encode(), text.encode(), hashlib.sha256).digest()
                    if hmac.compare_digest(base64.b64encode(digest), signature):
                        return Grant(scope, p.rights, expires, p.name)
        raise TokenRejected(
            f"InvalidSignature: The token has an invalid signature (policy {name!r}, resource {resource!r})."
        )

    def _entra_grant(self, token: str) -> Grant:
        """An Entra ID access token (a JWT, as DefaultAzureCredential gets): the emulator has no tenant to verify its
        signature against and no role assignments, so a well-formed, unexpired token counts as the Data Owner role
        on the namespace. A missing role is modelled with a shared access policy lacking the right."""
        parts = token.split(".")
        try:
            if len(parts) != 3:
                raise ValueError("not three parts")
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            expires = float(claims.get("exp", self.clock() + 3600))
        except (ValueError, TypeError, AttributeError):
            raise TokenRejected(
                "InvalidToken: neither a shared access signature (SharedAccessSignature sr=...&sig=...&se=...&skn=...) "
                "nor an Entra ID access token (JWT)"
            ) from None
        if expires <= self.clock():
            raise TokenRejected(f"ExpiredToken: The token is expired. Expiration time: {int(expires)}")
        subject = str(claims.get("oid") or claims.get("appid") or claims.get("sub") or "entra")
        return Grant("", frozenset({LISTEN, SEND, MANAGE}), expires, f"entra:{subject}")

    def denied(self, grants: Mapping[str, Grant], path: str, right: str | None, resource: str) -> str | None:
        """None when a live grant covers ``path`` with ``right`` (any right when None), else Azure's message."""
        now = self.clock()
        for g in grants.values():
            if g.expires > now and g.covers(path) and (right is None or right in g.rights):
                return None
        claim = right or LISTEN
        return (
            f"Unauthorized access. '{claim}' claim(s) are required to perform this operation. Resource: '{resource}'."
        )


def _fields(text: str) -> dict[str, str]:
    """``a=1&b=2`` → raw (still url-encoded) values: the signature is over ``sr`` as the client encoded it."""
    out: dict[str, str] = {}
    for part in text.split("&"):
        name, sep, value = part.partition("=")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def new_key() -> str:
    """A generated shared access key (32 random bytes, base64, as Azure's keys are)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def sas_token(resource: str, policy: AccessPolicy, ttl: float = 3600.0, *, now: float | None = None) -> str:
    """A token for ``resource`` signed with ``policy``'s key (tests, tools): what the SDK puts on ``$cbs``."""
    expiry = int((time.time() if now is None else now) + ttl)
    encoded = quote_plus(resource)
    digest = hmac.new(policy.key.encode(), f"{encoded}\n{expiry}".encode(), hashlib.sha256).digest()
    sig = quote_plus(base64.b64encode(digest).decode())
    return f"{_SAS_PREFIX}sr={encoded}&sig={sig}&se={expiry}&skn={quote_plus(policy.name)}"


# ---------------------------------------------------------------------------------------------- configuration
def parse_policy_flag(text: str) -> AccessPolicy:
    """``--policy [ENTITY/]NAME:RIGHTS:KEY`` (RIGHTS: ``Listen,Send``; the key is the rest and may hold ':')."""
    head, sep1, rest = text.partition(":")
    rights, sep2, key = rest.partition(":")
    if not (sep1 and sep2 and head and rights and key):
        raise ConfigError(
            f"--policy {text!r}: expected [ENTITY/]NAME:RIGHTS:KEY, e.g. "
            "'requests/worker:Listen:secret' or 'sender:Send,Listen:secret'"
        )
    entity, slash, name = head.rpartition("/")
    return AccessPolicy(name, key, _rights(rights.split(","), f"--policy {head!r}"), entity=entity if slash else None)


def _rights(values: Any, where: str) -> frozenset[str]:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: Rights must be a non-empty list of {', '.join(RIGHTS)}")
    by_name = {r.lower(): r for r in RIGHTS}
    out = set()
    for v in values:
        right = by_name.get(str(v).strip().lower())
        if right is None:
            raise ConfigError(f"{where}: right {v!r} is not one of {', '.join(RIGHTS)}")
        out.add(right)
    return frozenset(out)


def _policies(owner: Mapping[str, Any], where: str, entity: str | None) -> list[AccessPolicy]:
    entries = owner.get("SharedAccessPolicies") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}.SharedAccessPolicies must be a list")
    out = []
    for i, entry in enumerate(entries):
        pw = f"{where}.SharedAccessPolicies[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{pw} must be an object")
        for name in ("Name", "PrimaryKey"):
            if not isinstance(entry.get(name), str) or not entry[name]:
                raise ConfigError(f"{pw}.{name} is required and must be a non-empty string")
        try:
            out.append(
                AccessPolicy(
                    entry["Name"],
                    entry["PrimaryKey"],
                    _rights(entry.get("Rights"), pw),
                    entity=entity,
                    secondary_key=entry.get("SecondaryKey"),
                )
            )
        except ConfigError as exc:
            raise ConfigError(f"{pw}: {exc}") from exc
    return out


def parse_policies(doc: Any) -> list[AccessPolicy]:
    """``SharedAccessPolicies`` of a ``Config.json``: on a namespace and on its queues and topics, each
    ``{"Name", "PrimaryKey", "SecondaryKey"?, "Rights": ["Listen", "Send", "Manage"]}``."""
    out: list[AccessPolicy] = []
    namespaces = doc.get("UserConfig", {}).get("Namespaces") if isinstance(doc, dict) else None
    for i, ns in enumerate(namespaces if isinstance(namespaces, list) else []):
        where = f"UserConfig.Namespaces[{i}]"
        if not isinstance(ns, dict):
            continue
        out += _policies(ns, where, None)
        for kind in ("Queues", "Topics"):
            for j, entity in enumerate(ns.get(kind) or []):
                if isinstance(entity, dict) and isinstance(entity.get("Name"), str):
                    out += _policies(entity, f"{where}.{kind}[{j}]", entity["Name"])
    return out
