"""A stand-in order service for measuring the load generator: answers POST /api/orders with 201 after a fixed
delay, and remembers the e-mails it saw (GET /_emails; GET /api/orders/stats counts them as pending). Runs as its
own process so it does not share the generator's event loop: `python -m benchmarks.stub --port 18084 --delay-ms 20`.
With `--reuse-port`, several stubs share one port (the kernel spreads the connections), for rates one process cannot
answer; each remembers only its own e-mails."""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web


def build(delay_s: float) -> web.Application:
    emails: list[str] = []

    async def create(request: web.Request) -> web.Response:
        body = await request.read()
        if delay_s:
            await asyncio.sleep(delay_s)
        emails.append(json.loads(body).get("customer_email", ""))
        return web.Response(status=201, body=b'{"status":"pending"}', content_type="application/json")

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def seen(_: web.Request) -> web.Response:
        return web.json_response(emails)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"by_status": {"pending": len(emails)}, "processed_by": {"cluster": 0, "mirrord": 0}})

    app = web.Application()
    app.router.add_post("/api/orders", create)
    app.router.add_get("/health", health)
    app.router.add_get("/_emails", seen)
    app.router.add_get("/api/orders/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--reuse-port", action="store_true", help="share the port with other stubs")
    args = parser.parse_args()
    web.run_app(build(args.delay_ms / 1000), host="127.0.0.1", port=args.port, print=None, access_log=None,
                backlog=4096, reuse_port=args.reuse_port or None)


if __name__ == "__main__":
    main()
