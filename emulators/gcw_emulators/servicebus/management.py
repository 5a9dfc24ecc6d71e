"""The management API ``ServiceBusAdministrationClient`` speaks: ATOM feeds over HTTPS on a port of its own (as
Microsoft's emulator serves it on 5300).

Routes (the SDK's, azure-servicebus 7.15 ``management/_generated/operations``): ``GET /$namespaceinfo``;
``GET /$Resources/queues|topics`` (``$skip``/``$top`` paging with a ``next`` link); ``GET|PUT|DELETE /{queue or
topic}``; ``GET /{topic}/subscriptions``, ``GET|PUT|DELETE /{topic}/subscriptions/{name}``; ``GET
/{topic}/subscriptions/{name}/rules``, ``GET|PUT|DELETE .../rules/{rule}``. ``PUT`` creates (201; 409 if the entity
exists) or, with ``If-Match``, updates (200; 404 if it does not). Entities created here are the store's own, like
Config.json ones: senders and receivers use them at once, and with ``--data-dir`` their definitions persist.

Every request needs the ``Authorization`` Azure checks: a shared access signature with the Manage right, or an
Entra ID bearer token, verified by ``access.py`` as ``$cbs`` tokens are (401 otherwise). Descriptions are checked
as a Standard namespace checks them (``check_values``: Azure's ranges, elements newer than the request's
api-version, ``MaxMessageSizeInKilobytes``) and keep what the client sent, normalised as Azure returns it
(forwarding as the destination's ``sb://`` URL, authorization rules with their keys); a PUT replaces the
description. The settings the broker acts on (lock duration, max delivery count, sessions, duplicate detection,
TTL, dead-lettering on expiry) become the entity's configuration. Runtime counts (``CountDetails``,
``MessageCount``, ``SizeInBytes``, a topic's filter counts) come from the store.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import re
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import structlog
from defusedxml.ElementTree import fromstring as parse_xml

from gcw_emulators.servicebus.access import MANAGE, RIGHTS, AccessControl, AccessPolicy, TokenRejected, new_key
from gcw_emulators.servicebus.config import (
    ConfigError,
    CorrelationFilter,
    QueueConfig,
    SubscriptionConfig,
    TopicConfig,
    parse_duration,
)
from gcw_emulators.servicebus.rules import DEFAULT_RULE, Rule, RuleError, SqlAction, SqlFilter, sql_filter
from gcw_emulators.servicebus.status import BackgroundHTTPServer
from gcw_emulators.servicebus.store import Entity, EntityNotFound, Store, StoreError, Topic

log = structlog.get_logger(__name__)

ATOM = "http://www.w3.org/2005/Atom"
SB = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
SB_COUNTS = "http://schemas.microsoft.com/netservices/2011/06/servicebus"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
MAX_TIMESPAN = "P10675199DT2H48M5.4775807S"  # .NET TimeSpan.MaxValue: "never"
NEVER = 1e11  # seconds; anything longer is TimeSpan.MaxValue
ET.register_namespace("", ATOM)
ET.register_namespace("i", XSI)

# Element order and defaults of each description, as Azure returns them. None: computed (runtime) or omitted.
QUEUE_FIELDS: list[tuple[str, str | None]] = [
    ("LockDuration", "PT1M"),
    ("MaxSizeInMegabytes", "1024"),
    ("RequiresDuplicateDetection", "false"),
    ("RequiresSession", "false"),
    ("DefaultMessageTimeToLive", MAX_TIMESPAN),
    ("DeadLetteringOnMessageExpiration", "false"),
    ("DuplicateDetectionHistoryTimeWindow", "PT10M"),
    ("MaxDeliveryCount", "10"),
    ("EnableBatchedOperations", "true"),
    ("SizeInBytes", None),
    ("MessageCount", None),
    ("IsAnonymousAccessible", "false"),
    ("AuthorizationRules", ""),
    ("Status", "Active"),
    ("ForwardTo", None),
    ("UserMetadata", None),
    ("CreatedAt", None),
    ("UpdatedAt", None),
    ("AccessedAt", None),
    ("SupportOrdering", "true"),
    ("CountDetails", None),
    ("AutoDeleteOnIdle", MAX_TIMESPAN),
    ("EnablePartitioning", "false"),
    ("EntityAvailabilityStatus", "Available"),
    ("ForwardDeadLetteredMessagesTo", None),
    ("EnableExpress", "false"),
    ("MaxMessageSizeInKilobytes", "256"),
]
TOPIC_FIELDS: list[tuple[str, str | None]] = [
    ("DefaultMessageTimeToLive", MAX_TIMESPAN),
    ("MaxSizeInMegabytes", "1024"),
    ("RequiresDuplicateDetection", "false"),
    ("DuplicateDetectionHistoryTimeWindow", "PT10M"),
    ("EnableBatchedOperations", "true"),
    ("SizeInBytes", None),
    ("FilteringMessagesBeforePublishing", "false"),
    ("IsAnonymousAccessible", "false"),
    ("AuthorizationRules", ""),
    ("Status", "Active"),
    ("CreatedAt", None),
    ("UpdatedAt", None),
    ("AccessedAt", None),
    ("SupportOrdering", "true"),
    ("CountDetails", None),
    ("SubscriptionCount", None),
    ("SqlFilterCount", None),
    ("CorrelationFilterCount", None),
    ("AutoDeleteOnIdle", MAX_TIMESPAN),
    ("EnablePartitioning", "false"),
    ("EntityAvailabilityStatus", "Available"),
    ("EnableSubscriptionPartitioning", "false"),
    ("EnableExpress", "false"),
    ("UserMetadata", None),
    ("MaxMessageSizeInKilobytes", "256"),
]
SUBSCRIPTION_FIELDS: list[tuple[str, str | None]] = [
    ("LockDuration", "PT1M"),
    ("RequiresSession", "false"),
    ("DefaultMessageTimeToLive", MAX_TIMESPAN),
    ("DeadLetteringOnMessageExpiration", "false"),
    ("DeadLetteringOnFilterEvaluationExceptions", "true"),
    ("MessageCount", None),
    ("MaxDeliveryCount", "10"),
    ("EnableBatchedOperations", "true"),
    ("Status", "Active"),
    ("ForwardTo", None),
    ("CreatedAt", None),
    ("UpdatedAt", None),
    ("AccessedAt", None),
    ("CountDetails", None),
    ("UserMetadata", None),
    ("ForwardDeadLetteredMessagesTo", None),
    ("AutoDeleteOnIdle", MAX_TIMESPAN),
    ("EntityAvailabilityStatus", "Available"),
]
# api-versions the SDK speaks (azure-servicebus 7.15 management/_api_version.py); a request without one is the newest
API_2017_04, API_2021_05, API_2024_05 = "2017-04", "2021-05", "2024-05"
# elements newer than the oldest api-version: not served to, nor accepted from, a client speaking an older one
SINCE = {"MaxMessageSizeInKilobytes": API_2021_05, "SqlFilterCount": API_2024_05, "CorrelationFilterCount": API_2024_05}
STANDARD_MESSAGE_KB = "256"  # a Standard namespace's MaxMessageSizeInKilobytes; only Premium sets it (1024-102400)
# Azure's ranges for durations on a description, in seconds (sources: docs/emulator-servicebus.md)
LIMITS: dict[str, tuple[float, float]] = {
    "LockDuration": (0.0, 300.0),  # at most 5 minutes
    "DuplicateDetectionHistoryTimeWindow": (20.0, 7 * 86400.0),  # 20 seconds to 7 days
    "AutoDeleteOnIdle": (300.0, float("inf")),  # at least 5 minutes
}
FORWARDING = ("ForwardTo", "ForwardDeadLetteredMessagesTo")
ACCESS_RIGHTS = {r.lower(): r for r in RIGHTS}
RUNTIME = {
    "SizeInBytes",
    "MessageCount",
    "CreatedAt",
    "UpdatedAt",
    "AccessedAt",
    "CountDetails",
    "SubscriptionCount",
    "SqlFilterCount",
    "CorrelationFilterCount",
    "EntityAvailabilityStatus",
}
KINDS = {
    "QueueDescription": QUEUE_FIELDS,
    "TopicDescription": TOPIC_FIELDS,
    "SubscriptionDescription": SUBSCRIPTION_FIELDS,
}
CORRELATION_FIELDS = [
    ("CorrelationId", "correlation_id"),
    ("MessageId", "message_id"),
    ("To", "to"),
    ("ReplyTo", "reply_to"),
    ("Label", "subject"),
    ("SessionId", "session_id"),
    ("ReplyToSessionId", "reply_to_session_id"),
    ("ContentType", "content_type"),
]


_DEFAULT_NS = re.compile(rb'\sxmlns="[^"]*"')


@dataclass(frozen=True)
class _Request:
    """What a response depends on besides the resource: the client's api-version, and the namespace it called
    (the ``Host`` it used, without HTTPS's own port 443), which forwarding URLs name."""

    version: str
    host: str


class ManagementError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _leaf(kind: str, path: str) -> str:
    """The entity's own name: a subscription's is the last segment, a queue's or topic's the whole path."""
    return path.rsplit("/", 1)[-1] if kind == "SubscriptionDescription" else path


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element | None, name: str) -> ET.Element | None:
    if element is None:
        return None
    return next((c for c in element if _local(c.tag) == name), None)


