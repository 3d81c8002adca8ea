"""The README's cluster path as a newcomer takes it, in a clean clone with none of the tests' wiring (no inventory,
kube folder or port of the tests' choosing; no virtualenv active): `./run cluster start`, `./run fresh-start --target
testcluster` twice, `load`, `metrics`, `doctor`, `teardown`, `./run cluster stop`; once with the real node and once
with `METALMART_NODE=off` (a machine where no real node can run). What is asserted is what a user sees: exit codes,
no traceback, no line said twice, and every `./run …` hint one that Invoke accepts as printed.

One real node per machine: this file shares the worker of the other files that start one (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from demokit.testcluster import node
from tests.helpers import ROOT, path_without_minikube

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

# `./run TASK` and its flags, each with at most one value (what follows is prose).
HINT = re.compile(r"\./run [a-z][a-z.-]*(?: --[a-z][a-z-]*(?: (?!--)[A-Za-z0-9_./:=+@-]+)?)*")


class Clone:
    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path, self.env = path, env
        self.hints: set[str] = set()

    def run(self, *argv: str, env: dict[str, str] | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["./run", *argv], cwd=self.path, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout)
        said = done.stdout + done.stderr
        assert "Traceback" not in said, said[-3000:]
        lines = [line.strip() for line in said.splitlines() if line.strip()]
        twice = {line for line in lines if lines.count(line) > 1}
        assert not twice, f"./run {' '.join(argv)} said these more than once: {sorted(twice)[:5]}"
        self.hints.update(m.group(0).rstrip(".,;:") for m in HINT.finditer(said))
        return done

    def hints_parse(self) -> None:
        """Every `./run …` a task printed is a task and flags Invoke knows (asked with --help: nothing runs)."""
        for hint in sorted(self.hints):
            argv = shlex.split(hint)[1:]
            if argv[0] in ("test", "cluster"):
                continue  # `./run test` is the suite itself; `cluster` takes an action word, checked by running it
            done = subprocess.run(["./run", *argv, "--help"], cwd=self.path, env=self.env, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0 and "No idea what" not in done.stderr, (hint, done.stderr)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clone]:
    path = tmp_path_factory.mktemp("journey") / "metalmart"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(path)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "METALMART_KUBE_DIR", "METALMART_NODE")
           and not k.startswith("INVOKE_")}
    env["PATH"] = os.pathsep.join(d for d in path_without_minikube().split(os.pathsep) if not d.startswith(str(ROOT)))
    c = Clone(path, env)
    yield c
    c.run("cluster", "stop")


@pytest.mark.timeout(1800)  # a first run in a new clone: its virtualenv, the node, the app image built
def test_the_cluster_path_with_the_real_node(clone: Clone, tmp_path: Path) -> None:
    why = node.unavailable()
    if why:
        pytest.skip(f"no real node here: {why}")
    started = clone.run("cluster", "start")
    assert started.returncode == 0, started.stderr[-3000:]
    assert "control plane up in" in started.stderr and f"real node {node.NAME} up in" in started.stderr
    try:
        first = clone.run("fresh-start", "--target", "testcluster")
        assert first.returncode == 0, first.stderr[-3000:]
        assert re.search(r"order ORD-\S+ shipped", first.stderr), first.stderr[-3000:]
        second = clone.run("fresh-start", "--target", "testcluster")
        assert second.returncode == 0 and "(nothing changed)" in second.stdout, second.stderr[-3000:]

        report = tmp_path / "load.json"
        load = clone.run("load", "--target", "testcluster", "--rate", "10", "--duration", "10", "--json", str(report))
        assert load.returncode == 0, load.stderr[-3000:]
        counted = json.loads(report.read_text())
        assert counted["scheduled"] == counted["sent"] == counted["succeeded"] == 100, counted

        metrics = clone.run("metrics", "--target", "testcluster")
        assert metrics.returncode == 0 and "order.created" in metrics.stdout, metrics.stderr[-3000:]

        doctor = clone.run("doctor", "--target", "testcluster")
        # No licence on a test machine, so no operator: its lines are the only ones that block, each with its fix.
        blocking = [line for line in doctor.stdout.splitlines() if "(blocks the demo)" in line]
        assert doctor.returncode == 4 and blocking, doctor.stdout
        assert all(re.search(r"operator|splitting resources|licence", line) and "→" in line for line in blocking), \
            blocking
        assert "✓ the stack answers" in doctor.stdout and "✓ the catalogue is seeded" in doctor.stdout
    finally:
        down = clone.run("teardown", "--target", "testcluster", "--yes")
        stopped = clone.run("cluster", "stop")
    assert down.returncode == 0, down.stderr[-3000:]
    assert stopped.returncode == 0 and "stopped the real node" in stopped.stderr, stopped.stderr
    clone.hints_parse()


@pytest.mark.timeout(900)
def test_the_cluster_path_where_no_real_node_can_run(clone: Clone) -> None:
    off = {"METALMART_NODE": "off"}
    started = clone.run("cluster", "start", env=off)
    assert started.returncode == 0, started.stderr[-3000:]
    assert "no real node: METALMART_NODE=off" in started.stderr
    try:
        refused = clone.run("fresh-start", "--target", "testcluster", env=off)
        assert refused.returncode == 4, refused.stderr
        [line] = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
        assert "nothing was deployed" in line and "./run cluster start" in line, line
        again = clone.run("fresh-start", "--target", "testcluster", env=off)
        assert again.returncode == 4 and again.stderr == refused.stderr, "the same refusal, nothing more"

        for argv in (("load", "--target", "testcluster", "--rate", "5", "--duration", "5"),
                     ("metrics", "--target", "testcluster")):
            done = clone.run(*argv, env=off)
            errors = [x for x in done.stderr.splitlines() if x.startswith("error:")]
            assert done.returncode != 0 and len(errors) == 1, (argv, done.stderr)
            assert "--target testcluster" in errors[0] or "./run cluster start" in errors[0], errors

        doctor = clone.run("doctor", "--target", "testcluster", env=off)
        assert doctor.returncode == 4, doctor.stdout
        assert re.search(r"✗ the stack answers: nothing deployed .*→ \./run fresh-start --target testcluster",
                         doctor.stdout), doctor.stdout
        assert "✓" not in doctor.stdout.split("the mirrord operator runs")[0].split("the stack answers")[1]

        down = clone.run("teardown", "--target", "testcluster", "--yes", env=off)
        assert down.returncode == 0, down.stderr
    finally:
        stopped = clone.run("cluster", "stop", env=off)
    assert stopped.returncode == 0 and "stopped the control plane" in stopped.stderr, stopped.stderr
    gone = clone.run("status", "--target", "testcluster")
    assert gone.returncode != 0 and "is it running? ./run cluster start" in gone.stderr, gone.stderr
    clone.hints_parse()
