"""Failures a user can fix, and their exit codes: shared by the app's command-line tools (the load generator) and
the automation (demokit.errors re-exports them; `./run`'s Executor in demokit.cli turns each into one line with its
exit code), while the app imports nothing of the automation."""

from __future__ import annotations

# Exit codes, one per kind of failure.
USAGE = 2          # bad options or input
UNREACHABLE = 3    # a target, service or broker did not answer
NOT_READY = 4      # something started but did not become healthy
CONFLICT = 5       # a port or resource is held by something else
INTERRUPTED = 130  # Ctrl-C


class UserError(Exception):
    """A failure the user can fix; the message says how. `code` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
