"""The order service (HTTP, port 8084): stores orders and publishes `order.created` through the outbox."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from aiohttp import web
from confluent_kafka.admin import AdminClient

from metalmart import db as dbmod
from metalmart import sessions
from metalmart.orders import (
    SCHEMA,
    NotFound,
    OrderStore,
    StatusConflict,
    ValidationError,
    trace_context,
    validate_new_order,
)
from metalmart.outbox import OutboxRelay
from metalmart.reconcile import Reconciler
from metalmart.settings import OrderSettings
from metalmart.web import MAX_BODY, OPENER, add_probes, database_unavailable, error, json_response, read_json

log = logging.getLogger("metalmart.order")

STORE = web.AppKey("store", OrderStore)
RELAY = web.AppKey("relay", OutboxRelay)


async def create_order(request: web.Request) -> web.Response:
    body = await read_json(request)
    try:
        new = validate_new_order(body)
        session, trace_headers = trace_context(request.headers)
    except ValidationError as exc:
        return error(422, exc.message, exc.field)
    if session or trace_headers:
        new = dataclasses.replace(new, session_key=session, trace_headers=trace_headers)
    order = await request.app[STORE].create(new)
    request.app[RELAY].wake()
    return json_response(order, status=201)


async def list_orders(request: web.Request) -> web.Response:
    try:
        limit = max(1, min(int(request.query.get("limit", "100")), 1000))
    except ValueError:
        return error(400, "limit must be a whole number", "limit")
    return json_response(await request.app[STORE].list(request.query.get("email"), limit))


async def get_order(request: web.Request) -> web.Response:
    try:
        order = await request.app[STORE].get(request.match_info["id"])
    except NotFound:
        return error(404, "order not found", "id")
    order["history"] = await request.app[STORE].history(order["id"])
    return json_response(order)


async def get_status(request: web.Request) -> web.Response:
    try:
        order = await request.app[STORE].get(request.match_info["id"])
    except NotFound:
        return error(404, "order not found", "id")
    return json_response({"id": order["id"], "status": order["status"], "processed_by": order["processed_by"]})


async def put_status(request: web.Request) -> web.Response:
    body = await read_json(request)
    code, answer = await _step(request.app[STORE], request.match_info["id"],
                               body.get("status") if isinstance(body, dict) else None,
                               request.headers.get("X-Processor-Source"), request.headers.get("X-Kafka-Topic"),
                               request.headers.get(sessions.ROUTED_HEADER))
    return json_response(answer, status=code)


MAX_STEPS = 256  # status changes in one batch


async def put_statuses(request: web.Request) -> web.Response:
    """Many status changes in one request (the processor sends those due at once): each is what its own PUT would
    be, in the same group commit, and answered with what that PUT would answer, in order."""
    body = await read_json(request)
    steps = body.get("steps") if isinstance(body, dict) else None
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        return error(422, f"steps must be a list of 1 to {MAX_STEPS} status changes", "steps")

    async def one(i: int, step: Any) -> dict[str, Any]:
        if not isinstance(step, dict) or not isinstance(step.get("id"), str):
            return {"code": 422, "error": "each step needs an order id", "field": f"steps[{i}].id"}
        fields = [step.get(k) for k in ("status", "source", "topic", "routed")]
        if any(v is not None and not isinstance(v, str) for v in fields):
            return {"code": 422, "error": "a step's status, source, topic and routed are strings",
                    "field": f"steps[{i}]"}
        code, answer = await _step(request.app[STORE], step["id"], *fields)
        return {"code": code, **answer}

    return json_response({"results": await asyncio.gather(*(one(i, s) for i, s in enumerate(steps)))})


async def _step(store: OrderStore, order_id: str, status: str | None, source: str | None, topic: str | None,
                routed: str | None) -> tuple[int, dict[str, Any]]:
    """One status change, and the answer its PUT gives: 200 with the order's id, status, whether it moved and who
    processed it; 404; 409 naming where the order is; 422 naming the field."""
    if not isinstance(status, str):
        return 422, {"error": "status is required", "field": "status"}
    try:
        order, changed = await store.set_status(order_id, status, source=source, topic=topic, routed=routed)
    except ValidationError as exc:
        return 422, {"error": exc.message, "field": exc.field}
    except NotFound:
        return 404, {"error": "order not found", "field": "id"}
    except StatusConflict as exc:
        return 409, {"error": str(exc), "field": "status", "current": exc.current}
    return 200, {"id": order["id"], "status": order["status"], "changed": changed,
                 "processed_by": order["processed_by"]}


async def track(request: web.Request) -> web.Response:
    try:
        order = await request.app[STORE].by_token(request.match_info["token"])
    except NotFound:
        return error(404, "no order with that tracking token", "token")
    order["history"] = await request.app[STORE].history(order["id"])
    return json_response(order)


async def stats(request: web.Request) -> web.Response:
    body = await request.app[STORE].stats()
    body["published"] = request.app[RELAY].published
    body["outbox_delivery_failures"] = request.app[RELAY].failed_attempts
    body["group_commit"] = request.app[STORE].group_commit()
    return json_response(body)


class KafkaChecks:
    """The broker and the order topic, asked at most once a second so probes cannot flood the broker: reported on
    /ready (never required: orders wait in the outbox), so a missing topic is named as the reason events wait."""

    def __init__(self, kafka: dict[str, str], topic: str, target: str = "") -> None:
        self.admin = AdminClient({**kafka, "socket.timeout.ms": 1500})
        self.topic = topic
        self.fix = "./run fresh-start" + (f" --target {target}" if target else "")
        self._checked_at = 0.0
        self._topics: set[str] | None = None
        self._error: Exception | None = None

    async def _look(self) -> None:
        if time.monotonic() - self._checked_at < 1.0:
            return
        loop = asyncio.get_running_loop()
        try:
            meta = await loop.run_in_executor(None, lambda: self.admin.list_topics(timeout=1.5))
            self._topics, self._error = set(meta.topics), None
        except Exception as exc:  # reported by broker()
            self._topics, self._error = None, exc
        self._checked_at = time.monotonic()

    async def broker(self) -> None:
        await self._look()
        if self._error is not None:
            raise self._error

    async def outbox(self) -> None:
        await self._look()
        if self._topics is not None and self.topic not in self._topics:
            raise RuntimeError(f"topic {self.topic} does not exist on the broker: new orders' events wait in the "
                               f"outbox until it is created ({self.fix} creates it)")


def build_app(settings: OrderSettings | None = None) -> web.Application:
    settings = settings or OrderSettings()
    app = web.Application(client_max_size=MAX_BODY, middlewares=[database_unavailable])
    database = dbmod.connect(settings.database_url, settings.db_pool_size)

    store = OrderStore(database, settings.kafka.topic, settings.overdue_after_s)
    app[STORE] = store

    reconciler = Reconciler(store, settings.kafka.client_config(), settings.republish_max)
    app[RELAY] = OutboxRelay(database, settings.kafka.client_config(), reconcile=reconciler)

    async def relay() -> None:
        app[RELAY].start()

    # The database may come later than the service (a PostgreSQL pod restarting): the service answers its probes
    # and 503s meanwhile, and starts its relay once the schema is there.
    opener = app[OPENER] = dbmod.Opener(database, SCHEMA, then=relay)

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        await opener.start()
        log.info("order service on port %s, database %s, topic %s on %s; an order not moved %g s after its event was "
                 "published has its record read back from the broker, and its event is published again (at most %d "
                 "times) only when the broker no longer holds it", settings.port, database.dialect,
                 settings.kafka.topic, settings.kafka.brokers, settings.overdue_after_s, settings.republish_max)
        yield
        await opener.stop()
        await app[RELAY].stop()
        reconciler.close()
        await database.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/api/orders", create_order)
    app.router.add_get("/api/orders", list_orders)
    app.router.add_get("/api/orders/stats", stats)
    app.router.add_get("/api/orders/track/{token}", track)
    app.router.add_get("/api/orders/{id}", get_order)
    app.router.add_get("/api/orders/{id}/status", get_status)
    app.router.add_put("/api/orders/{id}/status", put_status)
    app.router.add_post("/api/orders/status", put_statuses)
    # The broker is reported, not required: orders are stored while it restarts and the outbox publishes them later.
    kafka = KafkaChecks(settings.kafka.client_config(), settings.kafka.topic, settings.target)
    add_probes(app, {"database": opener.check}, {"broker": kafka.broker, "outbox": kafka.outbox})
    return app
