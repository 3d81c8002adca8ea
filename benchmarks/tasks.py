"""Benchmarks: commands anyone can run; each prints ratios measured side by side in one run."""

from __future__ import annotations

import shlex
from pathlib import Path

from invoke import Collection, Context

from demokit.errors import NOT_READY, USAGE, UserError
from demokit.taskdef import task

FAULTS = ("broker", "processor", "order", "catalogue", "database", "restart")


@task(help={"seconds": "length of each cell (10)", "rates": "rates of the workers table, e.g. 2000,5000,10000"})
def load(c: Context, seconds: float = 10.0, rates: str = "2000,5000,10000") -> None:
    """The load generator against a stub, beside an original-style loop.

    At 0/20/200 ms and 20–1,000/s; then one worker beside --workers N at 2,000–10,000/s."""
    from benchmarks.load_bench import main

    try:
        chosen = tuple(float(r) for r in rates.split(","))
    except ValueError:
        raise UserError(f"--rates must be numbers separated by commas (got {rates!r}); e.g. --rates 2000,10000",
                        USAGE) from None
    main(float(seconds), chosen)


@task(help={"seconds": "length of each creation cell (10)", "processor_seconds": "seconds of load a processor row (20)",
            "rates": "the processor's rates in orders/s, comma-separated (100,400: the extreme preset and 4×)",
            "against": "git refs whose apps run beside this checkout's in the same run, comma-separated, e.g. "
                       "--against main or --against HEAD~2,HEAD~1",
            "processor": "also the processor at --rates (--no-processor: order creation and its CPU only)"})
def pipeline(c: Context, seconds: float = 10.0, processor_seconds: float = 20.0, rates: str = "100,400",
             against: str | None = None, processor: bool = True) -> None:
    """Order creation beside pgbench (hey as the client), its CPU by stage, the processor at --rates.

    Installs hey, PostgreSQL and Java from Debian's packages when missing (scripts/ensure-test-deps.sh)."""
    import subprocess

    from benchmarks.pipeline_bench import main
    from demokit.targets import ROOT

    try:
        chosen = tuple(float(r) for r in rates.split(","))
    except ValueError:
        raise UserError(f"--rates must be numbers separated by commas (got {rates!r}); e.g. --rates 100,400",
                        USAGE) from None
    if seconds < 1 or processor_seconds < 1 or not chosen or min(chosen) <= 0:
        raise UserError("--seconds and --processor-seconds must be at least 1, --rates above 0; e.g. --rates 100,400",
                        USAGE)
    refs = tuple(r.strip() for r in (against or "").split(",") if r.strip())
    for ref in refs:
        if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                          capture_output=True).returncode != 0:
            raise UserError(f"--against {ref}: no such commit here; e.g. --against main or --against HEAD~3", USAGE)
    c.run(f"bash {shlex.quote(str(ROOT / 'scripts' / 'ensure-test-deps.sh'))}", pty=False)
    main(float(seconds), float(processor_seconds), chosen if processor else (), refs)


@task(help={"target": "a running local target (local)", "rounds": "snapshots to time (20)"})
def metrics(c: Context, target: str = "local", rounds: int = 20) -> None:
    """One metrics snapshot against the running stack, as a ratio to the bare AdminClient calls it makes."""
    from benchmarks.metrics_bench import main
    from demokit import targets
    from demokit.local.localstack import LocalStack
    from metalmart import services as table

    stack = LocalStack(targets.load(target, c.config.metalmart.inventories))
    main(stack.bootstrap, stack.topic, str(stack.target.get("metalmart_kafka_group_id")),
         stack.url(table.by_command("order").name), int(rounds))


@task(help={"rate": "orders per second of the steady load (50)", "duration": "seconds of load per fault (60)",
            "faults": "which, comma-separated: broker,processor,order,catalogue,database,restart (all)",
            "json": "also write the rows as JSON to this path",
            "kafka": "the broker: tansu (the local default) or apache (Apache Kafka, as the clusters run it)",
            "republish_after": "the reconciler's bound in seconds (default: the order service's own, derived)"})
