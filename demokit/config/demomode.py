"""DEMO_MODE as it runs, read from what runs (the processes' environment on `local`, the Deployments' env on a
cluster), and switched on exactly the workloads that read it (metalmart/services.yml says which)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from demokit.errors import NOT_READY, UNREACHABLE, UserError
from metalmart import services as table
from metalmart.settings import DEMO_STEPS, NORMAL_STEPS

if TYPE_CHECKING:
    from demokit.targets import Target

Say = Callable[[str], None]


def per_order(on: bool) -> str:
    steps = DEMO_STEPS if on else NORMAL_STEPS
    same = len(set(steps)) == 1
    shown = f"{steps[0] * 1000:.0f} ms × {len(steps)}" if same else " + ".join(f"{d:g} s" for d in steps)
    return f"{shown}, about {sum(steps):g} s an order"


def readers() -> list[str]:
    return [s.name for s in table.services() if s.reads_demo_mode]


def _deployments(target: Target) -> dict[str, Any]:
    from kubernetes import client
    from urllib3.exceptions import HTTPError

    from demokit.kube.portforward import api_client

    apps = client.AppsV1Api(api_client(target))
    namespace = str(target.get("metalmart_namespace"))
    found = {}
    for name in readers():
        try:
            found[name] = apps.read_namespaced_deployment(name, namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise UserError(f"the cluster refused to read deployment {namespace}/{name}: {exc.reason}",
                                NOT_READY) from None
        except HTTPError as exc:
            raise UserError(f"the cluster of target {target.name!r} is unreachable ({type(exc).__name__}); is it "
                            f"running? ./run fresh-start --target {target.name}", UNREACHABLE) from None
    return found


def live(target: Target) -> dict[str, bool | None]:
    """{workload: DEMO_MODE it runs with} for the workloads that read it; {} when none runs."""
    if target.kind == "local":
        from demokit.local.localstack import LocalStack

        return LocalStack(target).live_demo_mode()
    from kubernetes.client import ApiClient

    return from_deployments(ApiClient().sanitize_for_serialization(d) for d in _deployments(target).values())


def from_deployments(deployments: Iterable[Mapping[str, Any]]) -> dict[str, bool | None]:
    """{workload: DEMO_MODE it runs with} from Deployments as the API returns them (the roles' lookups hand them
    over as they are), for the workloads that read it."""
    names = set(readers())
    values: dict[str, bool | None] = {}
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        if name not in names:
            continue
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env")
               or []}
        values[name] = None if "DEMO_MODE" not in env else env["DEMO_MODE"] == "true"
    return values


def kept(running: dict[str, bool | None], wanted: bool, target: str) -> tuple[bool | None, str]:
    """(the DEMO_MODE a fresh-start or deploy keeps, what it says) when the mode that runs differs from the
    inventory's (`./run demo-mode` switched it): kept rather than flipped back; (None, "") otherwise. The one rule,
    for `local` (demokit.tasks.stack) and for the clusters (roles/metalmart, through filter_plugins/metalmart.py)."""
    now = state(running)
    if now not in ("on", "off") or (now == "on") == wanted:
        return None, ""
    follow = "on" if wanted else "off"
    return now == "on", (f"keeping DEMO_MODE {now} as it runs (the inventory says {follow}); ./run demo-mode "
                         f"{follow} --target {target} to follow the inventory")


def state(values: dict[str, bool | None]) -> str:
    """on, off or mixed (several workloads that disagree), or `not running`."""
    seen = set(values.values())
    if not seen:
        return "not running"
    return "mixed" if len(seen) > 1 or None in seen else ("on" if seen == {True} else "off")


def switch(target: Target, on: bool, say: Say, verbose: bool = False) -> list[str]:
    """DEMO_MODE on or off on the workloads that read it; returns the ones restarted."""
    if target.kind == "local":
        from demokit.local.localstack import LocalStack

        return LocalStack(target).set_demo_mode(on, say)
    from demokit.kube import cluster

    before = _deployments(target)
    image = next(iter(before.values())).spec.template.spec.containers[0].image
    # The image that runs, whatever the working copy holds: only DEMO_MODE may change.
    cluster.run_playbook(target, "demo-mode", say,
                         {"metalmart_demo_mode": on, "metalmart_image_tag": image.rsplit(":", 1)[1]}, verbose)
    after = _deployments(target)
    return [name for name in before if after[name].metadata.generation != before[name].metadata.generation]
