"""`./run doctor`: the troubleshooting list as live checks."""

from __future__ import annotations

from pathlib import Path

from invoke import Context, Exit

from demokit.errors import NOT_READY
from demokit.targets import ROOT
from demokit.taskdef import task
from demokit.tasks.common import TARGET_HELP, emit_json, out, target_of


@task(help={"target": TARGET_HELP, "json": "print JSON only",
            "config": "the mirrord config whose filter to check (.mirrord/order-processor.json)"})
def doctor(c: Context, target: str | None = None, json: bool = False,
           config: str = ".mirrord/order-processor.json") -> None:
    """Check everything the demo needs, one line each (✓, or ✗ with the fix); exit 4 when a blocking check fails."""
    from demokit.observe import doctor as checks_of

    resolved = target_of(c, target)
    path = Path(config) if Path(config).is_absolute() else ROOT / config
    checks = checks_of.run(resolved, path)
    if json:
        emit_json({"target": resolved.name, "checks": checks_of.as_json(checks)})
    else:
        for line in checks_of.lines(checks, lambda ok: "[green]✓[/green]" if ok else "[red]✗[/red]"):
            out.print(line)
    failed = [c.name for c in checks if not c.ok and c.blocking]
    if failed:
        raise Exit(f"doctor: {len(failed)} blocking check(s) failed: {', '.join(failed)}", code=NOT_READY)


TASKS = {"doctor": doctor}
