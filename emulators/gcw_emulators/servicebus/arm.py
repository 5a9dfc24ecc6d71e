"""An Azure Resource Manager stand-in for Service Bus: the ``management.azure.com`` calls that provision namespaces.

azure-servicebus's data-plane tests create their namespace, queues, topics, subscriptions and shared access
policies per test through ARM (``tests/servicebus_preparer.py`` in the sdist: ``ResourceManagementClient`` from
azure-mgmt-resource for the resource group, ``ServiceBusManagementClient`` from azure-mgmt-servicebus for the rest,
both at ``SERVICEBUS_RESOURCE_MANAGER_URL``). This module serves those calls over HTTPS
(``ServiceBusEmulator(arm_port=...)``), with the routes and status codes of the clients' generated operations
(azure-mgmt-servicebus 10.0.0 ``operations/_operations.py``, azure-mgmt-resource 23.4.0
``resources/v2022_09_01/operations/_operations.py``) and the ARM conventions they expect (Microsoft's "Azure
Resource Manager asynchronous operations" and error-response documentation):

* ``/subscriptions/{id}/resourcegroups/{group}``: ``PUT`` (201 new, 200 existing), ``GET``, ``HEAD``, ``DELETE``
  (202, removes the group's namespaces);
* ``.../providers/Microsoft.ServiceBus/namespaces/{name}``: ``PUT`` and ``DELETE`` are long-running operations
  (201 / 202 with ``Azure-AsyncOperation`` and ``Retry-After-Ms``; the operation is done when first polled), ``GET``;
* ``.../namespaces/{name}/queues/{queue}``, ``.../topics/{topic}``, ``.../topics/{topic}/subscriptions/{sub}``,
  ``.../subscriptions/{sub}/rules/{rule}``: ``PUT`` (create or update), ``GET``, ``DELETE``;
* ``.../namespaces/{name}/authorizationRules/{rule}`` and the same under a queue or topic: ``PUT``, ``GET``,
  ``DELETE``, and ``POST .../listKeys`` (keys and connection strings).

Every namespace is ``<name><namespace_suffix>`` (e.g. ``sb1.servicebus.gcw.test``) and all of them are served by
the one emulator: their entities are the store's own (created with the same ``Store`` functions as the ATOM
administration API and Config.json use, so senders and receivers use them at once), their shared access policies
are the emulator's ``AccessControl`` ones (``RootManageSharedAccessKey`` is the emulator's root key). Hence two
limits, both refused with a clear error rather than half-served: an entity name is unique across namespaces
(409), and a policy is valid in every namespace. ``disableLocalAuth`` is kept as sent but not enforced. A request
needs a bearer token (any well-formed one: there is no tenant to verify it against), else 401.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog

from gcw_emulators.servicebus import config as entities
from gcw_emulators.servicebus.access import ROOT_POLICY, AccessControl, AccessPolicy, new_key
from gcw_emulators.servicebus.config import CorrelationFilter, QueueConfig, SubscriptionConfig, TopicConfig
from gcw_emulators.servicebus.management import NEVER, iso_duration, iso_timestamp
from gcw_emulators.servicebus.rules import Rule, RuleError, SqlAction, sql_filter
from gcw_emulators.servicebus.status import BackgroundHTTPServer
from gcw_emulators.servicebus.store import Entity, EntityNotFound, Store, StoreError, Topic
from gcw_emulators.tls import server_context

log = structlog.get_logger(__name__)

PROVIDER = "microsoft.servicebus"
JsonObject = dict[str, Any]


class ArmError(Exception):
    """An ARM error response: ``{"error": {"code": ..., "message": ...}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Namespace:
    name: str
    subscription: str
    group: str
    body: JsonObject
    created: float = field(default_factory=time.time)
    entities: set[str] = field(default_factory=set)  # queue and topic names, lower-cased
    policies: set[tuple[str, str]] = field(default_factory=set)  # (entity or "", policy name), lower-cased


@dataclass(frozen=True)
class Response:
    status: int
    body: JsonObject | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def _duration(props: JsonObject, name: str, default: float | None) -> float | None:
    value = props.get(name)
    if value is None:
        return default
    try:
        seconds = entities.parse_duration(value, name)
    except entities.ConfigError as exc:
        raise ArmError(400, "InvalidRequestContent", str(exc)) from exc
    return None if seconds >= NEVER else seconds


class ArmApi:
    """The request handling, independent of HTTP: ``handle(method, path, headers, body, base) -> Response``.

    ``base`` is the URL the client reached (``https://host:port``), for the operation-status links."""

    def __init__(self, store: Store, access: AccessControl, namespace_suffix: str) -> None:
        self.store = store
        self.access = access
        self.suffix = namespace_suffix if namespace_suffix.startswith(".") else f".{namespace_suffix}"
        self.groups: dict[tuple[str, str], JsonObject] = {}
        self.namespaces: dict[str, _Namespace] = {}
        self.operations: dict[str, JsonObject] = {}
        self._lock = threading.RLock()

    # ----------------------------------------------------------------------------------------------- entry point
    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes, base: str) -> Response:
        if not headers.get("authorization", "").lower().startswith("bearer "):
            return _error(
                ArmError(
                    401,
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is missing or is not a bearer token.",
                )
            )
        try:
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ArmError(400, "InvalidRequestContent", "the request body must be a JSON object")
            with self._lock:
                return self._route(method, [unquote(p) for p in path.strip("/").split("/") if p], payload, base)
        except json.JSONDecodeError as exc:
            return _error(ArmError(400, "InvalidRequestContent", f"the request body is not JSON: {exc}"))
        except ArmError as exc:
            return _error(exc)
        except EntityNotFound as exc:
            return _error(ArmError(404, "NotFound", str(exc)))
        except (StoreError, entities.ConfigError, RuleError) as exc:
            return _error(ArmError(400, "BadRequest", str(exc)))

    def _route(self, method: str, parts: list[str], body: JsonObject, base: str) -> Response:
        low = [p.lower() for p in parts]
        if len(low) == 6 and low[0] == "subscriptions" and low[2:5] == ["providers", PROVIDER, "operationstatus"]:
            status = self.operations.get(parts[5])
            if status is None:
                raise ArmError(404, "NotFound", f"The operation '{parts[5]}' could not be found.")
            return Response(200, status)
        if len(low) < 4 or low[0] != "subscriptions" or low[2] != "resourcegroups":
            raise ArmError(404, "InvalidResourceType", f"no route for '/{'/'.join(parts)}'")
        subscription, group = parts[1], parts[3]
        if len(low) == 4:
            return self._group(method, subscription, group, body, base)
        if (subscription.lower(), group.lower()) not in self.groups:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")
        if len(low) < 8 or low[4:7] != ["providers", PROVIDER, "namespaces"]:
            raise ArmError(404, "InvalidResourceType", f"no route for '/{'/'.join(parts)}'")
        prefix = "/" + "/".join(parts[:8])
        if len(low) == 8:
            return self._namespace(method, subscription, group, parts[7], body, base, prefix)
        ns = self._ns(parts[7], group)
        return self._child(method, ns, parts[8:], low[8:], body, prefix)

    # ----------------------------------------------------------------------------------------------- groups
    def _group(self, method: str, subscription: str, group: str, body: JsonObject, base: str) -> Response:
        key = (subscription.lower(), group.lower())
        existing = self.groups.get(key)
        if method == "PUT":
            if not body.get("location"):
                raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
            doc = {
                "id": f"/subscriptions/{subscription}/resourceGroups/{group}",
                "name": group,
                "type": "Microsoft.Resources/resourceGroups",
                "location": body["location"],
                "tags": body.get("tags") or {},
                "properties": {"provisioningState": "Succeeded"},
            }
            self.groups[key] = doc
            return Response(200 if existing else 201, doc)
        if existing is None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")
        if method in ("GET", "HEAD"):
            return Response(200 if method == "GET" else 204, existing if method == "GET" else None)
        if method == "DELETE":
            for ns in [n for n in self.namespaces.values() if n.group.lower() == group.lower()]:
                self._drop_namespace(ns)
            del self.groups[key]
            return self._accepted(subscription, base)
        raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on resource groups")

    # ----------------------------------------------------------------------------------------------- namespaces
    def _ns(self, name: str, group: str) -> _Namespace:
        ns = self.namespaces.get(name.lower())
        if ns is None or ns.group.lower() != group.lower():
            raise ArmError(404, "ResourceNotFound", f"The requested resource {name} does not exist")
        return ns

    def _namespace(
        self, method: str, subscription: str, group: str, name: str, body: JsonObject, base: str, rid: str
    ) -> Response:
        existing = self.namespaces.get(name.lower())
        if existing is not None and existing.group.lower() != group.lower():
            raise ArmError(409, "Conflict", f"Namespace name '{name}' is already taken.")
        if method == "PUT":
            if not body.get("location"):
                raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
            props = dict(body.get("properties") or {})
            for flag in ("disableLocalAuth", "zoneRedundant", "minimumTlsVersion", "publicNetworkAccess"):
                if flag in body and flag not in props:  # the preparer sends disableLocalAuth at the top level
                    props[flag] = body[flag]
            host = f"{name}{self.suffix}"
            now = time.time()
            props.update(
                provisioningState="Succeeded",
                status="Active",
                serviceBusEndpoint=f"https://{host}:443/",
                metricId=f"{subscription}:{name}",
                createdAt=iso_timestamp(existing.created if existing else now),
                updatedAt=iso_timestamp(now),
            )
            doc = {
                "id": rid,
                "name": name,
                "type": "Microsoft.ServiceBus/Namespaces",
                "location": body["location"],
                "sku": body.get("sku") or {"name": "Standard", "tier": "Standard"},
                "tags": body.get("tags") or {},
                "properties": props,
            }
            if existing is None:
                self.namespaces[name.lower()] = _Namespace(name, subscription, group, doc)
                log.info("servicebus_emulator_arm_namespace_created", namespace=host)
            else:
                existing.body = doc
            return self._accepted(subscription, base, status=201 if existing is None else 200, body=doc)
        ns = self._ns(name, group)
        if method == "GET":
            return Response(200, ns.body)
        if method == "DELETE":
            self._drop_namespace(ns)
            return self._accepted(subscription, base)
        raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on namespaces")

    def _drop_namespace(self, ns: _Namespace) -> None:
        for entity in sorted(ns.entities):
            self._remove_entity(ns, entity)
        for entity, policy in sorted(ns.policies):
            self.access.remove(policy, entity or None)
        del self.namespaces[ns.name.lower()]
        log.info("servicebus_emulator_arm_namespace_deleted", namespace=f"{ns.name}{self.suffix}")

    def _accepted(self, subscription: str, base: str, status: int = 202, body: JsonObject | None = None) -> Response:
        """A long-running operation that is already done: its status link answers Succeeded at the first poll."""
        op = uuid.uuid4().hex
        self.operations[op] = {"name": op, "status": "Succeeded", "startTime": iso_timestamp(time.time())}
        link = f"{base}/subscriptions/{subscription}/providers/Microsoft.ServiceBus/operationStatus/{op}"
        headers = {"Azure-AsyncOperation": link, "Location": link, "Retry-After-Ms": "10"}
        return Response(status, body, headers)

    # ----------------------------------------------------------------------------------------------- children
    def _child(
        self, method: str, ns: _Namespace, parts: list[str], low: list[str], body: JsonObject, prefix: str
    ) -> Response:
        rid = f"{prefix}/{'/'.join(parts)}"
        kind = low[0]
        if kind == "authorizationrules" and len(low) in (2, 3):
            return self._policy(method, ns, None, parts[1], low[2:], body, rid)
        if kind not in ("queues", "topics") or len(low) < 2:
            raise ArmError(404, "InvalidResourceType", f"no route for '{rid}'")
        entity = parts[1]
        if len(low) == 2:
            return self._entity(method, ns, kind, entity, body, rid)
        self._owned(ns, entity)
        if low[2] == "authorizationrules" and len(low) in (4, 5):
            return self._policy(method, ns, entity, parts[3], low[4:], body, rid.removesuffix("/listKeys"))
        if kind == "topics" and low[2] == "subscriptions" and len(low) == 4:
            return self._subscription(method, ns, entity, parts[3], body, rid)
        if kind == "topics" and low[2] == "subscriptions" and len(low) == 6 and low[4] == "rules":
            return self._rule(method, f"{entity}/Subscriptions/{parts[3]}", parts[5], body, rid)
        raise ArmError(404, "InvalidResourceType", f"no route for '{rid}'")

    def _owned(self, ns: _Namespace, entity: str) -> Entity | Topic:
        if entity.lower() not in ns.entities:
            raise ArmError(404, "NotFound", f"The requested resource {entity} does not exist")
        return self.store.resolve_any(entity)

    def _entity(self, method: str, ns: _Namespace, kind: str, name: str, body: JsonObject, rid: str) -> Response:
        singular = "Queues" if kind == "queues" else "Topics"
        if method == "PUT":
            props = body.get("properties") or {}
            config: QueueConfig | TopicConfig = _queue(name, props) if kind == "queues" else _topic(name, props)
            if name.lower() in ns.entities:
                existing = self.store.resolve_any(name)
                _same_kind(existing, kind, name)
                if isinstance(config, TopicConfig):
                    config = replace(config, subscriptions=[])
                _same_session(existing, config)
                self.store.reconfigure(existing.path, config)
                status = 200
            else:
                if self._taken(name):
                    raise ArmError(
                        409,
                        "Conflict",
                        f"the emulator serves every namespace from one store: an entity "
                        f"named '{name}' exists in another namespace",
                    )
                if isinstance(config, TopicConfig):
                    self.store.add_topic(config)
                else:
                    self.store.add_queue(config)
                ns.entities.add(name.lower())
                status = 200
            return Response(status, self._entity_doc(rid, name, singular, self.store.resolve_any(name), ns))
        target = self._owned(ns, name)
        _same_kind(target, kind, name)
        if method == "GET":
            return Response(200, self._entity_doc(rid, name, singular, target, ns))
        if method == "DELETE":
            self._remove_entity(ns, name.lower())
            return Response(200)
        raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on {kind}")

    def _taken(self, name: str) -> bool:
        try:
            self.store.resolve_any(name)
        except EntityNotFound:
            return False
        return True

    def _remove_entity(self, ns: _Namespace, name: str) -> None:
        for entity, policy in [p for p in ns.policies if p[0] == name]:
            self.access.remove(policy, entity)
            ns.policies.discard((entity, policy))
        if self._taken(name):
            self.store.remove(name)
        ns.entities.discard(name)

    def _subscription(self, method: str, ns: _Namespace, topic: str, name: str, body: JsonObject, rid: str) -> Response:
        path = f"{topic}/Subscriptions/{name}"
        existing = self._find(path)
        if method == "PUT":
            config = _subscription(name, body.get("properties") or {})
            if existing is None:
                self.store.add_subscription(topic, config)
            else:
                _same_session(existing, config)
                assert isinstance(existing.config, SubscriptionConfig)
                self.store.reconfigure(existing.path, replace(config, filters=existing.config.filters))
            return Response(200, self._entity_doc(rid, name, "Topics/Subscriptions", self.store.resolve(path), ns))
        if existing is None:
            raise ArmError(404, "NotFound", f"The requested resource {name} does not exist")
        if method == "GET":
            return Response(200, self._entity_doc(rid, name, "Topics/Subscriptions", existing, ns))
        if method == "DELETE":
            self.store.remove(existing.path)
            return Response(200)
        raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on subscriptions")

    def _find(self, path: str) -> Entity | None:
        try:
            return self.store.resolve(path)
        except EntityNotFound:
            return None

    def _rule(self, method: str, sub_path: str, name: str, body: JsonObject, rid: str) -> Response:
        rules = {r.name.lower(): r for r in self.store.rules_of(sub_path)}
        if method == "PUT":
            rule = _rule(name, body.get("properties") or {})
            old = rules.get(name.lower())
            self.store.set_rule(sub_path, replace(rule, created_at=old.created_at if old else time.time()))
            return Response(200, _rule_doc(rid, name, body.get("properties") or {}))
        if name.lower() not in rules:
            raise ArmError(404, "NotFound", f"The requested resource {name} does not exist")
        if method == "GET":
            return Response(200, _rule_doc(rid, name, _rule_props(rules[name.lower()])))
        if method == "DELETE":
            self.store.delete_rule(sub_path, name)
            return Response(200)
        raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on rules")

    # ----------------------------------------------------------------------------------------------- policies
    def _policy(
        self, method: str, ns: _Namespace, entity: str | None, name: str, action: list[str], body: JsonObject, rid: str
    ) -> Response:
        ident = ((entity or "").lower(), name.lower())
        root = entity is None and name.lower() == ROOT_POLICY.name.lower()
        if action:
            if action != ["listkeys"] or method != "POST":
                raise ArmError(404, "InvalidResourceType", f"no route for '{rid}/{'/'.join(action)}'")
            policy = self._existing_policy(ns, entity, name, ident, root)
            return Response(200, self._keys(ns, entity, policy))
        if method == "PUT":
            if root:
                raise ArmError(400, "BadRequest", f"'{name}' is the namespace's root policy and cannot be changed")
            rights = (body.get("properties") or {}).get("rights")
            if not isinstance(rights, list) or not rights:
                raise ArmError(400, "InvalidRequestContent", "properties.rights must be a non-empty list")
            try:
                old = self.access.policy(name, entity) if ident in ns.policies else None
                policy = AccessPolicy(
                    name,
                    old.key if old else new_key(),
                    frozenset(str(r).title() for r in rights),
                    entity=entity,
                    secondary_key=old.secondary_key if old else new_key(),
                )
            except entities.ConfigError as exc:
                raise ArmError(400, "InvalidRequestContent", str(exc)) from exc
            if old is None and self._policy_taken(name, entity):
                raise ArmError(
                    409,
                    "Conflict",
                    f"the emulator keeps one set of policies for every namespace: '{name}' exists in another namespace",
                )
            self.access.add(policy)
            ns.policies.add(ident)
            return Response(200, _policy_doc(rid, name, entity, rights))
        policy = self._existing_policy(ns, entity, name, ident, root)
        if method == "GET":
            return Response(200, _policy_doc(rid, name, entity, sorted(policy.rights)))
        if method == "DELETE":
            if root:
                raise ArmError(400, "BadRequest", f"'{name}' is the namespace's root policy and cannot be deleted")
            self.access.remove(name, entity)
            ns.policies.discard(ident)
            return Response(200)
        raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on authorization rules")

    def _policy_taken(self, name: str, entity: str | None) -> bool:
        try:
            self.access.policy(name, entity)
        except KeyError:
            return False
        return True

    def _existing_policy(
        self, ns: _Namespace, entity: str | None, name: str, ident: tuple[str, str], root: bool
    ) -> AccessPolicy:
        if not root and ident not in ns.policies:
            raise ArmError(404, "NotFound", f"The requested resource {name} does not exist")
        return ROOT_POLICY if root else self.access.policy(name, entity)

    def _keys(self, ns: _Namespace, entity: str | None, policy: AccessPolicy) -> JsonObject:
        secondary = policy.secondary_key or policy.key
        endpoint = f"Endpoint=sb://{ns.name}{self.suffix}/;SharedAccessKeyName={policy.name};SharedAccessKey="
        tail = f";EntityPath={entity}" if entity else ""
        return {
            "keyName": policy.name,
            "primaryKey": policy.key,
            "secondaryKey": secondary,
            "primaryConnectionString": f"{endpoint}{policy.key}{tail}",
            "secondaryConnectionString": f"{endpoint}{secondary}{tail}",
        }

    # ----------------------------------------------------------------------------------------------- documents
    def _entity_doc(self, rid: str, name: str, kind: str, target: Entity | Topic, ns: _Namespace) -> JsonObject:
        config = target.config
        props: JsonObject = {
            "status": "Active",
            "createdAt": iso_timestamp(ns.created),
            "updatedAt": iso_timestamp(time.time()),
            "defaultMessageTimeToLive": iso_duration(config.default_ttl),
        }
        if isinstance(config, TopicConfig):
            assert isinstance(target, Topic)
            props.update(
                requiresDuplicateDetection=config.requires_duplicate_detection,
                duplicateDetectionHistoryTimeWindow=iso_duration(config.duplicate_detection_window),
                subscriptionCount=len(target.subscriptions),
            )
        else:
            runtime = self.store.runtime(target.path)
            props.update(
                lockDuration=iso_duration(config.lock_duration),
                maxDeliveryCount=config.max_delivery_count,
                requiresSession=config.requires_session,
                deadLetteringOnMessageExpiration=config.dead_letter_on_expiration,
                messageCount=runtime["total"],
                countDetails={
                    "activeMessageCount": runtime.get("active", 0),
                    "deadLetterMessageCount": runtime.get("dead_letter", 0),
                    "scheduledMessageCount": runtime.get("scheduled", 0),
                },
            )
            if not isinstance(config, SubscriptionConfig):
                props.update(
                    requiresDuplicateDetection=config.requires_duplicate_detection,
                    duplicateDetectionHistoryTimeWindow=iso_duration(config.duplicate_detection_window),
                )
        return {"id": rid, "name": name, "type": f"Microsoft.ServiceBus/Namespaces/{kind}", "properties": props}


