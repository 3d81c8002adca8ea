"""Benchmark of the app: order creation on PostgreSQL + the broker beside pgbench running the order service's own
transaction on the same server, and the processor in demo mode: how far created → shipped is above the work itself.

Everything runs here on 127.0.0.1: a private PostgreSQL, Apache Kafka, the real order service and processor.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from hdrh.histogram import HdrHistogram
from rich.console import Console
from rich.table import Table

from metalmart import db as dbmod
from metalmart import orders
from metalmart.loadconfig import cores
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


def _hey() -> str:
    found = shutil.which("hey")
    if not found:
        raise SystemExit("hey is missing: apt-get install hey (./run bench.pipeline installs it: "
                         "scripts/ensure-bench-deps.sh)")
    return found


def hey(url: str, clients: int, seconds: float, logs: Path) -> dict[str, Any]:
    """`hey` (Go, a client that costs little beside the service) posting one order body from `clients` workers,
    closed loop, keep-alive: orders/s, latency percentiles and every answer that was not a 201."""
    run = LoadRun(LoadConfig(rate=1, duration=1, base_url=url), FALLBACK_PRODUCTS)
    body = Path(tempfile.mkdtemp(prefix="hey-", dir=logs)) / "order.json"
    body.write_bytes(run.factory.body(0))
    done = subprocess.run([_hey(), "-z", f"{max(1, round(seconds))}s", "-c", str(clients), "-m", "POST",
                           "-T", "application/json", "-D", str(body), "-o", "csv", f"{url}/api/orders"],
                          capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise SystemExit(f"hey failed: {done.stderr.strip()[-400:]}")
    # csv: response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset
    rows = [line.split(",") for line in done.stdout.splitlines()[1:] if line.count(",") >= 7]
    if not rows:
        raise SystemExit(f"hey sent nothing: {done.stderr.strip()[-400:] or done.stdout[-400:]}")
    ok = sorted(float(r[0]) * 1000 for r in rows if r[6] == "201")
    span = max(float(r[7]) + float(r[0]) for r in rows)
    return {"rate": len(ok) / span, "errors": len(rows) - len(ok),
            "p50": ok[len(ok) // 2] if ok else float("nan"),
            "p99": ok[min(len(ok) - 1, int(len(ok) * 0.99))] if ok else float("nan")}


# The order service's create transaction (OrderStore._insert and _enqueue: the order, its history row, its event in
# the outbox), for pgbench: the same statements on the same schema, with values of the same size.
PGBENCH_SCRIPT = """\\set a random(1, 4611686018427387903)
\\set b random(1, 4611686018427387903)
BEGIN;
INSERT INTO orders (id, order_number, customer_email, customer_name, shipping_address, items, total_cents, status,
                    tracking_token, reservation_id, created_at, updated_at)
VALUES ('pgb-' || :client_id || '-' || :a, 'ORD-' || :client_id || '-' || :a, 'bench@metalbear.com', 'Bench Client',
        '{"street": "1 Main St", "city": "Springfield", "state": "IL", "zip_code": "62701", "country": "US"}',
        '[{"product_id": "MM-HAMMER-02", "product_name": "Cross-Peen Hammer 1 kg", "quantity": 1, "price": 42.5}]',
        4250, 'pending', 'tok-' || :client_id || '-' || :b, NULL, '2026-12-02T08:00:00.000Z',
        '2026-12-02T08:00:00.000Z');
INSERT INTO order_status_history (order_id, status, at)
VALUES ('pgb-' || :client_id || '-' || :a, 'pending', '2026-12-02T08:00:00.000Z');
INSERT INTO outbox (topic, msg_key, msg_value, headers, created_at)
VALUES ('order.created', 'pgb-' || :client_id || '-' || :a,
        '{"event": "order.created", "order_id": "pgb", "customer_email": "bench@metalbear.com", "total": 42.5}',
        '[["customer_email", "bench@metalbear.com"]]', '2026-12-02T08:00:00.000Z');