def _child_text(element: ET.Element, name: str) -> str | None:
    found = _child(element, name)
    return None if found is None or found.text is None else found.text.strip()


def _in_sb(element: ET.Element) -> ET.Element:
    """A copy of a stored element with every element in no namespace put in Service Bus's (as the client meant
    them: the SDK writes them under a default namespace, which ``_description`` drops before parsing)."""
    out = copy.deepcopy(element)
    for node in out.iter():
        if not node.tag.startswith("{"):
            node.tag = f"{{{SB}}}{node.tag}"
    return out


def iso_duration(seconds: float | None) -> str:
    if seconds is None or seconds >= NEVER:
        return MAX_TIMESPAN
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    out = "P" + (f"{int(days)}D" if days else "") + "T"
    out += (f"{int(hours)}H" if hours else "") + (f"{int(minutes)}M" if minutes else "")
    if secs or out.endswith("T"):
        out += f"{int(secs)}S" if float(secs).is_integer() else f"{secs:.7f}".rstrip("0") + "S"
    return "P0D" if out == "PT0S" and not seconds else out


def iso_timestamp(epoch: float) -> str:
    """``epoch`` as the UTC timestamp Service Bus writes (milliseconds, ``Z``)."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class _Meta:
    """What the management API adds to an entity: the elements the client sent, and timestamps."""

    kind: str
    elements: dict[str, ET.Element] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


# ---------------------------------------------------------------------------------------------- descriptions
def _text(elements: dict[str, ET.Element], name: str) -> str | None:
    element = elements.get(name)
    return None if element is None or element.text is None else element.text.strip()


def _flag(elements: dict[str, ET.Element], name: str, default: bool) -> bool:
    text = _text(elements, name)
    if text is None:
        return default
    if text.lower() not in ("true", "false"):
        raise ManagementError(400, f"{name} must be true or false, got {text!r}")
    return text.lower() == "true"


def _seconds(elements: dict[str, ET.Element], name: str, default: float | None) -> float | None:
    text = _text(elements, name)
    if text is None:
        return default
    try:
        value = parse_duration(text, name)
    except ConfigError as exc:
        raise ManagementError(400, str(exc)) from exc
    return None if value >= NEVER else value


def _count(elements: dict[str, ET.Element], name: str, default: int) -> int:
    text = _text(elements, name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise ManagementError(400, f"{name} must be an integer, got {text!r}") from exc


def check_values(elements: dict[str, ET.Element], api_version: str) -> None:
    """Azure's 400s for values a Standard namespace refuses: durations outside ``LIMITS``, an element the
    request's api-version does not have, a message size other than Standard's 256 KB."""
    for name, (low, high) in LIMITS.items():
        text = _text(elements, name)
        if text is None:
            continue
        try:
            value = parse_duration(text, name)
        except ConfigError as exc:
            raise ManagementError(400, str(exc)) from exc
        if not low <= value <= high:  # TimeSpan.MaxValue (never) is in range only when there is no maximum
            raise ManagementError(
                400, f"{name} {text} is out of range: it must be from {iso_duration(low)} to {iso_duration(high)}"
            )
    for name, since in SINCE.items():
        if name in elements and api_version < since:
            raise ManagementError(400, f"{name} is not a property in api-version {api_version} (it is from {since})")
    size = _text(elements, "MaxMessageSizeInKilobytes")
    if size is not None and size != STANDARD_MESSAGE_KB:
        raise ManagementError(
            400,
            f"MaxMessageSizeInKilobytes {size} is not supported: only a Premium namespace sets it (1024 to 102400); "
            f"this Standard namespace's is {STANDARD_MESSAGE_KB}",
        )


def authorization_rules(holder: ET.Element, entity: str) -> ET.Element:
    """``AuthorizationRules`` as Azure keeps them: each rule checked as a shared access policy (``access.py``:
    name, keys, rights), a generated key for each one left out, and its created and modified times."""
    out = ET.Element("AuthorizationRules")
    now = iso_timestamp(time.time())
    for rule in holder:
        if _local(rule.tag) != "AuthorizationRule":
            raise ManagementError(400, f"AuthorizationRules may hold AuthorizationRule elements only, not {rule.tag}")
        rights_el = _child(rule, "Rights")
        given = [(r.text or "").strip() for r in rights_el] if rights_el is not None else []
        rights = list(dict.fromkeys(ACCESS_RIGHTS.get(r.lower(), r) for r in given))
        name = _child_text(rule, "KeyName") or ""
        primary = _child_text(rule, "PrimaryKey") or new_key()
        secondary = _child_text(rule, "SecondaryKey") or new_key()
        try:
            AccessPolicy(name, primary, frozenset(rights), entity=entity, secondary_key=secondary)
        except ConfigError as exc:
            raise ManagementError(400, f"AuthorizationRules: {exc}") from exc
        kept = ET.SubElement(out, "AuthorizationRule", {f"{{{XSI}}}type": "SharedAccessAuthorizationRule"})
        ET.SubElement(kept, "ClaimType").text = _child_text(rule, "ClaimType") or "SharedAccessKey"
        ET.SubElement(kept, "ClaimValue").text = _child_text(rule, "ClaimValue") or "None"
        holder_el = ET.SubElement(kept, "Rights")
        for right in rights:
            ET.SubElement(holder_el, "AccessRights").text = right
        ET.SubElement(kept, "CreatedTime").text = _child_text(rule, "CreatedTime") or now
        ET.SubElement(kept, "ModifiedTime").text = now
        ET.SubElement(kept, "KeyName").text = name
        ET.SubElement(kept, "PrimaryKey").text = primary
        ET.SubElement(kept, "SecondaryKey").text = secondary
    return out


def config_from(
    kind: str, name: str, elements: dict[str, ET.Element], current: QueueConfig | TopicConfig | None = None
) -> QueueConfig | TopicConfig:
    """The entity configuration a description asks for (settings it leaves out keep their current value)."""
    try:
        if kind == "TopicDescription":
            base = current if isinstance(current, TopicConfig) else TopicConfig(name)
            return dataclasses.replace(
                base,
                requires_duplicate_detection=_flag(
                    elements, "RequiresDuplicateDetection", base.requires_duplicate_detection
                ),
                duplicate_detection_window=_seconds(
                    elements, "DuplicateDetectionHistoryTimeWindow", base.duplicate_detection_window
                )
                or 600.0,
                default_ttl=_seconds(elements, "DefaultMessageTimeToLive", base.default_ttl),
            )
        cls = SubscriptionConfig if kind == "SubscriptionDescription" else QueueConfig
        base_q = current if isinstance(current, cls) else cls(name, lock_duration=60.0)
        changes: dict[str, Any] = {
            "lock_duration": _seconds(elements, "LockDuration", base_q.lock_duration) or base_q.lock_duration,
            "max_delivery_count": _count(elements, "MaxDeliveryCount", base_q.max_delivery_count),
            "requires_session": _flag(elements, "RequiresSession", base_q.requires_session),
            "default_ttl": _seconds(elements, "DefaultMessageTimeToLive", base_q.default_ttl),
            "dead_letter_on_expiration": _flag(
                elements, "DeadLetteringOnMessageExpiration", base_q.dead_letter_on_expiration
            ),
        }
        if cls is QueueConfig:
            changes["requires_duplicate_detection"] = _flag(
                elements, "RequiresDuplicateDetection", base_q.requires_duplicate_detection
            )
            changes["duplicate_detection_window"] = (
                _seconds(elements, "DuplicateDetectionHistoryTimeWindow", base_q.duplicate_detection_window) or 600.0
            )
        return dataclasses.replace(base_q, **changes)
    except ConfigError as exc:
        raise ManagementError(400, str(exc)) from exc


def _configured(kind: str, config: Any) -> dict[str, str]:
    """The description elements that mirror the entity's configuration."""
    out: dict[str, str] = {}
    if kind != "TopicDescription":
        out["LockDuration"] = iso_duration(config.lock_duration)
        out["MaxDeliveryCount"] = str(config.max_delivery_count)
        out["RequiresSession"] = str(config.requires_session).lower()
        out["DeadLetteringOnMessageExpiration"] = str(config.dead_letter_on_expiration).lower()
    if kind != "SubscriptionDescription":
        out["RequiresDuplicateDetection"] = str(config.requires_duplicate_detection).lower()
        out["DuplicateDetectionHistoryTimeWindow"] = iso_duration(config.duplicate_detection_window)
    out["DefaultMessageTimeToLive"] = iso_duration(config.default_ttl)
    return out


