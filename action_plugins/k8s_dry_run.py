"""`k8s_dry_run`: a server-side apply of many objects as a dry run, in Ansible's own process, answering per object
what kubernetes.core.k8s answers with `apply: true`, `server_side_apply`, `check_mode: true` and
`continue_on_error: true`: whether the object would change, and what it would become.

Why not the k8s module itself: a module runs in a process of its own, which imports the Kubernetes client and
kubernetes.core every time, while the controller (whose lookups already loaded them) waits. This plugin runs
kubernetes.core's own steps for each object (`create_definitions`, `K8sService`, `perform_action`, which reads the
object, applies it with `dryRun=All` and compares with `diff_objects`) on a client built by kubernetes.core's
`get_api_client` from the same connection options (kubeconfig, context), so it reaches the cluster the modules reach
and decides `changed` exactly as the module does. Nothing is written to the cluster.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase

DOCUMENTATION = """
    name: k8s_dry_run
    short_description: Server-side apply dry run of many objects, in the controller's process
    options:
      definitions: {description: The objects (a *List kind is read as its items)., required: true, type: list}
      field_manager: {description: The field manager of the apply., required: true, type: str}
      force_conflicts: {description: Take over fields another manager owns., type: bool, default: false}
      connection: {description: kubernetes.core's connection options (kubeconfig, context)., type: dict}
"""


class _Module:
    """What kubernetes.core's K8sService and perform_action read of a module: its parameters, check mode, diff
    mode and warnings."""

    check_mode = True
    _diff = False

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        args = self._task.args
        if not isinstance(args.get("definitions"), list) or not args.get("field_manager"):
            return {**result, "failed": True, "msg": "k8s_dry_run needs definitions (a list) and field_manager"}
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s.resource import create_definitions
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s.runner import perform_action
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s.service import K8sService

        params = {
            "state": "present",
            "apply": True,
            "server_side_apply": {"field_manager": args["field_manager"],
                                  "force_conflicts": bool(args.get("force_conflicts", False))},
        }
        try:
            client = get_api_client(**(args.get("connection") or {}))
            definitions = create_definitions({"resource_definition": args["definitions"]})
        except Exception as exc:  # a kubeconfig that cannot be read, an object that is not one
            return {**result, "failed": True, "msg": f"k8s_dry_run could not start: {exc}"}
        # The client's own dry-run switch: every write it sends carries dryRun=All.
        client.dry_run = True
        module = _Module(params)
        service = K8sService(client, module)
        answers: list[dict[str, Any]] = []
        for definition in definitions:
            try:
                answers.append(perform_action(service, definition, params))
            except Exception as exc:  # as the module's continue_on_error: the object's error, then the next one
                answers.append({"changed": False, "error": {"msg": str(exc)}})
        return {**result, "changed": False, "results": answers,
                **({"warnings": module.warnings} if module.warnings else {})}
