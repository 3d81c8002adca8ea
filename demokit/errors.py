"""User-facing failures: one line on stderr with the fix, a distinct exit code, the traceback only with --debug."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from invoke.exceptions import Exit

from metalmart.errors import CONFLICT, INTERRUPTED, NOT_READY, UNREACHABLE, USAGE, UserError

__all__ = ["CONFLICT", "INTERRUPTED", "NOT_READY", "UNREACHABLE", "USAGE", "UserError", "debugging", "friendly"]

F = TypeVar("F", bound=Callable[..., Any])


def debugging() -> bool:
    return logging.getLogger("invoke").isEnabledFor(logging.DEBUG) or "--debug" in sys.argv


def friendly(func: F) -> F:
    """Turn UserError and unexpected exceptions into one line and an exit code; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exit:
            raise
        except UserError as exc:
            if debugging():
                raise
            raise Exit(f"error: {exc}", code=exc.code) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=INTERRUPTED) from None
        except Exception as exc:
            if debugging():
                raise
            raise Exit(f"error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)", 1) from None

    return wrapper  # type: ignore[return-value]
