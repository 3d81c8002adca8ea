"""The suite itself, as `./run test` runs it: a test worker that dies ends the run at once, failed and named, instead
of leaving it waiting for ever (pytest-xdist with this project's scheduler, tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from demokit.tasks.dev import _distribution
from tests.helpers import ROOT

pytestmark = pytest.mark.stack  # pytest in processes of its own


def test_a_worker_that_dies_ends_the_run_failed_and_named(tmp_path: Path) -> None:
    (tmp_path / "test_dies.py").write_text(
        "import os\n\n\ndef test_lives():\n    pass\n\n\ndef test_dies():\n    os._exit(9)\n\n\n"
        "def test_after_it():\n    pass\n")
    (tmp_path / "test_other.py").write_text("def test_other():\n    pass\n")
    # As ./run test starts it: the project's scheduler (its conftest, loaded as a plugin) and its xdist flags.
    argv = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q",
            "--rootdir", str(tmp_path), *_distribution(2).split(), str(tmp_path)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    # Once, and the run ends: not a worker restarted to die again (pytest-xdist's default restarts up to 4 per
    # worker, each crash a failure of its own), nor a scheduler left waiting for the dead worker's files.
    # (Counted by xdist's "node down" line: the crash message itself shows twice or once, as the terminal's width
    # lets the short summary carry it.)
    assert said.count("node down") == 1, said
    assert "crashed while running 'test_dies.py::test_dies'" in said, said
    assert "1 failed" in said, said
