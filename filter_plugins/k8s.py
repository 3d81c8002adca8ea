"""The k8s_objects role's rules, each in one place:

- `k8s_ready`: whether an object as the API server returned it is ready, by the same rules the kubernetes.core
  modules wait on (its waiter's predicates): a Deployment or StatefulSet rolled out, a Job Complete, an object with a
  named condition (an operator's) showing it True, anything else by existing.
- `k8s_definition`: an object as kubernetes.core.k8s must be handed it: a kind ending in `List` wrapped in a v1 List
  (kubernetes.core reads any such kind as a list of items and, for MirrordPropertyList, applies nothing and reports
  ok), for the apply and for the settled check's dry run alike.
- `k8s_settled`: the groups already in place, from a dry-run apply's answers: none of a group's objects would
  change, none was refused, and each is ready (`k8s_ready`); an answer missing makes every group unsettled.
- `k8s_deadline` / `k8s_seconds_left`: a group's objects share one wait (they roll out at once): the deadline is set
  when the waits start, and each object waits only what is left of it (at least a second, for one look), so a group
  of four Deployments that never roll out fails after the timeout, not four timeouts later."""

from __future__ import annotations

import math
import time
from typing import Any


def k8s_ready(obj: dict[str, Any], condition: str = "") -> bool:
    # Imported here: the kubernetes client is only loaded by a playbook that asks.
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.waiter import (
        RESOURCE_PREDICATES,
        custom_condition,
        exists,
    )
    from kubernetes.dynamic.resource import ResourceInstance

    if not obj or not obj.get("kind"):
        return False
    instance = ResourceInstance(None, obj)
    if not condition and obj["kind"] == "Job":
        condition = "Complete"
    if condition:
        return custom_condition({"type": condition, "status": "True"}, instance)
    return bool(RESOURCE_PREDICATES.get(obj["kind"], exists)(instance))


def k8s_definition(obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": [obj]} if str(obj.get("kind", "")).endswith("List") else obj


def k8s_settled(answers: list[dict[str, Any]], objects: list[dict[str, Any]], groups: list[str]) -> list[str]:
    """`objects`: the k8s_objects lookup's entries ({group, ready, object}), in the order they were dry-run."""
    if len(answers) != len(objects):
        return []
    unsettled = {one["group"] for answer, one in zip(answers, objects, strict=True)
                 if "error" in answer or answer.get("changed") or not k8s_ready(answer.get("result") or {},
                                                                                one["ready"])}
    return [g for g in groups if g not in unsettled]


def k8s_deadline(timeout: int | str) -> float:
    return time.time() + float(timeout)


def k8s_seconds_left(deadline: float | str) -> int:
    return max(1, math.ceil(float(deadline) - time.time()))


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"k8s_ready": k8s_ready, "k8s_definition": k8s_definition, "k8s_settled": k8s_settled,
                "k8s_deadline": k8s_deadline, "k8s_seconds_left": k8s_seconds_left}
