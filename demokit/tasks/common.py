"""What every task module shares: printing to the right stream, --json, and the target a task works on."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from invoke import Context
from rich.console import Console

from demokit import targets

# Not at a terminal (a pipe, a file, CI), rich would cut tables at 80 columns: as wide as a table needs there,
# unless COLUMNS says otherwise.
WIDE = 200


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, soft_wrap=True, width=WIDE)
    return console


out = _console()
err = _console(stderr=True)
TARGET_HELP = "an inventory under inventories/ (local, minikube, a region); default: minikube if installed, else local"


def say(message: str) -> None:
    """Progress for people: stderr, so stdout stays clean for --json."""
    err.print(message, markup=False)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def target_of(c: Context, name: str | None) -> targets.Target:
    """The target a task works on: --target, else Invoke's `metalmart.target` (invoke.yaml or
    INVOKE_METALMART_TARGET), else minikube when it is installed and `local` otherwise; from the inventories in
    `metalmart.inventories`."""
    config = c.config.metalmart
    return targets.resolve(name or config.target, config.inventories, say)


def cluster_target_of(c: Context, name: str | None, default: str = "minikube") -> targets.Target:
    """A target that must be a cluster (render, deploy): --target, else the configured one, else `default`."""
    config = c.config.metalmart
    return targets.load(name or config.target or default, config.inventories)
