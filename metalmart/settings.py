"""Service settings, read once from the environment (twelve-factor: the same image runs everywhere)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from metalmart import splittopics
from metalmart.services import by_command, local_url


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default).strip() or default


def bind_host() -> str:
    """Address the HTTP services listen on: all interfaces in a container, 127.0.0.1 for the `local` target."""
    return env_str("HOST", "0.0.0.0")


def env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number; set it to e.g. {default}") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below {minimum}; set it to e.g. {default}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; use true or false")


@dataclass(frozen=True)
class KafkaSettings:
    brokers: str = field(default_factory=lambda: env_str("KAFKA_BROKERS", "127.0.0.1:9092"))
    topic: str = field(default_factory=lambda: env_str("KAFKA_TOPIC", "order.created"))
    # A broker that wants a login (a managed Kafka, or Strimzi with SCRAM): the credentials come from a Secret.
    security_protocol: str = field(default_factory=lambda: env_str("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"))
    sasl_mechanism: str = field(default_factory=lambda: env_str("KAFKA_SASL_MECHANISM", ""))
    sasl_username: str = field(default_factory=lambda: env_str("KAFKA_SASL_USERNAME", ""))
    sasl_password: str = field(default_factory=lambda: env_str("KAFKA_SASL_PASSWORD", ""), repr=False)

    def client_config(self) -> dict[str, str]:
        """What every Kafka client of the app is given: the brokers, and the login when there is one."""
        config = {"bootstrap.servers": self.brokers, "security.protocol": self.security_protocol}
        if self.sasl_username:
            config.update({"sasl.mechanisms": self.sasl_mechanism or "PLAIN", "sasl.username": self.sasl_username,
                           "sasl.password": self.sasl_password})
        return config


# Seconds the processor waits before each step (processing, confirmed, shipped): normally, and with DEMO_MODE.
NORMAL_STEPS = (2.0, 3.0, 5.0)
DEMO_STEPS = (0.2, 0.2, 0.2)


@dataclass(frozen=True)
class OrderSettings:
    port: int = field(default_factory=lambda: env_int("PORT", by_command("order").port, 1))
    database_url: str = field(default_factory=lambda: env_str("DATABASE_URL", "sqlite:///metalmart.db"))
    db_pool_size: int = field(default_factory=lambda: env_int("DB_POOL_SIZE", 16, 1))
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    # The processor's consumer session timeout: how long a crashed processor's partitions wait for a new owner.
    kafka_session_timeout_ms: int = field(default_factory=lambda: env_int("KAFKA_SESSION_TIMEOUT_MS", 10000, 1000))
    republish_after_s: int = field(default_factory=lambda: env_int("ORDER_REPUBLISH_AFTER_S", 0, 0))
    republish_max: int = field(default_factory=lambda: env_int("ORDER_REPUBLISH_MAX", 3, 0))
    # Processes sharing the port (SO_REUSEPORT); the outbox relay stays one, under its PostgreSQL advisory lock.
    workers: int = field(default_factory=lambda: env_int("ORDER_WORKERS", 1, 1))
    # The demo target this service runs on (its inventory's name), for the fixes it names: set by the deploy.
    target: str = field(default_factory=lambda: env_str("METALMART_TARGET", ""))

    def __post_init__(self) -> None:
        if self.workers > 1 and not self.database_url.startswith("postgresql"):
            raise SettingsError(f"ORDER_WORKERS={self.workers} needs PostgreSQL (DATABASE_URL=postgresql://…): on "
                                "SQLite each process would relay the outbox itself; use ORDER_WORKERS=1")

    @property
    def overdue_after_s(self) -> float:
        """How long after its event was published an order may stay pending before the event is published again:
        ORDER_REPUBLISH_AFTER_S, or twice what a processor needs in the worst ordinary case (its group taking a
        crashed member's partitions, then every step at normal speed): 2 × (session timeout + 2 s + 3 s + 5 s),
        40 s with the default 10 s session."""
        if self.republish_after_s:
            return float(self.republish_after_s)
        return 2 * (self.kafka_session_timeout_ms / 1000 + sum(NORMAL_STEPS))


# How long the processor may go without polling before its consumer leaves the group (max.poll.interval.ms): the
# cluster's processor polls every fraction of a second, so librdkafka's 5 minutes only catches a process that hangs;
# a process someone debugs stands still for as long as a breakpoint holds, so it gets 30 minutes. Past either, the
# processor rejoins when it runs again, and takes no message twice (OrderProcessor._accept).
MAX_POLL_INTERVAL_MS = 300_000
DEBUGGED_MAX_POLL_INTERVAL_MS = 1_800_000


def debugger_attached() -> bool:
    """A debugger runs this process: VS Code's debugpy (or its pydevd) is loaded, or a trace function is set."""
    return sys.gettrace() is not None or any(m in sys.modules for m in ("debugpy", "pydevd"))


@dataclass(frozen=True)
class ProcessorSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    group_id: str = field(default_factory=lambda: env_str("KAFKA_GROUP_ID", "order-processor"))
    order_service_url: str = field(default_factory=lambda: env_str("ORDER_SERVICE_URL", local_url("order")))
    demo_mode: bool = field(default_factory=lambda: env_bool("DEMO_MODE", False))
    concurrency: int = field(default_factory=lambda: env_int("PROCESSOR_CONCURRENCY", 1024, 1))
    session_timeout_ms: int = field(default_factory=lambda: env_int("KAFKA_SESSION_TIMEOUT_MS", 10000, 1000))
    max_poll_interval_ms: int = field(default_factory=lambda: env_int(
        "KAFKA_MAX_POLL_INTERVAL_MS", DEBUGGED_MAX_POLL_INTERVAL_MS if debugger_attached() else MAX_POLL_INTERVAL_MS,
        1000))
    health_port: int = field(default_factory=lambda: env_int("PORT", by_command("processor").port, 0))
    # The mirrord operator's temporary-topic names (its kafkaSplittingTopicFormat): who processes, told by the topic.
    split_topic_format: str = field(default_factory=lambda: env_str("KAFKA_SPLIT_TOPIC_FORMAT", "") or
                                    splittopics.DEFAULT)

    def __post_init__(self) -> None:
        if splittopics.problem(self.split_topic_format):
            raise SettingsError(f"KAFKA_SPLIT_TOPIC_FORMAT: {splittopics.problem(self.split_topic_format)}; e.g. "
                                f"{splittopics.DEFAULT}")
        if self.max_poll_interval_ms < self.session_timeout_ms:
            raise SettingsError(f"KAFKA_MAX_POLL_INTERVAL_MS={self.max_poll_interval_ms} is below the session timeout "
                                f"(KAFKA_SESSION_TIMEOUT_MS={self.session_timeout_ms}); set it to at least that")

    @property
    def step_delays(self) -> tuple[float, float, float]:
        """Seconds waited before processing, confirmed and shipped."""
        return DEMO_STEPS if self.demo_mode else NORMAL_STEPS


@dataclass(frozen=True)
class CatalogueSettings:
    port: int = field(default_factory=lambda: env_int("PORT", by_command("catalogue").port, 1))
    database_url: str = field(default_factory=lambda: env_str("DATABASE_URL", "sqlite:///metalmart.db"))


@dataclass(frozen=True)
class StorefrontSettings:
    port: int = field(default_factory=lambda: env_int("PORT", by_command("storefront").port, 1))
    order_service_url: str = field(default_factory=lambda: env_str("ORDER_SERVICE_URL", local_url("order")))
    catalogue_url: str = field(default_factory=lambda: env_str("CATALOGUE_URL", local_url("catalogue")))
    demo_mode: bool = field(default_factory=lambda: env_bool("DEMO_MODE", False))
