"""Settings of the consumer (what ``geocatalog-worker run`` flags turn into)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ConsumerSettings:
    reply_queue: str
    request_queue: str | None = None
    request_topic: str | None = None
    request_subscription: str | None = None
    allowed_reply_to: frozenset[str] = field(default_factory=frozenset)
    concurrency: int = 64  # requests in flight per process
    max_receive_batch: int = 32  # messages per receive call (never more than free slots)
    settle_together: bool = False  # a turn's completions in one update-disposition request (non-session)
    idle_receive_wait: float = 1.0  # receive wait while nothing is in flight
    busy_receive_wait: float = 0.05  # receive wait while commands may arrive (bounds settlement latency)
    socket_timeout: float = 0.05  # the SDK's AMQP socket wait; its default 0.2 s is the floor of every receive
    max_lock_renewal_seconds: float = 3600.0  # renew a message's lock for at most this long
    drain_seconds: float = 30.0
    burst_seconds: float | None = None  # stop once every receiver found the entity empty for this long
    sessions: bool = False  # the input entity requires sessions
    max_sessions: int = 8  # sessions processed at once (one receiver thread each)
    session_idle_seconds: float = 5.0  # release a session after this long without messages
    breaker_threshold: int = 5  # consecutive transient failures that open the circuit breaker
    breaker_open_seconds: float = 10.0
    breaker_max_open_seconds: float = 120.0
    # a result body is shortened to stay within this (docs/messages.md "Result size"); 256 KiB Standard tier
    max_result_bytes: int = 240 * 1024

    @property
    def entity(self) -> str:
        if self.request_queue:
            return self.request_queue
        return f"{self.request_topic}/Subscriptions/{self.request_subscription}"

    @property
    def can_reschedule(self) -> bool:
        """Retries go back as scheduled copies only on plain queues: a copy sent to a topic would reach every
        subscription, and a copy of a session message would lose its place in the session's order."""
        return bool(self.request_queue) and not self.sessions

    def reply_destination(self, reply_to: str | None) -> str:
        """Where a request's result goes: its ``reply_to`` when allowed, as configured (entity names are
        case-insensitive, and the contract accepts ``reply_to`` case-insensitively), else ``reply_queue``."""
        if reply_to:
            wanted = reply_to.lower()
            for entity in (self.reply_queue, *sorted(self.allowed_reply_to)):
                if entity.lower() == wanted:
                    return entity
        return self.reply_queue
