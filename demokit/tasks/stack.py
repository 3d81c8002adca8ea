"""The demo stack on a target: fresh-start, status, teardown."""

from __future__ import annotations

from invoke import Context, task
from rich.table import Table

from demokit import targets
from demokit.errors import USAGE, UserError, friendly
from demokit.localstack import SERVICES, LocalStack
from demokit.tasks.common import emit_json, out, say

TARGET_HELP = "an inventory under inventories/ (local, minikube, a region); default: minikube if installed, else local"


def _local(target_name: str | None) -> LocalStack:
    target = targets.resolve(target_name, say)
    if target.kind != "local":
        raise UserError(f"target {target.name!r} is a {target.kind} target; this build drives `local` targets "
                        "only so far: use --target local", USAGE)
    return LocalStack(target)


@task(help={"target": TARGET_HELP, "no_smoke": "skip the smoke order through the pipeline"})
@friendly
def fresh_start(c: Context, target: str | None = None, no_smoke: bool = False) -> None:
    """Bring the demo up from nothing (a second run changes nothing and says so)."""
    stack = _local(target)
    say(f"fresh-start on target {stack.target.name!r} ({stack.target.kind})")
    result = stack.fresh_start(say, smoke=not no_smoke)
    mode = "on (orders ship in about 0.6 s)" if stack.demo_mode else "off (orders ship in about 10 s)"
    out.print()
    out.print(f"[bold]Storefront[/bold]  {stack.url('storefront')}")
    out.print(f"[bold]Orders API[/bold]  {stack.url('order')}/api/orders")
    out.print(f"[bold]Kafka[/bold]       {stack.bootstrap}  topic {stack.topic}")
    out.print(f"[bold]DEMO_MODE[/bold]   {mode}")
    out.print(f"[bold]Logs[/bold]        {stack.dir / 'logs'}")
    out.print("\nNext:\n  ./run load --rate 20 --duration 120\n  ./run metrics --watch")
    if not result["changed"]:
        out.print("\n(nothing changed)")


@task(help={"target": TARGET_HELP, "json": "print JSON only"})
@friendly
def status(c: Context, target: str | None = None, json: bool = False) -> None:
    """Each process of the stack: state, pid, port, health."""
    stack = _local(target)
    procs = stack.processes()
    health = stack.health() if procs else {}
    rows = []
    for service in SERVICES:
        info = procs.get(service, {})
        rows.append({"service": service, "state": info.get("statename", "STOPPED"), "pid": info.get("pid") or None,
                     "port": stack.ports.get(service), "health": health.get(service, "down")})
    if json:
        emit_json({"target": stack.target.name, "supervisor": bool(procs), "processes": rows,
                   "demo_mode": stack.demo_mode})
        return
    table = Table(title=f"target {stack.target.name} ({stack.target.kind}) · DEMO_MODE "
                        f"{'on' if stack.demo_mode else 'off'}")
    for col in ("service", "state", "pid", "port", "health"):
        table.add_column(col)
    for r in rows:
        style = "green" if r["health"] == "ready" else "red"
        table.add_row(r["service"], r["state"], str(r["pid"] or "-"), str(r["port"]), f"[{style}]{r['health']}")
    out.print(table)
    if not procs:
        out.print("the stack is not running: ./run fresh-start --target " + stack.target.name)


@task(help={"target": TARGET_HELP, "purge": "also delete the data (database, logs)"})
@friendly
def teardown(c: Context, target: str | None = None, purge: bool = False) -> None:
    """Stop everything; leaves no process and no listening port behind."""
    stack = _local(target)
    if not stack.teardown(say, purge=purge):
        say("the local stack was not running; nothing to stop")


TASKS = {"fresh-start": fresh_start, "status": status, "teardown": teardown}
