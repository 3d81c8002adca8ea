"""Orders through order service → outbox → Kafka → processor → shipped, with a real broker and both databases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from demokit.errors import UserError
from demokit.kafka import ensure_topic
from demokit.probes import holds, until
from tests.helpers import AppStack, Broker, KafkaBroker, TansuBroker, order_body, post_orders, read_topic, request, sql

pytestmark = pytest.mark.stack  # brokers, databases, the app


def _emails(n: int) -> list[str]:
    domains = ("metalbear.com", "example.org", "customer.io")
    return [f"user{i}-{uuid.uuid4().hex[:4]}@{domains[i % 3]}" for i in range(n)]


def _shipped_once(database_url: str, ids: set[str]) -> None:
    rows = sql(database_url, "SELECT order_id, COUNT(*) AS n FROM order_status_history WHERE status = 'shipped'"
                             " GROUP BY order_id")
    counts = {r["order_id"]: int(r["n"]) for r in rows}
    assert set(counts) == ids, f"{len(ids - set(counts))} orders never shipped"
    assert set(counts.values()) == {1}, "an order was shipped more than once"


def test_500_orders_ship_exactly_once_with_header_and_key(broker: Broker, database_url: str, log_dir: Path) -> None:
    stack = AppStack(broker.bootstrap, database_url, log_dir).start()
    try:
        emails = _emails(500)
        orders = post_orders(stack.base, emails)
        stack.wait_shipped(500, timeout=120)
        _shipped_once(database_url, {o["id"] for o in orders})

        by_id = {o["id"]: o["customer_email"] for o in orders}
        messages = read_topic(broker.bootstrap, stack.topic, 500)
        assert len(messages) == 500
        for msg in messages:
            key = msg.key().decode()
            assert dict(msg.headers())["customer_email"].decode() == by_id[key]
            assert json.loads(msg.value())["customer_email"] == by_id[key]
        assert stack.stats()["processed_by"] == {"cluster": 500, "mirrord": 0}
    finally:
        stack.stop()


def test_processor_killed_midway_loses_no_order_and_leaves_none_stuck(
    broker: Broker, database_url: str, log_dir: Path
) -> None:
    stack = AppStack(broker.bootstrap, database_url, log_dir, concurrency=16).start()
    try:
        orders = post_orders(stack.base, _emails(300))
        until(lambda: _at_least_shipped(stack, 40), 60, "some orders shipped")
        assert stack.processor.stop(signal.SIGKILL) == -signal.SIGKILL
        shipped_before = stack.stats()["by_status"].get("shipped", 0)
        assert shipped_before < 300, "the kill came too late to test anything"
        stack.start_processor()
        stack.wait_shipped(300, timeout=120)
        _shipped_once(database_url, {o["id"] for o in orders})
    finally:
        stack.stop()


def _at_least_shipped(stack: AppStack, n: int) -> None:
    shipped = stack.stats()["by_status"].get("shipped", 0)
    assert shipped >= n, shipped


def test_sigterm_releases_inflight_orders_uncommitted(broker: Broker, tmp_path: Path, log_dir: Path) -> None:
    """Normal mode takes 10 s an order: SIGTERM mid-way must stop at once and leave the work to the next owner."""
    stack = AppStack(broker.bootstrap, f"sqlite:///{tmp_path / 'db.sqlite'}", log_dir, demo=False).start()
    try:
        orders = post_orders(stack.base, _emails(5))
        until(lambda: _inflight(stack, 5), 30, "5 orders in flight")
        assert stack.processor.stop(signal.SIGTERM, timeout=8) == 0
        assert "released 5 in-flight order(s) uncommitted" in stack.processor.log()
        stack.processor_env["DEMO_MODE"] = "true"
        stack.start_processor()
        stack.wait_shipped(5, timeout=60)
        _shipped_once(stack.database_url, {o["id"] for o in orders})
    finally:
        stack.stop()


def _inflight(stack: AppStack, n: int) -> None:
    assert stack.processor_health()["inflight"] == n


def test_malformed_message_is_logged_counted_and_skipped(broker: Broker, tmp_path: Path, log_dir: Path) -> None:
    stack = AppStack(broker.bootstrap, f"sqlite:///{tmp_path / 'db.sqlite'}", log_dir, partitions=1).start()
    try:
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        producer.produce(stack.topic, key=b"x", value=b"{this is not json", headers={"customer_email": b"x@y.z"})
        producer.flush(10)
        orders = post_orders(stack.base, _emails(3))
        stack.wait_shipped(3)
        health = stack.processor_health()
        assert health["malformed"] == 1
        assert health["received"] == 4
        assert "skipping malformed message" in stack.processor.log()
        _shipped_once(stack.database_url, {o["id"] for o in orders})
    finally:
        stack.stop()


@pytest.mark.parametrize("kind", [KafkaBroker, TansuBroker], ids=["apache", "tansu"])
def test_orders_answered_while_the_broker_is_down_are_published_when_it_is_back(
    database_url: str, log_dir: Path, kind: type[Broker]
) -> None:
    broker = kind(log_dir).start()
    stack = AppStack(broker.bootstrap, database_url, log_dir).start(processor=False)
    try:
        broker.stop()
        with ThreadPoolExecutor(8) as pool:  # a burst of orders while the broker is down
            during = list(pool.map(lambda e: request("POST", f"{stack.base}/api/orders", order_body(e)),
                                   _emails(30)))
        assert {code for code, _ in during} == {201}
        assert stack.stats()["outbox_unpublished"] == 30
        # The outage lasts until the relay's deliveries have timed out: it then starts a new producer session and
        # sends them again, which is what must reach the broker once it is back.
        until(lambda: holds(stack.stats()["outbox_delivery_failures"] >= 30), 60, "the relay's deliveries timed out")
        # Tansu keeps topics in memory: after a restart the topic must be created again (unless the relay's producer
        # made it first, with Tansu's own partition count). Apache Kafka keeps it.
        broker.start()
        if stack.topic not in AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics:
            try:
                ensure_topic(broker.bootstrap, stack.topic, 3)
            except UserError as exc:  # the relay's producer made it in between, with Tansu's own count
                assert "cannot take partitions away" in str(exc), exc
        until(lambda: _outbox_empty(stack), 60, "outbox drained")
        keys = [m.key().decode() for m in read_topic(broker.bootstrap, stack.topic, 30)]
        assert sorted(keys) == sorted(o["id"] for _, o in during)
    finally:
        stack.stop()
        broker.stop()


def _outbox_empty(stack: AppStack) -> None:
    assert stack.stats()["outbox_unpublished"] == 0


def test_an_event_the_broker_lost_is_published_again_and_ships_once(database_url: str, log_dir: Path) -> None:
    """A broker that acknowledged events and then lost its storage (Tansu's memory, as the `local` target's broker
    when it is killed): the orders stay pending past the bound, the reconciler reads their records back, finds them
    gone and publishes their events again, once each and by one replica only (on PostgreSQL two order services share
    the database), and they ship once."""
    broker = TansuBroker(log_dir).start()
    stack = AppStack(broker.bootstrap, database_url, log_dir, order_env={"ORDER_REPUBLISH_AFTER_S": "2"})
    stack.start(processor=False)
    replica = stack.replica()[0] if database_url.startswith("postgresql") else None
    try:
        orders = post_orders(stack.base, _emails(6))
        until(lambda: _outbox_empty(stack), 30, "events published (acknowledged by the broker)")
        broker.restart(signal.SIGKILL)  # its memory storage starts empty
        if stack.topic not in AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics:
            ensure_topic(broker.bootstrap, stack.topic, 3)  # unless the relay's producer made it first
        stack.start_processor()
        stack.wait_shipped(6, timeout=90)
        stats = stack.stats()
        assert stats["republished"] == 6, "each lost event published again, once, by one replica"
        assert stats["overdue"] == 0
        _shipped_once(stack.database_url, {o["id"] for o in orders})
        log = stack.order.log() + (replica.log() if replica else "")
        assert log.count("publishing again") >= 1 and "whose event the broker no longer holds" in log
    finally:
        if replica is not None:
            replica.stop()
        stack.stop()
        broker.stop()


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_order_service_workers_share_the_port_and_one_relay_ships_each_order_once(
    broker: Broker, postgres: object, log_dir: Path
) -> None:
    """ORDER_WORKERS=2: two processes answer on one port, the outbox is relayed once (the advisory lock), every
    order ships exactly once; one worker killed takes the service down with a non-zero exit (its supervisor
    restarts the whole), and SIGTERM stops both."""
    database_url = postgres.new_database()  # type: ignore[attr-defined]
    stack = AppStack(broker.bootstrap, database_url, log_dir, order_env={"ORDER_WORKERS": "2"}).start()
    try:
        assert stack.order.popen is not None
        workers = _children(stack.order.popen.pid)
        assert len(workers) == 2, workers
        orders = post_orders(stack.base, _emails(300), workers=32)
        stack.wait_shipped(300, timeout=120)
        _shipped_once(database_url, {o["id"] for o in orders})
        messages = read_topic(broker.bootstrap, stack.topic, 300)
        assert len(messages) == len({m.key() for m in messages}) == 300, "each event published once"
        log = stack.order.log()
        assert "2 worker processes share port" in log
        os.kill(workers[0], signal.SIGKILL)
        assert stack.order.popen.wait(30) != 0
        assert not any(Path(f"/proc/{w}").exists() for w in workers), "no worker outlives the service"
    finally:
        stack.stop()


def test_order_service_workers_on_sqlite_are_refused_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "metalmart", "order"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ORDER_WORKERS": "2", "DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}",
                               "PORT": "1"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "metalmart order: ORDER_WORKERS=2 needs PostgreSQL (DATABASE_URL=postgresql://…): on SQLite each process "
        "would relay the outbox itself; use ORDER_WORKERS=1"]
