"""`k8s_ready`: whether an object as the API server returned it is ready, by the same rules the kubernetes.core
modules wait on (its waiter's predicates): a Deployment or StatefulSet rolled out, a Job Complete, an object with a
named condition (an operator's) showing it True, anything else by existing. The roles use it on a dry-run apply's
answer to tell a group that is already in place from one that needs applying and waiting for."""

from __future__ import annotations

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


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"k8s_ready": k8s_ready}
