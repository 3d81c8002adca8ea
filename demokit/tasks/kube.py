"""`./run cluster start|stop|status|env`: the real Kubernetes control plane the tests use, by hand (the
`testcluster` target points at it)."""

from __future__ import annotations

import os
from pathlib import Path

from invoke import Context

from demokit.errors import USAGE, UserError
from demokit.targets import ROOT
from demokit.taskdef import task
from demokit.tasks.common import emit_json, out, say
from demokit.testcluster import controlplane, kubebuild, node

ACTIONS = ("start", "stop", "status", "env")


def plane() -> controlplane.ControlPlane:
    """The control plane's folder: .metalmart/kube, or METALMART_KUBE_DIR (the tests run one of their own)."""
    return controlplane.ControlPlane(Path(os.environ.get("METALMART_KUBE_DIR") or ROOT / ".metalmart" / "kube"))


@task(optional_positional="action", help={"action": "start | stop | status (the default) | env",
                                          "json": "status: print JSON only"})
def cluster(c: Context, action: str = "status", json: bool = False) -> None:
    """A local Kubernetes control plane for the testcluster target: start, stop or status.

    etcd, API server, controllers, scheduler and a real node where the machine allows one (kwok's fake nodes where it
    does not); the first start builds what it runs from pinned Go modules (a few minutes, then cached)."""
    if action not in ACTIONS:
        raise UserError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}, e.g. ./run cluster start", USAGE)
    cp = plane()
    if action == "start":
        # Whether this run starts the plane is known before it starts: a Ctrl-C that lands between the plane's
        # "up" line and the node's start still finds this run's plane to stop.
        was_running = cp.running()
        try:
            if not was_running:
                # What this path needs and nothing more, built side by side with the node's images: the real node's
                # binaries where one can run (as root on Debian or Ubuntu, with what it lacks installed first), else
                # kwok's fake nodes take its pods.
                mine = node.Node(cp.dir).dir
                fake = node.unavailable(mine, packages=not node.installs_packages()) is not None
                node.prepare(say, kubebuild.CONTROL_PLANE + (kubebuild.FAKE_NODES if fake else kubebuild.NODE), mine)
                cp.start(say, fake_nodes=fake)
            else:
                say(f"the control plane is already running at {cp.server}; nothing to do")
            node_runs = cp.start_node(say)
        except BaseException:  # Ctrl-C or a node that did not come up: this run leaves nothing of its own running
            if not was_running:
                say("stopping what was started")
                cp.stop(lambda _m: None)
            raise
        say("next: ./run fresh-start --target testcluster" if node_runs else
            "the demo's pods need the real node: put right what is said above, ./run cluster stop, then ./run "
            "cluster start again (./run fresh-start --target testcluster refuses until then)")
    elif action == "stop":
        if not cp.stop(say):
            say("the control plane was not running; nothing to stop")
    elif action == "env":
        out.print(f"export KUBECONFIG={cp.kubeconfig}", markup=False)
    else:
        running = cp.running()
        data = {"running": running, "server": cp.server if running else None,
                "kubeconfig": str(cp.kubeconfig) if running else None, "context": cp.context,
                "processes": {n: p["statename"] for n, p in cp.supervisor.processes().items()},
                "node": {n: p["statename"] for n, p in node.Node(cp.dir).supervisor.processes().items()},
                "binaries": {comp.name: str(kubebuild.binary(comp.name)) if kubebuild.binary(comp.name).is_file()
                             else None for comp in kubebuild.COMPONENTS}}
        if json:
            emit_json(data)
            return
        if not running:
            out.print("the control plane is not running: ./run cluster start")
        else:
            out.print(f"control plane at {cp.server}, context {cp.context}, kubeconfig {cp.kubeconfig}")
        for name, state in data["processes"].items():
            out.print(f"  {name:<24} {state}")
        for name, state in data["node"].items():
            out.print(f"  {name:<24} {state} (real node {node.NAME})")


TASKS = {"cluster": cluster}
