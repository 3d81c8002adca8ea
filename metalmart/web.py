"""Helpers shared by the HTTP services: JSON errors, health and readiness, running an app until SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("metalmart.web")


def error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    return web.json_response(body, status=status)


async def read_json(request: web.Request) -> Any:
    try:
        return await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body is not valid JSON", "field": "body"}), content_type="application/json"
        ) from None


def add_probes(app: web.Application, checks: dict[str, Callable[[], Awaitable[None]]]) -> None:
    """/health: the process answers. /ready: every dependency answered just now (each check named on failure)."""

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        failures = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), 2.0)
            except Exception as exc:  # a readiness probe reports, it does not crash
                failures[name] = str(exc) or type(exc).__name__
        if failures:
            return web.json_response({"status": "not ready", "failed": failures}, status=503)
        return web.json_response({"status": "ready", "checked": sorted(checks)})

    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)


def serve(app: web.Application, port: int) -> None:
    """Run until SIGTERM or SIGINT; aiohttp runs the app's cleanup hooks on the way out."""
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    from metalmart.settings import bind_host

    web.run_app(app, host=bind_host(), port=port, print=None, handle_signals=True, access_log=None,
                shutdown_timeout=5.0, reuse_port=False)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
