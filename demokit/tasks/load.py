"""`./run load`: the open-loop load generator."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke import Context
from rich.live import Live
from rich.table import Table

from demokit import targets
from demokit.config import mirrordcfg
from demokit.errors import INTERRUPTED, USAGE, UserError
from demokit.kube import reach
from demokit.taskdef import task
from demokit.tasks.common import TARGET_HELP, err, out, say, target_of
from metalmart.loadconfig import OPTIONS, LoadConfig

if TYPE_CHECKING:
    from metalmart.loadgen import Fleet, LoadRun


@contextlib.contextmanager
def _urls(target: targets.Target | None, base_url: str | None) -> Iterator[tuple[str, str | None]]:
    """The order service (and catalogue) of the target: --base-url, or the target's own (through port-forwards
    on a cluster)."""
    if base_url or target is None:
        yield base_url or "", None
        return
    with reach.endpoints(target, broker=False) as found:
        if target.kind != "local":
            say(f"reaching {target.name} through port-forwards to the order service and the catalogue (for rates "
                "above a few hundred orders/s, run the generator next to the service: --in-cluster)")
        yield found.url("order"), found.url("catalogue")


def summary_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"load run {report['run_id']} against {report['base_url']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("target rate", f"{report['target_rate']:g}/s"), ("achieved rate", f"{report['achieved_rate']:.2f}/s"),
        ("scheduled", report["scheduled"]), ("sent", report["sent"]), ("succeeded", report["succeeded"]),
        ("failed", report["failed"]), ("dropped (in-flight limit)", report["dropped"]),
        ("latency p50 / p90 / p99 / max",
         " / ".join(f"{report['latency_ms'][k]:.1f}" for k in ("p50", "p90", "p99", "max")) + " ms"),
        ("send lag p50 / p99", f"{report['send_lag_ms']['p50']:.2f} / {report['send_lag_ms']['p99']:.2f} ms"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    for cls, n in sorted(report["errors"].items()):
        table.add_row(f"  failure: {cls}", str(n))
    return table


def _counts(p: dict[str, Any]) -> str:
    """One progress line's counts, from `loadgen.progress` (local) or a Job's progress event (--in-cluster)."""
    return (f"sent {p['sent']}  ok {p['succeeded']}  failed {p['failed']}  dropped {p['dropped']}  "
            f"rate {p['rate']:.1f}/s  p99 {p['p99_ms']:.1f} ms")


async def _run(config: LoadConfig, interactive: bool, hint: str) -> LoadRun | Fleet:
    from metalmart.loadgen import check_target, fetch_products, new_run
    from metalmart.loadgen import progress as counts_of

    await check_target(config.base_url, hint=hint)
    products, source = await fetch_products(config.catalogue_url)
    say(f"load: {config.rate:g} orders/s for {config.duration:g} s ({config.scheduled_total} orders) to "
        f"{config.base_url}; e-mails @{config.email_domain} (match ratio {config.match_ratio:g}); "
        f"products from the {source}; run id {config.run_id}"
        + (f"; {config.session_share:.0%} for session {config.session_key}" if config.session_key else "")
        + (f"; {config.worker_count} worker processes" if config.worker_count > 1 else ""))
    run = new_run(config, products)
    loop = asyncio.get_running_loop()
    worker = asyncio.create_task(run.run(on_tick=None))
    loop.add_signal_handler(signal.SIGINT, run.stop)
    try:
        if interactive:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            progress = Progress(TextColumn("[bold]load"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TextColumn("{task.fields[line]}"), TimeRemainingColumn(), console=err)
            bar = progress.add_task("load", total=config.scheduled_total, line="")
            with Live(progress, console=err, refresh_per_second=4):
                while not worker.done():
                    progress.update(bar, completed=run.stats.scheduled, line=_counts(counts_of(run, 0.0)))
                    await asyncio.wait({worker}, timeout=0.25)
                progress.update(bar, completed=run.stats.scheduled, line=_counts(counts_of(run, 0.0)))
        else:
            elapsed = 0.0
            while not worker.done():
                await asyncio.wait({worker}, timeout=5.0)
                elapsed += 5.0
                if not worker.done():
                    say(f"{elapsed:5.0f} s  scheduled {run.stats.scheduled}/{config.scheduled_total}  "
                        f"{_counts(counts_of(run, elapsed))}")
        await worker
    except asyncio.CancelledError:
        pass
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    if worker.cancelled():
        run.interrupted = True
    return run


# The demo guide's load settings; --rate and --duration given beside a preset win over it.
PRESETS = {"light": (5.0, 60.0), "medium": (20.0, 120.0), "heavy": (50.0, 60.0), "extreme": (100.0, 30.0)}
DEFAULT_PRESET = "medium"

HELP = {option.name: option.help for option in OPTIONS if option.name not in ("catalogue_url", "run_id")} | {
    "rate": "orders per second (fractions allowed), e.g. 20; default: the preset's",
    "duration": "seconds to run, e.g. 120; default: the preset's",
    "preset": "light (5/s for 60 s), medium (20/s for 120 s, the default), heavy (50/s for 60 s) or extreme "
              "(100/s for 30 s)",
    "target": TARGET_HELP,
    "json": "also write the report as JSON to this path",
    "in_cluster": "run the generator as a Kubernetes Job from the app image, next to the service (cluster targets; "
                  "for rates a port-forward cannot carry)",
}


def rate_and_duration(preset: str, rate: float | None, duration: float | None) -> tuple[float, float]:
    """The preset's rate and duration, each replaced by the one given explicitly."""
    if preset not in PRESETS:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)} (got {preset!r}); e.g. --preset medium",
                        USAGE)
    preset_rate, preset_duration = PRESETS[preset]
    return (preset_rate if rate is None else rate), (preset_duration if duration is None else duration)


