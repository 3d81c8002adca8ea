"""Invoke entry point: `./run --list`. The tasks live in demokit/tasks/, one module per domain."""

from demokit.tasks import ns

__all__ = ["ns"]