# ---------------------------------------------------------------------------------------------- rules
def _timespan(text: str) -> dt.timedelta:
    try:
        return dt.timedelta(seconds=parse_duration(text, "duration"))
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc


# a parameter's XML schema type -> its value (the SDK's management/_utils.py deserialize_value reads the same)
_VALUE_TYPES: dict[str, Callable[[str], Any]] = {
    "string": str,
    "int": int,
    "long": int,
    "boolean": lambda t: t.lower() == "true",
    "double": float,
    "dateTime": dt.datetime.fromisoformat,
    "duration": _timespan,
}


def _typed(value: Any) -> tuple[str, str]:
    """A parameter's XML schema type and text, so it comes back as the type it was sent as."""
    if isinstance(value, bool):
        return "boolean", str(value).lower()
    if isinstance(value, int):
        return "long", str(value)
    if isinstance(value, float):
        return "double", str(value)
    if isinstance(value, dt.datetime):
        return "dateTime", value.isoformat()
    if isinstance(value, dt.timedelta):
        return "duration", iso_duration(value.total_seconds())
    return "string", str(value)


def _key_values(parent: ET.Element | None) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for item in list(parent) if parent is not None else []:
        key, value = _child(item, "Key"), _child(item, "Value")
        if key is None or value is None or key.text is None:
            raise ManagementError(400, "a key/value pair needs a Key and a Value")
        kind = value.attrib.get(f"{{{XSI}}}type", "d6p1:string").split(":")[-1]
        convert = _VALUE_TYPES.get(kind, str)
        try:
            out.append((key.text, convert(value.text or "")))
        except ValueError as exc:
            raise ManagementError(400, f"value of {key.text!r} is not a valid {kind}") from exc
    return out