def faults(c: Context, rate: float = 50.0, duration: float = 60.0, faults: str = ",".join(FAULTS),
           json: str | None = None, republish_after: int = 0, kafka: str = "tansu") -> None:
    """Faults in the middle of a steady load: lost and twice-shipped orders, and the time to recover.

    The broker, the processor, the order service and the catalogue killed, the database stopped, the stack
    restarted."""
    from benchmarks.fault_bench import main

    chosen = tuple(f.strip() for f in faults.split(",") if f.strip())
    unknown = [f for f in chosen if f not in FAULTS]
    if unknown or not chosen:
        raise UserError(f"--faults takes some of {','.join(FAULTS)} (got {faults!r})", USAGE)
    if rate <= 0 or duration < 3:
        raise UserError("--rate must be above 0 and --duration at least 3 seconds; e.g. --rate 50 --duration 60",
                        USAGE)
    if kafka not in ("tansu", "apache"):
        raise UserError(f"--kafka takes tansu or apache (got {kafka!r})", USAGE)
    if json and not Path(json).parent.exists():
        raise UserError(f"--json {json}: folder {Path(json).parent} does not exist", USAGE)
    rows = main(float(rate), float(duration), chosen, json, int(republish_after) or None, kafka)
    bad = [r["fault"] for r in rows if r["lost"] or r["shipped_twice"]]
    if bad:
        raise UserError(f"orders lost or shipped twice under: {', '.join(bad)} (see the table)", NOT_READY)


@task(help={"kafka": "the brokers, comma-separated: tansu,apache (both)",
            "rate": "orders per second while the processor is held (20, the medium preset)",
            "duration": "seconds of load while it is held (30)", "hold": "seconds the processor is held (120; 0: none)",
            "slow_orders": "orders for the original processor's pace, one at a time, 10 s each (10; 0: none)",
            "json": "also write the rows as JSON to this path"})
def pause(c: Context, kafka: str = "tansu,apache", rate: float = 20.0, duration: float = 30.0, hold: float = 120.0,
          slow_orders: int = 10, json: str | None = None) -> None:
    """A processor held under load, and one as slow as the original: what is published or received again.

    Held with SIGSTOP; counts events published again, messages received twice, orders lost or shipped twice."""
    from benchmarks.pause_bench import main

    chosen = tuple(k.strip() for k in kafka.split(",") if k.strip())
    if not chosen or any(k not in ("tansu", "apache") for k in chosen):
        raise UserError(f"--kafka takes tansu, apache or both, comma-separated (got {kafka!r})", USAGE)
    if rate <= 0 or duration <= 0 or hold < 0 or slow_orders < 0:
        raise UserError("--rate and --duration must be above 0, --hold and --slow-orders 0 or more; e.g. --hold 120",
                        USAGE)
    if json and not Path(json).parent.exists():
        raise UserError(f"--json {json}: folder {Path(json).parent} does not exist", USAGE)
    rows = main(chosen, float(rate), float(duration), float(hold), int(slow_orders), json)
    bad = [f"{r['broker']} {r['case']}" for r in rows if r["lost"] or r["shipped_twice"]]
    if bad:
        raise UserError(f"orders lost or shipped twice: {'; '.join(bad)} (see the table)", NOT_READY)


@task(help={"rounds": "starts of each broker, interleaved (3)"})
def brokers(c: Context, rounds: int = 3) -> None:
    """Tansu beside Apache Kafka: start time and memory, side by side."""
    from benchmarks.broker_bench import main

    if rounds < 1:
        raise UserError("--rounds must be at least 1; e.g. --rounds 3", USAGE)
    main(int(rounds))


@task(help={"runs": "no-change runs after the first converge (2)", "json": "also write the rows as JSON to this path"})
def converge(c: Context, runs: int = 2, json: str | None = None) -> None:
    """fresh-start on the test cluster from nothing, then with nothing to change: the ratio of the two.

    Needs the machine the test cluster runs on; it is started for the bench when it is not running."""
    from benchmarks.converge_bench import main

    if runs < 1:
        raise UserError("--runs must be at least 1; e.g. --runs 2", USAGE)
    if json and not Path(json).parent.exists():
        raise UserError(f"--json {json}: folder {Path(json).parent} does not exist", USAGE)
    main(int(runs), json)


ns = Collection("bench", load, pipeline, metrics, faults, pause, brokers, converge)
