"""One line per step (a role, or a play's own tasks) for people: `n/m name  time  changed|unchanged`, written to
stderr while Ansible's own output goes to the log file. Enabled by ./run (ANSIBLE_CALLBACKS_ENABLED), which also
names a file (METALMART_PLAYBOOK_STATS) for the stats the playbook sets for it (set_stats)."""

from __future__ import annotations

import gc
import json
import os
import sys
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: metalmart_steps
    type: notification
    short_description: one line per step of a MetalMart playbook
    description: Prints n/m, the step, the time it took and whether it changed anything, on stderr.
    requirements: [enable in configuration]
"""

HELPERS = {"k8s_objects", "metalmart", "mirrord_config", "engineers"}
INCLUDES = {"include_role", "import_role", "ansible.builtin.include_role", "ansible.builtin.import_role"}


def _tasks(blocks):
    """Every task of a play, through its blocks."""
    for block in blocks:
        for item in (getattr(block, "block", None) or []) + (getattr(block, "rescue", None) or []) \
                + (getattr(block, "always", None) or []):
            if hasattr(item, "block"):
                yield from _tasks([item])
            else:
                yield item


def _will_be_rescued(task) -> bool:
    """A failure inside a block that has a rescue section is handled there (which reports it)."""
    parent = task._parent
    while parent is not None:
        body = getattr(parent, "block", None) or []
        if getattr(parent, "rescue", None) and any(getattr(t, "_uuid", None) == task._uuid for t in body):
            return True
        parent = getattr(parent, "_parent", None)
    return False


def _preload_kubernetes_client() -> None:
    """Load the Kubernetes client once, here in Ansible's main process. Each task runs in a process forked from it, so
    the roles' lookups, the readiness filter and pod_exec then find the client loaded instead of loading it again
    (0.25 s a task on this machine). So is kubernetes.core's k8s lookup, through Ansible's own plugin loader, which
    takes a plugin already loaded from here (its module and what it imports: 0.04 s a lookup here). Modules run as
    processes of their own and are not affected."""
    try:
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s import client, waiter  # noqa: F401
        from kubernetes.dynamic import resource  # noqa: F401
        from kubernetes.stream import ws_client  # noqa: F401
    except ImportError:
        return  # no client installed: the first task that needs it says so
    from ansible.plugins.loader import lookup_loader

    lookup_loader.get("kubernetes.core.k8s")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "metalmart_steps"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.done = 0
        self.step: str | None = None
        self.started = 0.0
        self.changed = False
        self.notes: list[str] = []
        self.tty = sys.stderr.isatty()

    def _out(self, line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def v2_playbook_on_start(self, playbook) -> None:
        _preload_kubernetes_client()
        names = []
        for play in playbook.get_plays():
            roles = [r.get_name() for r in play.get_roles() if r.get_name() not in HELPERS]
            tasks = list(_tasks(play.tasks))
            included = [t.args.get("name") for t in tasks if t.action in INCLUDES]
            plain = [t for t in tasks if t.action not in INCLUDES and t.action != "meta"]
            steps = roles + [n for n in included if n not in HELPERS]
            names += steps + ([play.get_name()] if plain or not steps else [])
        self.total = len(names)

    def _step_of(self, task) -> str | None:
        """The step a task belongs to; None for a helper's task before any step (it belongs to the next one)."""
        role = task._role.get_name() if task._role else None
        play = task._parent._play.get_name() if task._parent else "tasks"
        if role in HELPERS:
            return self.step if self.step or task.action in INCLUDES else (None if self._more_steps(task) else play)
        return role or play

    def _more_steps(self, task) -> bool:
        """Whether the play has steps of its own after a helper's task (roles, or tasks outside helpers)."""
        play = task._parent._play if task._parent else None
        return bool(play and [r for r in play.get_roles() if r.get_name() not in HELPERS])

    def _finish(self, failed: str | None = None) -> None:
        if self.step is None:
            return
        self.done += 1
        took = time.monotonic() - self.started
        state = "FAILED" if failed else ("changed" if self.changed else "unchanged")
        self._out(f"  {self.done:>2}/{self.total} {self.step:<18} {took:6.1f} s  {state}")
        for note in self.notes:
            self._out(f"        {note}")
        if failed:
            self._out(f"        {failed}")
        self.step, self.notes, self.changed = None, [], False

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        if task.action in INCLUDES and not task._role:
            return  # the play including a role: the role's own tasks start its step
        step = self._step_of(task)
        if step is None:
            return
        if step != self.step:
            self._finish()
            self.step, self.started = step, time.monotonic()

    def v2_runner_on_ok(self, result) -> None:
        if result._result.get("changed"):
            self.changed = True
        msg = result._result.get("msg")
        if result._task.action in ("debug", "ansible.builtin.debug") and isinstance(msg, str):
            if self.step is None:  # a helper's note before any step (DEMO_MODE kept): said at once
                self._out(f"        {msg}")
            else:
                self.notes.append(msg)

    def v2_runner_item_on_ok(self, result) -> None:
        if result._result.get("changed"):
            self.changed = True

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        if ignore_errors:
            return
        msg = result._result.get("msg") or result._result.get("stderr") or "failed"
        if not _will_be_rescued(result._task):
            self._finish(failed=msg if isinstance(msg, str) else "; ".join(map(str, msg)))

    def v2_playbook_on_stats(self, stats) -> None:
        self._finish()
        failed = any(stats.failures.values()) or any(stats.dark.values())
        summary = {h: stats.summarize(h) for h in stats.processed}
        changed = sum(s["changed"] for s in summary.values())
        self._out(f"  {'failed' if failed else 'done'}: changed={changed}")
        # The stats the playbook set for ./run (set_stats: the summary after a fresh-start), for the file it named.
        custom_file = os.environ.get("METALMART_PLAYBOOK_STATS")
        if custom_file:
            with open(custom_file, "w") as fh:
                json.dump(stats.custom, fh, default=str)
        # The last thing Ansible tells: its process only cleans up and exits now. Without this its final garbage
        # collection walks every object of the run and the preloaded client (0.4-0.5 s on this machine); frozen,
        # they are left to the exit. Nothing of the run is lost: its output is written, its files closed.
        gc.freeze()
