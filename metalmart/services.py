"""The table of services (services.yml beside this module), for the app and for the automation."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

TABLE = Path(__file__).with_name("services.yml")


@dataclass(frozen=True)
class Service:
    name: str
    command: str
    env: tuple[str, ...]
    port: int = 0

    @property
    def reads_demo_mode(self) -> bool:
        return "DEMO_MODE" in self.env


@functools.cache
def _table() -> dict[str, object]:
    import yaml

    return yaml.safe_load(TABLE.read_text())


def services() -> tuple[Service, ...]:
    """The long-running services, in the order they start."""
    return tuple(Service(s["name"], s["command"], tuple(s["env"]), int(s["port"]))
                 for s in _table()["services"])  # type: ignore[index, union-attr]


def jobs() -> tuple[Service, ...]:
    return tuple(Service(s["name"], s["command"], tuple(s["env"])) for s in _table()["jobs"])  # type: ignore[index, union-attr]


def by_command(command: str) -> Service:
    return next(s for s in services() + jobs() if s.command == command)


def by_name(name: str) -> Service:
    return next(s for s in services() + jobs() if s.name == name)


def probe(kind: str) -> str:
    """The path of the `health` or `ready` endpoint every HTTP service serves."""
    return str(_table()["probes"][kind])  # type: ignore[index]


def local_url(command: str) -> str:
    """The service on this machine at its own port (the app's defaults)."""
    return f"http://127.0.0.1:{by_command(command).port}"
