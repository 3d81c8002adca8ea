"""Benchmark of the app: order creation on PostgreSQL + the broker beside pgbench running the order service's own
transaction on the same server (both driven closed-loop, the service by `hey`), where an order's CPU goes in the
service (sampled with py-spy), and the processor in demo mode at the rates asked: how far created → shipped is above
the work itself. With `against`, other commits' apps (git refs) run beside this one in the same run.

Everything runs here on 127.0.0.1: a private PostgreSQL, Apache Kafka, the real order service and processor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from metalmart import db as dbmod
from metalmart import orders
from metalmart.loadgen import FALLBACK_PRODUCTS, LoadConfig, LoadRun
from tests.helpers import ROOT, AppStack, Broker, KafkaBroker, Postgres, sql


def _hey() -> str:
    found = shutil.which("hey")
    if not found:
        raise SystemExit("hey is missing: apt-get install hey (./run bench.pipeline installs it: "
                         "scripts/ensure-test-deps.sh)")
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
    return {"rate": len(ok) / span, "orders": len(ok), "errors": len(rows) - len(ok),
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



# Where a sample of the order service's Python threads is spent: the first rule that matches, from the innermost
# frame outwards (json.dumps inside the response is JSON; a socket write inside psycopg is the event loop's).
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("JSON (parse the body, write the answer and the event)", ("json/", "orjson")),
    ("validation", ("validate_new_order", "_text (metalmart/orders", "_money (metalmart", "session_key",
                    "metalmart/sessions.py")),
    ("the order's rows (ids, numbers, tokens, view)", ("_Prepared", "now_iso", "uuid.py", "secrets.py",
                                                       "order_view", "_event_row", "new_order_number")),
    ("commit (BEGIN, COMMIT)", ("psycopg/transaction.py",)),
    ("database statements (psycopg)", ("psycopg", "metalmart/db.py", "psycopg_pool")),
    ("publishing (outbox relay)", ("metalmart/outbox.py", "confluent_kafka", "concurrent/futures")),
    ("HTTP (parse, route, write)", ("aiohttp", "multidict", "yarl")),
    ("event loop and sockets", ("asyncio", "selectors.py", "uvloop")),
)
OTHER = "the rest (the handler, the group commit, logging)"
SAMPLE_HZ = 250


def _stage(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for name, needles in STAGES:
            if any(n in frame for n in needles):
                return name
    return OTHER


def _py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


# A sample whose innermost frame is one of these is a thread waiting, not working: left out of the shares.
WAITING = ("select (selectors.py", "_worker (concurrent/futures/thread.py", "wait (threading.py",
           "run (concurrent/futures/thread.py")


def cpu_per_order(pid: int, run: Callable[[], dict[str, Any]], logs: Path) -> dict[str, Any]:
    """Run `run` (a closed-loop creation run) while py-spy samples the order service: the process's CPU per order,
    as the kernel counts it, split by stage in the shares of py-spy's samples of its working threads."""
    spy = _py_spy()
    proc = psutil.Process(pid)
    out = Path(tempfile.mkdtemp(prefix="py-spy-", dir=logs)) / "raw.txt"
    before = proc.cpu_times()
    sampler = None
    if spy:
        sampler = subprocess.Popen([spy, "record", "--nonblocking", "-r", str(SAMPLE_HZ), "-f", "raw", "-o", str(out),
                                    "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = run()
    after = proc.cpu_times()
    if sampler:
        sampler.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
        sampler.wait(60)
    orders = result["rate"] * result["seconds"]
    cpu_us = ((after.user - before.user) + (after.system - before.system)) * 1e6 / max(1.0, orders)
    samples: dict[str, int] = {}
    if out.exists():
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack.rsplit(";", 1)[-1].startswith(WAITING):
                samples[_stage(stack)] = samples.get(_stage(stack), 0) + int(count)
    total = sum(samples.values())
    per_stage = {name: cpu_us * n / total for name, n in samples.items()} if total else {}
    return {"cpu_us_per_order": cpu_us, "stages_us": per_stage, "samples": total, **result}


CLIENTS = (8, 32, 128)
GOALS = {8: 0.8, 32: 1.0, 128: 1.0}  # orders/s ÷ pgbench's transactions/s, with 0 errors


@dataclass(frozen=True)
class App:
    label: str
    folder: Path


def creation(broker: Broker, pg: Postgres, logs: Path, seconds: float, apps: list[App]
             ) -> tuple[Table, Table, list[dict[str, Any]]]:
    """Per client count: pgbench, then each app's order service as one process driven by hey; at 32 clients its
    CPU per order, by stage."""
    table = Table(title=f"order creation beside pgbench running its transaction, same PostgreSQL, closed loop, "
                        f"{seconds:g} s a cell, the order service as one process driven by hey")
    for col in ("clients", "pgbench tx/s", "app", "orders/s", "ratio", "pgbench p99 ms", "p50 ms", "p99 ms",
                "errors", "goal"):
        table.add_column(col, justify="right")
    rows: list[dict[str, Any]] = []
    profiles: dict[str, dict[str, Any]] = {}
    for clients in CLIENTS:
        base = pgbench(pg.new_database(), clients, seconds, logs)
        for app in apps:
            stack = AppStack(broker.bootstrap, pg.new_database(), logs, app_dir=app.folder).start(processor=False)
            try:
                def drive(base_url: str = stack.base, n: int = clients) -> dict[str, Any]:
                    return {**hey(base_url, n, seconds, logs), "seconds": seconds}

                if clients == 32:
                    r = profiles[app.label] = cpu_per_order(stack.order.popen.pid, drive, logs)
                else:
                    r = drive()
            finally:
                stack.stop()
            ratio = r["rate"] / base["rate"]
            met = ratio >= GOALS[clients] and r["errors"] == 0
            table.add_row(str(clients), f"{base['rate']:.0f}", app.label, f"{r['rate']:.0f}", f"{ratio:.2f}×",
                          f"{base['p99']:.1f}", f"{r['p50']:.1f}", f"{r['p99']:.1f}", str(r["errors"]),
                          f"≥{GOALS[clients]:g}× → {'met' if met else 'missed'}")
            rows.append({"clients": clients, "app": app.label, "pgbench": base, "order_service": r, "ratio": ratio,
                         "goal": GOALS[clients], "met": met})
    cpu = Table(title="where an order's CPU goes in the order service (32 clients; µs of CPU per order created, "
                      "the process's own count split by py-spy's samples)")
    cpu.add_column("stage")
    for app in apps:
        cpu.add_column(f"{app.label} µs", justify="right")
        cpu.add_column("share", justify="right")
    names = [name for name, _ in STAGES] + [OTHER]
    for name in [*names, "total"]:
        cells = []
        for app in apps:
            p = profiles[app.label]
            us = p["cpu_us_per_order"] if name == "total" else p["stages_us"].get(name, 0.0)
            cells += [f"{us:.0f}", f"{us / max(1e-9, p['cpu_us_per_order']) * 100:.0f}%"]
        cpu.add_row(name, *cells)
    return table, cpu, rows


WORK_S = 0.6  # demo mode: 200 ms × 3
OVERHEAD_GOALS = {100.0: (50.0, 150.0), 400.0: (100.0, None)}  # ms beyond the work at p50, p99 (None: no bound)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def processing(broker: Broker, pg: Postgres, logs: Path, rate: float, seconds: float, app: App) -> dict[str, Any]:
    """The order service and the processor (default concurrency) in demo mode; the load generator at `rate` for
    `seconds`; every order followed to `shipped` in its history."""
    url = pg.new_database()
    stack = AppStack(broker.bootstrap, url, logs, app_dir=app.folder).start()
    try:
        run = LoadRun(LoadConfig(rate=rate, duration=seconds, base_url=stack.base), FALLBACK_PRODUCTS)
        services = {"order": psutil.Process(stack.order.popen.pid),
                    "processor": psutil.Process(stack.processor.popen.pid)}
        cpu_before = {name: sum(p.cpu_times()[:2]) for name, p in services.items()}
        started = time.time()
        asyncio.run(run.run())
        elapsed = max(0.001, time.time() - started)
        # The cores each service used over the load (its CPU time from /proc): where the two cores go.
        cores = {name: (sum(p.cpu_times()[:2]) - cpu_before[name]) / elapsed for name, p in services.items()}
        sent_per_s = run.stats.succeeded / elapsed
        sent = run.stats.succeeded
        # From the database: the service's own stats may take longer than a probe's second under the backlog.
        shipped_at_end = int(sql(url, "SELECT COUNT(*) AS n FROM orders WHERE status = 'shipped'")[0]["n"])
        stack.wait_shipped(sent, timeout=120 + sent / 50)
        rows = sql(url, "SELECT o.created_at, h.at FROM orders o JOIN order_status_history h ON h.order_id = o.id"
                        " AND h.status = 'shipped'")
        # Where the overhead goes: the event's wait in the outbox, and each later step beyond its 200 ms of work.
        outbox = sql(url, "SELECT o.created_at, e.published_at FROM orders o JOIN outbox e ON e.msg_key = o.id"
                          " WHERE e.published_at IS NOT NULL")
        steps = sql(url, "SELECT a.at AS before, b.at AS after FROM order_status_history a"
                         " JOIN order_status_history b ON b.order_id = a.order_id AND (a.status, b.status) IN"
                         " (('processing', 'confirmed'), ('confirmed', 'shipped'))")
    finally:
        stack.stop()
    waits = sorted(_ts(r["at"]) - _ts(r["created_at"]) for r in rows)
    in_outbox = sorted(_ts(r["published_at"]) - _ts(r["created_at"]) for r in outbox)
    step_over = sorted(_ts(r["after"]) - _ts(r["before"]) - WORK_S / 3 for r in steps)
    shipped = sorted(_ts(r["at"]) for r in rows)
    span = shipped[-1] - shipped[0] if len(shipped) > 1 else 0.0
    return {"rate": rate, "sent": sent, "sent_per_s": sent_per_s, "backlog_when_load_ended": sent - shipped_at_end,
            "shipped_per_s": (len(shipped) - 1) / span if span > 0 else 0.0,
            "overhead_p50_ms": (waits[len(waits) // 2] - WORK_S) * 1000 if waits else None,
            "overhead_p99_ms": (waits[min(len(waits) - 1, int(len(waits) * 0.99))] - WORK_S) * 1000 if waits
            else None,
            "outbox_wait_p50_ms": in_outbox[len(in_outbox) // 2] * 1000 if in_outbox else None,
            "order_service_cores": cores["order"], "processor_cores": cores["processor"],
            "step_overhead_p50_ms": step_over[len(step_over) // 2] * 1000 if step_over else None}


def processing_table(results: list[tuple[App, dict[str, Any]]], seconds: float) -> Table:
    table = Table(title=f"processor, demo mode (0.6 s of work an order), default concurrency, {seconds:g} s of load "
                        "a row; overhead = created → shipped minus the 0.6 s of work, from the orders' history")
    for col in ("orders/s", "app", "sent/s", "shipped/s", "shipped ÷ rate", "backlog when load ended",
                "overhead p50 ms", "overhead p99 ms", "in the outbox p50 ms", "a status step beyond its work p50 ms",
                "order service cores", "processor cores", "goal"):
        table.add_column(col, justify="right")
    for app, r in results:
        p50, p99 = r["overhead_p50_ms"], r["overhead_p99_ms"]
        keeps_up = r["shipped_per_s"] / r["rate"]
        want50, want99 = OVERHEAD_GOALS.get(r["rate"], (None, None))
        met = keeps_up >= 0.99 and p50 is not None and (want50 is None or p50 <= want50) and \
            (want99 is None or (p99 is not None and p99 <= want99))
        goal = " ".join(part for part in ("≥0.99×", want50 and f"p50 ≤{want50:g}", want99 and f"p99 ≤{want99:g}")
                        if part)
        table.add_row(f"{r['rate']:g}", app.label, f"{r['sent_per_s']:.1f}", f"{r['shipped_per_s']:.1f}",
                      f"{keeps_up:.3f}×", str(r["backlog_when_load_ended"]),
                      "-" if p50 is None else f"{p50:.0f}", "-" if p99 is None else f"{p99:.0f}",
                      *("-" if r[k] is None else f"{r[k]:.0f}" for k in ("outbox_wait_p50_ms", "step_overhead_p50_ms")),
                      f"{r['order_service_cores']:.2f}", f"{r['processor_cores']:.2f}",
                      f"{goal} → {'met' if met else 'missed'}")
    return table


@contextlib.contextmanager
def checkout(refs: tuple[str, ...], logs: Path) -> Iterator[list[App]]:
    """Each ref's app (a git worktree each, removed afterwards), then this checkout's."""
    with contextlib.ExitStack() as stack:
        apps = []
        for ref in refs:
            folder = logs / f"app-{len(apps)}-{ref.replace('/', '-').replace('~', '-')}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), ref], check=True,
                           capture_output=True)
            stack.callback(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)],
                           check=True, capture_output=True)
            apps.append(App(ref, folder))
        yield [*apps, App("this checkout", ROOT)]


def main(seconds: float = 10.0, processor_seconds: float = 20.0, rates: tuple[float, ...] = (100.0, 400.0),
         against: tuple[str, ...] = ()) -> int:
    console = Console(width=170)
    logs = Path(tempfile.mkdtemp(prefix="metalmart-bench-"))
    broker = KafkaBroker(logs).start()
    pg = Postgres(logs).start()
    try:
        with checkout(against, logs) as apps:
            table, cpu, created = creation(broker, pg, logs, seconds, apps)
            console.print(table)
            console.print(cpu)
            processed = [(app, processing(broker, pg, logs, rate, processor_seconds, app))
                         for rate in rates for app in apps]
    finally:
        pg.stop()
        broker.remove()
    if processed:
        console.print(processing_table(processed, processor_seconds))
    console.print(json.dumps({"creation": created,
                              "processor": [{"app": app.label, **r} for app, r in processed]}))
    return 0
