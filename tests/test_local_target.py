"""The `local` target through its real commands, on its own ports so a developer's stack is left alone."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demokit.probes import holds, http_ok, port_open, until
from tests.helpers import LocalTarget

pytestmark = pytest.mark.stack  # ./run and the local stack


@pytest.fixture
def target(tmp_path: Path) -> Iterator[LocalTarget]:
    t = LocalTarget(tmp_path)
    yield t
    t.run("teardown", "--target", "local", "--purge")


def test_fresh_start_twice_orders_status_teardown(target: LocalTarget) -> None:
    first = target.run("fresh-start", "--target", "local")
    assert first.returncode == 0, first.stderr + first.stdout
    assert f"http://127.0.0.1:{target.ports['storefront']}" in first.stdout
    assert "DEMO_MODE   on" in first.stdout
    assert "./run load --rate 20 --duration 120" in first.stdout
    assert "smoke order shipped" in first.stderr
    pids = {p["service"]: p["pid"] for p in target.status()["processes"]}
    assert all(pids.values())

    again = target.run("fresh-start")  # no --target and no minikube: `local`, said in one line
    assert again.returncode == 0, again.stderr
    assert "no minikube on this machine: using the `local` target" in again.stderr
    assert "already up and healthy" in again.stderr
    assert "(nothing changed)" in again.stdout
    status = target.status()
    assert {p["service"]: p["pid"] for p in status["processes"]} == pids, "a second fresh-start restarted something"
    assert {p["health"] for p in status["processes"]} == {"ready"}

    base = f"http://127.0.0.1:{target.ports['order']}"
    report_path = target.state.parent / "load.json"
    loaded = target.run("load", "--target", "local", "--rate", "20", "--duration", "1", "--email-user", "local",
                        "--json", str(report_path))
    assert loaded.returncode == 0, loaded.stderr
    report = json.loads(report_path.read_text())
    assert (report["scheduled"], report["succeeded"], report["base_url"]) == (20, 20, base)
    assert "products from the catalogue" in loaded.stderr
    until(lambda: _all_shipped(base, 21), 60, "orders shipped")  # 20 + the smoke order
    mine = http_ok(f"{base}/api/orders?limit=100")
    assert sum(o["customer_email"].startswith("local+") for o in mine) == 20

    def drained() -> dict[str, Any]:
        snap = json.loads(target.run("metrics", "--target", "local", "--json").stdout)
        group = {g["group"]: g for g in snap["consumer_groups"]}["order-processor"]
        assert group["lag_total"] == 0, group
        return snap

    snap = until(drained, 30, "the processor's group has committed everything")
    assert snap["orders"]["processed_by"] == {"cluster": 21, "mirrord": 0}
    assert [t["role"] for t in snap["topics"]] == ["original"]

    down = target.run("teardown", "--target", "local")
    assert down.returncode == 0, down.stderr
    assert target.listening() == []
    assert target.stack_processes() == []
    assert target.status()["supervisor"] is False


def _all_shipped(base: str, n: int) -> None:
    assert http_ok(f"{base}/api/orders/stats")["by_status"] == {"shipped": n}


def test_a_taken_port_is_named_with_its_holder_and_nothing_starts(target: LocalTarget) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", target.ports["order"]))
        holder.listen()
        done = target.run("fresh-start", "--target", "local")
    assert done.returncode == 5
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    line = errors[0]
    assert f"port {target.ports['order']} (order) is already in use by pid {os.getpid()}" in line
    assert target.stack_processes() == []
    assert not (target.state / "supervisor.sock").exists()


def test_a_service_that_never_gets_ready_shows_its_log_and_everything_stops(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path, metalmart_processor_concurrency=0)  # the processor refuses to start
    try:
        done = target.run("fresh-start", "--target", "local")
        assert done.returncode == 4, done.stderr
        assert "processor did not become ready" in done.stderr
        assert "PROCESSOR_CONCURRENCY=0 is below 1" in done.stderr
        assert "Traceback" not in done.stderr
        assert target.listening() == []
        assert target.stack_processes() == []
    finally:
        target.run("teardown", "--target", "local", "--purge")


def test_ctrl_c_during_start_up_stops_what_was_started(target: LocalTarget) -> None:
    # The interrupt is sent once the broker listens; on a loaded machine the whole start (a few seconds) can finish
    # before it is handled, which says nothing about Ctrl-C: that attempt is torn down and made again.
    for _attempt in range(3):
        proc = target.start("fresh-start", "--target", "local")
        until(lambda: holds(port_open("127.0.0.1", target.ports["broker"])), 30, "the broker started")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0 or "smoke order shipped" not in err:
            break
        assert target.run("teardown", "--target", "local").returncode == 0
    assert proc.returncode == 130, err
    assert "stopping what was started" in err
    assert target.listening() == []
    assert target.stack_processes() == []


def test_an_unknown_target_is_one_line(target: LocalTarget) -> None:
    done = target.run("status", "--target", "atlantis")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: no target 'atlantis'")
    assert "Traceback" not in done.stderr


def test_the_local_target_on_apache_kafka(tmp_path: Path) -> None:
    """local_kafka: apache: a presenter rehearses offline on the clusters' broker."""
    target = LocalTarget(tmp_path, local_kafka="apache")
    try:
        first = target.run("fresh-start", "--target", "local")
        assert first.returncode == 0, first.stderr + first.stdout
        assert "Apache Kafka 3.9.1 on 127.0.0.1:" in first.stderr and "smoke order shipped" in first.stderr
        status = target.status()
        assert (status["kafka"], status["broker"]) == ("apache", "Apache Kafka 3.9.1")
        assert {p["health"] for p in status["processes"]} == {"ready"}
        again = target.run("fresh-start", "--target", "local")
        assert "already up and healthy" in again.stderr, again.stderr
        doctor = target.run("doctor", "--target", "local", "--json")
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert "broker: Apache Kafka 3.9.1" in checks["the stack answers"]["detail"]

        # The processor's group committed beyond the topic's end (what a topic deleted and created again leaves).
        from confluent_kafka import Consumer, TopicPartition

        from demokit.local.supervise import Supervisor

        Supervisor(target.state).rpc().supervisor.stopProcess("order-processor", True)
        group = Consumer({"bootstrap.servers": f"127.0.0.1:{target.ports['broker']}", "group.id": "order-processor",
                          "enable.auto.commit": False})
        group.commit(offsets=[TopicPartition("order.created", 0, 500)], asynchronous=False)
        group.close()
        doctor = target.run("doctor", "--target", "local", "--json")
        check = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}["the processor's group is consuming"]
        assert doctor.returncode == 4 and not check["ok"]
        assert "committed beyond the end: order.created[0] committed 500, end" in check["detail"], check
        assert "--reset-offsets" in check["fix"] and "restart the processor" in check["fix"]
    finally:
        target.run("teardown", "--target", "local", "--purge")


def test_an_unknown_local_broker_is_one_line(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path, local_kafka="redpanda")
    done = target.run("fresh-start", "--target", "local")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(
        "error: local_kafka must be tansu or apache (got 'redpanda')"), done.stderr
