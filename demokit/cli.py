"""`./run`: Invoke's Program with this project's command-line behaviour applied once to every task.

- A bad value for any option is one line naming the option, what it takes and an example, exit 2 (Invoke's parser
  would print a traceback for `--rate abc`).
- A UserError is one line with its exit code; Ctrl-C exits 130; anything unexpected is one line with a hint, and
  the traceback only with --debug.
- Invoke's own configuration carries the project's settings (`metalmart.target`, `metalmart.inventories`):
  defaults < invoke.yaml < INVOKE_METALMART_* environment < flags.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import sys
from collections.abc import Iterator
from typing import Any

import invoke
from invoke import Exit, ParseError, UnexpectedExit

from demokit.errors import INTERRUPTED, USAGE, UserError, debugging


class Executor(invoke.Executor):
    """Runs the tasks; every user-facing failure becomes one line and an exit code."""

    def execute(self, *tasks: Any) -> Any:
        try:
            return super().execute(*tasks)
        except (Exit, UnexpectedExit):
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


class Program(invoke.Program):
    """Invoke's Program, through its own hooks: the argument list normalized (`normalize_argv`), a parse error made
    one line with exit 2 (`parse_core`, `parse_tasks`: Invoke's `run` prints an Exit's message and exits with its
    code), and the project's invoke.yaml found beside tasks.py (`parse_collection`)."""

    def normalize_argv(self, argv: list[str] | str | None) -> None:
        super().normalize_argv(argv)
        self.argv = self.argv[:1] + self._words_as_options(list(self.argv[1:]))

    def parse_core(self, argv: list[str] | None) -> None:
        with _usage_errors():
            super().parse_core(argv)

    def parse_tasks(self) -> None:
        with _usage_errors():
            super().parse_tasks()

    def parse_collection(self) -> None:
        super().parse_collection()
        # The project's invoke.yaml sits beside tasks.py, whatever folder ./run is started from.
        from demokit.targets import ROOT

        self.config.set_project_location(str(ROOT))
        self.config.load_project()

    def _words_as_options(self, argv: list[str]) -> list[str]:
        """`TASK WORD` as `TASK --OPTION WORD` for a task with an optional positional argument. The word is the
        task's even when it names another task (`./run cluster status`): such tasks come last on a line."""
        names = set(self.namespace.task_names) if self.namespace is not None else set()
        out: list[str] = []
        for i, word in enumerate(argv):
            out.append(word)
            following = argv[i + 1] if i + 1 < len(argv) else None
            if word in names and following and not following.startswith("-"):
                option = getattr(self.namespace[word], "optional_positional", None)
                if option:
                    out.append(f"--{option.replace('_', '-')}")
        return out


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    try:
        yield
    except ParseError as exc:
        raise Exit(f"error: {exc}", code=USAGE) from None


def _exit_without_final_collection() -> None:
    """At exit, a last garbage collection walks every object Ansible's machinery and the Kubernetes client left
    (0.3-0.5 s after a fresh-start on this machine). Frozen, they are left to the process's end; atexit handlers
    still run and the output is flushed first."""
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()


def main(namespace: invoke.Collection, argv: list[str] | None = None, binary: str = "./run") -> None:
    """Run the command line over `namespace`, the project's tasks as tasks.py gathers them (`./run` runs it, and so
    does scripts/load_generator.py with its own `argv`). Ctrl-C outside a task (while parsing) exits 130 too."""
    atexit.register(_exit_without_final_collection)
    try:
        Program(namespace=namespace, executor_class=Executor, name="MetalMart demo", binary=binary,
                version="0.1.0").run(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED)
