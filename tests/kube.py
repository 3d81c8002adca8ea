"""Cluster targets against the real control plane of `demokit.testcluster.controlplane` (etcd, kube-apiserver,
controllers, scheduler, kwok nodes) on 127.0.0.1, with waits on.

Each target gets its own namespace and an inventory under a temporary folder, and reaches the API server through a
kubeconfig whose *current* context is a decoy (a closed port): whatever talks to the wrong context fails. What a
kubelet would do for exec, logs and port-forward is done by kwok's handlers, pointed at local processes by the test
(`serve`, `ControlPlane.exec_locally`, `ControlPlane.pod_log`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from demokit import probes
from demokit.testcluster.controlplane import ControlPlane
from tests.helpers import ROOT, RUN

SHARED_MIRRORD = ROOT.parent / "shared" / "mirrord"  # mirrord's schemas, CRDs and chart (tests skip without)
SHARED_CHART = SHARED_MIRRORD / "charts" / "mirrord-operator"
CONTEXT = "kube-test"


def kubeconfig_with_decoy(plane: ControlPlane, path: Path) -> Path:
    """The plane's kubeconfig with a second context made current that points at a closed port."""
    config = yaml.safe_load(plane.kubeconfig.read_text())
    real = config["contexts"][0]
    config["contexts"].append({"name": "decoy", "context": {"cluster": "decoy", "user": real["context"]["user"]}})
    config["clusters"].append({"name": "decoy", "cluster": {"server": f"https://127.0.0.1:{probes.free_port()}",
                                                            "insecure-skip-tls-verify": True}})
    config["current-context"] = "decoy"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class ClusterTarget:
    plane: ControlPlane
    root: Path
    name: str
    namespace: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def inventories(self) -> Path:
        return self.root / "inventories"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def mirrord_dir(self) -> Path:
        return self.root / "mirrord"

    @property
    def vars_file(self) -> Path:
        return self.inventories / self.name / "group_vars" / "all.yml"

    def run(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*RUN, *args], cwd=ROOT, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, done.stderr[-4000:]
        return done

    def playbook(self, playbook: str, *args: str,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """ansible-playbook directly (no ./run preflight), for a step of its own."""
        return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i",
                               str(self.inventories / self.name / "hosts.yml"), f"playbooks/{playbook}.yml", *args,
                               "-e", json.dumps({"metalmart_image_tag": "0" * 16})],
                              cwd=ROOT, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=900)

    def vars(self) -> dict[str, Any]:
        return yaml.safe_load(self.vars_file.read_text())

    def set_vars(self, **values: Any) -> None:
        current = self.vars()
        for key, value in values.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        self.vars_file.write_text(yaml.safe_dump(current))

    # -- reading the cluster --

    def api(self) -> Any:
        return self.plane.api()

    def objects(self, api_version: str, kind: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """{name: object} of a kind in the target's namespace (or `namespace`); {} when the kind is not served."""
        from kubernetes import dynamic
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        client = dynamic.DynamicClient(self.api())
        try:
            resource = client.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            return {}
        where = {} if not resource.namespaced else {"namespace": namespace or self.namespace}
        return {o["metadata"]["name"]: o for o in resource.get(**where).to_dict()["items"]}

    def holds(self, doc: dict[str, Any]) -> None:
        """The cluster holds this rendered object: every field the render sets has that value there."""
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        stored = self.objects(doc["apiVersion"], doc["kind"], doc["metadata"].get("namespace")).get(
            doc["metadata"]["name"])
        assert stored is not None, f"{where} was not applied"
        subset({k: v for k, v in doc.items() if k != "metadata"}, stored, where)
        subset(doc["metadata"].get("labels") or {}, stored["metadata"].get("labels") or {}, f"{where} labels")

    def pods(self, app: str) -> list[str]:
        from kubernetes import client

        pods = client.CoreV1Api(self.api()).list_namespaced_pod(
            self.namespace, label_selector=f"app.kubernetes.io/name={app}").items
        return sorted(p.metadata.name for p in pods if p.metadata.deletion_timestamp is None)

    def serve(self, app: str, ports: dict[int, int]) -> None:
        """The ports of every pod of `app` are served by local listeners: {pod port: 127.0.0.1 port}."""
        for pod in self.pods(app):
            self.plane.apply({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "PortForward",
                              "metadata": {"name": pod, "namespace": self.namespace},
                              "spec": {"forwards": [{"ports": [p], "target": {"port": local, "address": "127.0.0.1"}}
                                                    for p, local in sorted(ports.items())]}})


def subset(rendered: Any, stored: Any, where: str) -> None:
    """Every field the render sets has that value in the cluster (which adds its own defaults around them)."""
    if isinstance(rendered, dict):
        assert isinstance(stored, dict), where
        for key, value in rendered.items():
            assert key in stored, f"{where}.{key} is missing in the cluster"
            subset(value, stored[key], f"{where}.{key}")
    elif isinstance(rendered, list):
        assert isinstance(stored, list) and len(stored) == len(rendered), where
        for i, (a, b) in enumerate(zip(rendered, stored, strict=True)):
            subset(a, b, f"{where}[{i}]")
    else:
        assert rendered == stored, f"{where}: rendered {rendered!r}, cluster {stored!r}"


def make_target(plane: ControlPlane, root: Path, name: str = "kubetest", **overrides: Any) -> ClusterTarget:
    """A `cluster` inventory (as a sales region's) for the plane, in a namespace of its own."""
    namespace = f"mm-{uuid.uuid4().hex[:6]}"
    target = ClusterTarget(plane, root, name, namespace)
    target.vars_file.parent.mkdir(parents=True)
    (target.inventories / name / "hosts.yml").write_text((ROOT / "inventories/minikube/hosts.yml").read_text())
    target.mirrord_dir.mkdir()
    kubeconfig = kubeconfig_with_decoy(plane, root / "kubeconfig")
    # Only what differs from the roles' defaults, as a region's inventory would.
    values = {"target_kind": "cluster", "kube_context": plane.context, "kubeconfig_path": str(kubeconfig),
              "metalmart_namespace": namespace, "local_state_dir": str(target.state),
              "mirrord_config_dir": str(target.mirrord_dir), "mirrord_operator_chart_ref": str(SHARED_CHART),
              **overrides}
    target.vars_file.write_text(yaml.safe_dump(values))
    # kubernetes.core caches API discovery in $TMPDIR: a folder per target keeps runs apart.
    (root / "tmp").mkdir()
    target.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "INVOKE_METALMART_INVENTORIES": str(target.inventories),
                  "TMPDIR": str(root / "tmp")}
    target.env.pop("MIRRORD_LICENSE_KEY", None)
    return target
