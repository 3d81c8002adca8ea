"""The demo stack on a target: fresh-start, status, teardown."""

from __future__ import annotations

from invoke import Context, task
from rich.table import Table

from demokit import cluster, images, portforward, targets
from demokit.errors import USAGE, UserError, friendly
from demokit.localstack import SERVICES, LocalStack
from demokit.tasks.common import emit_json, out, say

TARGET_HELP = "an inventory under inventories/ (local, minikube, a region); default: minikube if installed, else local"


def _cluster_fresh_start(target: targets.Target, no_smoke: bool, verbose: bool) -> None:
    cluster.preflight(target)
    playbook = "fresh-start" if target.kind == "minikube" else "deploy-cluster"
    say(f"fresh-start on target {target.name!r} ({target.kind})")
    run = cluster.run_playbook(target, playbook, say, {"verify_enabled": not no_smoke}, verbose)
    ns, profile = target.get("metalmart_namespace"), target.get("minikube_profile")
    url = f"minikube --profile {profile} service storefront --namespace {ns} --url" if target.kind == "minikube" \
        else f"kubectl --namespace {ns} port-forward svc/storefront 8080:8080"
    operator = cluster.operator_state(target, portforward.api_client(target))
    if operator == "not installed":
        operator += ": no licence (MIRRORD_LICENSE_KEY or Ansible Vault)" if not (
            cluster.licence_given() or cluster.has_vault_licence(target)) else ""
    out.print()
    out.print(f"[bold]Storefront[/bold]  {url}")
    out.print(f"[bold]DEMO_MODE[/bold]   {'on' if target.get('demo_mode') else 'off'}")
    out.print(f"[bold]Operator[/bold]    {operator}")
    out.print("[bold]mirrord[/bold]     .mirrord/order-processor.json")
    out.print(f"[bold]Log[/bold]         {run.log}")
    out.print("\nNext:\n  ./run load --rate 20 --duration 120\n  ./run metrics --watch\n"
              "  mirrord exec -f .mirrord/order-processor.json -- python -m metalmart processor")
    if run.changed == 0:
        out.print("\n(nothing changed)")


@task(help={"target": TARGET_HELP, "no_smoke": "skip the smoke order through the pipeline",
            "verbose": "show Ansible's own output (cluster targets)"})
@friendly
def fresh_start(c: Context, target: str | None = None, no_smoke: bool = False, verbose: bool = False) -> None:
    """Bring the demo up from nothing (a second run changes nothing and says so)."""
    resolved = targets.resolve(target, say)
    if resolved.kind != "local":
        _cluster_fresh_start(resolved, no_smoke, verbose)
        return
    stack = LocalStack(resolved)
    say(f"fresh-start on target {stack.target.name!r} ({stack.target.kind})")
    result = stack.fresh_start(say, smoke=not no_smoke)
    mode = "on (orders ship in about 0.6 s)" if stack.demo_mode else "off (orders ship in about 10 s)"
    out.print()
    out.print(f"[bold]Storefront[/bold]  {stack.url('storefront')}")
    out.print(f"[bold]Orders API[/bold]  {stack.url('order')}/api/orders")
    out.print(f"[bold]Kafka[/bold]       {stack.bootstrap}  topic {stack.topic}")
    out.print(f"[bold]DEMO_MODE[/bold]   {mode}")
    out.print(f"[bold]Logs[/bold]        {stack.dir / 'logs'}")
    out.print("\nNext:\n  ./run load --rate 20 --duration 120\n  ./run metrics --watch")
    if not result["changed"]:
        out.print("\n(nothing changed)")


