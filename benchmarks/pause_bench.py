"""`./run bench.pause`: what a held processor costs, counted. On a private `local` stack (PostgreSQL, Tansu or Apache
Kafka), each row streams orders while the processor is held, then follows every accepted order to `shipped`:

- held: the processor stopped with SIGSTOP for `--hold` seconds (120) while `--rate` orders/s (20, the medium
  preset) arrive for `--duration` seconds (30), in demo mode. SIGSTOP holds librdkafka's threads too, so the
  consumer also misses its heartbeats and its group moves on: harsher than a debugger, which holds only Python
  (tests/test_breakpoint.py holds a real debugpy breakpoint);
- slow: the original processor's pace, one order at a time at 2 s + 3 s + 5 s, with `--slow-orders` orders (10) sent
  at once, so the last waits about 100 s behind the others.

Counted per row: orders accepted, shipped, lost (accepted, never shipped), shipped twice, events published again by
the order service's reconciler, and messages the processor received beyond one per order (a copy reaching the
breakpoint again). Only 127.0.0.1 is reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.fault_bench import Bench
from demokit import probes
from metalmart import services as table
from metalmart.loadgen import LoadConfig, LoadRun, fetch_products
from tests.helpers import sql

console = Console(stderr=True, highlight=False)


def _say(message: str) -> None:
    console.print(f"  {message}", markup=False)


class PauseBench:
    def __init__(self, folder: Path, kafka: str, slow: bool) -> None:
        overrides: dict[str, Any] = {"metalmart_demo_mode": not slow}
        if slow:
            overrides["metalmart_processor_concurrency"] = 1
        self.bench = Bench(folder, None, kafka, **overrides)
        self.stack = self.bench.stack

    def processor(self) -> dict[str, Any]:
        name = table.by_command("processor").name
        return probes.http_ok(f"{self.stack.url(name)}/health", timeout=5)

    def run(self, rate: float, duration: float, hold: float, bound: float) -> dict[str, Any]:
        order = table.by_command("order").name
        config = LoadConfig(rate=rate, duration=duration, base_url=self.stack.url(order),
                            catalogue_url=self.stack.url(table.by_command("catalogue").name), max_inflight=4096)
        products, _ = asyncio.run(fetch_products(config.catalogue_url))
        received_before = self.processor()["received"]
        run = LoadRun(config, products, record=True)
        worker = threading.Thread(target=lambda: asyncio.run(run.run()), name="load")
        pid = self.stack.supervisor.pid(table.by_command("processor").name)
        if hold:
            os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        worker.start()
        try:
            if hold:
                time.sleep(hold)  # the length of the hold under test, not a readiness wait
        finally:
            if hold:
                os.kill(pid, signal.SIGCONT)
        worker.join()
        held_s = time.monotonic() - started
        accepted = set(run.accepted or [])

        def all_shipped() -> None:
            missing = accepted - self._shipped(config.run_id)
            if missing:
                raise probes.NotReady(f"{len(missing)} not shipped yet")

        with contextlib.suppress(probes.NotReady):  # what is still missing by then is counted as lost below
            probes.until(all_shipped, bound, "every accepted order shipped", 1.0)
        shipped = self._shipped(config.run_id)
        like = (f"%{config.run_id}-%",)
        twice = sql(self.bench.database_url,
                    "SELECT h.order_id FROM order_status_history h JOIN orders o ON o.id = h.order_id"
                    " WHERE h.status = 'shipped' AND o.customer_email LIKE ? GROUP BY h.order_id"
                    " HAVING COUNT(*) > 1", like)
        republished = sql(self.bench.database_url,
                          "SELECT COUNT(*) AS n FROM republished r JOIN orders o ON o.id = r.order_id"
                          " WHERE o.customer_email LIKE ?", like)[0]["n"]
        received = self.processor()["received"] - received_before
        return {"accepted": len(accepted), "shipped": len(accepted & shipped), "lost": len(accepted - shipped),
                "shipped_twice": len(twice), "republished": int(republished),
                "received_beyond_one": max(0, received - len(accepted)), "held_s": round(held_s, 1)}

    def _shipped(self, run_id: str) -> set[str]:
        return {r["id"] for r in sql(self.bench.database_url, "SELECT id FROM orders WHERE status = 'shipped' AND"
                                     " customer_email LIKE ?", (f"%{run_id}-%",))}


def render(rows: list[dict[str, Any]]) -> Table:
    out = Table(title="a held or slow processor (127.0.0.1, local stack on PostgreSQL)")
    for col in ("broker", "case", "accepted", "shipped", "lost", "shipped twice", "republished",
                "received beyond one"):
        out.add_column(col, justify="left" if col in ("broker", "case") else "right")
    for r in rows:
        out.add_row(r["broker"], r["case"], str(r["accepted"]), str(r["shipped"]),
                    f"[red]{r['lost']}" if r["lost"] else "0", f"[red]{r['shipped_twice']}" if r["shipped_twice"]
                    else "0", f"[red]{r['republished']}" if r["republished"] else "0",
                    str(r["received_beyond_one"]))
    return out


def main(kafkas: tuple[str, ...], rate: float, duration: float, hold: float, slow_orders: int,
         json_path: str | None) -> list[dict[str, Any]]:
    rows = []
    cases = [("held", False)] if hold else []
    if slow_orders:
        cases.append(("slow", True))
    for kafka in kafkas:
        for case, slow in cases:
            with tempfile.TemporaryDirectory(prefix="metalmart-pause-") as folder:
                bench = PauseBench(Path(folder), kafka, slow)
                try:
                    _say(f"{kafka}, {case}: bringing up a private local stack")
                    bench.bench.start()
                    if slow:
                        # The original processor's pace: every order waits for the ones before it.
                        row = bench.run(slow_orders / 2.0, 2.0, 0.0, bound=slow_orders * 10.0 + 60.0)
                        label = f"slow: {slow_orders} orders, one at a time, 10 s each"
                    else:
                        row = bench.run(rate, duration, hold, bound=90.0)
                        label = f"held {hold:g} s under {rate:g}/s for {duration:g} s"
                finally:
                    bench.bench.stop()
            rows.append({"broker": kafka, "case": label, **row})
            _say(f"{kafka}, {case}: {row['republished']} published again, {row['lost']} lost, "
                 f"{row['shipped_twice']} shipped twice")
    Console(width=None if console.is_terminal else 150).print(render(rows))
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=2) + "\n")
    return rows
