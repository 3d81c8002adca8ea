"""What every task module shares: printing to the right stream, --json, and the target a task works on."""

from __future__ import annotations

import json
import sys
from typing import Any

from invoke import Context
from rich.console import Console

from demokit import targets

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
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
