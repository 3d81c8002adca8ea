"""The demo's climax with a real debugger: the order processor started under debugpy as the VS Code launch
configuration starts it, a breakpoint at the line the README names, `./run load` streaming orders, the breakpoint
held past the old republish bound and past the consumer's poll interval (made short here), then Continue.

Every order ships exactly once, the breakpoint sees each order id once, nothing is published again, and the
processor goes on consuming without a restart. On the `local` target with both brokers: Tansu, its default, and
Apache Kafka, as the clusters run it."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demokit import targets
from demokit.local.localstack import LocalStack
from demokit.probes import free_port, holds, http_ok, until
from metalmart import services as table
from tests.dap import Dap
from tests.helpers import ROOT, LocalTarget, Proc, order_body, request, sql

pytestmark = [pytest.mark.slow, pytest.mark.stack]  # a broker, the app, a real debugger

POLL_INTERVAL_MS = 10_000  # the consumer's max.poll.interval.ms for this test: the hold goes well past it
HOLD_S = 45.0  # past the old republish bound on `local` (2 × (6 s session + 10 s of steps) = 32 s) and the above


def _breakpoint() -> tuple[str, int]:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"`(metalmart/processor\.py):(\d+)`", readme)
    assert match, "README must name metalmart/processor.py:<line> as the breakpoint"
    return str(ROOT / match.group(1)), int(match.group(2))


def _launch() -> dict[str, Any]:
    """The VS Code launch configuration the README points presenters to (comments stripped, as VS Code does)."""
    text = re.sub(r"^\s*//.*$", "", (ROOT / ".vscode/launch.json").read_text(), flags=re.M)
    return json.loads(text)["configurations"][0]


@pytest.fixture(params=["tansu", "apache"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalTarget]:
    t = LocalTarget(tmp_path, local_kafka=request.param)
    yield t
    t.run("teardown", "--target", "local", "--purge")


def test_a_breakpoint_held_for_minutes_under_load_sees_each_order_once(target: LocalTarget, tmp_path: Path) -> None:
    up = target.run("fresh-start", "--target", "local", timeout=300)
    assert up.returncode == 0, up.stderr + up.stdout
    stack = LocalStack(targets.load("local", target.inventories))
    name = table.by_command("processor").name
    # The developer's processor takes the group's messages: the stack's own steps aside, as under mirrord the
    # session's own topic reaches only the developer's process.
    stack.supervisor.rpc().supervisor.stopProcess(name, True)

    launch = _launch()
    assert launch["type"] == "debugpy" and launch["request"] == "launch"
    settings = stack.settings()
    health_port = free_port()
    env = {**{k: settings[k] for k in table.by_command("processor").env}, "PYTHONUNBUFFERED": "1",
           "HOST": "127.0.0.1", "PORT": str(health_port), "KAFKA_MAX_POLL_INTERVAL_MS": str(POLL_INTERVAL_MS),
           **{k: v for k, v in launch.get("env", {}).items() if "${" not in v}}
    dap_port = free_port()
    argv = [sys.executable, "-m", "debugpy", "--listen", f"127.0.0.1:{dap_port}", "--wait-for-client",
            "-m", launch["module"], *launch["args"]]
    processor = Proc("debugged-processor", argv, {**os.environ, **env}, tmp_path).start()
    dap = Dap("127.0.0.1", dap_port)
    path, line = _breakpoint()
    base = f"http://127.0.0.1:{target.ports['order']}"
    load = None
    try:
        dap.attach({path: [line]})
        before = {r["id"] for r in sql(stack.database_url, "SELECT id FROM orders")}  # the smoke order
        until(lambda: http_ok(f"http://127.0.0.1:{health_port}/ready"), 60, "the debugged processor joined")
        load = target.start("load", "--target", "local", "--rate", "10", "--duration", "20", "--json",
                            str(tmp_path / "load.json"))

        seen: list[str] = []
        thread = dap.stopped(timeout=60)
        seen.append(dap.evaluate(thread, "msg.key().decode()").strip("'\""))
        # Held as a presenter holds it, explaining the message, while the orders keep coming.
        with pytest.raises(TimeoutError):
            dap.event("terminated", timeout=HOLD_S)
        dap.resume(thread)

        assert load.wait(timeout=120) == 0, load.stderr.read() if load.stderr else ""
        report = json.loads((tmp_path / "load.json").read_text())
        assert report["succeeded"] == report["scheduled"] == 200

        def everything_shipped() -> None:
            # Each stop at the breakpoint is read and continued at once, as a presenter clicks Continue.
            while True:
                try:
                    stopped = dap.stopped(timeout=0.5)
                except TimeoutError:
                    break
                seen.append(dap.evaluate(stopped, "msg.key().decode()").strip("'\""))
                dap.resume(stopped)
            stats = http_ok(f"{base}/api/orders/stats", timeout=5)
            holds(stats["by_status"].get("shipped", 0) == stats["total"])

        until(everything_shipped, 180, "every order shipped", max_interval=0.1)
        loaded = {r["id"] for r in sql(stack.database_url, "SELECT id FROM orders")} - before
        assert len(loaded) == 200
        assert len(seen) == len(set(seen)), f"the breakpoint saw an order twice: {sorted(seen)}"
        assert loaded <= set(seen), f"{len(loaded - set(seen))} orders never reached the breakpoint"
        twice = sql(stack.database_url, "SELECT order_id FROM order_status_history WHERE status = 'shipped'"
                    " GROUP BY order_id HAVING COUNT(*) > 1")
        assert twice == [], "shipped twice"
        stats = http_ok(f"{base}/api/orders/stats", timeout=5)
        assert stats["republished"] == 0, "an order held at the breakpoint was published again"

        health = http_ok(f"http://127.0.0.1:{health_port}/health", timeout=5)
        log = processor.log()
        assert "held longer than max.poll.interval.ms" in log, log[-3000:]
        assert health["redelivered"] >= 1, "the rejoined group handed back what this process had taken"
        assert health["max_poll_interval_ms"] == POLL_INTERVAL_MS

        # The same process goes on: one more order reaches the breakpoint once, and ships.
        status, after = request("POST", f"{base}/api/orders", order_body("after-the-hold@example.com"))
        assert status == 201, after
        thread = dap.stopped(timeout=60)
        assert dap.evaluate(thread, "msg.key().decode()").strip("'\"") == after["id"]
        dap.resume(thread)
        until(lambda: holds(http_ok(f"{base}/api/orders/{after['id']}", timeout=5)["status"] == "shipped"), 60,
              "the order after the hold shipped")
        assert processor.alive(), "the processor restarted"
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        dap.close()
        processor.stop()