END;
"""


def _pgbench() -> str:
    found = shutil.which("pgbench") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))), None)
    if not found:
        raise SystemExit("pgbench is missing: apt-get install postgresql (./run test installs it)")
    return str(found)


def pgbench(url: str, clients: int, seconds: float, logs: Path) -> dict[str, Any]:
    """pgbench running the create transaction, prepared, 2 threads, closed loop: transactions/s and latency
    percentiles from its per-transaction log."""
    async def schema() -> None:
        db = dbmod.connect(url, pool_size=1)
        await db.open()
        try:
            await dbmod.migrate(db, orders.SCHEMA)
        finally:
            await db.close()

    asyncio.run(schema())
    folder = Path(tempfile.mkdtemp(prefix="pgbench-", dir=logs))
    script = folder / "create.sql"
    script.write_text(PGBENCH_SCRIPT)
    done = subprocess.run([_pgbench(), "--no-vacuum", "-M", "prepared", "-c", str(clients), "-j", "2",
                           "-T", str(max(1, round(seconds))), "-f", str(script), "--log",
                           "--log-prefix", str(folder / "tx"), "-d", url],
                          capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise SystemExit(f"pgbench failed: {done.stderr.strip()[-400:]}")
    latencies = sorted(int(line.split()[2]) / 1000 for log in folder.glob("tx*")
                       for line in log.read_text().splitlines())
    rate = next(float(line.split("=")[1].split()[0]) for line in done.stdout.splitlines() if line.startswith("tps ="))
    return {"rate": rate, "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], "failed": int(
                next((line.split(":")[1].split()[0] for line in done.stdout.splitlines()
                      if line.startswith("number of failed transactions")), "0"))}


CREATION_GOAL = (0.8, 3.0)  # orders/s at least 0.8× pgbench's transactions/s; p99 under 3× pgbench's


def creation(broker: Broker, pg: Postgres, logs: Path, seconds: float) -> tuple[Table, list[dict[str, Any]]]:
    """Per client count: pgbench, then the order service as one process, then as ORDER_WORKERS = the cores."""
    n = max(2, cores())
    table = Table(title=f"order creation beside pgbench running its transaction, same PostgreSQL, closed loop, "
                        f"{seconds:g} s a cell (pgbench first, then the order service as 1 and {n} processes)")
    for col in ("clients", "pgbench tx/s", "processes", "orders/s", "ratio", "pgbench p99 ms", "p99 ms", "p99 ratio",
                "errors", "goal (≥0.8×, p99 <3×, 0 errors)"):
        table.add_column(col, justify="right")
    rows = []
    for clients in (8, 32, 128):
        base = pgbench(pg.new_database(), clients, seconds, logs)
        for workers in (1, n):
            stack = AppStack(broker.bootstrap, pg.new_database(), logs,
                             order_env={"ORDER_WORKERS": str(workers)}).start(processor=False)
            try:
                r = asyncio.run(closed_loop(stack.base, clients, seconds))
            finally:
                stack.stop()
            ratio, p99_ratio = r["rate"] / base["rate"], r["p99"] / base["p99"]
            ok = ratio >= CREATION_GOAL[0] and p99_ratio < CREATION_GOAL[1] and r["errors"] == 0
            table.add_row(str(clients), f"{base['rate']:.0f}", str(workers), f"{r['rate']:.0f}", f"{ratio:.2f}×",
                          f"{base['p99']:.1f}", f"{r['p99']:.1f}", f"{p99_ratio:.1f}×", str(r["errors"]),
                          "met" if ok else "missed")
            rows.append({"clients": clients, "workers": workers, "pgbench": base, "order_service": r,
                         "ratio": ratio, "p99_ratio": p99_ratio, "met": ok})
    return table, rows


WORK_S = 0.6  # demo mode: 200 ms × 3


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
        table, created = creation(broker, pg, logs, seconds)
        console.print(table)
        default = processing(broker, pg, logs, 100, processor_seconds, 256)
        one = processing(broker, pg, logs, 100, processor_seconds, 1)
    finally:
        pg.stop()
        broker.remove()
    table = Table(title=f"processor, demo mode (0.6 s of work an order), 100 orders/s for {processor_seconds:g} s; "
                        "overhead = created → shipped minus the 0.6 s of work, from the orders' history")
    for col in ("concurrency", "orders sent", "backlog when load ended", "shipped/s", "created→shipped p50 s",
                "created→shipped p99 s", "overhead p50 ms", "overhead p99 ms", "goal (≤50 / ≤150 ms)"):
        table.add_column(col, justify="right")
    for name, r in (("256 (default)", default), ("1 (sequential)", one)):
        p50 = r["created_to_shipped_p50_s"]
        p99 = r["created_to_shipped_p99_s"]
        over = [None if v is None else (v - WORK_S) * 1000 for v in (p50, p99)]
        met = r is default and None not in over and over[0] <= 50 and over[1] <= 150
        table.add_row(name, str(r["sent"]), str(r["backlog_when_load_ended"]), f"{r['shipped_per_s']:.1f}",
                      f"{p50:.2f}" if p50 is not None else "-", f"{p99:.2f}" if p99 is not None else "-",
                      *(f"{o:.0f}" if o is not None else "-" for o in over),
                      ("met" if met else "missed") if r is default else "(backlog: not a latency cell)")
    console.print(table)
    ratio = default["shipped_per_s"] / max(0.001, one["shipped_per_s"])
    console.print(f"default ÷ sequential throughput: {ratio:.0f}×; goal: backlog under 2 s of work (200 orders) "
                  f"at 100/s → {'met' if default['backlog_when_load_ended'] < 200 else 'missed'}")
    console.print(json.dumps({"creation": created, "processor_default": default, "processor_sequential": one}))
    return 0
