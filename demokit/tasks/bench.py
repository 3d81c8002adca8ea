"""Benchmarks: commands anyone can run; each prints ratios measured side by side in one run."""

from __future__ import annotations

from invoke import Collection, Context, task


@task(help={"seconds": "length of each cell (10)", "ceiling": "rate of the single-process ceiling cell (1500)"})
def load(c: Context, seconds: float = 10.0, ceiling: float = 1500.0) -> None:
    """The load generator against a stub at 0/20/200 ms and 20–1,000/s, beside an original-style loop."""
    from benchmarks.load_bench import main

    main(float(seconds), float(ceiling))


@task(help={"seconds": "length of each creation cell (10)", "processor_seconds": "length of the processor runs (20)"})
def pipeline(c: Context, seconds: float = 10.0, processor_seconds: float = 20.0) -> None:
    """Order creation at 8/32/128 clients on PostgreSQL, and the processor at 100 orders/s (default vs 1)."""
    from benchmarks.pipeline_bench import main

    main(float(seconds), float(processor_seconds))


@task(help={"target": "a running local target (local)", "rounds": "snapshots to time (20)"})
def metrics(c: Context, target: str = "local", rounds: int = 20) -> None:
    """One metrics snapshot against the running stack, as a ratio to the bare AdminClient calls it makes."""
    from benchmarks.metrics_bench import main
    from demokit import targets

    t = targets.load(target)
    ports = t.get("local_ports", {})
    main(f"127.0.0.1:{ports['broker']}", str(t.get("kafka_topic")), str(t.get("kafka_group_id")),
         f"http://127.0.0.1:{ports['order']}", int(rounds))


ns = Collection("bench", load, pipeline, metrics)
