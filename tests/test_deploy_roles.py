"""The deploy roles, converged through the real `./run` commands against a Kubernetes API on 127.0.0.1 (kmock's
emulator, see tests/kube.py): a second run changes nothing, what is in the cluster is what `render` shows, secrets are
generated in the cluster and never logged, and failures stop with the failing object. The emulator has no controllers,
so readiness waits are off here (k8s_objects_wait: false); nothing becomes ready and the verify step is skipped."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from demokit import images, render, targets
from tests import kube
from tests.helpers import ROOT

PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))


@dataclass
class Env:
    cluster: kube.Cluster
    inventories: Path
    name: str
    env: dict[str, str]
    state: Path
    mirrord_dir: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=600)
        if check:
            assert done.returncode == 0, done.stderr[-3000:]
        return done

    def set_vars(self, **values: Any) -> None:
        path = self.inventories / self.name / "group_vars" / "all.yml"
        path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **values}))


def make_env(tmp: Path, cluster: kube.Cluster, url: str, name: str = "emulated") -> Env:
    """A cluster target (like a sales region's) whose kubeconfig points at the emulator."""
    inventories = tmp / "inventories"
    (inventories / name / "group_vars").mkdir(parents=True)
    (inventories / name / "hosts.yml").write_text((ROOT / "inventories/minikube/hosts.yml").read_text())
    values = yaml.safe_load((ROOT / "inventories/minikube/group_vars/all.yml").read_text())
    state, mirrord_dir = tmp / "state", tmp / "mirrord"
    mirrord_dir.mkdir()
    values.update(target_kind="cluster", kube_context="emulator", k8s_objects_wait=False,
                  local_state_dir=str(state), queue_splitting_mirrord_dir=str(mirrord_dir))
    (inventories / name / "group_vars" / "all.yml").write_text(yaml.safe_dump(values))
    config = kube.kubeconfig(tmp / "kubeconfig", url)
    # kubernetes.core caches API discovery in $TMPDIR per server address; emulators come and go on reused ports.
    (tmp / "tmp").mkdir()
    env = {**os.environ, "KUBECONFIG": str(config), "METALMART_INVENTORY_DIR": str(inventories),
           "TMPDIR": str(tmp / "tmp")}
    env.pop("MIRRORD_LICENSE_KEY", None)
    return Env(cluster, inventories, name, env, state, mirrord_dir)


@dataclass
class Converged:
    env: Env
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Converged]:
    with kube.running() as (cluster, url):
        env = make_env(tmp_path_factory.mktemp("converge"), cluster, url)
        first = env.run("fresh-start", "--target", env.name, "--no-smoke")
        second = env.run("fresh-start", "--target", env.name, "--no-smoke")
        yield Converged(env, first, second)


