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


ns = Collection("bench", load, pipeline)
