"""Helpers shared by the HTTP services: JSON errors, health and readiness, running an app until SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from metalmart.services import probe

log = logging.getLogger("metalmart.web")


def error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    return web.json_response(body, status=status)


MAX_BODY = 1024 * 1024  # bytes a JSON API accepts in one request


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; anything else (too large, not JSON, nested beyond what a parser can follow, an
    integer of thousands of digits) is a 400 or 413 naming the body, never a 500."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_BODY, actual_size=request.content_length or 0, content_type="application/json",
            text=json.dumps({"error": f"body is larger than {MAX_BODY} bytes", "field": "body"})) from None
    try:
        return json.loads(raw)
    except RecursionError:
        message = "body is nested too deeply"
    except ValueError:  # not JSON, not UTF-8, or an integer beyond Python's digit limit
        message = "body is not valid JSON"
    raise web.HTTPBadRequest(text=json.dumps({"error": message, "field": "body"}), content_type="application/json")


@web.middleware
async def database_unavailable(request: web.Request, handler: Any) -> web.StreamResponse:
    """A database that does not answer is a 503 the client may retry, never a 500."""
    from metalmart.db import Unavailable

    try:
        return await handler(request)
    except Unavailable as exc:
        log.warning("database unavailable: %s", exc)
        return error(503, "the database is unavailable; retry shortly", "database")


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

    app.router.add_get(probe("health"), health)
    app.router.add_get(probe("ready"), ready)


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
