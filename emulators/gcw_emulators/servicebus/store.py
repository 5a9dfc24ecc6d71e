"""Pure broker state: entities, sequence numbers, locks, delivery counts, dead-lettering, deferral, scheduling,
TTL, duplicate detection and sessions. No AMQP here: the wire format is an opaque ``payload`` owned by the codec.

Every public method takes the store's single lock, so stats can be read from any thread. Time comes from an
injected clock (seconds since the epoch), so the whole state machine is unit-testable without sockets.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from gcw_emulators.servicebus.config import QueueConfig, SubscriptionConfig, TopicConfig
from gcw_emulators.servicebus.rules import Rule, initial_rules

# (payload, new application properties) -> (payload, raw): the codec's, injected so the store stays AMQP-free
Rewrite = Callable[[Any, dict[str, Any]], tuple[Any, bytes]]

DLQ_SUFFIX = "$deadletterqueue"
MAX_DELIVERY_REASON = "MaxDeliveryCountExceeded"
TTL_REASON = "TTLExpiredException"


class MessageState(IntEnum):
    """Values match ``x-opt-message-state`` (0 active, 1 deferred, 2 scheduled); LOCKED is emulator-internal."""

    ACTIVE = 0
    DEFERRED = 1
    SCHEDULED = 2
    LOCKED = 3


class StoreError(Exception):
    """A broker-level failure with the AMQP error condition the SDK maps to its typed exception."""

    condition = "amqp:internal-error"
    status = 500


class EntityNotFound(StoreError):
    condition = "amqp:not-found"
    status = 404


class LockLost(StoreError):
    condition = "com.microsoft:message-lock-lost"
    status = 410


class SessionLockLost(StoreError):
    condition = "com.microsoft:session-lock-lost"
    status = 410


class SessionCannotBeLocked(StoreError):
    condition = "com.microsoft:session-cannot-be-locked"
    status = 409


class MessageNotFound(StoreError):
    condition = "com.microsoft:message-not-found"
    status = 404


class ArgumentError(StoreError):
    condition = "com.microsoft:argument-error"
    status = 400


class NotAllowed(StoreError):
    condition = "amqp:not-allowed"
    status = 403


@dataclass
class Incoming:
    """What the codec extracted from one message the client sent."""

    payload: Any
    raw: bytes
    message_id: str | None = None
    session_id: str | None = None
    ttl: float | None = None                 # seconds, from header.ttl
    scheduled_at: float | None = None        # epoch seconds, from x-opt-scheduled-enqueue-time
    attributes: dict[str, Any] | None = None  # system + application properties, for subscription filters


@dataclass(eq=False)
class StoredMessage:
    seq: int
    payload: Any
    raw: bytes
    message_id: str | None
    session_id: str | None
    enqueued_at: float
    expires_at: float | None
    state: MessageState = MessageState.ACTIVE
    visible_at: float = 0.0
    delivery_count: int = 0
    lock_token: uuid.UUID | None = None
    locked_until: float = 0.0
    deferred: bool = False                   # returns to DEFERRED (not ACTIVE) when its lock ends
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None
    dead_letter_source: str | None = None
    ttl: float | None = None
    attributes: dict[str, Any] | None = None


class Journal(Protocol):
    """Durability hook (SQLite in persistence.py); called under the store lock."""

    def save(self, path: str, msg: StoredMessage) -> None: ...
    def delete(self, path: str, seq: int) -> None: ...
    def save_session_state(self, path: str, session_id: str, state: bytes | None) -> None: ...
    def save_message_id(self, path: str, message_id: str, at: float) -> None: ...


@dataclass
class SessionInfo:
    state: bytes | None = None
    owner: Any = None
    locked_until: float = 0.0
    state_updated_at: float = 0.0  # when set_session_state last ran (the list-sessions filter)


@dataclass
class Stats:
    sent: int = 0
    completed: int = 0


class Entity:
    """A queue, a subscription or a dead-letter sub-queue: something messages are received from."""

    def __init__(self, path: str, config: QueueConfig | SubscriptionConfig, *, is_dlq: bool = False) -> None:
        self.path = path
        self.config = config
        self.is_dlq = is_dlq
        self.requires_session = config.requires_session and not is_dlq
        self.messages: dict[int, StoredMessage] = {}
        self._available: dict[str | None, list[int]] = {}
        self.sessions: dict[str, SessionInfo] = {}
        self.stats = Stats()
        self.dlq: Entity | None = None if is_dlq else Entity(f"{path}/$DeadLetterQueue", config, is_dlq=True)
        self.seq = 0
        self.dup_window: OrderedDict[str, float] = OrderedDict()
        self.rules: dict[str, Rule] = {}
        if isinstance(config, SubscriptionConfig) and not is_dlq:
            self.rules = initial_rules(config.filters)

    def match(self, attributes: dict[str, Any] | None) -> Rule | None:
        """The first rule that takes the message (a subscription with no rules takes nothing, as in Azure)."""
        for rule in self.rules.values():
            if rule.matches(attributes or {}):
                return rule
        return None

    def key(self, msg: StoredMessage) -> str | None:
        return msg.session_id if self.requires_session else None

    def push_available(self, msg: StoredMessage) -> None:
        heapq.heappush(self._available.setdefault(self.key(msg), []), msg.seq)

    def head(self, session_id: str | None) -> StoredMessage | None:
        heap = self._available.get(session_id)
        while heap:
            msg = self.messages.get(heap[0])
            if msg is not None and msg.state is MessageState.ACTIVE and self.key(msg) == session_id:
                return msg
            heapq.heappop(heap)
        return None

    def pop_head(self, session_id: str | None) -> StoredMessage | None:
        msg = self.head(session_id)
        if msg is not None:
            heapq.heappop(self._available[session_id])
        return msg

    def session_ids_with_messages(self) -> Iterable[str]:
        return [sid for sid in self._available if sid is not None and self.head(sid) is not None]


class Topic:
    """A topic: fans each message out to every subscription; keeps its own scheduled messages until due."""

    def __init__(self, config: TopicConfig, make_sub: Callable[[SubscriptionConfig], Entity]) -> None:
        self.path = config.name
        self.config = config
        self.subscriptions: dict[str, Entity] = {s.name.lower(): make_sub(s) for s in config.subscriptions}
        self.messages: dict[int, StoredMessage] = {}     # scheduled only
        self.seq = 0
        self.dup_window: OrderedDict[str, float] = OrderedDict()
        self.stats = Stats()


@dataclass
class TickResult:
    changed: set[str] = field(default_factory=set)           # entity paths that gained available messages
    lost_sessions: list[tuple[Any, str, str]] = field(default_factory=list)   # (owner, path, session id)


class Store:
    """All broker state. Paths are case-insensitive; ``q/$DeadLetterQueue`` and ``t/Subscriptions/s`` work."""

    def __init__(self, clock: Callable[[], float] = time.time, journal: Journal | None = None,
                 rewrite: Rewrite | None = None) -> None:
        self._clock = clock
        self._rewrite = rewrite
        self._lock = threading.RLock()
        self._journal = journal
        self._entities: dict[str, Entity] = {}
        self._topics: dict[str, Topic] = {}
        self._locks: dict[uuid.UUID, tuple[Entity, StoredMessage]] = {}
        self._timers: list[tuple[float, int, str, Any, Any]] = []
        self._counter = itertools.count()

    # ----------------------------------------------------------------- configuration
    def add_queue(self, config: QueueConfig) -> Entity:
        with self._lock:
            key = config.name.lower()
            if key in self._entities or key in self._topics:
                raise ArgumentError(f"entity {config.name!r} is declared twice")
            entity = Entity(config.name, config)
            self._entities[key] = entity
            return entity

    def add_topic(self, config: TopicConfig) -> Topic:
        with self._lock:
            key = config.name.lower()
            if key in self._entities or key in self._topics:
                raise ArgumentError(f"entity {config.name!r} is declared twice")
            topic = Topic(config, lambda s: Entity(f"{config.name}/Subscriptions/{s.name}", s))
            self._topics[key] = topic
            return topic

    def add_subscription(self, topic_name: str, config: SubscriptionConfig) -> Entity:
        with self._lock:
            topic = self._topics.get(topic_name.lower())
            if topic is None:
                raise EntityNotFound(f"The messaging entity '{topic_name}' could not be found.")
            if config.name.lower() in topic.subscriptions:
                raise ArgumentError(f"subscription {config.name!r} already exists on topic {topic_name!r}")
            entity = Entity(f"{topic.path}/Subscriptions/{config.name}", config)
            topic.subscriptions[config.name.lower()] = entity
            return entity

    def remove(self, path: str) -> None:
        """Delete a queue, topic (with its subscriptions) or subscription, and every message in it."""
        with self._lock:
            target = self.resolve_any(path)
            if isinstance(target, Topic):
                del self._topics[target.path.lower()]
                gone = list(target.subscriptions.values())
            elif target.path.lower() in self._entities:
                del self._entities[target.path.lower()]
                gone = [target]
            else:
                topic_name, _, sub_name = target.path.partition("/Subscriptions/")
                del self._topics[topic_name.lower()].subscriptions[sub_name.lower()]
                gone = [target]
            doomed = {id(e) for e in gone} | {id(e.dlq) for e in gone if e.dlq is not None}
            for token, (entity, _msg) in list(self._locks.items()):
                if id(entity) in doomed:
                    del self._locks[token]
            for entity in gone + [e.dlq for e in gone if e.dlq is not None]:
                for seq in list(entity.messages):
                    self._delete(entity.path, seq)
                entity.messages.clear()

    def reconfigure(self, path: str, config: QueueConfig | SubscriptionConfig | TopicConfig) -> None:
        """New settings for an existing entity; they apply from the next lock, delivery or send."""
        with self._lock:
            target = self.resolve_any(path)
            if isinstance(target, Topic):
                assert isinstance(config, TopicConfig)
                target.config = config
                return
            assert isinstance(config, QueueConfig)
            target.config = config
            if target.dlq is not None:
                target.dlq.config = config

    def set_rule(self, path: str, rule: Rule) -> None:
        with self._lock:
            self._subscription(path).rules[rule.name.lower()] = rule

    def delete_rule(self, path: str, name: str) -> None:
        with self._lock:
            rules = self._subscription(path).rules
            if name.lower() not in rules:
                raise EntityNotFound(f"The rule '{name}' could not be found on '{path}'.")
            del rules[name.lower()]

    def rules_of(self, path: str) -> list[Rule]:
        with self._lock:
            return list(self._subscription(path).rules.values())

    def _subscription(self, path: str) -> Entity:
        entity = self.resolve(path)
        if entity.is_dlq or not isinstance(entity.config, SubscriptionConfig):
            raise EntityNotFound(f"The subscription '{path}' could not be found.")
        return entity

    def queues(self) -> list[Entity]:
        with self._lock:
            return list(self._entities.values())

    def topics(self) -> list[Topic]:
        with self._lock:
            return list(self._topics.values())

    def runtime(self, path: str) -> dict[str, int]:
        """Counts as Azure's runtime properties report them (``CountDetails``), plus the total and size."""
        with self._lock:
            target = self.resolve_any(path)
            entities = list(target.subscriptions.values()) if isinstance(target, Topic) else [target]
            counts = {"active": 0, "dead_letter": 0, "scheduled": 0, "transfer": 0, "transfer_dead_letter": 0,
                      "total": 0, "size": 0}
            pools = [target.messages.values()] if isinstance(target, Topic) else []
            for entity in entities:
                pools.append(entity.messages.values())
                assert entity.dlq is not None
                counts["dead_letter"] += len(entity.dlq.messages)
                counts["size"] += sum(len(m.raw) for m in entity.dlq.messages.values())
            for pool in pools:
                for msg in pool:
                    if msg.state in (MessageState.ACTIVE, MessageState.LOCKED):
                        counts["active"] += 1
                    elif msg.state is MessageState.SCHEDULED:
                        counts["scheduled"] += 1
                    counts["total"] += 1
                    counts["size"] += len(msg.raw)
            counts["total"] += counts["dead_letter"]
            return counts

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def now(self) -> float:
        return self._clock()

    # ----------------------------------------------------------------- resolution
    def resolve(self, path: str) -> Entity:
        """The receivable entity at ``path``; raises EntityNotFound."""
        parts = [p for p in path.strip("/").split("/") if p]
        low = [p.lower() for p in parts]
        dlq = False
        if low and low[-1] == DLQ_SUFFIX:
            dlq = True
            low = low[:-1]
            if low and low[-1] == "$transfer":
                low = low[:-1]
        entity: Entity | None = None
        if len(low) == 1:
            entity = self._entities.get(low[0])
        elif len(low) == 3 and low[1] == "subscriptions":
            topic = self._topics.get(low[0])
            entity = topic.subscriptions.get(low[2]) if topic else None
        if entity is None:
            raise EntityNotFound(f"The messaging entity '{path}' could not be found.")
        if dlq:
            assert entity.dlq is not None
            return entity.dlq
        return entity

    def resolve_target(self, path: str) -> Entity | Topic:
        """A queue or topic that accepts sends; raises EntityNotFound."""
        key = path.strip("/").lower()
        target = self._entities.get(key) or self._topics.get(key)
        if target is None:
            raise EntityNotFound(f"The messaging entity '{path}' could not be found.")
        return target

    def resolve_any(self, path: str) -> Entity | Topic:
        with self._lock:
            try:
                return self.resolve(path)
            except EntityNotFound:
                return self.resolve_target(path)

    def entity_paths(self) -> list[str]:
        with self._lock:
            return [e.path for e in self._all_entities(include_dlq=False)]

    def _all_entities(self, include_dlq: bool = True) -> Iterable[Entity]:
        out: list[Entity] = []
        for e in self._entities.values():
            out.append(e)
        for t in self._topics.values():
            out.extend(t.subscriptions.values())
        if include_dlq:
            out.extend([e.dlq for e in out if e.dlq is not None])
        return out

    # ----------------------------------------------------------------- timers
    def _timer(self, when: float, kind: str, entity: Any, key: Any) -> None:
        heapq.heappush(self._timers, (when, next(self._counter), kind, entity, key))

    def next_timer(self) -> float | None:
        with self._lock:
            return self._timers[0][0] if self._timers else None

    # ----------------------------------------------------------------- send
    def enqueue(self, path: str, items: list[Incoming]) -> list[int | None]:
        """Accept messages for a queue or topic; returns one sequence number per item (None for duplicates)."""
        with self._lock:
            target = self.resolve_target(path)
            now = self._clock()
            out: list[int | None] = []
            for item in items:
                if isinstance(target, Entity) and target.requires_session and item.session_id is None:
                    raise NotAllowed(f"The SessionId was not set on a message, and it cannot be sent to the "
                                     f"entity '{target.path}'. Entities that have session support enabled can "
                                     "only receive messages that have the SessionId set to a valid value.")
                if self._is_duplicate(target, item.message_id, now):
                    out.append(None)
                    continue
                target.stats.sent += 1
                if isinstance(target, Topic):
                    out.append(self._enqueue_topic(target, item, now))
                else:
                    out.append(self._append(target, item, now).seq)
            return out

    def _is_duplicate(self, target: Entity | Topic, message_id: str | None, now: float) -> bool:
        cfg = target.config
        if not cfg.requires_duplicate_detection or not message_id:
            return False
        window = target.dup_window
        while window:
            _first_id, first_at = next(iter(window.items()))
            if now - first_at < cfg.duplicate_detection_window:
                break
            window.popitem(last=False)
        if message_id in window:
            return True
        window[message_id] = now
        if self._journal is not None:
            self._journal.save_message_id(target.path, message_id, now)
        return False

    def _enqueue_topic(self, topic: Topic, item: Incoming, now: float) -> int:
        topic.seq += 1
        if item.scheduled_at is not None and item.scheduled_at > now:
            msg = StoredMessage(seq=topic.seq, payload=item.payload, raw=item.raw, message_id=item.message_id,
                                session_id=item.session_id, enqueued_at=now, expires_at=None,
                                state=MessageState.SCHEDULED, visible_at=item.scheduled_at, ttl=item.ttl,
                                attributes=item.attributes)
            topic.messages[msg.seq] = msg
            self._timer(item.scheduled_at, "schedule", topic, msg.seq)
            self._save(topic.path, msg)
            return msg.seq
        self._fan_out(topic, Incoming(item.payload, item.raw, item.message_id, item.session_id,
                                      item.ttl or topic.config.default_ttl, None, item.attributes), now)
        return topic.seq

    def _fan_out(self, topic: Topic, item: Incoming, now: float) -> list[str]:
        """A copy for every subscription with a matching rule; returns their paths."""
        reached = []
        for sub in topic.subscriptions.values():
            rule = sub.match(item.attributes)
            if rule is None:
                continue
            sub.stats.sent += 1
            self._append(sub, self._apply_action(rule, item), now)
            reached.append(sub.path)
        return reached

    def _apply_action(self, rule: Rule, item: Incoming) -> Incoming:
        """A rule's SQL action changes the subscription's copy (its application properties)."""
        if rule.action is None or self._rewrite is None:
            return item
        attributes = rule.action.apply(item.attributes or {})
        payload, raw = self._rewrite(item.payload, attributes["properties"])
        return Incoming(payload, raw, item.message_id, item.session_id, item.ttl, item.scheduled_at, attributes)

    def _append(self, entity: Entity, item: Incoming, now: float) -> StoredMessage:
        entity.seq += 1
        ttl = item.ttl if item.ttl is not None else entity.config.default_ttl
        if ttl is not None and entity.config.default_ttl is not None:
            ttl = min(ttl, entity.config.default_ttl)
        msg = StoredMessage(seq=entity.seq, payload=item.payload, raw=item.raw, message_id=item.message_id,
                            session_id=item.session_id, enqueued_at=now, expires_at=None, ttl=ttl)
        if item.scheduled_at is not None and item.scheduled_at > now:
            msg.state = MessageState.SCHEDULED
            msg.visible_at = item.scheduled_at
            self._timer(item.scheduled_at, "schedule", entity, msg.seq)
        else:
            self._activate_new(entity, msg, now)
        entity.messages[msg.seq] = msg
        if msg.state is MessageState.ACTIVE:
            entity.push_available(msg)
        self._save(entity.path, msg)
        return msg

    def _activate_new(self, entity: Entity, msg: StoredMessage, now: float) -> None:
        msg.state = MessageState.ACTIVE
        msg.enqueued_at = now
        if msg.ttl is not None:
            msg.expires_at = now + msg.ttl
            self._timer(msg.expires_at, "ttl", entity, msg.seq)

    def cancel_scheduled(self, path: str, seqs: Iterable[int]) -> None:
        with self._lock:
            target = self.resolve_any(path)
            for seq in seqs:
                msg = target.messages.get(seq)
                if msg is not None and msg.state is MessageState.SCHEDULED:
                    del target.messages[seq]
                    self._delete(target.path, seq)

    # ----------------------------------------------------------------- receive
    def accept_session(self, path: str, session_id: str | None, owner: Any) -> str | None:
        """Lock a session for ``owner``: a named one, or (None) the next one with messages. None = none free."""
        with self._lock:
            entity = self.resolve(path)
            if not entity.requires_session:
                raise ArgumentError(f"The entity '{entity.path}' does not require sessions: "
                                    "use a receiver without session_id.")
            now = self._clock()
            if session_id is None:
                best: tuple[int, str] | None = None
                for sid in entity.session_ids_with_messages():
                    info = entity.sessions.get(sid)
                    if info is not None and info.owner is not None and info.locked_until > now:
                        continue
                    head = entity.head(sid)
                    if head is not None and (best is None or head.seq < best[0]):
                        best = (head.seq, sid)
                if best is None:
                    return None
                session_id = best[1]
            info = entity.sessions.setdefault(session_id, SessionInfo())
            if info.owner is not None and info.owner != owner and info.locked_until > now:
                raise SessionCannotBeLocked(f"The requested session '{session_id}' cannot be accepted. "
                                            "It may be locked by another receiver.")
            if info.owner is not None and info.owner != owner:
                self._end_session(entity, session_id, info)
            info.owner = owner
            info.locked_until = now + entity.config.lock_duration
            return session_id

    def session_locked_until(self, path: str, session_id: str) -> float:
        with self._lock:
            info = self.resolve(path).sessions.get(session_id)
            return info.locked_until if info else 0.0

    def release_session(self, path: str, session_id: str, owner: Any) -> set[str]:
        """The owner's link closed: its session lock ends and its unsettled messages return (count + 1)."""
        with self._lock:
            try:
                entity = self.resolve(path)
            except EntityNotFound:
                return set()
            info = entity.sessions.get(session_id)
            if info is None or info.owner != owner:
                return set()
            self._end_session(entity, session_id, info)
            return {entity.path}

    def _end_session(self, entity: Entity, session_id: str, info: SessionInfo) -> None:
        info.owner = None
        info.locked_until = 0.0
        for msg in list(entity.messages.values()):
            if msg.state is MessageState.LOCKED and msg.session_id == session_id:
                self._unlock(entity, msg, increment=True)

    @staticmethod
    def _drained(entity: Entity, session_id: str) -> bool:
        """No message of the session to deliver or to settle (deferred and scheduled ones wait elsewhere)."""
        if entity.head(session_id) is not None:
            return False
        return not any(m.state is MessageState.LOCKED and m.session_id == session_id for m in entity.messages.values())

    def _check_session(self, entity: Entity, session_id: str | None, owner: Any) -> SessionInfo | None:
        if session_id is None:
            return None
        info = entity.sessions.get(session_id)
        if info is None or (owner is not None and info.owner != owner) or info.locked_until <= self._clock():
            raise SessionLockLost(f"The session lock has expired on the session '{session_id}'.")
        return info

    def next_message(self, path: str, *, peek_lock: bool, session_id: str | None = None,
                     owner: Any = None) -> StoredMessage | None:
        """Hand out the next available message: locked (PEEK_LOCK) or removed (RECEIVE_AND_DELETE)."""
        with self._lock:
            entity = self.resolve(path)
            if entity.requires_session and session_id is None:
                return None
            info = self._check_session(entity, session_id, owner) if entity.requires_session else None
            now = self._clock()
            while True:
                msg = entity.pop_head(session_id if entity.requires_session else None)
                if msg is None:
                    return None
                if msg.expires_at is not None and msg.expires_at <= now:
                    self._expire(entity, msg)
                    continue
                break
            if not peek_lock:
                self._remove(entity, msg)
                entity.stats.completed += 1
                return msg
            self._lock_message(entity, msg, now, info)
            return msg

    def _lock_message(self, entity: Entity, msg: StoredMessage, now: float, info: SessionInfo | None) -> None:
        msg.state = MessageState.LOCKED
        msg.lock_token = uuid.uuid4()
        if info is not None:
            msg.locked_until = info.locked_until
        else:
            msg.locked_until = now + entity.config.lock_duration
            self._timer(msg.locked_until, "lock", entity, msg.lock_token)
        self._locks[msg.lock_token] = (entity, msg)

    def receive_deferred(self, path: str, seqs: Iterable[int], *, peek_lock: bool,
                         session_id: str | None = None, owner: Any = None) -> list[StoredMessage]:
        with self._lock:
            entity = self.resolve(path)
            info = self._check_session(entity, session_id, owner) if entity.requires_session else None
            now = self._clock()
            out: list[StoredMessage] = []
            for seq in seqs:
                msg = entity.messages.get(seq)
                if msg is None or msg.state is not MessageState.DEFERRED or \
                        (entity.requires_session and msg.session_id != session_id):
                    raise MessageNotFound(f"Failed to lock one or more specified messages: sequence number "
                                          f"{seq} is not a deferred message of '{entity.path}'.")
                out.append(msg)
            for msg in out:
                if peek_lock:
                    self._lock_message(entity, msg, now, info)
                else:
                    self._remove(entity, msg)
                    entity.stats.completed += 1
            return out

    def peek(self, path: str, from_seq: int, count: int, session_id: str | None = None) -> list[StoredMessage]:
        with self._lock:
            target = self.resolve_any(path)
            seqs = sorted(s for s in target.messages if s >= from_seq)
            out = []
            for seq in seqs:
                msg = target.messages[seq]
                if session_id is not None and msg.session_id != session_id:
                    continue
                out.append(msg)
                if len(out) >= count:
                    break
            return out

    # ----------------------------------------------------------------- settlement
    def _locked(self, token: uuid.UUID, owner: Any = None) -> tuple[Entity, StoredMessage]:
        found = self._locks.get(token)
        if found is None:
            raise LockLost("The lock supplied is invalid. Either the lock expired, or the message has already "
                           "been removed from the queue.")
        entity, msg = found
        if entity.requires_session:
            info = entity.sessions.get(msg.session_id or "")
            if info is None or info.locked_until <= self._clock():
                raise SessionLockLost(f"The session lock has expired on the session '{msg.session_id}'.")
        elif msg.locked_until <= self._clock():
            self._unlock(entity, msg, increment=True)
            raise LockLost("The lock supplied is invalid. The lock expired.")
        return found

    def complete(self, token: uuid.UUID) -> str:
        with self._lock:
            entity, msg = self._locked(token)
            self._remove(entity, msg)
            entity.stats.completed += 1
            return entity.path

    def abandon(self, token: uuid.UUID) -> str:
        with self._lock:
            entity, msg = self._locked(token)
            self._unlock(entity, msg, increment=True)
            return entity.path

    def release(self, token: uuid.UUID) -> str | None:
        """The client gave the message back unprocessed (prefetch, close): no delivery-count increment."""
        with self._lock:
            found = self._locks.get(token)
            if found is None:
                return None
            self._unlock(found[0], found[1], increment=False)
            return found[0].path

    def defer(self, token: uuid.UUID) -> str:
        with self._lock:
            entity, msg = self._locked(token)
            self._locks.pop(token, None)
            msg.lock_token = None
            msg.state = MessageState.DEFERRED
            msg.deferred = True
            self._save(entity.path, msg)
            return entity.path

    def dead_letter(self, token: uuid.UUID, reason: str | None, description: str | None) -> str:
        with self._lock:
            entity, msg = self._locked(token)
            self._dead_letter(entity, msg, reason, description)
            return entity.path

    def renew_lock(self, token: uuid.UUID) -> float:
        with self._lock:
            entity, msg = self._locked(token)
            if entity.requires_session:
                return msg.locked_until
            msg.locked_until = self._clock() + entity.config.lock_duration
            self._timer(msg.locked_until, "lock", entity, token)
            return msg.locked_until

    def renew_session_lock(self, path: str, session_id: str, owner: Any = None) -> float:
        with self._lock:
            entity = self.resolve(path)
            info = self._check_session(entity, session_id, owner)
            assert info is not None
            info.locked_until = self._clock() + entity.config.lock_duration
            for msg in entity.messages.values():
                if msg.state is MessageState.LOCKED and msg.session_id == session_id:
                    msg.locked_until = info.locked_until
            return info.locked_until

    def get_session_state(self, path: str, session_id: str, owner: Any = None) -> bytes | None:
        with self._lock:
            entity = self.resolve(path)
            info = self._check_session(entity, session_id, owner)
            assert info is not None
            return info.state

    def set_session_state(self, path: str, session_id: str, state: bytes | None, owner: Any = None) -> None:
        with self._lock:
            entity = self.resolve(path)
            info = self._check_session(entity, session_id, owner)
            assert info is not None
            info.state = state
            info.state_updated_at = self._clock()
            if self._journal is not None:
                self._journal.save_session_state(entity.path, session_id, state)

    def list_sessions(self, path: str, updated_after: float | None = None) -> list[str]:
        """Azure's get-message-sessions: with no ``updated_after`` (the SDK sends DateTime.MaxValue), the sessions
        that have messages or a state; else those whose state was set after that time."""
        with self._lock:
            entity = self.resolve(path)
            if updated_after is not None:
                return sorted(sid for sid, info in entity.sessions.items() if info.state_updated_at > updated_after)
            ids = {m.session_id for m in entity.messages.values() if m.session_id}
            ids.update(sid for sid, info in entity.sessions.items() if info.state is not None)
            return sorted(ids)

    # ----------------------------------------------------------------- internals
    def _unlock(self, entity: Entity, msg: StoredMessage, *, increment: bool) -> None:
        if msg.lock_token is not None:
            self._locks.pop(msg.lock_token, None)
        msg.lock_token = None
        msg.locked_until = 0.0
        if increment:
            msg.delivery_count += 1
        if increment and msg.delivery_count >= entity.config.max_delivery_count and not entity.is_dlq:
            self._dead_letter(entity, msg, MAX_DELIVERY_REASON,
                              f"Message could not be consumed after {entity.config.max_delivery_count} "
                              "delivery attempts.")
            return
        if msg.deferred:
            msg.state = MessageState.DEFERRED
        else:
            msg.state = MessageState.ACTIVE
            entity.push_available(msg)
        if increment:
            self._save(entity.path, msg)

    def _remove(self, entity: Entity, msg: StoredMessage) -> None:
        if msg.lock_token is not None:
            self._locks.pop(msg.lock_token, None)
        entity.messages.pop(msg.seq, None)
        self._delete(entity.path, msg.seq)

    def _dead_letter(self, entity: Entity, msg: StoredMessage, reason: str | None, description: str | None) -> None:
        self._remove(entity, msg)
        dlq = entity.dlq
        if dlq is None:        # already in a DLQ: Azure keeps it there
            return
        msg.lock_token = None
        msg.locked_until = 0.0
        msg.deferred = False
        msg.state = MessageState.ACTIVE
        msg.dead_letter_reason = reason
        msg.dead_letter_description = description
        msg.dead_letter_source = entity.path
        msg.expires_at = None
        dlq.messages[msg.seq] = msg
        dlq.push_available(msg)
        self._save(dlq.path, msg)

    def _expire(self, entity: Entity, msg: StoredMessage) -> None:
        if entity.config.dead_letter_on_expiration and not entity.is_dlq:
            self._dead_letter(entity, msg, TTL_REASON, "The message expired and was dead lettered.")
        else:
            self._remove(entity, msg)

    def _save(self, path: str, msg: StoredMessage) -> None:
        if self._journal is not None:
            self._journal.save(path, msg)

    def _delete(self, path: str, seq: int) -> None:
        if self._journal is not None:
            self._journal.delete(path, seq)

    def restore(self, path: str, msg: StoredMessage) -> None:
        """Put back a message loaded from the journal (locks do not survive a restart)."""
        with self._lock:
            try:
                target = self.resolve_any(path)
            except EntityNotFound:
                return
            if msg.state is MessageState.LOCKED:
                msg.state = MessageState.DEFERRED if msg.deferred else MessageState.ACTIVE
            msg.lock_token = None
            target.messages[msg.seq] = msg
            target.seq = max(target.seq, msg.seq)
            if isinstance(target, Entity) and msg.state is MessageState.ACTIVE:
                target.push_available(msg)
                if msg.expires_at is not None:
                    self._timer(msg.expires_at, "ttl", target, msg.seq)
            elif msg.state is MessageState.SCHEDULED:
                self._timer(msg.visible_at, "schedule", target, msg.seq)

    def restore_message_id(self, path: str, message_id: str, at: float) -> None:
        with self._lock:
            try:
                target = self.resolve_target(path)
            except EntityNotFound:
                return
            if self._clock() - at < target.config.duplicate_detection_window:
                target.dup_window[message_id] = at

    def restore_counter(self, path: str, seq: int) -> None:
        with self._lock:
            try:
                target = self.resolve_any(path)
            except EntityNotFound:
                return
            target.seq = max(target.seq, seq)

    def restore_session_state(self, path: str, session_id: str, state: bytes | None) -> None:
        with self._lock:
            try:
                entity = self.resolve(path)
            except EntityNotFound:
                return
            entity.sessions.setdefault(session_id, SessionInfo()).state = state

    # ----------------------------------------------------------------- time
    def tick(self, waiting: Callable[[Any], bool] | None = None) -> TickResult:
        """Apply everything due: scheduled messages, lock expiry, TTL, session lock expiry.

        ``waiting(owner)``: the owner has a receive pending (link credit). Its session lock does not run out while
        that receive waits on a drained session (no available or locked message): as Azure over AMQP, where a
        receiver with more credit than the session has messages keeps the lock until it closes
        (Azure/azure-service-bus#694) and gets no session-lock-lost detach (Azure/azure-uamqp-python#183)."""
        result = TickResult()
        with self._lock:
            now = self._clock()
            while self._timers and self._timers[0][0] <= now:
                _, _, kind, target, key = heapq.heappop(self._timers)
                if kind == "schedule":
                    self._due(target, key, now, result)
                elif kind == "lock":
                    found = self._locks.get(key)
                    if found is not None and found[1].locked_until <= now:
                        self._unlock(found[0], found[1], increment=True)
                        result.changed.add(found[0].path)
                elif kind == "ttl":
                    msg = target.messages.get(key)
                    if msg is not None and msg.state in (MessageState.ACTIVE, MessageState.DEFERRED) and \
                            msg.expires_at is not None and msg.expires_at <= now:
                        self._expire(target, msg)
                        if target.dlq is not None and target.config.dead_letter_on_expiration:
                            result.changed.add(target.dlq.path)
            for entity in self._all_entities(include_dlq=False):
                if not entity.requires_session:
                    continue
                for sid, info in entity.sessions.items():
                    if info.owner is not None and info.locked_until <= now:
                        if waiting is not None and waiting(info.owner) and self._drained(entity, sid):
                            info.locked_until = now + entity.config.lock_duration
                            continue
                        result.lost_sessions.append((info.owner, entity.path, sid))
                        self._end_session(entity, sid, info)
                        result.changed.add(entity.path)
        return result

    def _due(self, target: Entity | Topic, seq: int, now: float, result: TickResult) -> None:
        msg = target.messages.get(seq)
        if msg is None or msg.state is not MessageState.SCHEDULED:
            return
        if isinstance(target, Topic):
            del target.messages[seq]
            self._delete(target.path, seq)
            item = Incoming(msg.payload, msg.raw, msg.message_id, msg.session_id, msg.ttl, None, msg.attributes)
            result.changed.update(self._fan_out(target, item, now))
            return
        self._activate_new(target, msg, now)
        target.push_available(msg)
        self._save(target.path, msg)
        result.changed.add(target.path)

    # ----------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        with self._lock:
            entities: dict[str, dict[str, int]] = {}
            for entity in self._all_entities(include_dlq=False):
                counts = {"active": 0, "dead_letter": 0, "scheduled": 0, "deferred": 0, "locked": 0,
                          "sent": entity.stats.sent, "completed": entity.stats.completed}
                for msg in entity.messages.values():
                    name = {MessageState.ACTIVE: "active", MessageState.DEFERRED: "deferred",
                            MessageState.SCHEDULED: "scheduled", MessageState.LOCKED: "locked"}[msg.state]
                    counts[name] += 1
                assert entity.dlq is not None
                counts["dead_letter"] = len(entity.dlq.messages)
                counts["dead_letter_completed"] = entity.dlq.stats.completed
                counts["dead_letter_locked"] = sum(
                    1 for m in entity.dlq.messages.values() if m.state is MessageState.LOCKED
                )
                entities[entity.path] = counts
            for topic in self._topics.values():
                entities[topic.path] = {"active": 0, "dead_letter": 0, "scheduled": len(topic.messages),
                                        "deferred": 0, "locked": 0, "sent": topic.stats.sent, "completed": 0}
            return {"entities": entities}
