"""Entity configuration: dataclasses, Microsoft emulator ``Config.json`` loading, ISO-8601 durations."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value is wrong: the message names the field and says why."""


@dataclass(frozen=True)
class QueueConfig:
    """A queue (or, via :class:`SubscriptionConfig`, a subscription). Durations are seconds."""

    name: str
    lock_duration: float = 30.0
    max_delivery_count: int = 10
    requires_session: bool = False
    requires_duplicate_detection: bool = False
    duplicate_detection_window: float = 600.0
    default_ttl: float | None = None
    dead_letter_on_expiration: bool = False

    def __post_init__(self) -> None:
        _validate_common(self, "queue")


@dataclass(frozen=True)
class CorrelationFilter:
    """Azure's correlation filter: every field that is set must equal the message's (AND); ``properties``
    are application properties. A subscription with several filters takes a message matching any of them."""

    correlation_id: str | None = None
    message_id: str | None = None
    to: str | None = None
    reply_to: str | None = None
    subject: str | None = None
    session_id: str | None = None
    reply_to_session_id: str | None = None
    content_type: str | None = None
    properties: tuple[tuple[str, Any], ...] = ()

    def matches(self, attributes: dict[str, Any]) -> bool:
        for name in ("correlation_id", "message_id", "to", "reply_to", "subject", "session_id",
                     "reply_to_session_id", "content_type"):
            wanted = getattr(self, name)
            if wanted is not None and attributes.get(name) != wanted:
                return False
        app = attributes.get("properties") or {}
        return all(key in app and app[key] == value for key, value in self.properties)


@dataclass(frozen=True)
class SubscriptionConfig(QueueConfig):
    """A topic's subscription: a queue's settings plus the filters that choose its copies."""

    filters: tuple[CorrelationFilter, ...] = ()       # empty: every message (Azure's $Default TrueFilter)

    def __post_init__(self) -> None:
        _validate_common(self, "subscription")

    def accepts(self, attributes: dict[str, Any] | None) -> bool:
        if not self.filters:
            return True
        return attributes is not None and any(f.matches(attributes) for f in self.filters)


@dataclass(frozen=True)
class TopicConfig:
    name: str
    subscriptions: list[SubscriptionConfig] = field(default_factory=list)
    requires_duplicate_detection: bool = False
    duplicate_detection_window: float = 600.0
    default_ttl: float | None = None

    def __post_init__(self) -> None:
        _validate_name(self.name, "topic")
        seen: set[str] = set()
        for sub in self.subscriptions:
            if sub.name.lower() in seen:
                raise ConfigError(f"topic {self.name!r}: duplicate subscription name {sub.name!r}")
            seen.add(sub.name.lower())


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,259}$")
# queues and topics may also be paths ("orders/eu"), as in Azure: segments separated by single slashes
_PATH = re.compile(r"^(?=.{1,260}$)[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9._\-]+)*$")


def _validate_name(name: str, kind: str) -> None:
    if kind in ("queue", "topic"):
        if not isinstance(name, str) or not _PATH.match(name):
            raise ConfigError(f"{kind} name {name!r} is invalid: use letters, digits, '.', '-', '_' and '/' "
                              "between segments (1-260 chars)")
        return
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{kind} name {name!r} is invalid: use letters, digits, '.', '-', '_' (1-260 chars)")


def _validate_common(cfg: QueueConfig | SubscriptionConfig, kind: str) -> None:
    _validate_name(cfg.name, kind)
    if not cfg.lock_duration > 0:
        raise ConfigError(f"{kind} {cfg.name!r}: lock_duration must be > 0 seconds, got {cfg.lock_duration!r}")
    if not (isinstance(cfg.max_delivery_count, int) and cfg.max_delivery_count >= 1):
        raise ConfigError(f"{kind} {cfg.name!r}: max_delivery_count must be an integer >= 1, "
                          f"got {cfg.max_delivery_count!r}")
    if not cfg.duplicate_detection_window > 0:
        raise ConfigError(f"{kind} {cfg.name!r}: duplicate_detection_window must be > 0 seconds")
    if cfg.default_ttl is not None and not cfg.default_ttl > 0:
        raise ConfigError(f"{kind} {cfg.name!r}: default_ttl must be > 0 seconds or None")


_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")
_DOTNET_TIMESPAN = re.compile(r"^(?:(?P<d>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d+)?)$")


