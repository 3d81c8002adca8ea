"""The fault bench in its short setting (10 orders/s for 12 s a fault, a 5 s reconciler bound), on Tansu and on
Apache Kafka: under a killed broker, processor, order service and catalogue, a stopped database and a restarted
stack, no order answered 201 is lost and none ships twice."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, RUN

pytestmark = [pytest.mark.slow, pytest.mark.stack]  # brokers, PostgreSQL, the app, faults


@pytest.mark.parametrize("kafka", ["tansu", "apache"])
def test_no_order_is_lost_or_shipped_twice_under_any_fault(tmp_path: Path, kafka: str) -> None:
    report = tmp_path / "faults.json"
    done = subprocess.run([*RUN, "bench.faults", "--rate", "10", "--duration", "12", "--republish-after", "5",
                           "--kafka", kafka, "--json", str(report)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    rows = json.loads(report.read_text())
    assert [r["fault"] for r in rows] == ["broker", "processor", "order", "catalogue", "database", "restart"]
    for row in rows:
        assert row["lost"] == 0 and row["shipped_twice"] == 0, row
        assert row["scheduled"] == 120 and row["answered_201"] > 0
        assert row["shipped_within_bound"] == row["answered_201"]
        assert row["answered_201"] + row["failed"] + row["dropped"] == row["scheduled"]
    assert "shipped twice" in done.stdout, "the table"
    if kafka == "apache":
        broker = next(r for r in rows if r["fault"] == "broker")
        assert broker["republished"] == 0, "Apache Kafka's log survives a kill: nothing to publish again"
