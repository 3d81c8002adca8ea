"""`./run metrics --web` in real Chromium against a running `local` stack: the page loads without console errors,
shows the topics and groups, its counters and series move while `./run load` runs, a mirrord session's shipping
shows as a stream of its own, and an unreachable broker is named with the fix (assertions on the DOM, not pixels).

The `local` target has no mirrord operator, so the session is staged the way the operator runs one: a second
processor reads `mirrord-tmp-<id>-order.created`, fed with the events of orders the cluster's processor (stopped for
the moment) did not take. METALMART_SCREENSHOT=PATH saves the page during the load (the README's picture)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from demokit.kafka import create_topic, ensure_topic
from demokit.local.supervise import Supervisor
from demokit.probes import free_port, holds, http_ok, until
from tests.helpers import ROOT, RUN, LocalTarget, order_body, request, service

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SESSION = "mirrord-tmp-t1demo-order.created"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    target = LocalTarget(tmp_path_factory.mktemp("web"))
    assert target.run("fresh-start", "--target", "local").returncode == 0
    yield target
    target.run("teardown", "--target", "local")


@pytest.fixture(scope="module")
def page_url(stack: LocalTarget) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([*RUN, "metrics", "--web", "--target", "local", "--port", str(port)], cwd=ROOT,
                            env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    until(lambda: http_ok(f"{url}data.json"), 30, "the metrics page")
    yield url
    proc.terminate()
    proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is missing; `./run test` installs it (scripts/ensure-test-deps.sh)")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield launched
        launched.close()


def _figure(page: Any, key: str) -> float:
    return float(page.locator(f'[data-figure="{key}"] .value').inner_text())


def test_the_page_shows_the_split_live(stack: LocalTarget, page_url: str, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_url)
    page.wait_for_selector('[data-topic="order.created"]')
    assert page.locator('[data-group="order-processor"]').count() == 1
    assert "DEMO_MODE" in page.inner_text(".facts") and page.locator('[data-filter="order-processor"]').count() == 1
    shipped_before = int(page.locator("[data-total-shipped]").get_attribute("data-total-shipped"))

    load = stack.start("load", "--target", "local", "--rate", "20", "--duration", "16")
    until(lambda: holds(_figure(page, "created") > 0), 30, "orders created/s on the page")
    until(lambda: holds(_figure(page, "shipped: cluster") > 0), 30, "shipped/s by the cluster on the page")
    _stage_session(stack)
    until(lambda: holds(page.locator('[data-figure="shipped: session t1demo"]').count() == 1), 40,
          "the session's own stream on the page")
    load.communicate(timeout=60)
    if os.environ.get("METALMART_SCREENSHOT"):
        page.screenshot(path=os.environ["METALMART_SCREENSHOT"], full_page=True)
    assert page.locator(f'[data-topic="{SESSION}"]').inner_text().count("mirrord session (laptop)") == 1
    assert page.locator("polyline[data-series='created']").count() == 1
    assert page.locator("polyline[data-series='shipped: session t1demo']").count() == 1
    total = int(page.locator("[data-total-shipped]").get_attribute("data-total-shipped"))
    assert total > shipped_before
    assert errors == [], errors


def test_an_unreachable_broker_is_named_with_the_fix(stack: LocalTarget, page_url: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(page_url)
    rpc = Supervisor(stack.state).rpc()
    rpc.supervisor.stopProcess("broker", True)
    try:
        page.wait_for_selector('[data-error="broker"]', timeout=30_000)
        text = page.inner_text('[data-error="broker"]')
        assert "broker unreachable" in text and "./run status" in text
        assert page.locator('[data-topic="order.created"]').count() == 0
        assert page.locator("[data-total-shipped]").count() == 1, "what still answers is shown"
    finally:
        rpc.supervisor.startProcess("broker", True)
        # Tansu comes back empty; the order service's producer may make the topic again first (at any moment, so
        # asked in one create, not a look and then a create), with Tansu's own partition count, which is as good
        # for the tests that follow.
        bootstrap = f"127.0.0.1:{stack.ports['broker']}"
        create_topic(AdminClient({"bootstrap.servers": bootstrap}), "order.created", 3)


def _stage_session(stack: LocalTarget) -> None:
    """Orders the cluster's processor does not take (stopped for the moment), their events fed to a session's
    temporary topic that a second processor reads: the processor reports them processed by mirrord."""
    bootstrap = f"127.0.0.1:{stack.ports['broker']}"
    base = f"http://127.0.0.1:{stack.ports['order']}"
    rpc = Supervisor(stack.state).rpc()
    rpc.supervisor.stopProcess("order-processor", True)
    ensure_topic(bootstrap, SESSION, 1)
    session = service("processor", {"KAFKA_BROKERS": bootstrap, "KAFKA_TOPIC": SESSION, "KAFKA_GROUP_ID": "t1demo",
                                    "ORDER_SERVICE_URL": base, "DEMO_MODE": "true", "PORT": str(free_port()),
                                    "KAFKA_SESSION_TIMEOUT_MS": "6000"}, stack.state).start()
    try:
        producer = Producer({"bootstrap.servers": bootstrap})
        for i in range(30):
            _, order = request("POST", f"{base}/api/orders", order_body(f"alice+t1demo-{i}@metalbear.com"))
            producer.produce(SESSION, key=order["id"], value=json.dumps({"order_id": order["id"]}).encode(),
                             headers=[("customer_email", order["customer_email"].encode())])
            producer.flush(10)
            time.sleep(0.1)  # the pace at which the staged session's orders arrive, not a readiness wait
        until(lambda: holds(_shipped_by_session(base) >= 30), 60, "the session's orders shipped")
    finally:
        session.stop()
        rpc.supervisor.startProcess("order-processor", True)


def _shipped_by_session(base: str) -> int:
    return sum(r["shipped"] for r in http_ok(f"{base}/api/orders/stats")["shipped_by_topic"]
               if r["processed_by"] == "mirrord")


def test_a_taken_port_is_one_line(stack: LocalTarget) -> None:
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run([*RUN, "metrics", "--web", "--target", "local", "--port", str(port)], cwd=ROOT,
                              env=stack.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 5 and len(done.stderr.strip().splitlines()) == 1
    assert f"port {port} on 127.0.0.1 is taken by pid {os.getpid()}" in done.stderr
    assert Path(ROOT / ".mirrord" / "order-processor.json").exists()
