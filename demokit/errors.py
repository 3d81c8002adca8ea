"""User-facing failures: one line on stderr with the fix, a distinct exit code, the traceback only with --debug."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from invoke.exceptions import Exit

from metalmart.loadgen import LoadError

F = TypeVar("F", bound=Callable[..., Any])

# Exit codes, one per kind of failure.
USAGE = 2          # bad options or input
UNREACHABLE = 3    # a target, service or broker did not answer
NOT_READY = 4      # something started but did not become healthy
CONFLICT = 5       # a port or resource is held by something else
INTERRUPTED = 130  # Ctrl-C


class UserError(Exception):
    """A failure the user can fix; the message says how."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


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
        except (UserError, LoadError) as exc:
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