def rule_from(element: ET.Element, name: str) -> Rule:
    """A rule from a ``RuleDescription``; anything outside the emulator's SQL subset is a 400 naming it."""
    filter_el, action_el = _child(element, "Filter"), _child(element, "Action")
    kind = filter_el.attrib.get(f"{{{XSI}}}type", "TrueFilter") if filter_el is not None else "TrueFilter"
    kind = kind.split(":")[-1]
    try:
        rule_filter: Any
        if kind == "TrueFilter":
            rule_filter = True
        elif kind == "FalseFilter":
            rule_filter = False
        elif kind == "SqlFilter":
            expression = (
                (_child(filter_el, "SqlExpression").text or "")
                if _child(filter_el, "SqlExpression") is not None
                else ""
            )
            rule_filter = sql_filter(expression, dict(_key_values(_child(filter_el, "Parameters"))))
        elif kind == "CorrelationFilter":
            fields = {
                attr: (_child(filter_el, tag).text or "")
                for tag, attr in CORRELATION_FIELDS
                if _child(filter_el, tag) is not None
            }
            props = tuple(_key_values(_child(filter_el, "Properties")))
            rule_filter = CorrelationFilter(**fields, properties=props)
        else:
            raise ManagementError(
                400,
                f"filter type {kind!r} is not supported: use SqlFilter, CorrelationFilter, TrueFilter or FalseFilter",
            )
        action = None
        action_kind = (
            action_el.attrib.get(f"{{{XSI}}}type", "EmptyRuleAction").split(":")[-1]
            if action_el is not None
            else "EmptyRuleAction"
        )
        if action_kind == "SqlRuleAction":
            sql = _child(action_el, "SqlExpression")
            action = SqlAction(
                (sql.text or "") if sql is not None else "", tuple(_key_values(_child(action_el, "Parameters")))
            )
        elif action_kind != "EmptyRuleAction":
            raise ManagementError(400, f"action type {action_kind!r} is not supported: use SqlRuleAction")
    except RuleError as exc:
        raise ManagementError(400, f"rule {name!r}: {exc}") from exc
    return Rule(name, rule_filter, action, created_at=time.time())


def _definition(tag: str, elements: dict[str, ET.Element]) -> str:
    """What persists of an entity: its description's elements as accepted (``_elements``)."""
    root = ET.Element(tag)
    root.extend(copy.deepcopy(list(elements.values())))
    return ET.tostring(root, encoding="unicode")


def _sb(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{SB}}}{tag}", attrib)
    if text is not None:
        element.text = text
    return element


def _put_key_values(parent: ET.Element, tag: str, pairs: tuple[tuple[str, Any], ...]) -> None:
    holder = _sb(parent, tag)
    for key, value in pairs:
        item = _sb(holder, "KeyValueOfstringanyType")
        _sb(item, "Key", key)
        kind, text = _typed(value)
        value_el = _sb(item, "Value", text, **{f"{{{XSI}}}type": f"d6p1:{kind}"})
        value_el.set("xmlns:d6p1", XSD)


