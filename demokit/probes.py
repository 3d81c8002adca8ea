"""Bounded readiness probes (tenacity): poll until a thing answers or the deadline passes, never a bare sleep."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_delay,
    wait_exponential,
)

from demokit.errors import UserError


class NotReady(Exception):
    pass


def until(check: Callable[[], Any], timeout: float, what: str, max_interval: float = 0.5) -> Any:
    """Call `check` until it returns without raising; raise NotReady(what, last error) after `timeout` s. A UserError
    from `check` is final (the user has to fix something) and passes through at once."""
    try:
        for attempt in Retrying(
            stop=stop_after_delay(timeout),
            wait=wait_exponential(multiplier=0.02, max=max_interval),
            retry=retry_if_exception_type(Exception) & retry_if_not_exception_type(UserError),
        ):
            with attempt:
                return check()
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise NotReady(f"{what} not ready after {timeout:g} s: {last}") from last
    return None


def holds(condition: bool) -> None:
    """For `until(lambda: holds(...))`: a condition that is not true yet is one more attempt."""
    if not condition:
        raise NotReady("not yet")


def http_ok(url: str, timeout: float = 1.0) -> dict[str, Any]:
    """GET url; 2xx → parsed JSON (or {}), anything else raises."""
    import json

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = resp.read()
    try:
        return json.loads(body) if body else {}
    except ValueError:
        return {}


def wait_http(url: str, timeout: float) -> dict[str, Any]:
    return until(lambda: http_ok(url), timeout, url)


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def broker_answers(bootstrap: str, timeout: float = 2.0) -> None:
    from confluent_kafka.admin import AdminClient

    AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000), "log_level": 0}).list_topics(
        timeout=timeout
    )


def wait_broker(bootstrap: str, timeout: float) -> None:
    until(lambda: broker_answers(bootstrap), timeout, f"Kafka broker at {bootstrap}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


