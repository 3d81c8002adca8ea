"""The demo stack on a target: fresh-start, status, teardown."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from invoke import Context
from rich.table import Table

from demokit import images, targets
from demokit.config import demomode
from demokit.errors import NOT_READY, USAGE, UserError
from demokit.kafka import describe
from demokit.kube import cluster, portforward
from demokit.local.localstack import LocalStack, names
from demokit.targets import ROOT
from demokit.taskdef import task
from demokit.tasks.common import TARGET_HELP, cluster_target_of, emit_json, out, say, target_of
from metalmart import services as table


def _kept_demo_mode(target: targets.Target) -> bool | None:
    """DEMO_MODE as it runs when it differs from the inventory's (switched with ./run demo-mode): a fresh-start
    keeps it, and says so, rather than flip it back."""
    try:
        running = demomode.live(target)
    except UserError:
        return None  # nothing deployed yet, or not reachable: the playbook says what is wrong
    keep, said = demomode.kept(running, bool(target.get("metalmart_demo_mode")), target.name)
    if said:
        say(said)
    return keep


# A presenter's fresh-start and deploy keep DEMO_MODE as `./run demo-mode` switched it (the deploy playbook reads it
# from the Deployments and says so); a region's converge follows its inventory.
KEEP_DEMO_MODE = {"metalmart_keep_running_demo_mode": True}


def _real_node_runs(target: targets.Target) -> None:
    """A target whose pods go to a real node (the test cluster's, `metalmart_app_node_dir`) is refused in one line,
    before anything is deployed, when that node does not run: kwok's nodes only pretend to run pods, so nothing
    would answer."""
    from demokit.testcluster import node

    named = str(target.get("metalmart_app_node_dir") or "")
    if not named:
        return
    folder = Path(named) if Path(named).is_absolute() else ROOT / named
    if node.Node(folder.parent).running():
        return
    why = node.unavailable(folder) or "it is not running"
    raise UserError(f"target {target.name}'s pods need its real node, and none runs ({why}); kwok's nodes cannot run "
                    f"them: ./run cluster start (as root on Debian or Ubuntu it installs what the node needs), then "
                    f"./run fresh-start --target {target.name}; nothing was deployed", NOT_READY)


def _cluster_fresh_start(target: targets.Target, no_smoke: bool, verbose: bool) -> None:
    cluster.preflight(target, say)
    _real_node_runs(target)
    playbook = "fresh-start" if target.kind == "minikube" else "deploy-cluster"
    say(f"fresh-start on target {target.name!r} ({target.kind})")
    # The playbook keeps DEMO_MODE as it runs (and says so), and tells what it leaves running for the summary below
    # (roles/metalmart/tasks/summary.yml); what it did not tell is read from the cluster.
    run = cluster.run_playbook(target, playbook, say, {"verify_enabled": not no_smoke, **KEEP_DEMO_MODE}, verbose)
    summary = run.stats.get("metalmart_summary", {})
    if "demo_mode" in summary:
        demo = bool(summary["demo_mode"])
    else:
        try:
            running = demomode.state(demomode.live(target))
        except UserError:
            running = "not readable"
        demo = running == "on" if running in ("on", "off") else bool(target.get("metalmart_demo_mode"))
    ns, profile = target.get("metalmart_namespace"), target.get("minikube_profile")
    front = table.by_command("storefront")
    url = f"minikube --profile {profile} service {front.name} --namespace {ns} --url" if target.kind == "minikube" \
        else f"kubectl --namespace {ns} port-forward svc/{front.name} {front.port}:{front.port}"
    operator = summary.get("operator") or cluster.operator_state(target, portforward.api_client(target))
    if operator == "not installed":
        operator += f": no licence ({cluster.CREDENTIALS})" if not (
            cluster.licence_given() or cluster.has_vault_licence(target)) else ""
    out.print()
    out.print(f"[bold]Storefront[/bold]  {url}")
    out.print(f"[bold]DEMO_MODE[/bold]   {'on' if demo else 'off'} ({demomode.per_order(demo)})")
    out.print(f"[bold]Operator[/bold]    {operator}")
    out.print("[bold]mirrord[/bold]     .mirrord/order-processor.json")
    out.print(f"[bold]Log[/bold]         {run.log}")
    out.print("\nNext:\n  ./run load --rate 20 --duration 120\n  ./run metrics --watch\n"
              "  mirrord exec -f .mirrord/order-processor.json -- python -m metalmart processor")
    if run.changed == 0:
        out.print("\n(nothing changed)")


@task(help={"target": TARGET_HELP, "no_smoke": "skip the smoke order through the pipeline",
            "verbose": "show Ansible's own output (cluster targets)"})
def fresh_start(c: Context, target: str | None = None, no_smoke: bool = False, verbose: bool = False) -> None:
    """Bring the demo up from nothing (a second run changes nothing and says so)."""
    resolved = target_of(c, target)
    if resolved.kind != "local":
        _cluster_fresh_start(resolved, no_smoke, verbose)
        return
    stack = LocalStack(resolved)
    say(f"fresh-start on target {stack.target.name!r} ({stack.target.kind})")
    kept = _kept_demo_mode(resolved)
    if kept is not None:
        stack = replace(stack, demo_override=kept)
    result = stack.fresh_start(say, smoke=not no_smoke)
    mode = f"{'on' if stack.demo_mode else 'off'} ({demomode.per_order(stack.demo_mode)})"
    out.print()
    out.print(f"[bold]Storefront[/bold]  {stack.url(table.by_command('storefront').name)}")
    out.print(f"[bold]Orders API[/bold]  {stack.url(table.by_command('order').name)}/api/orders")
    out.print(f"[bold]Kafka[/bold]       {stack.bootstrap}  topic {stack.topic}")
    out.print(f"[bold]DEMO_MODE[/bold]   {mode}")
    out.print(f"[bold]Logs[/bold]        {stack.dir / 'logs'}")
    out.print("\nNext:\n  ./run load --rate 20 --duration 120\n  ./run metrics --watch")
    if not result["changed"]:
        out.print("\n(nothing changed)")


@task(help={"target": TARGET_HELP, "json": "print JSON only"})
def status(c: Context, target: str | None = None, json: bool = False) -> None:
    """Each process (local) or workload (cluster) of the stack: state, readiness, DEMO_MODE, operator."""
    resolved = target_of(c, target)
    if resolved.kind != "local":
        _cluster_status(resolved, json)
        return
    stack = LocalStack(resolved)
    procs = stack.processes()
    health = stack.health() if procs else {}
    rows = []
    for service in names():
        info = procs.get(service, {})
        rows.append({"service": service, "state": info.get("statename", "STOPPED"), "pid": info.get("pid") or None,
                     "port": stack.ports.get(service), "health": health.get(service, "down")})
    if json:
        emit_json({"target": stack.target.name, "supervisor": bool(procs), "processes": rows,
                   "demo_mode": stack.demo_mode, "kafka": stack.kafka, "broker": stack.broker_name})
        return
    table = Table(title=f"target {stack.target.name} ({stack.target.kind}) · DEMO_MODE "
                        f"{'on' if stack.demo_mode else 'off'} · broker {stack.broker_name}")
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
    out.print(f"kafka: {describe(target)}")
    out.print(f"mirrord operator: {data['operator']}")
    split = ", ".join(f"{s['kind']}/{s['name']}" for s in data["splitting"]) or "none"
    out.print(f"splitting resources: {split}")


@task(help={"target": TARGET_HELP, "purge": "local: also delete the data (database, logs)",
            "yes": "cluster: do not ask for confirmation", "delete_cluster": "minikube: also delete the profile",
            "verbose": "show Ansible's own output (cluster targets)"})
def teardown(c: Context, target: str | None = None, purge: bool = False, yes: bool = False,
             delete_cluster: bool = False, verbose: bool = False) -> None:
    """Stop everything: local processes and ports, or the cluster's namespace and splitting resources."""
    resolved = target_of(c, target)
    if resolved.kind != "local":
        cluster.confirm_teardown(resolved, yes, delete_cluster)
        run = cluster.run_playbook(resolved, "teardown", say, {"delete_cluster": delete_cluster}, verbose)
        say("nothing was deployed; nothing to delete" if run.changed == 0 else
            f"deleted the demo's namespace and splitting resources (Ansible's log: {run.log})")
        return
    stack = LocalStack(resolved)
    if not stack.teardown(say, purge=purge):
        say("the local stack was not running; nothing to stop")


@task(help={"target": "a cluster inventory under inventories/ (default: minikube)",
            "verbose": "show Ansible's own output"})
def deploy(c: Context, target: str | None = None, verbose: bool = False) -> None:
    """Roll out the app only (image, services, seed, check), for a code change on a running demo cluster."""
    resolved = cluster_target_of(c, target)
    if resolved.kind == "local":
        raise UserError("deploy is for cluster targets; on `local`, ./run teardown and ./run fresh-start restart "
                        "the processes with your code", USAGE)
    cluster.preflight(resolved, say)
    # The fresh-start playbook's app steps only (the minikube image first): every role's defaults, one playbook.
    playbook = "fresh-start" if resolved.kind == "minikube" else "deploy-cluster"
    run = cluster.run_playbook(resolved, playbook, say, KEEP_DEMO_MODE, verbose,
                               tags=("images", "app", "seed", "verify"), log_name="deploy")
    say("(nothing changed)" if run.changed == 0 else f"deployed image tag {images.content_tag()}")


@task(optional_positional="state",
      help={"state": "on or off; without it, the state that runs is shown", "target": TARGET_HELP,
            "verbose": "show Ansible's own output (cluster targets)"})
def demo_mode(c: Context, state: str = "", target: str | None = None, verbose: bool = False) -> None:
    """DEMO_MODE as it runs, or switch it: ./run demo-mode [on|off].

    On: 200 ms per order step; off: 2 s + 3 s + 5 s; switched on exactly the workloads that read it."""
    if state not in ("", "on", "off"):
        raise UserError(f"demo-mode takes on or off (got {state!r}); e.g. ./run demo-mode on", USAGE)
    resolved = target_of(c, target)
    values = demomode.live(resolved)
    now = demomode.state(values)
    if now == "not running":
        raise UserError(f"nothing runs on target {resolved.name!r}: ./run fresh-start --target {resolved.name}",
                        NOT_READY)
    if not state:
        detail = demomode.per_order(now == "on") if now in ("on", "off") else ", ".join(
            f"{name} {'on' if v else 'off' if v is False else 'unset'}" for name, v in values.items())
        out.print(f"DEMO_MODE is {now} on target {resolved.name}: {detail}", markup=False)
        return
    want = state == "on"
    if now == state:
        say(f"DEMO_MODE is already {state} on target {resolved.name}; nothing restarted")
        return
    restarted = demomode.switch(resolved, want, say, verbose)
    say(f"DEMO_MODE {now} → {state} on target {resolved.name}: restarted {', '.join(restarted) or 'nothing'}; "
        f"orders now ship in {demomode.per_order(want)}")


TASKS = {"fresh-start": fresh_start, "status": status, "teardown": teardown, "deploy": deploy,
         "demo-mode": demo_mode}
