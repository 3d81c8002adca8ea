"""The order service's HTTP contract, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import AppStack, Broker, order_body, request, sql


@pytest.fixture
def stack(broker: Broker, database_url: str, log_dir: Path) -> Iterator[AppStack]:
    s = AppStack(broker.bootstrap, database_url, log_dir).start(processor=False)
    yield s
    s.stop()


def _counts(url: str) -> tuple[int, int]:
    orders = sql(url, "SELECT COUNT(*) AS n FROM orders")[0]["n"]
    outbox = sql(url, "SELECT COUNT(*) AS n FROM outbox")[0]["n"]
    return int(orders), int(outbox)


BAD = [
    ("malformed JSON", None, b"{not json", 400, "body"),
    ("not an object", [1, 2], None, 422, "body"),
    ("invalid e-mail", {"customer_email": "not-an-email"}, None, 422, "customer_email"),
    ("no items", {"items": []}, None, 422, "items"),
    ("quantity below 1", {"items": [{"product_id": "p", "quantity": 0, "price": 1}]}, None, 422, "items[0].quantity"),
    ("negative price", {"items": [{"product_id": "p", "quantity": 1, "price": -1}]}, None, 422, "items[0].price"),
    ("missing city", {"shipping_address": {"street": "x", "zip_code": "1", "country": "GB"}}, None, 422,
     "shipping_address.city"),
    ("quantity of 10**30", {"items": [{"product_id": "p", "quantity": 10**30, "price": 1}]}, None, 422,
     "items[0].quantity"),
    ("price beyond a million", {"items": [{"product_id": "p", "quantity": 1, "price": 10**7}]}, None, 422,
     "items[0].price"),
    ("a NUL in the name", {"customer_name": "Ada\u0000"}, None, 422, "customer_name"),
]


@pytest.mark.parametrize(("case", "patch", "raw", "status", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_naming_the_field_and_nothing_is_written(
    stack: AppStack, case: str, patch: object, raw: bytes | None, status: int, field: str
) -> None:
    body: object = None
    if raw is None:
        body = {**order_body("ok@metalbear.com"), **patch} if isinstance(patch, dict) else patch
    code, answer = request("POST", f"{stack.base}/api/orders", body, raw=raw)
    assert code == status, answer
    assert answer["field"] == field
    assert _counts(stack.database_url) == (0, 0)


def test_an_order_is_stored_with_its_event_and_moves_forward_only(stack: AppStack) -> None:
    code, order = request("POST", f"{stack.base}/api/orders", order_body("ada+1@metalbear.com", quantity=3,
                                                                          price=19.99))
    assert code == 201
    assert order["status"] == "pending"
    assert order["total_amount"] == 59.97
    assert order["order_number"].startswith("ORD-")
    assert order["tracking_token"]
    assert _counts(stack.database_url) == (1, 1)
    event = sql(stack.database_url, "SELECT msg_key, headers FROM outbox")[0]
    assert event["msg_key"] == order["id"]
    assert '"customer_email": "ada+1@metalbear.com"' in event["headers"]

    base = f"{stack.base}/api/orders/{order['id']}"
    assert request("GET", base)[1]["customer_email"] == "ada+1@metalbear.com"
    assert request("GET", f"{stack.base}/api/orders/track/{order['tracking_token']}")[1]["id"] == order["id"]
    listed = request("GET", f"{stack.base}/api/orders?email=ada%2B1@metalbear.com")[1]
    assert [o["id"] for o in listed] == [order["id"]]

    hdrs = {"X-Processor-Source": "mirrord-kafka", "X-Kafka-Topic": "mirrord-tmp-abc-order.created"}
    code, moved = request("PUT", f"{base}/status", {"status": "processing"}, hdrs)
    assert (code, moved["changed"], moved["processed_by"]) == (200, True, "mirrord")
    code, again = request("PUT", f"{base}/status", {"status": "processing"}, hdrs)
    assert (code, again["changed"]) == (200, False)
    code, back = request("PUT", f"{base}/status", {"status": "pending"})
    assert (code, back["current"]) == (409, "processing")
    code, bad = request("PUT", f"{base}/status", {"status": "teleported"})
    assert (code, bad["field"]) == (422, "status")
    assert request("GET", f"{base}/status")[1]["status"] == "processing"
    assert request("GET", f"{stack.base}/api/orders/nope/status")[0] == 404

    stats = request("GET", f"{stack.base}/api/orders/stats")[1]
    assert stats["by_status"] == {"processing": 1}
    assert stats["processed_by"] == {"cluster": 0, "mirrord": 1}
    detail = request("GET", base)[1]
    assert detail["source_topic"] == "mirrord-tmp-abc-order.created"
    assert [h["status"] for h in detail["history"]] == ["pending", "processing"]


def test_health_and_readiness(stack: AppStack) -> None:
    assert request("GET", f"{stack.base}/health") == (200, {"status": "ok"})
    code, ready = request("GET", f"{stack.base}/ready")
    assert code == 200
    assert ready["checked"] == ["database"], "the broker is reported, not required (orders wait in the outbox)"


async def test_a_taken_order_number_is_drawn_again_and_the_order_is_stored(
        broker: Broker, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Order numbers are 32 random bits a day: two orders can draw the same one. The second is stored under a new
    number (201), not refused with a 500."""
    from aiohttp.test_utils import TestClient, TestServer

    from metalmart import orders
    from metalmart.order_service import build_app
    from metalmart.settings import KafkaSettings, OrderSettings

    drawn = iter(["ORD-20261126-AAAAAAAA", "ORD-20261126-AAAAAAAA", "ORD-20261126-BBBBBBBB"])
    monkeypatch.setattr(orders, "new_order_number", lambda _stamp: next(drawn))
    settings = OrderSettings(port=0, database_url=database_url,
                             kafka=KafkaSettings(brokers=broker.bootstrap, topic="collisions"))
    async with TestClient(TestServer(build_app(settings))) as client:
        answers = []
        for email in ("first@metalbear.com", "second@metalbear.com"):
            response = await client.post("/api/orders", json=order_body(email))
            answers.append((response.status, (await response.json())["order_number"]))
        stats = await (await client.get("/api/orders/stats")).json()
    assert answers == [(201, "ORD-20261126-AAAAAAAA"), (201, "ORD-20261126-BBBBBBBB")]
    assert stats["total"] == 2 and stats["outbox_unpublished"] + stats["published"] == 2


