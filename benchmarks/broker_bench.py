"""`./run bench.brokers`: the two brokers the `local` target can run, started side by side in one run: the time from
start until a client's metadata request is answered, and the broker's memory (RSS) once it answers, then after a
load of 2,000 one-record produces. Apache Kafka starts on a formatted log (its first start also fetches the jars:
that is timed once, apart). Only 127.0.0.1 is reached."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import psutil
from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table

from demokit.kafka import apache, ensure_topic
from tests.helpers import KafkaBroker, TansuBroker


def _rss(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def _one(kind: type, logs: Path) -> dict[str, float]:
    broker = kind(logs)
    if isinstance(broker, KafkaBroker):
        broker.node.prepare(lambda _m: None)  # format first: the timing is the start itself
    t0 = time.perf_counter()
    broker.start()
    ready = time.perf_counter() - t0
    rss_ready = _rss(broker.proc.popen.pid)
    ensure_topic(broker.bootstrap, "bench", 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "log_level": 0})
    for i in range(2000):
        producer.produce("bench", value=f"m{i}".encode())
        producer.poll(0)
    producer.flush(30)
    rss_loaded = _rss(broker.proc.popen.pid)
    (broker.remove if isinstance(broker, KafkaBroker) else broker.stop)()
    return {"ready_s": ready, "rss_ready": rss_ready, "rss_loaded": rss_loaded}


def main(rounds: int) -> None:
    console = Console(width=150)
    with tempfile.TemporaryDirectory(prefix="metalmart-brokers-") as folder:
        logs = Path(folder)
        t0 = time.perf_counter()
        apache.ensure(lambda _m: None)
        fetched = time.perf_counter() - t0
        results: dict[str, list[dict[str, float]]] = {"Tansu": [], f"Apache Kafka {apache.VERSION}": []}
        for _ in range(rounds):  # interleaved, so both see the same machine
            results["Tansu"].append(_one(TansuBroker, logs))
            results[f"Apache Kafka {apache.VERSION}"].append(_one(KafkaBroker, logs))
    table = Table(title=f"the local target's brokers, {rounds} starts each, interleaved (medians)")
    for col in ("broker", "start → answers (s)", "RSS answering (MiB)", "RSS after 2,000 records (MiB)"):
        table.add_column(col, justify="left" if col == "broker" else "right")
    med = {name: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for name, rows in results.items()}
    for name, m in med.items():
        table.add_row(name, f"{m['ready_s']:.2f}", f"{m['rss_ready']:.0f}", f"{m['rss_loaded']:.0f}")
    tansu, kafka = med["Tansu"], med[f"Apache Kafka {apache.VERSION}"]
    ratios = (f"{kafka[k] / tansu[k]:.1f}×" for k in ("ready_s", "rss_ready", "rss_loaded"))
    table.add_row("ratio Apache / Tansu", *ratios)
    console.print(table)
    console.print(f"Apache Kafka's jars: {fetched:.2f} s to fetch and check (0 when already cached)")
