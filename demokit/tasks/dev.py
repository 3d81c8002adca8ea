"""Developer tasks: lint and the test suite."""

from __future__ import annotations

import os
import shlex
import sys
import tomllib
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


# The suite's tiers, named for what their tests start (tests/conftest.py puts every test in one): which to run when is
# in the README.
TIERS = {
    "unit": "starts no process: seconds, after any change",
    "stack": "local processes (brokers, PostgreSQL, the app, Ansible, ./run, mirrord's checker, a builder)",
    "cluster": "the real Kubernetes control plane and node",
    "browser": "headless Chromium on the storefront and the metrics page",
}


@task(
    help={
        "k": "only tests matching this pytest -k expression",
        "tier": "only these tiers, comma-separated: " + "; ".join(f"{t}: {w}" for t, w in TIERS.items())
                + " (default: all)",
        "no_lint": "skip lint",
        "no_setup": "skip installing Debian's packages and building what the tiers run (mirrord's checker, the "
                    "cluster)",
        "workers": "test processes (pytest-xdist; default: the cores, 2 to 4; 1 runs them in this process)",
    },
)
def test(c: Context, k: str = "", tier: str = "", no_lint: bool = False, no_setup: bool = False,
         workers: int = 0) -> None:
    """Lint, then every test, or the tiers --tier names (unit, stack, cluster, browser).

    Installs what the tiers need from Debian's packages first when absent (PostgreSQL, Java, Chromium, Buildah, the
    node's runtime), and builds mirrord's own checker and the Kubernetes cluster the cluster tests run against
    (each once, then cached)."""
    tiers = _tiers(tier)  # bad input is refused before the setup's minutes
    distribution = _distribution(workers)
    python = shlex.quote(sys.executable)
    with c.cd(str(ROOT)):
        if not no_setup and set(tiers) != {"unit"}:
            # mirrord's own config and jq code (the verdict on what the demo hands mirrord), built from
            # ../shared/mirrord beside the installs and the cluster's builds below: their downloads and writes
            # overlap its compile.
            checker = c.run(f"{python} -m demokit.config.verdict build", asynchronous=True) \
                if "stack" in tiers else None
            c.run("bash scripts/ensure-test-deps.sh")
            if "cluster" in tiers:
                # The real control plane, the real node and the tools the cluster tests use, from pinned Go modules
                # beside the node's stand-in images.
                c.run(f"{python} -m demokit.testcluster.node prepare")
            if "stack" in tiers:
                # The arm64 stand-in base, where this machine emulates arm64: minutes under emulation, once.
                c.run(f"{python} -m demokit.testcluster.standin prepare arm64")
            if checker is not None:
                checker.join()
        if not no_lint:
            lint(c)
        selected = f" -k {shlex.quote(k)}" if k else ""
        marks = "" if set(tiers) == set(TIERS) else f" -m {shlex.quote(' or '.join(tiers))}"
        c.run(f"{python} -m pytest -q -ra --durations=25{marks}{selected}{distribution}", pty=sys.stdout.isatty())


def _tiers(text: str) -> list[str]:
    tiers = [t.strip() for t in text.split(",") if t.strip()] or list(TIERS)
    unknown = [t for t in tiers if t not in TIERS]
    if unknown:
        raise UserError(f"--tier {text}: no tier {', '.join(unknown)}; give some of {', '.join(TIERS)}, e.g. "
                        "--tier unit,stack", USAGE)
    return tiers


def _distribution(workers: int) -> str:
    """pytest-xdist's flags for `workers` processes (0: the cores, at least 2 and at most 4). Most of a test's time
    is spent waiting on a control plane, a broker or a rollout (one run on 2 cores kept them about half busy), so two
    processes are worth it even on 2 cores; each makes its own control plane and broker, hence the ceiling. Tests
    are handed out a file at a time, or files that must share a process together (tests/conftest.py), in file order."""
    if workers < 0:
        raise UserError(f"--workers {workers}: give 1 or more test processes (0 or none: as many as the cores)",
                        USAGE)
    count = workers or min(4, max(2, os.cpu_count() or 1))
    # A worker that dies ends the run at once, failed and named: restarted, it would leave pytest-xdist's scheduler
    # waiting for ever for the files it had been handed (seen: both workers idle, no end).
    return "" if count == 1 else f" -n {count} --max-worker-restart 0"


LOCKS = {"app": [], "automation": ["--extra", "automation"], "dev": ["--extra", "automation", "--extra", "dev"]}


@task
def lock(c: Context) -> None:
    """Lock every dependency with hashes, from the pins in pyproject.toml.

    requirements/app.txt for the image, automation.txt for ./run, dev.txt for the tests; for Python 3.11+ on any
    platform."""
    with c.cd(str(ROOT)):
        common = ["--generate-hashes", "--universal", "--python-version", "3.11", "-q"]
        for name, extras in LOCKS.items():
            c.run(" ".join([_tool("uv"), "pip", "compile", "pyproject.toml", *extras, *common,
                            "-o", f"requirements/{name}.txt"]))
        # The installer ./run installs first, with pip, to install the locks above: uv at the version dev pins.
        pinned = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                      ["optional-dependencies"]["dev"] if d.startswith("uv=="))
        c.run(" ".join([f"echo {shlex.quote(pinned)} |", _tool("uv"), "pip", "compile", "-", *common,
                        "-o", "requirements/bootstrap.txt"]))


TASKS = {"lint": lint, "test": test, "lock": lock}
