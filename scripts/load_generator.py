#!/usr/bin/env python3
"""For people used to the original: `python scripts/load_generator.py RATE DURATION` (BASE_URL honoured).
The same generator as `./run load`; run it with the project's environment (`./run` creates .venv)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python scripts/load_generator.py RATE DURATION  (e.g. 20 120; BASE_URL sets the target)",
              file=sys.stderr)
        return 2
    from demokit.cli import main as run
    from demokit.tasks import ns

    args = ["load", "--rate", argv[0], "--duration", argv[1]]
    base_url = os.environ.get("BASE_URL")
    if base_url:
        args += ["--base-url", base_url]
    # The project's command line, so a bad value or an unreachable service is one line with the fix, as for ./run.
    run(ns, ["load_generator.py", *args], binary="load_generator.py")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
