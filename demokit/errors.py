"""User-facing failures: one line on stderr with the fix, a distinct exit code, the traceback only with --debug
(`demokit.cli` applies this to every task)."""

from __future__ import annotations

import logging
import sys

from metalmart.errors import CONFLICT, INTERRUPTED, NOT_READY, UNREACHABLE, USAGE, UserError

__all__ = ["CONFLICT", "INTERRUPTED", "NOT_READY", "UNREACHABLE", "USAGE", "UserError", "debugging"]

def debugging() -> bool:
    return logging.getLogger("invoke").isEnabledFor(logging.DEBUG) or "--debug" in sys.argv