def parse_duration(value: Any, where: str) -> float:
    """ISO-8601 (``PT1M``, ``P14D``), .NET TimeSpan (``00:01:00``) or a number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().upper()
        m = _ISO_DURATION.match(text) if text.startswith("P") else _DOTNET_TIMESPAN.match(text)
        if m and text not in ("P", "PT"):
            parts = {k: float(v) for k, v in m.groupdict().items() if v}
            return parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)
    raise ConfigError(f"{where}: {value!r} is not a duration (use ISO-8601 like 'PT1M' or seconds)")


def _props(entity: dict[str, Any], where: str) -> dict[str, Any]:
    props = entity.get("Properties") or {}
    if not isinstance(props, dict):
        raise ConfigError(f"{where}.Properties must be an object")
    out: dict[str, Any] = {}
    if "LockDuration" in props:
        out["lock_duration"] = parse_duration(props["LockDuration"], f"{where}.Properties.LockDuration")
    if "MaxDeliveryCount" in props:
        value = props["MaxDeliveryCount"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}.Properties.MaxDeliveryCount must be an integer, got {value!r}")
        out["max_delivery_count"] = value
    for key, attr in (("RequiresSession", "requires_session"),
                      ("RequiresDuplicateDetection", "requires_duplicate_detection"),
                      ("DeadLetteringOnMessageExpiration", "dead_letter_on_expiration")):
        if key in props:
            if not isinstance(props[key], bool):
                raise ConfigError(f"{where}.Properties.{key} must be true or false, got {props[key]!r}")
            out[attr] = props[key]
    if "DuplicateDetectionHistoryTimeWindow" in props:
        out["duplicate_detection_window"] = parse_duration(
            props["DuplicateDetectionHistoryTimeWindow"], f"{where}.Properties.DuplicateDetectionHistoryTimeWindow")
    if "DefaultMessageTimeToLive" in props:
        ttl = parse_duration(props["DefaultMessageTimeToLive"], f"{where}.Properties.DefaultMessageTimeToLive")
        out["default_ttl"] = None if ttl >= 10 * 365 * 86400 else ttl   # "forever" in Azure terms
    return out


_CORRELATION_FIELDS = {"CorrelationId": "correlation_id", "MessageId": "message_id", "To": "to",
                       "ReplyTo": "reply_to", "Label": "subject", "Subject": "subject", "SessionId": "session_id",
                       "ReplyToSessionId": "reply_to_session_id", "ContentType": "content_type"}
_TRUE_SQL = {"1=1", "1 = 1", "true"}


def _rules(sub: dict[str, Any], where: str) -> tuple[CorrelationFilter, ...]:
    """Subscription ``Rules``: correlation filters are supported; a SQL filter only as ``1=1`` (match all)."""
    rules = sub.get("Rules") or []
    if not isinstance(rules, list):
        raise ConfigError(f"{where}.Rules must be a list")
    filters: list[CorrelationFilter] = []
    match_all = False
    for i, rule in enumerate(rules):
        rw = f"{where}.Rules[{i}]"
        props = rule.get("Properties") if isinstance(rule, dict) else None
        if not isinstance(props, dict):
            raise ConfigError(f"{rw}.Properties is required and must be an object")
        kind = props.get("FilterType")
        if kind == "Correlation":
            spec = props.get("CorrelationFilter")
            if not isinstance(spec, dict):
                raise ConfigError(f"{rw}.Properties.CorrelationFilter is required for FilterType Correlation")
            unknown = set(spec) - set(_CORRELATION_FIELDS) - {"Properties"}
            if unknown:
                raise ConfigError(f"{rw}.Properties.CorrelationFilter has unknown field(s) {sorted(unknown)}; "
                                  f"allowed: {sorted(_CORRELATION_FIELDS)} and Properties")
            app = spec.get("Properties") or {}
            if not isinstance(app, dict):
                raise ConfigError(f"{rw}.Properties.CorrelationFilter.Properties must be an object")
            fields = {_CORRELATION_FIELDS[k]: str(v) for k, v in spec.items() if k != "Properties" and v is not None}
            filters.append(CorrelationFilter(**fields, properties=tuple(sorted(app.items()))))
        elif kind == "Sql":
            expr = str((props.get("SqlFilter") or {}).get("SqlExpression", "")).strip().lower()
            if expr not in _TRUE_SQL:
                raise ConfigError(f"{rw}: SQL filters are not supported by this emulator (only '1=1'); "
                                  "use FilterType Correlation")
            match_all = True
        else:
            raise ConfigError(f"{rw}.Properties.FilterType must be 'Correlation' or 'Sql', got {kind!r}")
    return () if match_all else tuple(filters)


def _name(entity: Any, where: str) -> str:
    if not isinstance(entity, dict) or not isinstance(entity.get("Name"), str):
        raise ConfigError(f"{where}.Name is required and must be a string")
    return entity["Name"]


def read_config_json(path: str | Path) -> Any:
    """The parsed document of a ``Config.json``, or a ConfigError naming the file and the problem."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid JSON: line {exc.lineno}: {exc.msg}") from exc


def load_config_json(path: str | Path) -> tuple[list[QueueConfig], list[TopicConfig]]:
    """Read a Microsoft Service Bus emulator ``Config.json`` (UserConfig → Namespaces → Queues/Topics)."""
    return parse_config(read_config_json(path))


def parse_config(doc: Any) -> tuple[list[QueueConfig], list[TopicConfig]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("UserConfig"), dict):
        raise ConfigError("UserConfig is required and must be an object")
    namespaces = doc["UserConfig"].get("Namespaces")
    if not isinstance(namespaces, list):
        raise ConfigError("UserConfig.Namespaces is required and must be a list")
    queues: list[QueueConfig] = []
    topics: list[TopicConfig] = []
    for i, ns in enumerate(namespaces):
        where = f"UserConfig.Namespaces[{i}]"
        if not isinstance(ns, dict):
            raise ConfigError(f"{where} must be an object")
        for j, q in enumerate(ns.get("Queues") or []):
            qw = f"{where}.Queues[{j}]"
            queues.append(QueueConfig(_name(q, qw), **_props(q, qw)))
        for j, t in enumerate(ns.get("Topics") or []):
            tw = f"{where}.Topics[{j}]"
            name = _name(t, tw)
            tprops = _props(t, tw)
            subs = []
            for k, s in enumerate(t.get("Subscriptions") or []):
                sw = f"{tw}.Subscriptions[{k}]"
                subs.append(SubscriptionConfig(_name(s, sw), filters=_rules(s, sw), **_props(s, sw)))
            topics.append(TopicConfig(name, subscriptions=subs,
                                      requires_duplicate_detection=tprops.get("requires_duplicate_detection", False),
                                      duplicate_detection_window=tprops.get("duplicate_detection_window", 600.0),
                                      default_ttl=tprops.get("default_ttl")))
    return queues, topics


def with_overrides(queue: QueueConfig, **overrides: Any) -> QueueConfig:
    return replace(queue, **{k: v for k, v in overrides.items() if v is not None})