# --------------------------------------------------------------------------------------------------- conversions
def _queue(name: str, props: JsonObject) -> QueueConfig:
    defaults = QueueConfig(name)
    lock = _duration(props, "lockDuration", defaults.lock_duration)
    window = _duration(props, "duplicateDetectionHistoryTimeWindow", defaults.duplicate_detection_window)
    return QueueConfig(
        name,
        lock_duration=lock if lock is not None else defaults.lock_duration,
        max_delivery_count=int(props.get("maxDeliveryCount") or defaults.max_delivery_count),
        requires_session=bool(props.get("requiresSession", False)),
        requires_duplicate_detection=bool(props.get("requiresDuplicateDetection", False)),
        duplicate_detection_window=window if window is not None else defaults.duplicate_detection_window,
        default_ttl=_duration(props, "defaultMessageTimeToLive", None),
        dead_letter_on_expiration=bool(props.get("deadLetteringOnMessageExpiration", False)),
    )


def _subscription(name: str, props: JsonObject) -> SubscriptionConfig:
    """A queue's settings, but duplicate detection (a topic's, not a subscription's)."""
    settings = asdict(_queue(name, props))
    for topic_only in ("requires_duplicate_detection", "duplicate_detection_window"):
        del settings[topic_only]
    return SubscriptionConfig(**settings)


