"""The order service's HTTP contract, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
    assert ready["checked"] == ["broker", "database"]