@pytest.mark.parametrize(("case", "raw", "status"), [
    ("nested 100,000 levels deep", b"[" * 100_000 + b"]" * 100_000, 400),
    ("an integer of 5,000 digits", b'{"items": [{"quantity": ' + b"1" * 5000 + b"}]}", 400),
    ("a body over 1 MiB", b'{"customer_name": "' + b"x" * (1024 * 1024 + 10) + b'"}', 413),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bodies_a_parser_cannot_follow_are_refused_naming_the_body(
        stack: AppStack, case: str, raw: bytes, status: int) -> None:
    code, answer = request("POST", f"{stack.base}/api/orders", raw=raw)
    assert (code, answer["field"]) == (status, "body"), answer
    assert _counts(stack.database_url) == (0, 0)


_REFUSE = {  # a rule the database enforces and validation does not know: one order of a batch is refused
    "postgresql": ["ALTER TABLE orders ADD CONSTRAINT refuse_one CHECK (customer_email <> 'refused@metalbear.com')"],
    "sqlite": ["CREATE TRIGGER refuse_one BEFORE INSERT ON orders WHEN NEW.customer_email = 'refused@metalbear.com'"
               " BEGIN SELECT RAISE(ABORT, 'refused'); END"],
}


async def test_orders_posted_together_share_commits_and_a_refused_one_fails_only_its_own_request(
        broker: Broker, database_url: str) -> None:
    """Group commit: 60 orders posted at once take fewer transactions than orders; each is answered after its own
    commit; the one the database refuses gets the answer it gets alone, and the other 59 are stored with their
    events."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from metalmart.order_service import STORE, build_app
    from metalmart.settings import KafkaSettings, OrderSettings
    from metalmart.web import OPENER

    settings = OrderSettings(port=0, database_url=database_url,
                             kafka=KafkaSettings(brokers=broker.bootstrap, topic="group-commit"))
    app = build_app(settings)
    async with TestClient(TestServer(app)) as client:
        # The schema first: a rule added while the service still migrates would race its CREATE statements.
        await asyncio.wait_for(app[OPENER].ready.wait(), 60)
        store = app[STORE]
        async with store.db.transaction() as tx:
            for statement in _REFUSE[store.db.dialect]:
                await tx.execute(statement)

        async def post(email: str) -> tuple[int, str]:
            response = await client.post("/api/orders", json=order_body(email))
            return response.status, email

        emails = [f"together-{i}@metalbear.com" for i in range(59)]
        emails.insert(30, "refused@metalbear.com")
        answers = await asyncio.gather(*(post(e) for e in emails))
        alone = await post("refused@metalbear.com")
        stats = await (await client.get("/api/orders/stats")).json()
        async with store.db.transaction() as tx:
            stored = {r["customer_email"] for r in await tx.fetchall("SELECT customer_email FROM orders")}
            events = await tx.fetchall("SELECT msg_key FROM outbox")
            ids = {r["id"] for r in await tx.fetchall("SELECT id FROM orders")}

    refused = [code for code, email in answers if email == "refused@metalbear.com"]
    assert refused == [alone[0]] and alone[0] >= 400, (refused, alone)
    assert sorted(code for code, email in answers if email != "refused@metalbear.com") == [201] * 59
    assert stored == set(emails) - {"refused@metalbear.com"}
    assert sorted(e["msg_key"] for e in events) == sorted(ids), "each stored order has its one event"
    commits = stats["group_commit"]["orders"]
    assert commits["requests"] == 61 and commits["transactions"] < 60, commits


async def test_status_changes_asked_together_each_get_their_own_answer(broker: Broker, database_url: str) -> None:
    """Status changes share transactions too; a step forward, the same step again, a step backwards and an unknown
    order asked at once answer 200 changed, 200 unchanged, 409 and 404, and only the real steps are in the
    history."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from metalmart.order_service import STORE, build_app
    from metalmart.settings import KafkaSettings, OrderSettings
    from metalmart.web import OPENER

    settings = OrderSettings(port=0, database_url=database_url,
                             kafka=KafkaSettings(brokers=broker.bootstrap, topic="group-status"))
    app = build_app(settings)
    async with TestClient(TestServer(app)) as client:
        await asyncio.wait_for(app[OPENER].ready.wait(), 60)  # the service answers 503 until its schema is there
        created = [await (await client.post("/api/orders", json=order_body(f"s{i}@metalbear.com"))).json()
                   for i in range(12)]
        ids = [o["id"] for o in created]
        for order_id in ids[:4]:  # these are confirmed already
            for status in ("processing", "confirmed"):
                assert (await client.put(f"/api/orders/{order_id}/status", json={"status": status})).status == 200

        async def put(order_id: str, status: str) -> tuple[int, bool | None]:
            response = await client.put(f"/api/orders/{order_id}/status", json={"status": status},
                                        headers={"X-Processor-Source": "cluster"})
            body = await response.json()
            return response.status, body.get("changed")

        asked = ([(i, "processing") for i in ids[4:]] + [(i, "confirmed") for i in ids[:2]]
                 + [(i, "processing") for i in ids[2:4]] + [("no-such-order", "processing")])
        answers = await asyncio.gather(*(put(i, s) for i, s in asked))
        stats = await (await client.get("/api/orders/stats")).json()
        async with app[STORE].db.transaction() as tx:
            history = await tx.fetchall("SELECT order_id, status FROM order_status_history WHERE status <> 'pending'")

    assert answers == [(200, True)] * 8 + [(200, False)] * 2 + [(409, None)] * 2 + [(404, None)]
    steps = sorted((r["order_id"], r["status"]) for r in history)
    assert steps == sorted([(i, s) for i in ids[:4] for s in ("processing", "confirmed")]
                           + [(i, "processing") for i in ids[4:]])
    commits = stats["group_commit"]["status_changes"]
    assert commits["requests"] == 8 + 13 and commits["transactions"] < commits["requests"], commits


def test_status_changes_in_one_batch_are_each_answered_as_their_own_put_would_be(stack: AppStack) -> None:
    """POST /api/orders/status (the processor's batch of the steps due at once): per step the code and body its own
    PUT gives, in order, the good ones stored whatever the others are; a body that is not a batch is one 422."""
    ids = [request("POST", f"{stack.base}/api/orders", order_body(f"b{i}@metalbear.com"))[1]["id"] for i in range(3)]
    assert request("PUT", f"{stack.base}/api/orders/{ids[2]}/status", {"status": "processing"})[0] == 200
    steps = [{"id": ids[0], "status": "processing", "source": "cluster", "topic": "t", "routed": None},
             {"id": ids[1], "status": "shipped"},                      # a step backwards? no: forward, by two
             {"id": ids[2], "status": "pending"},                      # backwards
             {"id": "no-such-order", "status": "processing"},
             {"id": ids[0], "status": "processing"},                   # the same step again
             {"id": ids[1], "status": "lost"},                         # not a status
             {"id": ids[1], "status": "confirmed", "routed": "not a key"},
             {"status": "processing"}, "not an object"]
    code, answer = request("POST", f"{stack.base}/api/orders/status", {"steps": steps})
    assert code == 200, answer
    got = [(r["code"], r.get("status") or r.get("current") or r.get("field")) for r in answer["results"]]
    alone = []
    for step in steps[:7]:  # what each would have answered alone, asked again now
        c, body = request("PUT", f"{stack.base}/api/orders/{step['id']}/status", {"status": step["status"]},
                          headers={"X-Mirrord-Key": step["routed"]} if step.get("routed") else None)
        alone.append((c, body.get("status") or body.get("current") or body.get("field")))
    assert got[:7] == [(200, "processing"), (200, "shipped"), (409, "processing"), (404, "id"),
                       (200, "processing"), (422, "status"), (422, "X-Mirrord-Key")], got
    assert alone == got[:7], "a batch answers what each PUT answers"
    assert got[7:] == [(422, "steps[7].id"), (422, "steps[8].id")], got
    assert request("POST", f"{stack.base}/api/orders/status", {"steps": []})[1]["field"] == "steps"
    assert request("POST", f"{stack.base}/api/orders/status", {"steps": [{}] * 257})[0] == 422


async def test_the_processor_takes_its_steps_one_put_each_from_an_order_service_without_the_batch() -> None:
    """An older order service (a rolling update) has no POST /api/orders/status: the processor asks it once, then
    sends each step as its own PUT with its headers, and reads each answer as before (moved, already further, gone)."""
    import asyncio

    import aiohttp
    from aiohttp import web

    from demokit.probes import free_port
    from metalmart.processor import GiveUp, OrderProcessor, _Due
    from metalmart.settings import KafkaSettings, ProcessorSettings

    asked: list[tuple[str, str, str | None]] = []

    async def put(req: web.Request) -> web.Response:
        order = req.match_info["id"]
        asked.append((req.method, order, req.headers.get("X-Processor-Source")))
        if order == "gone":
            return web.json_response({"error": "order not found", "field": "id"}, status=404)
        if order == "further":
            return web.json_response({"error": "already shipped", "field": "status", "current": "shipped"},
                                     status=409)
        return web.json_response({"id": order, "status": (await req.json())["status"], "changed": True})

    @web.middleware
    async def seen(req: web.Request, handler: Any) -> web.StreamResponse:
        if req.method == "POST":
            asked.append(("POST", req.path, None))
        return await handler(req)

    older = web.Application(middlewares=[seen])
    older.router.add_put("/api/orders/{id}/status", put)
    runner = web.AppRunner(older)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    processor = OrderProcessor(ProcessorSettings(kafka=KafkaSettings(brokers=f"127.0.0.1:{free_port()}"),
                                                 order_service_url=f"http://127.0.0.1:{port}"))
    processor._http = aiohttp.ClientSession()
    try:
        source = {"X-Processor-Source": "cluster"}
        first = await asyncio.gather(*(processor._call(_Due(o, "processing", source)) for o in ("a", "further")),
                                     processor._call(_Due("gone", "processing", source)), return_exceptions=True)
        assert first[:2] == [("processing", True), ("shipped", False)], first
        assert isinstance(first[2], GiveUp) and "does not know this order" in str(first[2]), first
        later = await processor._call(_Due("b", "confirmed", source))
        assert later == ("confirmed", True)
        assert [a for a in asked if a[0] == "POST"] == [("POST", "/api/orders/status", None)], "asked once"
        assert sorted(a for a in asked if a[0] == "PUT") == [("PUT", o, "cluster") for o in ("a", "b", "further",
                                                                                             "gone")]
    finally:
        await processor._http.close()
        processor.consumer.close()
        await runner.cleanup()
