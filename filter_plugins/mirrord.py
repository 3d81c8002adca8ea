"""Ansible filters of this project, the same code `./run mirrord-config` runs: `mirrord_filter_problem` (what the
mirrord CLI would refuse in a filter) and `mirrord_user_filter` (a person's filter: their load's e-mails)."""

from __future__ import annotations

from demokit.config.mirrordcfg import filter_problem, user_filter


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"mirrord_filter_problem": filter_problem, "mirrord_user_filter": user_filter}