def rule_element(rule: Rule) -> ET.Element:
    root = ET.Element(f"{{{SB}}}RuleDescription")
    flt = rule.filter
    if isinstance(flt, bool):
        f_el = _sb(root, "Filter", **{f"{{{XSI}}}type": "TrueFilter" if flt else "FalseFilter"})
        _sb(f_el, "SqlExpression", "1=1" if flt else "1=0")
        _sb(f_el, "CompatibilityLevel", "20")
    elif isinstance(flt, SqlFilter):
        f_el = _sb(root, "Filter", **{f"{{{XSI}}}type": "SqlFilter"})
        _sb(f_el, "SqlExpression", flt.expression)
        _sb(f_el, "CompatibilityLevel", "20")
        if flt.parameters:
            _put_key_values(f_el, "Parameters", flt.parameters)
    else:
        f_el = _sb(root, "Filter", **{f"{{{XSI}}}type": "CorrelationFilter"})
        for tag, attr in CORRELATION_FIELDS:
            value = getattr(flt, attr)
            if value is not None:
                _sb(f_el, tag, value)
        if flt.properties:
            _put_key_values(f_el, "Properties", flt.properties)
    if rule.action is None:
        _sb(root, "Action", **{f"{{{XSI}}}type": "EmptyRuleAction"})
    else:
        a_el = _sb(root, "Action", **{f"{{{XSI}}}type": "SqlRuleAction"})
        _sb(a_el, "SqlExpression", rule.action.expression)
        _sb(a_el, "CompatibilityLevel", "20")
        if rule.action.parameters:
            _put_key_values(a_el, "Parameters", rule.action.parameters)
    _sb(root, "CreatedAt", iso_timestamp(rule.created_at or time.time()))
    _sb(root, "Name", rule.name)
    return root


