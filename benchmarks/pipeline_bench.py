"""Benchmark of the app: order creation on PostgreSQL + the broker, and the processor keeping up in demo mode.

Everything runs here on 127.0.0.1: a private PostgreSQL, a Tansu broker, the real order service and processor.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from hdrh.histogram import HdrHistogram
from rich.console import Console
from rich.table import Table

from metalmart.loadgen import FALLBACK_PRODUCTS, LoadConfig, LoadRun
from tests.helpers import AppStack, Broker, KafkaBroker, Postgres, sql


async def closed_loop(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` clients each sending the next order as soon as the last one answered."""
    run = LoadRun(LoadConfig(rate=1, duration=1, base_url=url), FALLBACK_PRODUCTS)
    hist = HdrHistogram(1, 60_000_000, 3)
    counts = {"ok": 0, "errors": 0}
    end = time.monotonic() + seconds
    seq = iter(range(10**9))

    async def client(http: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                async with http.post(f"{url}/api/orders", data=run.factory.body(next(seq)),
                                     headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    counts["ok" if resp.status == 201 else "errors"] += 1
            except aiohttp.ClientError:
                counts["errors"] += 1
            hist.record_value(max(1, int((time.monotonic() - t0) * 1e6)))

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        t0 = time.monotonic()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.monotonic() - t0
    return {"rate": counts["ok"] / elapsed, "errors": counts["errors"],
            "p50": hist.get_value_at_percentile(50) / 1000, "p99": hist.get_value_at_percentile(99) / 1000}


def creation(broker: Broker, pg: Postgres, logs: Path, seconds: float) -> Table:
    table = Table(title=f"order creation, PostgreSQL + broker, closed loop, {seconds:g} s a cell")
    for col in ("clients", "orders/s", "p50 ms", "p99 ms", "errors", "goal (≥500/s, p99<100 ms)"):
        table.add_column(col, justify="right")
    for clients in (8, 32, 128):
        stack = AppStack(broker.bootstrap, pg.new_database(), logs).start(processor=False)
        try:
            r = asyncio.run(closed_loop(stack.base, clients, seconds))
        finally:
            stack.stop()
        ok = r["rate"] >= 500 and r["p99"] < 100 and r["errors"] == 0
        table.add_row(str(clients), f"{r['rate']:.0f}", f"{r['p50']:.1f}", f"{r['p99']:.1f}", str(r["errors"]),
                      "met" if ok else "missed")
    return table


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def processing(broker: Broker, pg: Postgres, logs: Path, rate: float, seconds: float, concurrency: int
               ) -> dict[str, Any]:
    url = pg.new_database()
    stack = AppStack(broker.bootstrap, url, logs, concurrency=concurrency).start()
    try:
        run = LoadRun(LoadConfig(rate=rate, duration=seconds, base_url=stack.base), FALLBACK_PRODUCTS)
        asyncio.run(run.run())
        sent = run.stats.succeeded
        load_end = time.time()
        shipped_at_end = stack.stats()["by_status"].get("shipped", 0)
        if concurrency > 1:
            stack.wait_shipped(sent, timeout=120)
        rows = sql(url, "SELECT o.created_at, h.at FROM orders o JOIN order_status_history h ON h.order_id = o.id"
                        " AND h.status = 'shipped'")
    finally:
        stack.stop()
    waits = sorted(_ts(r["at"]) - _ts(r["created_at"]) for r in rows)
    first = min((_ts(r["at"]) for r in rows), default=load_end)
    return {"sent": sent, "shipped_when_load_ended": shipped_at_end,
            "backlog_when_load_ended": sent - shipped_at_end,
            "created_to_shipped_p50_s": waits[len(waits) // 2] if waits else None,
            "created_to_shipped_p99_s": waits[int(len(waits) * 0.99) - 1] if waits else None,
            "shipped_per_s": shipped_at_end / max(0.001, load_end - first) if rows else 0.0}


def main(seconds: float = 10.0, processor_seconds: float = 20.0) -> int:
    console = Console(width=150)
    logs = Path(tempfile.mkdtemp(prefix="metalmart-bench-"))
    broker = KafkaBroker(logs).start()
    pg = Postgres(logs).start()
    try:
        console.print(creation(broker, pg, logs, seconds))
        default = processing(broker, pg, logs, 100, processor_seconds, 256)
        one = processing(broker, pg, logs, 100, processor_seconds, 1)
    finally:
        pg.stop()
        broker.remove()
    table = Table(title=f"processor, demo mode (0.6 s of work an order), 100 orders/s for {processor_seconds:g} s")
    for col in ("concurrency", "orders sent", "backlog when load ended", "shipped/s", "created→shipped p50 s",
                "created→shipped p99 s"):
        table.add_column(col, justify="right")
    for name, r in (("256 (default)", default), ("1 (sequential)", one)):
        p50 = r["created_to_shipped_p50_s"]
        p99 = r["created_to_shipped_p99_s"]
        table.add_row(name, str(r["sent"]), str(r["backlog_when_load_ended"]), f"{r['shipped_per_s']:.1f}",
                      f"{p50:.2f}" if p50 is not None else "-", f"{p99:.2f}" if p99 is not None else "-")
    console.print(table)
    ratio = default["shipped_per_s"] / max(0.001, one["shipped_per_s"])
    console.print(f"default ÷ sequential throughput: {ratio:.0f}×; goal: backlog under 2 s of work (200 orders) "
                  f"at 100/s → {'met' if default['backlog_when_load_ended'] < 200 else 'missed'}")
    console.print(json.dumps({"processor_default": default, "processor_sequential": one}))
    return 0