def _topic(name: str, props: JsonObject) -> TopicConfig:
    window = _duration(props, "duplicateDetectionHistoryTimeWindow", 600.0)
    return TopicConfig(
        name,
        requires_duplicate_detection=bool(props.get("requiresDuplicateDetection", False)),
        duplicate_detection_window=window if window is not None else 600.0,
        default_ttl=_duration(props, "defaultMessageTimeToLive", None),
    )


def _same_kind(target: Entity | Topic, kind: str, name: str) -> None:
    if (kind == "topics") != isinstance(target, Topic):
        raise ArmError(409, "Conflict", f"'{name}' exists as a {'topic' if isinstance(target, Topic) else 'queue'}")


def _same_session(target: Entity | Topic, config: QueueConfig | TopicConfig) -> None:
    if (
        isinstance(target, Entity)
        and isinstance(config, QueueConfig)
        and target.config.requires_session != config.requires_session
    ):
        raise ArmError(400, "BadRequest", "requiresSession cannot be changed on an existing entity")


_CORRELATION = {
    "correlationId": "correlation_id",
    "messageId": "message_id",
    "to": "to",
    "replyTo": "reply_to",
    "label": "subject",
    "sessionId": "session_id",
    "replyToSessionId": "reply_to_session_id",
    "contentType": "content_type",
}


