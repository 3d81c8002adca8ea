"""Service settings, read once from the environment (twelve-factor: the same image runs everywhere)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class OrderSettings:
    port: int = field(default_factory=lambda: env_int("PORT", 8084, 1))
    database_url: str = field(default_factory=lambda: env_str("DATABASE_URL", "sqlite:///metalmart.db"))
    db_pool_size: int = field(default_factory=lambda: env_int("DB_POOL_SIZE", 16, 1))
    kafka: KafkaSettings = field(default_factory=KafkaSettings)


@dataclass(frozen=True)
class ProcessorSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    group_id: str = field(default_factory=lambda: env_str("KAFKA_GROUP_ID", "order-processor"))
    order_service_url: str = field(default_factory=lambda: env_str("ORDER_SERVICE_URL", "http://127.0.0.1:8084"))
    demo_mode: bool = field(default_factory=lambda: env_bool("DEMO_MODE", False))
    concurrency: int = field(default_factory=lambda: env_int("PROCESSOR_CONCURRENCY", 256, 1))
    session_timeout_ms: int = field(default_factory=lambda: env_int("KAFKA_SESSION_TIMEOUT_MS", 10000, 1000))
    health_port: int = field(default_factory=lambda: env_int("PORT", 8085, 0))

    @property
    def step_delays(self) -> tuple[float, float, float]:
        """Seconds waited before processing, confirmed and shipped."""
        return (0.2, 0.2, 0.2) if self.demo_mode else (2.0, 3.0, 5.0)


@dataclass(frozen=True)
class CatalogueSettings:
    port: int = field(default_factory=lambda: env_int("PORT", 8082, 1))
    database_url: str = field(default_factory=lambda: env_str("DATABASE_URL", "sqlite:///metalmart.db"))


@dataclass(frozen=True)
class StorefrontSettings:
    port: int = field(default_factory=lambda: env_int("PORT", 8080, 1))
    order_service_url: str = field(default_factory=lambda: env_str("ORDER_SERVICE_URL", "http://127.0.0.1:8084"))
    catalogue_url: str = field(default_factory=lambda: env_str("CATALOGUE_URL", "http://127.0.0.1:8082"))
    demo_mode: bool = field(default_factory=lambda: env_bool("DEMO_MODE", False))
