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
import gc
import re
import sys
import typing
from typing import Any

import invoke
from invoke import Argument, Exit, ParseError, UnexpectedExit

from demokit.errors import INTERRUPTED, USAGE, UserError, debugging

EXAMPLES = {int: "10", float: "2.5", str: "VALUE"}


class CheckedArgument(Argument):
    """An option whose bad value is a ParseError naming the option and an example, not a ValueError."""

    def set_value(self, value: Any, cast: bool = True) -> None:
        try:
            super().set_value(value, cast)
        except (ValueError, TypeError):
            name = max(self.names, key=len).replace("_", "-")
            kind = {int: "a whole number", float: "a number"}.get(self.kind, self.kind.__name__)
            given = re.search(r"e\.g\. (\S+?)[,;)]?(\s|$)", self.help or "")
            example = given.group(1) if given else EXAMPLES.get(self.kind, "VALUE") if self.default in (
                None, "", False) else f"{self.default:g}" if isinstance(self.default, float) else self.default
            raise ParseError(f"--{name} takes {kind} (got {value!r}); e.g. --{name} {example}") from None


class Task(invoke.Task):
    optional_positional: str | None = None

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        """Invoke's arguments, checked; an option declared `x: float | None = None` takes a number (Invoke alone
        would take its kind from the default and parse it as a string)."""
        arguments = super().get_arguments(ignore_unknown_help)
        hints = typing.get_type_hints(self.body)
        for arg in arguments:
            arg.__class__ = CheckedArgument
            hint = hints.get(arg.name)
            if arg.default is None and hint is not None:
                kinds = [k for k in typing.get_args(hint) if k in (int, float)]
                if kinds:
                    arg.kind = kinds[0]
        return arguments


def task(*args: Any, optional_positional: str | None = None, **kwargs: Any) -> Any:
    """`invoke.task` making this module's Task. `optional_positional` names an option that may also be given as a
    bare word right after the task's name (`./run demo-mode on`); Invoke's own positional arguments are required."""
    made = invoke.task(*args, klass=Task, **kwargs)
    if optional_positional is None:
        return made

    def with_positional(body: Any) -> Task:
        result = made(body)
        result.optional_positional = optional_positional
        return result

    return with_positional


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

    def run(self, argv: list[str] | None = None, exit: bool = True) -> None:
        try:
            self.create_config()
            self.normalize_argv(argv)
            self.parse_core(self.argv[:1] + self._words_as_options(self.argv[1:]))
            self.parse_collection()
            self.parse_tasks()
            self.parse_cleanup()
            self.update_config()
            self.execute()
        except ParseError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(USAGE)
        except Exit as exc:
            if exc.message:
                print(exc.message, file=sys.stderr)
            sys.exit(exc.code)
        except UnexpectedExit as exc:
            if exc.result.hide:
                print(exc, file=sys.stderr, end="")
            sys.exit(exc.result.exited)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(INTERRUPTED)


def _exit_without_final_collection() -> None:
    """At exit, a last garbage collection walks every object Ansible's machinery and the Kubernetes client left
    (0.3-0.5 s after a fresh-start on this machine). Frozen, they are left to the process's end; atexit handlers
    still run and the output is flushed first."""
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()


def main() -> None:
    from demokit.tasks import ns

    atexit.register(_exit_without_final_collection)
    Program(namespace=ns, executor_class=Executor, name="MetalMart demo", binary="./run", version="0.1.0").run()


if __name__ == "__main__":
    main()
