"""An AMQP 1.0 broker that the unmodified azure-servicebus SDK uses (see docs/emulator-servicebus.md)."""

from gcw_emulators.servicebus.config import (
    ConfigError,
    CorrelationFilter,
    QueueConfig,
    SubscriptionConfig,
    TopicConfig,
)
from gcw_emulators.servicebus.emulator import EmulatorError, ServiceBusEmulator

__all__ = [
    "ConfigError",
    "CorrelationFilter",
    "EmulatorError",
    "QueueConfig",
    "ServiceBusEmulator",
    "SubscriptionConfig",
    "TopicConfig",
]
