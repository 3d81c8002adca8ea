"""Ansible filters of this project, the same code `./run mirrord-config` runs: `mirrord_filter_problem` (what the
mirrord CLI would refuse in a filter), `mirrord_user_filter` (a person's filter: their load's e-mails) and
`mirrord_amount_filter` (a `jq_filter` on the order's body: that person's orders above an amount)."""

from __future__ import annotations

from demokit.config.mirrordcfg import amount_filter, filter_problem, user_filter


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"mirrord_filter_problem": filter_problem, "mirrord_user_filter": user_filter,
                "mirrord_amount_filter": amount_filter}
