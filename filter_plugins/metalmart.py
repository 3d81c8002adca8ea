"""Ansible filters backed by the Python that owns each rule, so a role and `./run` say the same thing one way:
`metalmart_kept_demo_mode` (the DEMO_MODE a fresh-start keeps, demokit.config.demomode) and
`metalmart_operator_state` (the operator in one phrase, demokit.kube.cluster)."""

from __future__ import annotations

from typing import Any

from demokit.config import demomode
from demokit.kube.cluster import describe_operator


def kept_demo_mode(deployments: list[dict[str, Any]], wanted: Any, target: str) -> dict[str, Any]:
    """{keep: the DEMO_MODE to keep or None, say: what to say}, from the namespace's Deployments."""
    keep, said = demomode.kept(demomode.from_deployments(deployments), bool(wanted), target)
    return {"keep": keep, "say": said}


def operator_state(installed: Any, ours: Any, deployments: list[dict[str, Any]]) -> str:
    return describe_operator(bool(installed), bool(ours), deployments[0] if deployments else None)


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"metalmart_kept_demo_mode": kept_demo_mode, "metalmart_operator_state": operator_state}
