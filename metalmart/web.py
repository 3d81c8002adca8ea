"""Helpers shared by the HTTP services: JSON errors, health and readiness, running an app until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from metalmart.db import Opener, Unavailable
from metalmart.services import probe

log = logging.getLogger("metalmart.web")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_response(data: Any, status: int = 200) -> web.Response:
    """`data` as a JSON answer, written by orjson (C: a fraction of the standard library's cost a request)."""
    return web.Response(body=orjson.dumps(data, default=_default), status=status, content_type="application/json")


def error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    return json_response(body, status=status)


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
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # what orjson refuses and Python's parser may take (an integer beyond 64 bits, NaN): asked again below
    try:
        return json.loads(raw)
    except RecursionError:
        message = "body is nested too deeply"
    except ValueError:  # not JSON, not UTF-8, or an integer beyond Python's digit limit
        message = "body is not valid JSON"
    raise web.HTTPBadRequest(text=json.dumps({"error": message, "field": "body"}), content_type="application/json")


OPENER = web.AppKey("opener", Opener)


@web.middleware
async def database_unavailable(request: web.Request, handler: Any) -> web.StreamResponse:
    """A database that does not answer, or has not answered yet since the start, is a 503 the client may retry,
    never a 500 (the probes still answer: the process is alive, and /ready says what it waits for)."""
    opener = request.app.get(OPENER)
    if opener is not None and not opener.ready.is_set() and request.path not in (probe("health"), probe("ready")):
        return error(503, "the database is unavailable; retry shortly", "database")
    try:
        return await handler(request)
    except Unavailable as exc:
        log.warning("database unavailable: %s", exc)
        return error(503, "the database is unavailable; retry shortly", "database")


Check = Callable[[], Awaitable[None]]


async def _failures(checks: dict[str, Check]) -> dict[str, str]:
    async def one(check: Check) -> str | None:
        try:
            await asyncio.wait_for(check(), 2.0)
        except Exception as exc:  # a readiness probe reports, it does not crash
            return str(exc) or type(exc).__name__
        return None

    results = await asyncio.gather(*(one(c) for c in checks.values()))
    return {name: r for name, r in zip(checks, results, strict=True) if r is not None}


def add_probes(app: web.Application, checks: dict[str, Check], reports: dict[str, Check] | None = None) -> None:
    """/health: the process answers. /ready: what this process needs to serve its own requests answered just now
    (`checks`, each named on failure). `reports` are dependencies it can serve without (the broker behind the outbox,
    the services behind a page that shows its own message): shown under "degraded", never a reason to leave the
    Service, so one part restarting does not take the others out of their Services one after another."""
    reports = reports or {}

    async def health(_: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        failures, degraded = await asyncio.gather(_failures(checks), _failures(reports))
        extra = {"degraded": degraded} if degraded else {}
        if failures:
            return json_response({"status": "not ready", "failed": failures, **extra}, status=503)
        return json_response({"status": "ready", "checked": sorted(checks), **extra})

    app.router.add_get(probe("health"), health)
    app.router.add_get(probe("ready"), ready)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop (libuv: the loop, its sockets and its timers in C, a fraction of asyncio's cost an HTTP
    request), or asyncio's own where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(app: web.Application | Callable[[], web.Application], port: int, workers: int = 1) -> None:
    """Run until SIGTERM or SIGINT; aiohttp runs the app's cleanup hooks on the way out. With `workers` > 1 (an app
    factory), that many processes share the port (SO_REUSEPORT: the kernel spreads the connections) under this
    one, which passes SIGTERM/SIGINT on, and ends them all when one dies (its exit code is this one's, so the
    supervisor or Kubernetes restarts the lot)."""
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    from metalmart.settings import bind_host

    if workers <= 1:
        web.run_app(app() if callable(app) and not isinstance(app, web.Application) else app, host=bind_host(),
                    port=port, print=None, handle_signals=True, access_log=None, shutdown_timeout=5.0,
                    reuse_port=False, loop=new_event_loop())
        return
    assert callable(app) and not isinstance(app, web.Application), "workers need an app factory"
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()  # before any event loop, thread or connection exists in this process
        if pid == 0:
            code = 1
            try:
                web.run_app(app(), host=bind_host(), port=port, print=None, handle_signals=True, access_log=None,
                            shutdown_timeout=5.0, reuse_port=True, loop=new_event_loop())
                code = 0
            except BaseException:
                log.exception("order service worker failed")
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)
    log.info("%d worker processes share port %s: %s", workers, port, ", ".join(map(str, children)))
    _supervise(children)


def _supervise(children: list[int]) -> None:
    stopping = False

    def stop(sig: int, _frame: Any = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed: int | None = None  # the exit code of a worker that ended on its own
    while children:
        pid, status = os.wait()
        if pid not in children:
            continue
        children.remove(pid)
        code = os.waitstatus_to_exitcode(status)
        if not stopping:  # one ended on its own: the others go too, and the whole service is restarted
            # killed by signal N: 128 + N, as a shell says it; even a clean exit of one alone is a failure
            failed = code if code > 0 else 128 - code if code < 0 else 1
            log.error("worker %d ended (exit %d); stopping the others", pid, code)
            stop(signal.SIGTERM)
    sys.exit(failed or 0)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
