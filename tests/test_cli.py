"""The command line as a user meets it: every numeric option of every task answers a bad value with one line naming
the option and an example, exit 2 (never a traceback), and the path options say what is wrong with the path."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from invoke import Collection

from tasks import ns  # the whole command line: the project's tasks and the benchmarks'
from tests.helpers import ROOT, RUN

pytestmark = pytest.mark.stack  # ./run

POSITIONAL = {"cluster": ["status"]}


def _numeric_options(collection: Collection, prefix: str = "") -> list[tuple[str, str, type]]:
    found = []
    for name, task in collection.tasks.items():
        for arg in task.get_arguments():
            if arg.kind in (int, float) and not arg.positional:
                found.append((prefix + name, max(arg.names, key=len).replace("_", "-"), arg.kind))
    for sub_name, sub in collection.collections.items():
        found += _numeric_options(sub, f"{prefix}{sub_name}.")
    return found


OPTIONS = _numeric_options(ns)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_every_numeric_option_is_found() -> None:
    assert len(OPTIONS) >= 10, OPTIONS
    assert {("load", "rate", float), ("load", "duration", float), ("metrics", "interval", float),
            ("load", "max-inflight", int)} <= set(OPTIONS)


@pytest.mark.parametrize(("task", "option", "kind"), OPTIONS, ids=[f"{t}--{o}" for t, o, _ in OPTIONS])
def test_a_bad_value_for_any_numeric_option_is_one_line_and_exit_2(task: str, option: str, kind: type) -> None:
    done = _run(task, *POSITIONAL.get(task, []), f"--{option}", "abc")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    what = "a whole number" if kind is int else "a number"
    assert len(lines) == 1 and lines[0].startswith(f"error: --{option} takes {what} (got 'abc'); e.g. --{option} ")
    assert "Traceback" not in done.stderr


def test_a_report_path_in_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    done = _run("load", "--base-url", "http://127.0.0.1:9", "--json", str(tmp_path / "no" / "report.json"))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: --json {tmp_path / 'no' / 'report.json'}: folder {tmp_path / 'no'} does not exist"]


def test_a_render_folder_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    done = _run("render", "--out", str(taken))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: --out {taken} is a file; name a folder to render into"]


def test_an_unknown_option_or_task_is_one_line_and_exit_2() -> None:
    for args in (["load", "--rat", "20"], ["lod"]):
        done = _run(*args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_bare_word_after_a_task_is_its_argument_even_when_it_names_a_task(tmp_path: Path) -> None:
    """`./run cluster status --json` asks the control plane, not `./run status` too (both are tasks)."""
    done = subprocess.run([*RUN, "cluster", "status", "--json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "METALMART_KUBE_DIR": str(tmp_path / "kube")})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {**json.loads(done.stdout), "running": False, "processes": {}}


@pytest.mark.slow
def test_two_runs_at_once_on_a_fresh_clone_install_once_and_both_work(tmp_path: Path) -> None:
    """The demo's own layout: load in one terminal, metrics in the other, both started on a fresh clone. Two
    installs into one .venv at once used to crash pip in one of them."""
    import sys

    clone = tmp_path / "clone"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            (clone / name).write_bytes((ROOT / name).read_bytes())
            (clone / name).chmod((ROOT / name).stat().st_mode)
    env = {**os.environ, "PYTHON": getattr(sys, "_base_executable", sys.executable)}
    runs = [subprocess.Popen([str(clone / "run"), "--list"], cwd=clone, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=900) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-1500:] for _, err in outputs]
    assert all("fresh-start" in out for out, _ in outputs), "both show the tasks"
    installs = sum(err.count("installing requirements/automation.txt") for _, err in outputs)
    assert installs == 1, [err for _, err in outputs]
