"""The pipeline benchmark's yardstick: pgbench runs the order service's own create transaction on the same schema,
so its rate is the ceiling the order service's rate is divided by. (Timings are the benchmark's; the test asserts
only what pgbench stored.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.pipeline_bench import pgbench
from tests.helpers import Postgres, sql

pytestmark = pytest.mark.stack  # hey and the app


def test_pgbench_runs_the_create_transaction_on_the_order_schema(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.new_database()
    result = pgbench(url, clients=2, seconds=1, logs=tmp_path)
    assert result["failed"] == 0 and result["rate"] > 0 and result["p99"] >= result["p50"] > 0
    counts = {table: sql(url, f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]
              for table in ("orders", "order_status_history", "outbox")}
    assert counts["orders"] > 0 and len(set(counts.values())) == 1, counts
    order = sql(url, "SELECT * FROM orders LIMIT 1")[0]
    assert order["status"] == "pending" and order["customer_email"] == "bench@metalbear.com"
    stored = {k for k, v in order.items() if v is not None}
    assert stored == {"id", "order_number", "customer_email", "customer_name", "shipping_address", "items",
                      "total_cents", "status", "tracking_token", "created_at", "updated_at"}, \
        "the columns the create transaction fills (the processor fills the rest later)"


def test_hey_counts_each_order_answered_201_and_every_other_answer_as_an_error(tmp_path: Path) -> None:
    """The creation table's client: what it counts as orders is what the service received, and an answer that is
    not a 201 is an error, never an order."""
    import subprocess
    import sys

    from benchmarks.pipeline_bench import hey
    from demokit.probes import free_port, http_ok, until
    from tests.helpers import ROOT

    port = free_port()
    stub = subprocess.Popen([sys.executable, "-m", "benchmarks.stub", "--port", str(port)], cwd=ROOT)
    try:
        until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), 20, "the stub")
        created = hey(f"http://127.0.0.1:{port}", clients=4, seconds=1, logs=tmp_path)
        seen = len(http_ok(f"http://127.0.0.1:{port}/_emails"))
        refused = hey(f"http://127.0.0.1:{port}/nowhere", clients=4, seconds=1, logs=tmp_path)
    finally:
        stub.terminate()
        stub.wait(10)
    assert created["orders"] == seen > 0 and created["errors"] == 0
    assert refused["orders"] == 0 and refused["errors"] > 0
