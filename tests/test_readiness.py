"""What a restarting part does to the others: a service that starts before its database waits for it (no crash loop),
and readiness never cascades (the broker away keeps the order service in its Service; the order service and the
catalogue away keep the storefront in its NodePort, where it shows its own message)."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from demokit.probes import free_port, holds, http_ok, until
from tests.helpers import Broker, KafkaBroker, Postgres, order_body, request, service


def _ready(url: str) -> tuple[int, dict]:
    return request("GET", f"{url}/ready")


def _waited(url: str) -> float:
    code, body = _ready(url)
    found = re.search(r"waiting for the database for (\d+) s", body.get("failed", {}).get("database", ""))
    return float(found.group(1)) if code == 503 and found else 0.0


@pytest.mark.slow
def test_order_and_catalogue_wait_for_a_database_that_comes_late(broker: Broker, log_dir: Path) -> None:
    """They used to exit after 15 s without their database: a PostgreSQL restart put them in CrashLoopBackOff."""
    pg = Postgres(log_dir)  # made, not started yet: nothing listens on its port
    database = pg.url()
    ports = {"order": free_port(), "catalogue": free_port()}
    procs = [service(name, {"DATABASE_URL": database, "PORT": str(port), "KAFKA_BROKERS": broker.bootstrap,
                            "KAFKA_TOPIC": f"late-{uuid.uuid4().hex[:6]}"}, log_dir).start()
             for name, port in ports.items()]
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        for name, url in urls.items():
            until(lambda u=url: holds(_waited(u) > 20), 60, f"{name} waiting longer than it used to live")
            assert request("GET", f"{url}/health")[0] == 200, "alive, so the kubelet does not restart it"
        assert all(p.alive() for p in procs)
        assert request("POST", f"{urls['order']}/api/orders", order_body("early@metalbear.com"))[0] == 503
        pg.start()
        for name, url in urls.items():
            until(lambda u=url: http_ok(f"{u}/ready"), 60, f"{name} ready once the database is back")
        code, order = request("POST", f"{urls['order']}/api/orders", order_body("late@metalbear.com"))
        assert code == 201 and order["status"] == "pending"
        assert request("GET", f"{urls['catalogue']}/api/products")[0] == 200
    finally:
        for proc in procs:
            proc.stop()
        pg.stop()


def test_a_broker_restart_keeps_the_order_service_ready_and_taking_orders(log_dir: Path, tmp_path: Path) -> None:
    own = KafkaBroker(log_dir).start()
    port = free_port()
    order = service("order", {"DATABASE_URL": f"sqlite:///{tmp_path / 'o.db'}", "PORT": str(port),
                              "KAFKA_BROKERS": own.bootstrap, "KAFKA_TOPIC": "order.created"}, log_dir).start()
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: http_ok(f"{url}/ready"), 30, "order service")
        own.stop()
        until(lambda: holds("broker" in _ready(url)[1].get("degraded", {})), 30, "the broker reported away")
        code, body = _ready(url)
        assert code == 200 and body["checked"] == ["database"], body
        assert request("POST", f"{url}/api/orders", order_body("during@metalbear.com"))[0] == 201, \
            "orders wait in the outbox while the broker is away"
    finally:
        order.stop()
        own.stop()


def test_the_storefront_stays_ready_and_says_so_itself_when_its_services_are_away(log_dir: Path) -> None:
    port, gone = free_port(), free_port()
    front = service("storefront", {"PORT": str(port), "ORDER_SERVICE_URL": f"http://127.0.0.1:{gone}",
                                   "CATALOGUE_URL": f"http://127.0.0.1:{gone}"}, log_dir).start()
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: http_ok(f"{url}/health"), 30, "storefront")
        code, body = _ready(url)
        assert code == 200 and set(body["degraded"]) == {"order", "catalogue"}, body
        try:
            urllib.request.urlopen(f"{url}/", timeout=10)
            raise AssertionError("the page should say the catalogue is away")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503 and "catalogue" in exc.read().decode().lower(), "its own message, not a refusal"
    finally:
        front.stop()
