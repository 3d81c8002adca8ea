"""The task decorator every task module uses: Invoke's, with this project's checks on every option (a bad value is
one line naming the option and an example). Below the tasks, which the command line (demokit.cli) gathers."""

from __future__ import annotations

import re
import typing
from typing import Any

import invoke
from invoke import Argument, ParseError

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
