"""`./run bench.faults`: nothing lost, measured. A steady load on a private `local` stack (its own ports and state,
on a private PostgreSQL so that the database can be stopped), and one fault per row in the middle of the load:

- broker, processor, order, catalogue: the process killed with SIGKILL (supervisor starts it again). On Tansu (the
  `local` default, `--kafka tansu`) the broker's memory storage comes back empty, so events it had acknowledged are
  gone, and the reconciler, reading their records back, finds them gone and publishes them again; on Apache Kafka
  (`--kafka apache`) its log survives, and nothing needs publishing again;
- database: PostgreSQL stopped for 10 s, then started again;
- restart: the whole stack torn down and brought up again (`teardown`, then `fresh-start`).

Each row counts what the load generator scheduled, what was answered 201 and what failed (by class), then follows
every order answered 201 in the database: shipped within the bound (the reconciler's bound plus the processing
time), lost (answered 201, never shipped), shipped twice (more than one `shipped` transition in its history), and
the time from the fault until an order placed after it ships. Only 127.0.0.1 is reached.
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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from demokit import probes, targets
from demokit.local.localstack import LocalStack, names
from metalmart import services as table
from metalmart.loadgen import LoadConfig, LoadRun, fetch_products
from tests.helpers import Postgres, inventory, sql

FAULTS = ("broker", "processor", "order", "catalogue", "database", "restart")
DATABASE_DOWN_S = 10.0
console = Console(stderr=True, highlight=False)


def _say(message: str) -> None:
    console.print(f"  {message}", markup=False)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Bench:
    def __init__(self, folder: Path, republish_after_s: int | None, kafka: str = "tansu", **values: Any) -> None:
        self.pg = Postgres(folder).start()
        self.database_url = self.pg.new_database()
        ports = {name: probes.free_port() for name in (*names(), "kafka_controller")}
        inventories = inventory(folder, "local", local_state_dir=str(folder / "state"), local_ports=ports,
                                local_database_url=self.database_url, local_kafka=kafka,
                                metalmart_republish_after_s=republish_after_s or "", **values)
        self.stack = LocalStack(targets.load("local", inventories))

    @property
    def republish_after_s(self) -> float:
        """The reconciler's bound, as the running order service states it."""
        stats = probes.http_ok(f"{self.stack.url(table.by_command('order').name)}/api/orders/stats", timeout=5)
        return float(stats["overdue_after_s"])

    def start(self) -> None:
        self.stack.fresh_start(_say, smoke=True)

    def stop(self) -> None:
        self.stack.teardown(lambda _m: None)
        self.pg.stop()

    # -- faults --

    def inject(self, fault: str) -> None:
        """Cause the fault; returns when it is over (at once for a kill: supervisor restarts the process)."""
        if fault == "database":
            self.pg.pause()
            time.sleep(DATABASE_DOWN_S)  # the length of the outage under test, not a readiness wait
            self.pg.resume()
        elif fault == "restart":
            self.stack.teardown(lambda _m: None)
            self.stack.fresh_start(lambda _m: None, smoke=False)
        else:
            name = table.by_command(fault).name if fault != "broker" else "broker"
            os.kill(self.stack.supervisor.pid(name), signal.SIGKILL)

    # -- one row --

    def row(self, fault: str, rate: float, duration: float, fault_at: float) -> dict[str, Any]:
        order = table.by_command("order").name
        catalogue = table.by_command("catalogue").name
        config = LoadConfig(rate=rate, duration=duration, base_url=self.stack.url(order),
                            catalogue_url=self.stack.url(catalogue), max_inflight=4096)
        products, _ = asyncio.run(fetch_products(config.catalogue_url))
        run = LoadRun(config, products, record=True)
        worker = threading.Thread(target=lambda: asyncio.run(run.run()), name=f"load {fault}")
        started = time.time()
        worker.start()
        time.sleep(fault_at)  # the moment of the fault in the run, not a readiness wait
        fault_time = time.time()
        self.inject(fault)
        worker.join()
        report = run.report()
        accepted = set(run.accepted or [])
        bound = self.republish_after_s + 30.0  # the reconciler's bound, then the processing and its retries
        deadline = time.time() + bound

        def all_shipped() -> set[str]:
            done = self._shipped(config.run_id)
            missing = accepted - done
            if missing:
                raise probes.NotReady(f"{len(missing)} not shipped yet")
            return done

        with contextlib.suppress(probes.NotReady):  # what is still missing by then is counted as lost below
            probes.until(all_shipped, max(1.0, deadline - time.time()), "every accepted order shipped", 1.0)
        shipped = self._shipped(config.run_id)
        twice = sql(self.database_url,
                    "SELECT h.order_id AS id FROM order_status_history h JOIN orders o ON o.id = h.order_id"
                    " WHERE h.status = 'shipped' AND o.customer_email LIKE ? GROUP BY h.order_id"
                    " HAVING COUNT(*) > 1", (f"%{config.run_id}-%",))
        stored = {r["id"] for r in sql(self.database_url, "SELECT id FROM orders WHERE customer_email LIKE ?",
                                       (f"%{config.run_id}-%",))}
        recovered = sql(self.database_url,
                        "SELECT MIN(h.at) AS at FROM order_status_history h JOIN orders o ON o.id = h.order_id"
                        " WHERE h.status = 'shipped' AND o.customer_email LIKE ? AND o.created_at > ?",
                        (f"%{config.run_id}-%", _iso(fault_time)))[0]["at"]
        recovery = (datetime.fromisoformat(recovered.replace("Z", "+00:00")).timestamp() - fault_time) \
            if recovered else None
        republished = sql(self.database_url,
                          "SELECT COUNT(*) AS n FROM republished r JOIN orders o ON o.id = r.order_id"
                          " WHERE o.customer_email LIKE ?", (f"%{config.run_id}-%",))[0]["n"]
        return {"fault": fault, "scheduled": report["scheduled"], "answered_201": report["succeeded"],
                "failed": report["failed"], "failed_by_class": report["errors"], "dropped": report["dropped"],
                "shipped_within_bound": len(accepted & shipped), "lost": len(accepted - shipped),
                "shipped_twice": len(twice), "stored_answer_lost": len(stored - accepted),
                "republished": int(republished), "recovery_s": None if recovery is None else round(recovery, 1),
                "bound_s": bound, "fault_at_s": round(fault_time - started, 1)}

    def _shipped(self, run_id: str) -> set[str]:
        return {r["id"] for r in sql(self.database_url, "SELECT id FROM orders WHERE status = 'shipped' AND"
                                     " customer_email LIKE ?", (f"%{run_id}-%",))}


