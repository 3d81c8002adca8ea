"""The pipeline benchmark's yardstick: pgbench runs the order service's own create transaction on the same schema,
so its rate is the ceiling the order service's rate is divided by. (Timings are the benchmark's; the test asserts
only what pgbench stored.)"""

from __future__ import annotations

from pathlib import Path

from benchmarks.pipeline_bench import pgbench
from tests.helpers import Postgres, sql


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