@task(help=HELP)
def load(c: Context, rate: float | None = None, duration: float | None = None, preset: str = DEFAULT_PRESET,
         base_url: str | None = None, target: str | None = None, email_domain: str = mirrordcfg.DOMAIN,
         match_ratio: float = 1.0, email_user: str | None = None, json: str | None = None, max_inflight: int = 1024,
         in_cluster: bool = False, workers: int | None = None, session_key: str | None = None,
         session_share: float = 1.0) -> None:
    """Stream orders at an exact rate (open loop) and account for every one of them."""
    rate, duration = rate_and_duration(preset, rate, duration)
    json_path = Path(json) if json else None
    if json_path is not None and not json_path.parent.exists():
        raise UserError(f"--json {json_path}: folder {json_path.parent} does not exist", USAGE)
    options = LoadConfig(rate=float(rate), duration=float(duration), base_url=base_url or "http://127.0.0.1",
                         catalogue_url=None, email_domain=email_domain, match_ratio=float(match_ratio),
                         email_user=email_user, max_inflight=int(max_inflight),
                         workers=None if workers is None else int(workers), session_key=session_key,
                         session_share=float(session_share))
    options.check()  # bad options are refused before anything is reached
    if in_cluster:
        report = _in_cluster(c, target, base_url, options)
        out.print(summary_table(report))
        if json_path is not None:
            json_path.write_text(_dumps(report))
            say(f"report written to {json_path}")
        return
    resolved = None if base_url else target_of(c, target)
    hint = "is the order service at --base-url up?" if resolved is None else \
        f"is the stack up? try `./run status --target {resolved.name}` or `./run fresh-start --target {resolved.name}`"
    with _urls(resolved, base_url) as (url, catalogue):
        config = dataclasses.replace(options, base_url=url, catalogue_url=catalogue)
        run = asyncio.run(_run(config, interactive=sys.stderr.isatty(), hint=hint))
    report = run.report()
    out.print(summary_table(report))
    if json_path is not None:
        json_path.write_text(_dumps(report))
        say(f"report written to {json_path}")
    if run.interrupted:
        from invoke.exceptions import Exit

        raise Exit("interrupted: the summary above counts every order scheduled so far", code=INTERRUPTED)


def _in_cluster(c: Context, target_name: str | None, base_url: str | None, options: LoadConfig) -> dict[str, Any]:
    if base_url:
        raise UserError("--in-cluster reaches the order service inside the cluster; drop --base-url", USAGE)
    target = target_of(c, target_name)
    if target.kind == "local":
        raise UserError("--in-cluster needs a cluster target (minikube or a region); on `local` the generator "
                        "already runs next to the service", USAGE)
    last = [0.0]

    def show(event: dict[str, Any]) -> None:
        if sys.stderr.isatty() or event["elapsed_s"] - last[0] >= 5.0:
            last[0] = event["elapsed_s"]
            say(f"{event['elapsed_s']:5.0f} s  scheduled {event['scheduled']}/{event['total']}  {_counts(event)}")

    from demokit.kube import incluster

    return incluster.run(target, options, show, say)


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


TASKS = {"load": load}