def render(rows: list[dict[str, Any]], rate: float, duration: float, broker: str) -> Table:
    out = Table(title=f"faults under a steady load of {rate:g} orders/s for {duration:g} s (127.0.0.1, local stack "
                      f"on PostgreSQL, {broker})")
    for col in ("fault", "scheduled", "201", "failed (by class)", "shipped in bound", "lost", "shipped twice",
                "republished", "recovery s"):
        out.add_column(col, justify="left" if col in ("fault", "failed (by class)") else "right")
    for r in rows:
        failed = f"{r['failed']}" + (f" ({', '.join(f'{k} {v}' for k, v in sorted(r['failed_by_class'].items()))})"
                                     if r["failed_by_class"] else "")
        out.add_row(r["fault"], str(r["scheduled"]), str(r["answered_201"]), failed, str(r["shipped_within_bound"]),
                    f"[red]{r['lost']}" if r["lost"] else "0", f"[red]{r['shipped_twice']}" if r["shipped_twice"]
                    else "0", str(r["republished"]), "-" if r["recovery_s"] is None else f"{r['recovery_s']:.1f}")
    return out


def main(rate: float, duration: float, faults: tuple[str, ...], json_path: str | None,
         republish_after_s: int | None, kafka: str = "tansu",
         say: Callable[[str], None] = _say) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="metalmart-faults-") as folder:
        bench = Bench(Path(folder), republish_after_s, kafka)
        broker = bench.stack.broker_name
        try:
            say(f"bringing up a private local stack on PostgreSQL and {broker}")
            bench.start()
            say(f"the reconciler reads back the records of orders not moved {bench.republish_after_s:g} s after "
                "publication, and publishes again those the broker lost")
            for fault in faults:
                say(f"{fault}: {rate:g} orders/s for {duration:g} s, the fault at {duration / 3:.0f} s")
                rows.append(bench.row(fault, rate, duration, duration / 3))
                r = rows[-1]
                say(f"{fault}: {r['answered_201']} answered 201, {r['lost']} lost, {r['shipped_twice']} shipped twice")
        finally:
            bench.stop()
    for row in rows:
        row["broker"] = kafka
    Console(width=None if console.is_terminal else 150).print(render(rows, rate, duration, broker))
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=2) + "\n")
        say(f"rows written to {json_path}")
    return rows