# ---------------------------------------------------------------------------------------------- the API
class ManagementApi:
    """Request handling, independent of HTTP (so it is unit-testable): ``handle(method, path, query, headers,
    body) -> (status, xml)``."""

    def __init__(
        self,
        store: Store,
        *,
        namespace: str = "localhost",
        persist: Callable[[str, str, str | None], None] | None = None,
        access: AccessControl | None = None,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.access = access or AccessControl()
        self.meta: dict[str, _Meta] = {}
        self.started = time.time()
        self._persist = persist or (lambda path, kind, xml: None)

    @property
    def host(self) -> str:
        """The namespace as clients name it, without the port when it is 443 (for a request without ``Host``)."""
        return self.namespace.removesuffix(":443")

    # persistence: the definition is the description as last accepted (``_definition``), plus rules
    def restore(self, path: str, kind: str, xml: str) -> None:
        element = parse_xml(xml)
        if kind == "RuleDescription":
            subscription = path[: path.lower().rindex("/rules/")]
            name_el = _child(element, "Name")
            name = name_el.text if name_el is not None and name_el.text else path.rsplit("/", 1)[-1]
            self.store.set_rule(subscription, rule_from(element, name))
            return
        created = self._create(kind, path, element, persist=False)
        if kind == "SubscriptionDescription":  # its rules, $Default included, are definitions of their own
            for rule in self.store.rules_of(created.path):
                self.store.delete_rule(created.path, rule.name)

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        request = _Request(
            query.get("api-version") or API_2024_05, (headers.get("host") or self.host).removesuffix(":443")
        )
        try:
            self._authorize(headers, parts, request.host)
            status, element = self._route(method, parts, query, headers, body, request)
        except ManagementError as exc:
            return exc.status, _error(exc.status, exc.detail)
        except EntityNotFound as exc:
            return 404, _error(404, str(exc))
        except StoreError as exc:
            return exc.status, _error(exc.status, str(exc))
        if element is None:
            return status, b""
        return status, ET.tostring(element, xml_declaration=True, encoding="utf-8")

    def _authorize(self, headers: dict[str, str], parts: list[str], host: str) -> None:
        """Azure's check of the ``Authorization`` header: a shared access signature (``SharedAccessSignature
        sr=https://<namespace>&sig=...``, verified by ``access.py`` as on ``$cbs``) or an Entra ID bearer token,
        with the Manage right over the resource; anything else is 401."""
        header = headers.get("authorization", "").strip()
        if not header:
            raise ManagementError(401, "MissingToken: the request has no Authorization header.")
        scheme, _, rest = header.partition(" ")
        token = rest.strip() if scheme.lower() == "bearer" else header
        try:
            grant = self.access.grant(token)
        except TokenRejected as exc:
            raise ManagementError(401, str(exc)) from exc
        path = "" if not parts or parts[0].startswith("$") else "/".join(parts)  # $Resources, $namespaceinfo
        denied = self.access.denied({"request": grant}, path, MANAGE, f"https://{host}/{path}")
        if denied is not None:
            raise ManagementError(401, denied)

    def _route(
        self,
        method: str,
        parts: list[str],
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        request: _Request,
    ) -> tuple[int, ET.Element | None]:
        low = [p.lower() for p in parts]
        version = request.version
        if low == ["$namespaceinfo"] and method == "GET":
            return 200, self._namespace_entry()
        if len(low) == 2 and low[0] == "$resources" and method == "GET":
            if low[1] not in ("queues", "topics"):
                raise ManagementError(400, f"unknown entity type {parts[1]!r}: use queues or topics")
            entities: list[Any] = self.store.queues() if low[1] == "queues" else self.store.topics()
            return 200, self._feed(parts, query, [(e.path, self._entry(e.path, e, version)) for e in entities])
        if len(low) == 2 and low[1] == "subscriptions" and method == "GET":
            topic = self._topic(parts[0])
            subs = list(topic.subscriptions.values())
            entries = [(s.path.rsplit("/", 1)[-1], self._entry(s.path, s, version)) for s in subs]
            return 200, self._feed(parts, query, entries)
        if len(low) == 4 and low[1] == "subscriptions" and low[3] == "rules" and method == "GET":
            sub_path = f"{parts[0]}/Subscriptions/{parts[2]}"
            rules = self.store.rules_of(sub_path)
            return 200, self._feed(parts, query, [(r.name, self._rule_entry(sub_path, r)) for r in rules])
        if len(low) == 1 and not low[0].startswith("$"):
            kinds = ("QueueDescription", "TopicDescription")
            return self._entity(method, parts[0], headers, body, kinds=kinds, request=request)
        if len(low) == 3 and low[1] == "subscriptions":
            self._topic(parts[0])
            path = f"{parts[0]}/Subscriptions/{parts[2]}"
            return self._entity(method, path, headers, body, kinds=("SubscriptionDescription",), request=request)
        if len(low) == 5 and low[1] == "subscriptions" and low[3] == "rules":
            return self._rule(method, f"{parts[0]}/Subscriptions/{parts[2]}", parts[4], headers, body)
        raise ManagementError(404, f"unknown management resource {'/'.join(parts)!r}")

    # entities
    def _topic(self, name: str) -> Topic:
        target = self.store.resolve_target(name)
        if not isinstance(target, Topic):
            raise EntityNotFound(f"The messaging entity '{name}' is not a topic.")
        return target

    def _find(self, path: str) -> Entity | Topic | None:
        try:
            return self.store.resolve_any(path)
        except EntityNotFound:
            return None

    def _entity(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        kinds: tuple[str, ...],
        request: _Request,
    ) -> tuple[int, ET.Element | None]:
        version = request.version
        existing = self._find(path)
        if method == "GET":
            if existing is None:
                raise EntityNotFound(f"The messaging entity '{path}' could not be found.")
            return 200, self._entry(existing.path, existing, version)
        if method == "DELETE":
            if existing is None:
                raise EntityNotFound(f"The messaging entity '{path}' could not be found.")
            self.store.remove(existing.path)
            for key in [k for k in self.meta if k == path.lower() or k.startswith(path.lower() + "/")]:
                del self.meta[key]
            self._persist(existing.path, "", None)
            log.info("servicebus_emulator_entity_deleted", entity=existing.path)
            return 200, None
        if method != "PUT":
            raise ManagementError(405, f"{method} is not supported on {path!r}")
        description = self._description(body, kinds)
        kind = _local(description.tag)
        if existing is None:
            if "if-match" in headers:
                raise EntityNotFound(f"The messaging entity '{path}' could not be found to update.")
            created = self._create(kind, path, description, request=request)
            return 201, self._entry(created.path, created, version)
        if "if-match" not in headers:
            raise ManagementError(409, f"The messaging entity '{path}' already exists.")
        self._update(kind, existing, description, request)
        return 200, self._entry(existing.path, existing, version)

    @staticmethod
    def _description(body: bytes, kinds: tuple[str, ...]) -> ET.Element:
        try:
            # The SDK's XML workaround declares two default namespaces on <entry> (ATOM and Service Bus), a
            # duplicate attribute Azure tolerates; elements are matched by local name here, so drop them.
            root = parse_xml(_DEFAULT_NS.sub(b"", body))
        except ET.ParseError as exc:
            raise ManagementError(400, f"the request body is not XML: {exc}") from exc
        content = _child(root, "content")
        description = next(iter(content), None) if content is not None else None
        if description is None or _local(description.tag) not in (*kinds, "RuleDescription"):
            raise ManagementError(400, f"expected an ATOM entry with a {' or '.join(kinds)}")
        if _local(description.tag) not in kinds:
            raise ManagementError(400, f"expected a {' or '.join(kinds)}, got {_local(description.tag)}")
        return description

    def _elements(
        self, kind: str, path: str, description: ET.Element, request: _Request | None
    ) -> dict[str, ET.Element]:
        """The description's settings as the entity keeps them (``request`` None: a stored definition, kept as it
        was accepted): runtime values dropped, values checked (``check_values``), forwarding as the destination's
        full URL (and dropped when empty), authorization rules complete (``authorization_rules``)."""
        elements = {_local(c.tag): c for c in description if _local(c.tag) not in RUNTIME}
        if request is None:
            return elements
        check_values(elements, request.version)
        for name in FORWARDING:
            if name in elements:
                target = self._forward_target(name, _text(elements, name), request.host)
                if target is None:
                    del elements[name]
                else:
                    elements[name] = ET.Element(name)
                    elements[name].text = target
        if "AuthorizationRules" in elements:
            elements["AuthorizationRules"] = authorization_rules(elements["AuthorizationRules"], _leaf(kind, path))
        return elements

    def _forward_target(self, name: str, text: str | None, host: str) -> str | None:
        """``sb://<namespace>/<entity>`` for a destination given by name or URL: a queue or topic of this namespace
        that exists (Azure: "The destination entity must exist at the time the source entity is created")."""
        if not text:
            return None
        url = urlsplit(text)
        if url.netloc and url.netloc.lower().removesuffix(":443") != host.lower():
            raise ManagementError(400, f"{name} {text!r} is not an entity of this namespace ({host})")
        entity = unquote(url.path if url.netloc else text).strip("/")
        try:
            destination = self.store.resolve_target(entity)
        except EntityNotFound:
            raise ManagementError(400, f"{name}: the destination entity '{entity}' does not exist") from None
        return f"sb://{host}/{destination.path}"

    def _create(
        self, kind: str, path: str, description: ET.Element, persist: bool = True, request: _Request | None = None
    ) -> Entity | Topic:
        elements = self._elements(kind, path, description, request)
        config = config_from(kind, _leaf(kind, path), elements)
        try:
            if kind == "SubscriptionDescription":
                assert isinstance(config, SubscriptionConfig)
                created: Entity | Topic = self.store.add_subscription(path.split("/", 1)[0], config)
                default = _child(description, "DefaultRuleDescription")
                if default is not None:
                    rule_name = (
                        (_child(default, "Name").text or DEFAULT_RULE)
                        if _child(default, "Name") is not None
                        else DEFAULT_RULE
                    )
                    self.store.delete_rule(created.path, DEFAULT_RULE)
                    self.store.set_rule(created.path, rule_from(default, rule_name))
            elif kind == "TopicDescription":
                assert isinstance(config, TopicConfig)
                created = self.store.add_topic(config)
            else:
                assert isinstance(config, QueueConfig)
                created = self.store.add_queue(config)
        except ConfigError as exc:
            raise ManagementError(400, str(exc)) from exc
        self.meta[created.path.lower()] = _Meta(kind, elements)
        if persist:
            self._persist(created.path, kind, _definition(description.tag, elements))
            if kind == "SubscriptionDescription":
                for rule in self.store.rules_of(created.path):
                    self._persist_rule(created.path, rule)
        log.info("servicebus_emulator_entity_created", entity=created.path, kind=kind)
        return created

    def _update(self, kind: str, existing: Entity | Topic, description: ET.Element, request: _Request) -> None:
        expected = self._kind(existing)
        if kind != expected:
            raise ManagementError(400, f"'{existing.path}' is a {expected}, not a {kind}")
        meta = self._meta(existing)
        elements = self._elements(kind, existing.path, description, request)
        config = config_from(kind, _leaf(kind, existing.path), elements, existing.config)
        if (
            isinstance(config, QueueConfig)
            and isinstance(existing.config, QueueConfig)
            and config.requires_session != existing.config.requires_session
        ):
            raise ManagementError(400, "RequiresSession cannot be changed on an existing entity")
        self.store.reconfigure(existing.path, config)
        meta.elements = elements  # a PUT replaces the description: what it leaves out (ForwardTo, ...) is unset
        meta.updated_at = time.time()
        self._persist(existing.path, kind, _definition(description.tag, elements))

    @staticmethod
    def _kind(target: Entity | Topic) -> str:
        if isinstance(target, Topic):
            return "TopicDescription"
        return "SubscriptionDescription" if isinstance(target.config, SubscriptionConfig) else "QueueDescription"

    def _meta(self, target: Entity | Topic) -> _Meta:
        key = target.path.lower()
        if key not in self.meta:
            self.meta[key] = _Meta(self._kind(target), created_at=self.started, updated_at=self.started)
        return self.meta[key]

    # rules
    def _rule(
        self, method: str, sub_path: str, name: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, ET.Element | None]:
        rules = {r.name.lower(): r for r in self.store.rules_of(sub_path)}
        existing = rules.get(name.lower())
        if method == "GET":
            if existing is None:
                raise EntityNotFound(f"The rule '{name}' could not be found on '{sub_path}'.")
            return 200, self._rule_entry(sub_path, existing)
        if method == "DELETE":
            self.store.delete_rule(sub_path, name)
            self._persist(f"{sub_path}/Rules/{name}", "", None)
            return 200, None
        if method != "PUT":
            raise ManagementError(405, f"{method} is not supported on rules")
        description = self._description(body, ("RuleDescription",))
        if existing is not None and "if-match" not in headers:
            raise ManagementError(409, f"The rule '{name}' already exists on '{sub_path}'.")
        if existing is None and "if-match" in headers:
            raise EntityNotFound(f"The rule '{name}' could not be found on '{sub_path}' to update.")
        rule = rule_from(description, name)
        if existing is not None:
            rule = dataclasses.replace(rule, created_at=existing.created_at)
        self.store.set_rule(sub_path, rule)
        self._persist_rule(sub_path, rule)
        return (200 if existing else 201), self._rule_entry(sub_path, rule)

    def _persist_rule(self, sub_path: str, rule: Rule) -> None:
        self._persist(
            f"{sub_path}/Rules/{rule.name}", "RuleDescription", ET.tostring(rule_element(rule), encoding="unicode")
        )

    # rendering
    def _url(self, path: str) -> str:
        return f"https://{self.namespace}/{quote(path)}?api-version=2021-05"

    def _wrap(self, title: str, path: str, content: ET.Element, updated: float, published: float) -> ET.Element:
        entry = ET.Element(f"{{{ATOM}}}entry")
        ET.SubElement(entry, f"{{{ATOM}}}id").text = self._url(path)
        ET.SubElement(entry, f"{{{ATOM}}}title", type="text").text = title
        ET.SubElement(entry, f"{{{ATOM}}}published").text = iso_timestamp(published)
        ET.SubElement(entry, f"{{{ATOM}}}updated").text = iso_timestamp(updated)
        author = ET.SubElement(entry, f"{{{ATOM}}}author")
        ET.SubElement(author, f"{{{ATOM}}}name").text = self.namespace
        ET.SubElement(entry, f"{{{ATOM}}}link", rel="self", href=self._url(path))
        holder = ET.SubElement(entry, f"{{{ATOM}}}content", type="application/xml")
        holder.append(content)
        return entry

    def _filter_counts(self, topic: Topic) -> dict[str, int]:
        """The topic's ``SqlFilterCount`` (SQL, true and false filters) and ``CorrelationFilterCount``, over the
        rules of all its subscriptions."""
        filters = [rule.filter for sub in topic.subscriptions.values() for rule in self.store.rules_of(sub.path)]
        correlation = sum(isinstance(f, CorrelationFilter) for f in filters)
        return {"SqlFilterCount": len(filters) - correlation, "CorrelationFilterCount": correlation}

    def _entry(self, path: str, target: Entity | Topic, version: str = API_2024_05) -> ET.Element:
        meta = self._meta(target)
        kind = meta.kind
        configured = _configured(kind, target.config)
        counts = self.store.runtime(target.path)
        filter_counts = self._filter_counts(target) if isinstance(target, Topic) else {}
        description = ET.Element(f"{{{SB}}}{kind}")
        for name, default in KINDS[kind]:
            if version < SINCE.get(name, API_2017_04):
                continue
            if name in filter_counts:
                _sb(description, name, str(filter_counts[name]))
            elif name in ("SizeInBytes", "MessageCount"):
                if kind != "TopicDescription" or name == "SizeInBytes":
                    _sb(description, name, str(counts["size"] if name == "SizeInBytes" else counts["total"]))
            elif name in ("CreatedAt", "UpdatedAt", "AccessedAt"):
                when = {"CreatedAt": meta.created_at, "UpdatedAt": meta.updated_at}.get(name, time.time())
                _sb(description, name, iso_timestamp(when))
            elif name == "CountDetails":
                details = _sb(description, "CountDetails")
                for tag, key in (
                    ("ActiveMessageCount", "active"),
                    ("DeadLetterMessageCount", "dead_letter"),
                    ("ScheduledMessageCount", "scheduled"),
                    ("TransferMessageCount", "transfer"),
                    ("TransferDeadLetterMessageCount", "transfer_dead_letter"),
                ):
                    ET.SubElement(details, f"{{{SB_COUNTS}}}{tag}").text = str(counts[key])
            elif name == "SubscriptionCount":
                assert isinstance(target, Topic)
                _sb(description, name, str(len(target.subscriptions)))
            elif name in configured:
                _sb(description, name, configured[name])
            elif name in meta.elements:
                description.append(_in_sb(meta.elements[name]))
            elif default is not None:
                _sb(description, name, default)
        title = _leaf(meta.kind, path)
        return self._wrap(title, path, description, meta.updated_at, meta.created_at)

    def _rule_entry(self, sub_path: str, rule: Rule) -> ET.Element:
        created = rule.created_at or self.started
        return self._wrap(rule.name, f"{sub_path}/Rules/{rule.name}", rule_element(rule), created, created)

    def _feed(self, parts: list[str], query: dict[str, str], entries: list[tuple[str, ET.Element]]) -> ET.Element:
        try:
            skip = int(query.get("$skip", "0"))
            top = int(query.get("$top", "100"))
        except ValueError as exc:
            raise ManagementError(400, "$skip and $top must be integers") from exc
        if skip < 0 or top < 1:
            raise ManagementError(400, "$skip must be >= 0 and $top >= 1")
        entries.sort(key=lambda pair: pair[0].lower())
        page = entries[skip : skip + top]
        path = "/".join(parts)
        feed = ET.Element(f"{{{ATOM}}}feed")
        ET.SubElement(feed, f"{{{ATOM}}}title", type="text").text = parts[-1]
        ET.SubElement(feed, f"{{{ATOM}}}id").text = self._url(path)
        ET.SubElement(feed, f"{{{ATOM}}}updated").text = iso_timestamp(time.time())
        ET.SubElement(feed, f"{{{ATOM}}}link", rel="self", href=self._url(path))
        if skip + top < len(entries):
            href = f"https://{self.namespace}/{quote(path)}?$skip={skip + top}&$top={top}&api-version=2021-05"
            ET.SubElement(feed, f"{{{ATOM}}}link", rel="next", href=href)
        for _, entry in page:
            feed.append(entry)
        return feed

    def _namespace_entry(self) -> ET.Element:
        info = ET.Element(f"{{{SB}}}NamespaceInfo")
        _sb(info, "CreatedTime", iso_timestamp(self.started))
        _sb(info, "MessagingSKU", "Standard")
        _sb(info, "ModifiedTime", iso_timestamp(self.started))
        _sb(info, "Name", self.namespace.split(":")[0])
        _sb(info, "NamespaceType", "Messaging")
        return self._wrap(self.namespace, "$namespaceinfo", info, self.started, self.started)


def _error(status: int, detail: str) -> bytes:
    root = ET.Element("Error")
    ET.SubElement(root, "Code").text = str(status)
    ET.SubElement(root, "Detail").text = detail
    return ET.tostring(root, xml_declaration=True, encoding="utf-8")


# ---------------------------------------------------------------------------------------------- HTTPS server
class ManagementServer(BackgroundHTTPServer):
    """``ManagementApi`` over HTTPS (or plain HTTP when no certificate is given) on its own port."""

    def __init__(
        self, api: ManagementApi, host: str, port: int, *, certfile: str | None = None, keyfile: str | None = None
    ) -> None:
        self.api = api

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload = api.handle(self.command, url.path, query, headers, body)
                self.send_response(status)
                kind = "feed" if payload.find(b"<feed") >= 0 else "entry"
                self.send_header(
                    "Content-Type",
                    f"application/atom+xml;type={kind};charset=utf-8"
                    if status < 400
                    else "application/xml; charset=utf-8",
                )
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return

        super().__init__(host, port, _Handler, "servicebus-management")
        if certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"


__all__ = ["ManagementApi", "ManagementError", "ManagementServer", "iso_duration"]
