"""Developer tasks: lint and the test suite."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from invoke import Context

from demokit.errors import USAGE, UserError
from demokit.taskdef import task

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    return shlex.quote(str(BIN / name))


@task(help={"fix": "let ruff fix what it can"})
def lint(c: Context, fix: bool = False) -> None:
    """Lint Python (ruff), YAML (yamllint), Ansible (ansible-lint), the Dockerfile (hadolint) and the import layers."""
    with c.cd(str(ROOT)):
        c.run(f"{_tool('ruff')} check {'--fix ' if fix else ''}.")
        c.run(f"{_tool('yamllint')} --strict .")
        if (ROOT / "playbooks").is_dir():
            # With .venv/bin first on PATH, ansible-lint finds the pinned ansible, and says nothing about PATH.
            c.run(f"{_tool('ansible-lint')} --offline", env={"PATH": f"{BIN}:{os.environ.get('PATH', '')}"})
        c.run(f"{_tool('hadolint')} Dockerfile")
        c.run(f"{_tool('lint-imports')}")  # the layers of the code: pyproject.toml, [tool.importlinter]


@task(
    help={
        "k": "only tests matching this pytest -k expression",
        "fast": "the fast tier: lint, unit and render tests (no control plane, no browser, no long end-to-end runs)",
        "no_lint": "skip lint",
        "no_setup": "skip installing PostgreSQL and Chromium and building the Kubernetes control plane",
        "workers": "test processes (pytest-xdist; default: the cores, 2 to 4; 1 runs them in this process)",
    },
)
def test(c: Context, k: str = "", fast: bool = False, no_lint: bool = False, no_setup: bool = False,
         workers: int = 0) -> None:
    """Lint, then every test; --fast for the quick tier.

    Installs PostgreSQL and Chromium from Debian's packages first when absent, and builds the Kubernetes control
    plane the cluster tests run against."""
    distribution = _distribution(workers)  # bad input is refused before the setup's minutes
    with c.cd(str(ROOT)):
        if not no_setup:
            c.run("bash scripts/ensure-test-deps.sh")
            # mirrord's own config and jq code, the verdict on what the demo hands mirrord: built once from
            # ../shared/mirrord (about 2.5 minutes cold), then cached; where it cannot be, one line says why.
            c.run(f"{shlex.quote(sys.executable)} -m demokit.config.verdict build")
            if not fast:
                # The real Kubernetes control plane, the real node and the tools the cluster tests use, built once
                # from pinned Go modules beside the node's stand-in images, then cached under ~/.cache/metalmart.
                c.run(f"{shlex.quote(sys.executable)} -m demokit.kube.node prepare")
                # The arm64 stand-in base, where this machine emulates arm64: minutes under emulation, once.
                c.run(f"{shlex.quote(sys.executable)} -m demokit.images.standin prepare arm64")
        if not no_lint:
            lint(c)
        selected = f" -k {shlex.quote(k)}" if k else ""
        tier = " -m 'not cluster and not slow and not browser'" if fast else ""
        c.run(f"{shlex.quote(sys.executable)} -m pytest -q -ra --durations=15{tier}{selected}"
              f"{distribution}", pty=sys.stdout.isatty())


def _distribution(workers: int) -> str:
    """pytest-xdist's flags for `workers` processes (0: the cores, at least 2 and at most 4). Most of a test's time
    is spent waiting on a control plane, a broker or a rollout (one run on 2 cores kept them about half busy), so two
    processes are worth it even on 2 cores; each makes its own control plane and broker, hence the ceiling. Tests
    are handed out a file at a time, or files that must share a process together (tests/conftest.py), in file order."""
    if workers < 0:
        raise UserError(f"--workers {workers}: give 1 or more test processes (0 or none: as many as the cores)",
                        USAGE)
    count = workers or min(4, max(2, os.cpu_count() or 1))
    return "" if count == 1 else f" -n {count}"


LOCKS = {"app": [], "automation": ["--extra", "automation"], "dev": ["--extra", "automation", "--extra", "dev"]}


@task
def lock(c: Context) -> None:
    """Lock every dependency with hashes, from the pins in pyproject.toml.

    requirements/app.txt for the image, automation.txt for ./run, dev.txt for the tests; for Python 3.11+ on any
    platform."""
    with c.cd(str(ROOT)):
        for name, extras in LOCKS.items():
            c.run(" ".join([_tool("uv"), "pip", "compile", "pyproject.toml", *extras, "--generate-hashes",
                            "--universal", "--python-version", "3.11", "-q", "-o", f"requirements/{name}.txt"]))


TASKS = {"lint": lint, "test": test, "lock": lock}
