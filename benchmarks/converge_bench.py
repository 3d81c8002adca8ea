"""`./run bench.converge`: `./run fresh-start` on the test cluster (the control plane of `./run cluster start`, with
its real node where the machine allows one) from nothing, then again with nothing to change, timed as a presenter
sees it (the whole command, ./run's start included), side by side in one run. Each run's steps and Ansible's own
time for its slowest tasks (ansible.posix.profile_tasks, written to the run's log) are printed; the ratio of a
no-change run to the first converge is the goal's. The demo is torn down first and left running at the end; a
control plane the bench had to start is stopped again. Only 127.0.0.1 and the node's own bridge are reached."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from demokit import targets
from demokit.errors import NOT_READY, UserError
from demokit.kube import cluster
from demokit.targets import ROOT

GOAL_SECONDS = 5.0
GOAL_RATIO = 0.1
TARGET = "testcluster"
_STEP = re.compile(r"^\s+\d+/\d+ (\S+)\s+([\d.]+) s\s+(\w+)$", re.M)
_TASK = re.compile(r"^(.+?) -{3,} (\d+\.\d+)s$", re.M)


def _run(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "METALMART_PROFILE_TASKS": "1"}
    t0 = time.perf_counter()
    done = subprocess.run([str(ROOT / "run"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise UserError(f"./run {' '.join(args)} failed (exit {done.returncode}): {' | '.join(tail)}", NOT_READY)
    return took, done


def _slowest_tasks(log: Path, count: int) -> list[tuple[str, float]]:
    """Ansible's own timing of the run's tasks (profile_tasks' recap at the end of the log), slowest first."""
    text = log.read_text()
    recap = text[text.rfind("TASKS RECAP"):] if "TASKS RECAP" in text else ""
    return [(m.group(1).strip(), float(m.group(2))) for m in _TASK.finditer(recap)][:count]


def converge(label: str, log: Path) -> dict[str, Any]:
    took, done = _run("fresh-start", "--target", TARGET)
    steps = [{"step": m.group(1), "seconds": float(m.group(2)), "state": m.group(3)}
             for m in _STEP.finditer(done.stderr)]
    return {"run": label, "seconds": round(took, 2), "changed": sum(s["state"] == "changed" for s in steps),
            "nothing_changed": "(nothing changed)" in done.stdout, "steps": steps,
            "slowest_tasks": _slowest_tasks(log, 6)}


def main(no_change_runs: int, as_json: str | None) -> list[dict[str, Any]]:
    from demokit.tasks.kube import plane

    console = Console(width=150, stderr=True)
    cp = plane()
    started = not cp.running()
    if started:
        console.print("the test cluster is not running: starting it for the bench (stopped again at the end)")
        cp.start(lambda m: console.print(m))
        cp.start_node(lambda m: console.print(m))
    try:
        target = targets.load(TARGET)
        log = cluster.log_path(target, "deploy-cluster")
        console.print("tearing the demo down first, so that the first run converges from nothing")
        _run("teardown", "--target", TARGET, "--yes")
        rows = [converge("first converge", log)]
        console.print(f"first converge: {rows[0]['seconds']:.1f} s")
        for n in range(no_change_runs):
            rows.append(converge(f"no change #{n + 1}", log))
            console.print(f"{rows[-1]['run']}: {rows[-1]['seconds']:.1f} s")
    finally:
        if started:
            cp.stop(lambda _m: None)
    _print(rows, console)
    if as_json:
        Path(as_json).write_text(json.dumps(rows, indent=2))
    return rows


def _print(rows: list[dict[str, Any]], console: Console) -> None:
    first = rows[0]["seconds"]
    table = Table(title=f"./run fresh-start --target {TARGET}: the whole command, timed side by side in one run")
    for col in ("run", "seconds", "steps changed", "ratio to the first", "goal", "met"):
        table.add_column(col, justify="left" if col in ("run", "goal") else "right")
    for row in rows:
        if row is rows[0]:
            table.add_row(row["run"], f"{row['seconds']:.1f}", str(row["changed"]), "1.00", "", "")
            continue
        ratio = row["seconds"] / first
        met = row["seconds"] <= GOAL_SECONDS and ratio <= GOAL_RATIO and row["changed"] == 0
        table.add_row(row["run"], f"{row['seconds']:.1f}", str(row["changed"]), f"{ratio:.3f}",
                      f"≤ {GOAL_SECONDS:g} s, ≤ {GOAL_RATIO:g}×, 0 changed", "yes" if met else "missed")
    console.print(table)
    steps = Table(title="each step's time (s), as the run printed it")
    steps.add_column("step")
    for row in rows:
        steps.add_column(row["run"], justify="right")
    for name in [s["step"] for s in rows[0]["steps"]]:
        steps.add_row(name, *(next((f"{s['seconds']:.1f} {s['state']}" for s in r["steps"] if s["step"] == name),
                                   "-") for r in rows))
    console.print(steps)
    for row in rows:
        console.print(f"[bold]{row['run']}[/bold], Ansible's slowest tasks: " + "; ".join(
            f"{name} {seconds:.2f} s" for name, seconds in row["slowest_tasks"]))
    later = [r["seconds"] for r in rows[1:]]
    if later:
        console.print(f"no-change runs: median {statistics.median(later):.2f} s, "
                      f"{statistics.median(later) / first:.3f}× the first converge ({first:.1f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2, None)