def _rule(name: str, props: JsonObject) -> Rule:
    kind = props.get("filterType") or ("CorrelationFilter" if props.get("correlationFilter") else "SqlFilter")
    if kind == "CorrelationFilter":
        spec = props.get("correlationFilter") or {}
        fields = {attr: spec[key] for key, attr in _CORRELATION.items() if spec.get(key) is not None}
        extra = tuple(sorted((spec.get("properties") or {}).items()))
        filt: Any = CorrelationFilter(**fields, properties=extra)
    elif kind == "SqlFilter":
        filt = sql_filter(str((props.get("sqlFilter") or {}).get("sqlExpression") or "1=1"))
    else:
        raise ArmError(400, "InvalidRequestContent", f"filterType {kind!r} is not SqlFilter or CorrelationFilter")
    action = (props.get("action") or {}).get("sqlExpression")
    return Rule(name, filt, SqlAction(action) if action else None)


def _rule_props(rule: Rule) -> JsonObject:
    action = {"sqlExpression": rule.action.expression} if rule.action else {}
    if isinstance(rule.filter, CorrelationFilter):
        spec = {key: getattr(rule.filter, attr) for key, attr in _CORRELATION.items()}
        spec["properties"] = dict(rule.filter.properties)
        return {"filterType": "CorrelationFilter", "correlationFilter": spec, "action": action}
    expression = rule.filter.expression if not isinstance(rule.filter, bool) else ("1=1" if rule.filter else "1=0")
    return {"filterType": "SqlFilter", "sqlFilter": {"sqlExpression": expression}, "action": action}