def _steps(stderr: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s+\d+/\d+ (\S+)\s+[\d.]+ s\s+(\w+)$", stderr, re.M)}


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
def test_every_playbook_passes_the_syntax_check(playbook: Path) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "--syntax-check", "-i",
                           "inventories/minikube/hosts.yml", str(playbook)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_first_run_applies_and_the_second_changes_nothing(converged: Converged) -> None:
    first, second = _steps(converged.first.stderr), _steps(converged.second.stderr)
    assert list(first) == ["namespace", "postgres", "kafka", "metalmart_app", "seed", "mirrord_operator",
                           "queue_splitting", "verify"]
    assert first["postgres"] == first["kafka"] == first["metalmart_app"] == "changed"
    assert set(second.values()) == {"unchanged"}, second
    assert "(nothing changed)" in converged.second.stdout and "(nothing changed)" not in converged.first.stdout
    assert "no mirrord licence" in converged.first.stderr, "the operator is skipped, said in one line"


def test_what_is_in_the_cluster_is_what_render_shows(converged: Converged) -> None:
    target = targets.load("minikube")
    rendered = render.cluster_objects(target, images.content_tag())
    cluster = converged.env.cluster
    for doc in rendered:
        stored = cluster.objects_of(doc["kind"]).get((doc["metadata"].get("namespace"), doc["metadata"]["name"]))
        assert stored is not None, f"{doc['kind']}/{doc['metadata']['name']} was not applied"
        for key in doc:
            if key != "metadata":
                assert stored[key] == doc[key], f"{doc['kind']}/{doc['metadata']['name']}: {key} differs"
        assert stored["metadata"].get("labels") == doc["metadata"].get("labels")
    kinds = {d["kind"] for d in rendered}
    assert {"Deployment", "StatefulSet", "Job", "MirrordPropertyList", "MirrordSplitConfig"} <= kinds


def test_the_database_password_is_generated_in_the_cluster_and_never_logged(converged: Converged) -> None:
    secrets = converged.env.cluster.objects_of("Secret")
    secret = secrets[("metalmart", "postgres-credentials")]
    password = secret.get("stringData", {}).get("password") or secret.get("data", {}).get("password")
    assert password and len(password) >= 32
    logs = "".join(p.read_text() for p in converged.env.state.glob("*.log"))
    everything = logs + converged.first.stdout + converged.first.stderr + converged.second.stderr
    assert password not in everything
    assert "Look for the database credentials in the cluster" in logs, "the log is the real Ansible output"


def test_the_mirrord_config_ansible_writes_is_the_committed_one(converged: Converged) -> None:
    written = (converged.env.mirrord_dir / "order-processor.json").read_bytes()
    assert written == (ROOT / ".mirrord" / "order-processor.json").read_bytes()


def test_status_shows_workloads_demo_mode_and_the_splitting_resources(converged: Converged) -> None:
    data = json.loads(converged.env.run("status", "--target", converged.env.name, "--json").stdout)
    names = sorted((w["kind"], w["name"]) for w in data["workloads"])
    assert names == [("Deployment", "catalogue"), ("Deployment", "order"), ("Deployment", "order-processor"),
                     ("Deployment", "storefront"), ("StatefulSet", "kafka"), ("StatefulSet", "postgres")]
    assert all(w["ready"] == 0 for w in data["workloads"]), "no controller in the emulator makes a pod ready"
    assert data["demo_mode"] is True and data["operator"] == "not installed"
    assert sorted(s["kind"] for s in data["splitting"]) == ["MirrordPropertyList", "MirrordSplitConfig"]


def test_turning_demo_mode_off_rolls_only_the_pods_that_read_it(converged: Converged) -> None:
    env = converged.env
    env.set_vars(demo_mode=False)
    try:
        done = env.run("fresh-start", "--target", env.name, "--no-smoke")
    finally:
        env.set_vars(demo_mode=True)
    log = (env.state / "ansible-deploy-cluster.log").read_text()
    changed = re.findall(r"^changed: \[localhost\] => \(item=(.+?)\)$", log, re.M)
    assert changed == ["app/deployment.yaml.j2 order-processor", "app/deployment.yaml.j2 storefront"]
    assert _steps(done.stderr)["metalmart_app"] == "changed" and _steps(done.stderr)["kafka"] == "unchanged"
    processor = env.cluster.objects_of("Deployment")[("metalmart", "order-processor")]
    demo = [e for e in processor["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "DEMO_MODE"]
    assert demo == [{"name": "DEMO_MODE", "value": "false"}]


def test_teardown_asks_first_then_deletes_the_namespace(converged: Converged) -> None:
    env = converged.env
    refused = env.run("teardown", "--target", env.name, check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert (None, "metalmart") in env.cluster.objects_of("Namespace"), "nothing deleted without --yes"
    env.run("teardown", "--target", env.name, "--yes")
    assert (None, "metalmart") not in env.cluster.objects_of("Namespace")
    again = env.run("teardown", "--target", env.name, "--yes")
    assert "nothing was deployed" in again.stderr


def test_a_cluster_without_the_operator_skips_the_splitting_resources(tmp_path: Path) -> None:
    with kube.running(mirrord=False) as (cluster, url):
        env = make_env(tmp_path, cluster, url)
        done = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i",
                               str(env.inventories / env.name / "hosts.yml"), "playbooks/deploy-cluster.yml",
                               "--tags", "namespace,mirrord", "-e", json.dumps({"metalmart_image_tag": "0" * 16})],
                              cwd=ROOT, env=env.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:]
        assert "no operator installed): skipping them" in done.stdout
        assert not cluster.objects_of("MirrordSplitConfig") and cluster.objects_of("Namespace")
        assert (env.mirrord_dir / "order-processor.json").exists(), "the developer's config is still rendered"


def test_a_failing_object_stops_the_run_with_its_events_and_last_log_lines(tmp_path: Path) -> None:
    with kube.running() as (cluster, url):
        cluster.resources.pop(kube.resource("batch", "v1", "jobs"))  # an API server that does not serve Jobs
        job = "kafka-topic-order-created-p3"
        cluster.objects[kube.resource("", "v1", "events"), "metalmart", f"{job}.1"] = {
            "apiVersion": "v1", "kind": "Event", "type": "Warning", "message": "BackoffLimitExceeded",
            "metadata": {"name": f"{job}.1", "namespace": "metalmart"}, "involvedObject": {"name": job}}
        cluster.objects[kube.resource("", "v1", "events"), "metalmart", "postgres-0.1"] = {
            "apiVersion": "v1", "kind": "Event", "type": "Warning", "message": "someone else's trouble",
            "metadata": {"name": "postgres-0.1", "namespace": "metalmart"}, "involvedObject": {"name": "postgres-0"}}
        log = tmp_path / "topic-pod.log"
        log.write_text("Error while executing topic command : Timed out waiting for a node assignment.\n")
        cluster.add_ready_pod("metalmart", f"{job}-abcde", "kafka-topic", {})
        cluster.add_log("metalmart", f"{job}-abcde", log, lambda: False)
        env = make_env(tmp_path, cluster, url)
        done = env.run("fresh-start", "--target", env.name, check=False)
    assert done.returncode == 4
    steps = _steps(done.stderr)
    assert steps["kafka"] == "FAILED" and "metalmart_app" not in steps, "nothing after the failing step runs"
    assert f"kafka/topic-job.yaml.j2 (Job/{job}) failed" in done.stderr
    assert "BackoffLimitExceeded" in done.stderr and "someone else's trouble" not in done.stderr
    assert "Timed out waiting for a node assignment" in done.stderr
    assert f"describe job/{job}" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: deploy-cluster failed on emulated")


def test_preflight_names_each_missing_tool_with_how_to_install_it() -> None:
    bare = {**os.environ, "PATH": str(Path(sys.executable).parent), "MIRRORD_LICENSE_KEY": "x" * 8}
    done = subprocess.run([sys.executable, "-m", "invoke", "fresh-start", "--target", "minikube"], cwd=ROOT,
                          env=bare, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4
    line = done.stderr.strip().splitlines()[-1]
    assert len(done.stderr.strip().splitlines()) == 1, "nothing ran before the preflight"
    for tool, hint in (("minikube", "minikube.sigs.k8s.io"), ("container runtime", "Docker"), ("helm", "helm.sh")):
        assert f"{tool} is missing" in line and hint in line
    assert "x" * 8 not in done.stderr + done.stdout, "the licence is never printed"
