"""`./run render`: what a cluster target would apply, written by the roles themselves. The deploy playbook runs with
`metalmart_render_dir` set: every role takes its usual path, with its variables as Ansible computes them, and
`k8s_objects` writes each object into a numbered file instead of applying it (the steps that only read the cluster
are skipped), and `mirrord_config` writes the developer's config beside them. One engine: what render shows is what a
converge applies."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from demokit.config.mirrordcfg import filter_problem
from demokit.errors import USAGE, UserError
from demokit.kube import cluster
from demokit.targets import Target

Say = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


def write(out: Path, target: Target, say: Say = _quiet, email_filter: str | None = None,
          verbose: bool = False) -> list[Path]:
    """Write what the target would apply into `out`: the mirrord config (.mirrord/) and one file per object
    (manifests/), numbered in the order they are applied. Files a previous render left there are replaced."""
    if target.kind == "local":
        raise UserError(f"target {target.name!r} is a local target: it has no Kubernetes objects; "
                        "use --target minikube or a region", USAGE)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; name a folder to render into", USAGE)
    extra: dict[str, Any] = {"metalmart_render_dir": str(out.resolve())}
    # The role checks the filter too; checked here first, it is one line before Ansible starts.
    problem = filter_problem(target.get("mirrord_config_email_filter") if email_filter is None else email_filter)
    if problem:
        raise UserError(problem, USAGE)
    if email_filter is not None:
        extra["mirrord_config_email_filter"] = email_filter
    for stale in ("manifests", "groups"):
        shutil.rmtree(out / stale, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    cluster.run_playbook(target, "deploy-cluster", say, extra, verbose, log_name="render")
    return sorted((out / ".mirrord").glob("*.json")) + _split(out)


def _split(out: Path) -> list[Path]:
    """The roles write one file per group (groups/NN-group.yaml, a list of objects in apply order); people read a
    file per object, numbered in apply order (manifests/NN-kind-name.yaml)."""
    (out / "manifests").mkdir()
    written = []
    objects = [o for group in sorted((out / "groups").glob("*.yaml")) for o in yaml.safe_load(group.read_text())]
    for n, obj in enumerate(objects, 1):
        path = out / "manifests" / f"{n:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        path.write_text(yaml.dump(obj, Dumper=_Plain, indent=4, sort_keys=True, default_flow_style=False))
        written.append(path)
    shutil.rmtree(out / "groups")
    return written


class _Plain(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def rendered(target: Target, email_filter: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every object the target would apply, in order, and the developer's mirrord config."""
    with tempfile.TemporaryDirectory(prefix="metalmart-render-") as folder:
        out = Path(folder)
        write(out, target, email_filter=email_filter)
        objects = [yaml.safe_load(p.read_text()) for p in sorted((out / "manifests").glob("*.yaml"))]
        config = json.loads((out / ".mirrord" / "order-processor.json").read_text())
    return objects, config


def cluster_objects(target: Target) -> list[dict[str, Any]]:
    return rendered(target)[0]


def mirrord_config(target: Target, email_filter: str | None = None) -> dict[str, Any]:
    return rendered(target, email_filter)[1]