def _rule_doc(rid: str, name: str, props: JsonObject) -> JsonObject:
    return {
        "id": rid,
        "name": name,
        "type": "Microsoft.ServiceBus/Namespaces/Topics/Subscriptions/Rules",
        "properties": props,
    }


def _policy_doc(rid: str, name: str, entity: str | None, rights: list[str]) -> JsonObject:
    owner = "Namespaces" if entity is None else "Namespaces/Queues"
    return {
        "id": rid,
        "name": name,
        "type": f"Microsoft.ServiceBus/{owner}/AuthorizationRules",
        "properties": {"rights": list(rights)},
    }


def _error(exc: ArmError) -> Response:
    return Response(exc.status, {"error": {"code": exc.code, "message": exc.message}})


# --------------------------------------------------------------------------------------------------- HTTPS server
class ArmServer(BackgroundHTTPServer):
    """``ArmApi`` over HTTPS on its own port (JSON in and out, as ``management.azure.com``)."""

    scheme = "https"

    def __init__(self, api: ArmApi, host: str, port: int, *, certfile: Path, keyfile: Path) -> None:
        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                base = f"https://{headers.get('host') or f'{host}:{self.server.server_address[1]}'}"
                answer = api.handle(self.command, urlsplit(self.path).path, headers, body, base)
                payload = json.dumps(answer.body).encode() if answer.body is not None else b""
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if payload:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("x-ms-request-id", str(uuid.uuid4()))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_DELETE = do_POST = do_HEAD = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return

        super().__init__(host, port, _Handler, "servicebus-arm")
        self._server.socket = server_context(certfile, keyfile).wrap_socket(self._server.socket, server_side=True)


__all__ = ["ArmApi", "ArmError", "ArmServer", "Response"]
