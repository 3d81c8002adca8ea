"""Invoke entry point: `invoke --list`, `invoke fresh-start`, `invoke load --rate 20 --duration 120`. The tasks live in
demokit/tasks/, one module per domain.

An Invoke installed outside the project's `.venv` (pipx, another virtualenv, the system's) lacks the project's
dependencies: it hands the same command line to `./run`, which creates or refreshes `.venv` (as on a fresh clone)
and runs the same tasks there.
"""

import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent

if Path(sys.prefix).resolve() != (_ROOT / ".venv").resolve():
    sys.stdout.flush()
    os.execv(str(_ROOT / "run"), [str(_ROOT / "run"), *sys.argv[1:]])

# The composition root, above everything it gathers: the project's tasks, and the benchmarks' (which import the
# project; the project never imports them).
from benchmarks.tasks import ns as _bench  # noqa: E402  (only in the project's environment)
from demokit.tasks import ns  # noqa: E402

ns.add_collection(_bench, "bench")
__all__ = ["ns"]

if __name__ == "__main__":  # ./run
    from demokit.cli import main

    main(ns)
