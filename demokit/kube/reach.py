"""Reaching a target's broker and services from this machine: on `local` at their own ports; on a cluster through
port-forwards this process opens through the Kubernetes API (no kubectl, nothing to start by hand). The broker's
external listener is advertised as 127.0.0.1:<kafka_external_port>, so its forward listens on exactly that port."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from demokit.kube import portforward
from demokit.local.localstack import LocalStack
from demokit.targets import Target
from metalmart import services as table

BROKER = "kafka"


@dataclass(frozen=True)
class Endpoints:
    bootstrap: str | None
    urls: dict[str, str]  # by command: order, catalogue, ...

    def url(self, command: str) -> str:
        return self.urls[command]


@contextlib.contextmanager
def endpoints(target: Target, broker: bool = True, services: tuple[str, ...] = ("order", "catalogue"),
              ) -> Iterator[Endpoints]:
    """The target's broker (when `broker`) and the services named by command, reachable from here while open."""
    if target.kind == "local":
        stack = LocalStack(target)
        yield Endpoints(stack.bootstrap if broker else None,
                        {c: stack.url(table.by_command(c).name) for c in services})
        return
    wanted: dict[str, tuple[int, int]] = {}
    if broker:
        wanted[BROKER] = (int(target.get("kafka_external_listener_port")), int(target.get("kafka_external_port")))
    for command in services:
        service = table.by_command(command)
        wanted[service.name] = (service.port, 0)
    with portforward.tunnels(target, wanted) as local:
        yield Endpoints(f"127.0.0.1:{local[BROKER]}" if broker else None,
                        {c: f"http://127.0.0.1:{local[table.by_command(c).name]}" for c in services})
