"""Which entity's dead-letter queue we work on, and where replays go.

Replay target rules (never a topic's other subscribers):

- queue ``Q``: replays go back to ``Q`` (or to ``--replay-queue``).
- subscription ``T/S``: sending to topic ``T`` would hand a copy to *every* subscription whose rule matches,
  so it is refused unless the operator picks one of
  * ``--replay-queue R``: a queue the worker also consumes (``run --request-queue R``);
  * ``--replay-via-topic``: send to ``T`` with application property ``gcw-replay-to = S``; every subscription
    on ``T`` must then carry the rule ``[gcw-replay-to] IS NULL OR [gcw-replay-to] = '<its own name>'``
    (docs/operations.md shows the commands), so only ``S`` receives the replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure.servicebus import ServiceBusClient, ServiceBusReceiveMode, ServiceBusSubQueue


class TargetError(ValueError):
    """The replay target cannot be chosen safely; the message says which option to add."""


@dataclass(frozen=True)
class Entity:
    queue: str | None = None
    topic: str | None = None
    subscription: str | None = None

    def __post_init__(self) -> None:
        if bool(self.queue) == bool(self.topic and self.subscription):
            raise ValueError("an entity is a queue, or a topic with a subscription")

    @property
    def path(self) -> str:
        return self.queue or f"{self.topic}/Subscriptions/{self.subscription}"

    @property
    def dead_letter_path(self) -> str:
        return self.path + "/$DeadLetterQueue"

    def dead_letter_receiver(self, client: ServiceBusClient, *, prefetch_count: int = 0, **kwargs: Any) -> Any:
        """A PEEK_LOCK receiver on the dead-letter sub-queue (never session-enabled, even on session entities)."""
        common: dict[str, Any] = {
            "sub_queue": ServiceBusSubQueue.DEAD_LETTER,
            "receive_mode": ServiceBusReceiveMode.PEEK_LOCK,
            "prefetch_count": prefetch_count,
            **kwargs,
        }
        if self.queue:
            return client.get_queue_receiver(self.queue, **common)
        return client.get_subscription_receiver(self.topic, self.subscription, **common)


@dataclass(frozen=True)
class ReplayTarget:
    queue: str | None = None
    topic: str | None = None
    replay_to: str | None = None  # value of gcw-replay-to when sending to a topic

    def sender(self, client: ServiceBusClient) -> Any:
        if self.queue:
            return client.get_queue_sender(self.queue)
        return client.get_topic_sender(self.topic)

    def describe(self) -> str:
        if self.queue:
            return f"queue {self.queue}"
        return f"topic {self.topic} (gcw-replay-to={self.replay_to})"


def resolve_target(entity: Entity, *, replay_queue: str | None = None, via_topic: bool = False) -> ReplayTarget:
    if replay_queue and via_topic:
        raise TargetError("give either --replay-queue or --replay-via-topic, not both")
    if entity.queue:
        if via_topic:
            raise TargetError("--replay-via-topic only applies to a topic subscription (--request-subscription)")
        return ReplayTarget(queue=replay_queue or entity.queue)
    if replay_queue:
        return ReplayTarget(queue=replay_queue)
    if via_topic:
        return ReplayTarget(topic=entity.topic, replay_to=entity.subscription)
    raise TargetError(
        f"replaying from subscription {entity.path!r} would copy each message to every subscription of topic "
        f"{entity.topic!r}. Give --replay-queue QUEUE (a queue the worker consumes) or --replay-via-topic "
        f"(every subscription must filter on [gcw-replay-to]; see docs/operations.md)"
    )