@task(help={"target": TARGET_HELP, "json": "print JSON only"})
@friendly
def status(c: Context, target: str | None = None, json: bool = False) -> None:
    """Each process (local) or workload (cluster) of the stack: state, readiness, DEMO_MODE, operator."""
    resolved = targets.resolve(target, say)
    if resolved.kind != "local":
        _cluster_status(resolved, json)
        return
    stack = LocalStack(resolved)
    procs = stack.processes()
    health = stack.health() if procs else {}
    rows = []
    for service in SERVICES:
        info = procs.get(service, {})
        rows.append({"service": service, "state": info.get("statename", "STOPPED"), "pid": info.get("pid") or None,
                     "port": stack.ports.get(service), "health": health.get(service, "down")})
    if json:
        emit_json({"target": stack.target.name, "supervisor": bool(procs), "processes": rows,
                   "demo_mode": stack.demo_mode})
        return
    table = Table(title=f"target {stack.target.name} ({stack.target.kind}) · DEMO_MODE "
                        f"{'on' if stack.demo_mode else 'off'}")
    for col in ("service", "state", "pid", "port", "health"):
        table.add_column(col)
    for r in rows:
        style = "green" if r["health"] == "ready" else "red"
        table.add_row(r["service"], r["state"], str(r["pid"] or "-"), str(r["port"]), f"[{style}]{r['health']}")
    out.print(table)
    if not procs:
        out.print("the stack is not running: ./run fresh-start --target " + stack.target.name)


def _cluster_status(target: targets.Target, as_json: bool) -> None:
    data = cluster.status(target)
    if as_json:
        emit_json(data)
        return
    mode = {True: "on", False: "off", None: "unknown"}[data["demo_mode"]]
    table = Table(title=f"target {target.name} ({target.kind}) · namespace {data['namespace']} · DEMO_MODE {mode}")
    for col in ("kind", "name", "ready", "image"):
        table.add_column(col)
    for w in data["workloads"]:
        style = "green" if w["ready"] >= w["replicas"] > 0 else "red"
        table.add_row(w["kind"], w["name"], f"[{style}]{w['ready']}/{w['replicas']}", w["image"])
    out.print(table)
    if not data["workloads"]:
        out.print(f"nothing is deployed: ./run fresh-start --target {target.name}")
    out.print(f"mirrord operator: {data['operator']}")
    split = ", ".join(f"{s['kind']}/{s['name']}" for s in data["splitting"]) or "none"
    out.print(f"splitting resources: {split}")


@task(help={"target": TARGET_HELP, "purge": "local: also delete the data (database, logs)",
            "yes": "cluster: do not ask for confirmation", "delete_cluster": "minikube: also delete the profile",
            "verbose": "show Ansible's own output (cluster targets)"})
@friendly
def teardown(c: Context, target: str | None = None, purge: bool = False, yes: bool = False,
             delete_cluster: bool = False, verbose: bool = False) -> None:
    """Stop everything: local processes and ports, or the cluster's namespace and splitting resources."""
    resolved = targets.resolve(target, say)
    if resolved.kind != "local":
        cluster.confirm_teardown(resolved, yes, delete_cluster)
        run = cluster.run_playbook(resolved, "teardown", say, {"delete_cluster": delete_cluster}, verbose)
        say("nothing was deployed; nothing to delete" if run.changed == 0 else f"deleted ({run.log})")
        return
    stack = LocalStack(resolved)
    if not stack.teardown(say, purge=purge):
        say("the local stack was not running; nothing to stop")


@task(help={"target": "a cluster inventory under inventories/ (default: minikube)",
            "verbose": "show Ansible's own output"})
@friendly
def deploy(c: Context, target: str = "minikube", verbose: bool = False) -> None:
    """Roll out the app only (image, services, seed, check), for a code change on a running demo cluster."""
    resolved = targets.load(target)
    if resolved.kind == "local":
        raise UserError("deploy is for cluster targets; on `local`, ./run teardown and ./run fresh-start restart "
                        "the processes with your code", USAGE)
    cluster.preflight(resolved)
    run = cluster.run_playbook(resolved, "deploy", say, {}, verbose)
    say("(nothing changed)" if run.changed == 0 else f"deployed image tag {images.content_tag()}")


TASKS = {"fresh-start": fresh_start, "status": status, "teardown": teardown, "deploy": deploy}
