"""The deploy roles, converged through the real `./run` commands against a real Kubernetes control plane on
127.0.0.1 (tests/kube.py), waits on: rollouts and Jobs complete, a second run changes nothing, what is in the cluster
is what `render` shows, the operator's chart installs and uninstalls through a real helm, secrets are generated in
the cluster and never logged, and each failure stops with one readable line. Every target's kubeconfig has a decoy
as its current context, so any Kubernetes or Helm call that ignores the inventory's context fails."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from demokit import targets
from demokit.config import render
from demokit.testcluster.controlplane import ControlPlane
from tests import kube
from tests.conftest import Converged, PodBackend
from tests.helpers import ROOT

pytestmark = pytest.mark.cluster  # against the real control plane (tests/conftest.py)

PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))


def _steps(stderr: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s+\d+/\d+ (\S+)\s+[\d.]+ s\s+(\w+)$", stderr, re.M)}


def _target(target: kube.ClusterTarget) -> targets.Target:
    return targets.load(target.name, target.inventories)


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
def test_every_playbook_passes_the_syntax_check(playbook: Path) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "--syntax-check", "-i",
                           "inventories/minikube/hosts.yml", str(playbook)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# ---- one converged target (tests/conftest.py), used in order; the last one tears it down -------------------------

def test_the_first_run_applies_and_verifies_and_the_second_changes_nothing(converged: Converged) -> None:
    first, second = _steps(converged.first.stderr), _steps(converged.second.stderr)
    assert list(first) == ["namespace", "postgres", "kafka", "metalmart_app", "seed", "mirrord_operator",
                           "queue_splitting", "verify"]
    assert first["postgres"] == first["kafka"] == first["metalmart_app"] == first["seed"] == "changed"
    assert set(second.values()) == {"unchanged"}, second
    assert "(nothing changed)" in converged.second.stdout and "(nothing changed)" not in converged.first.stdout
    assert "no mirrord credential" in converged.first.stderr, "the operator is skipped, said in one line"
    assert re.search(r"order ORD-\S+ shipped \(processed by cluster\)", converged.first.stderr), \
        "the verify step's smoke order ran in the order pod (kwok's exec) and shipped"
    assert re.search(r"order ORD-\S+ shipped \(processed by cluster\)", converged.second.stderr), \
        "a run with nothing to change still ends with an order shipped"
    # The second run found every group in place (one dry-run apply) and applied and waited for nothing.
    assert "TASK [k8s_objects : Apply them as a dry run]" in converged.second_log
    assert "TASK [k8s_objects : Apply the objects of" in converged.first_log
    assert "TASK [k8s_objects : Apply the objects of" not in converged.second_log
    assert "TASK [k8s_objects : Wait for the objects of" not in converged.second_log
    assert "not installed: no licence" in converged.first.stdout


def test_rollouts_and_jobs_completed_for_real(converged: Converged) -> None:
    t = converged.target
    for name, d in t.objects("apps/v1", "Deployment").items():
        assert d["status"].get("readyReplicas") == d["spec"]["replicas"] == 1, name
    for name, s in t.objects("apps/v1", "StatefulSet").items():
        assert s["status"].get("readyReplicas") == 1, name
    jobs = t.objects("batch/v1", "Job")
    assert {n for n, j in jobs.items() if any(c["type"] == "Complete" and c["status"] == "True"
                                               for c in j["status"].get("conditions", []))} == set(jobs)
    claims = t.objects("v1", "PersistentVolumeClaim")
    assert sorted(claims) == ["data-kafka-0", "data-postgres-0"]
    assert all(c["status"]["phase"] == "Bound" for c in claims.values()), "the PV controller bound the volumes"


def test_what_is_in_the_cluster_is_what_render_shows(converged: Converged) -> None:
    t = converged.target
    rendered = render.cluster_objects(_target(t))
    for doc in rendered:
        if doc["kind"].startswith("Mirrord"):
            continue  # no operator here: the splitting resources were skipped (tested with the chart below)
        t.holds(doc)
    assert {"Deployment", "StatefulSet", "Job", "Service"} <= {d["kind"] for d in rendered}


def test_services_are_applied_before_the_deployments_that_call_them(converged: Converged) -> None:
    """The storefront's readiness calls the order and catalogue Services by name (only a kubelet would show the
    failure; the order is checked here)."""
    log = converged.first_log  # the second run applies nothing: every group was settled
    # Only the apply tasks' items: the wait that follows each group names the same objects again.
    applied = "".join(re.findall(r"TASK \[k8s_objects : Apply the objects of [^\n]*\n((?:(?!TASK \[)[^\n]*\n)*)", log))
    items = re.findall(r"\(item=(Service|Deployment)/(\S+)\)", applied)
    services = [i for i, (kind, _) in enumerate(items) if kind == "Service"]
    deployments = [i for i, (kind, _) in enumerate(items) if kind == "Deployment"]
    assert services and deployments and max(services) < min(deployments), items


def test_the_database_password_is_generated_in_the_cluster_and_never_logged(converged: Converged) -> None:
    import base64

    t = converged.target
    secret = t.objects("v1", "Secret")["postgres-credentials"]
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert len(password) >= 32
    logs = "".join(p.read_text() for p in t.state.glob("*.log"))
    everything = logs + converged.first.stdout + converged.first.stderr + converged.second.stderr
    assert password not in everything
    assert "Look for the database credentials in the cluster" in logs, "the log is the real Ansible output"


def test_the_mirrord_config_ansible_writes_is_the_one_render_shows(converged: Converged) -> None:
    t = converged.target
    written = json.loads((t.mirrord_dir / "order-processor.json").read_text())
    assert written == render.mirrord_config(_target(t))
    assert written["target"]["namespace"] == t.namespace


def test_status_shows_ready_workloads_and_demo_mode(converged: Converged) -> None:
    t = converged.target
    data = json.loads(t.run("status", "--target", t.name, "--json").stdout)
    names = sorted((w["kind"], w["name"]) for w in data["workloads"])
    assert names == [("Deployment", "catalogue"), ("Deployment", "order"), ("Deployment", "order-processor"),
                     ("Deployment", "storefront"), ("StatefulSet", "kafka"), ("StatefulSet", "postgres")]
    assert all(w["ready"] == w["replicas"] == 1 for w in data["workloads"])
    assert data["demo_mode"] is True and data["operator"] == "not installed" and data["splitting"] == []


def test_demo_mode_switches_its_two_deployments_and_fresh_start_keeps_it(converged: Converged) -> None:
    t = converged.target
    before = {n: rs["metadata"]["name"] for n, rs in _current_replicasets(t).items()}
    try:
        off = t.run("demo-mode", "off", "--target", t.name)
        after = _current_replicasets(t)
        again = t.run("demo-mode", "off", "--target", t.name)
        shown = t.run("demo-mode", "--target", t.name)
        kept = t.run("fresh-start", "--target", t.name, "--no-smoke")
    finally:
        t.run("demo-mode", "on", "--target", t.name)
    assert "DEMO_MODE on → off on target kubetest: restarted order-processor, storefront" in off.stderr
    rolled = sorted(n for n, rs in after.items() if rs["metadata"]["name"] != before[n])
    assert rolled == ["order-processor", "storefront"], "new ReplicaSets for exactly the two readers"
    assert all(rs["status"].get("readyReplicas") == 1 for rs in after.values()), "the rollouts completed"
    assert "DEMO_MODE is already off on target kubetest; nothing restarted" in again.stderr
    assert shown.stdout.strip() == "DEMO_MODE is off on target kubetest: 2 s + 3 s + 5 s, about 10 s an order"
    assert "keeping DEMO_MODE off as it runs (the inventory says on)" in kept.stderr
    assert set(_steps(kept.stderr).values()) == {"unchanged"}, "fresh-start did not flip it back"
    images = {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in
              t.objects("apps/v1", "Deployment").values()}
    assert len(images) == 1, "only DEMO_MODE changed, never the image"


def _current_replicasets(t: kube.ClusterTarget) -> dict[str, dict[str, Any]]:
    """The newest ReplicaSet of each Deployment."""
    newest: dict[str, dict[str, Any]] = {}
    for rs in t.objects("apps/v1", "ReplicaSet").values():
        owner = rs["metadata"]["ownerReferences"][0]["name"]
        revision = int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
        if owner not in newest or revision > int(newest[owner]["metadata"]["annotations"][
                "deployment.kubernetes.io/revision"]):
            newest[owner] = rs
    return newest


def test_a_field_removed_from_a_template_is_removed_from_the_cluster(converged: Converged) -> None:
    """Server-side apply: an update (state: present) would keep a field the template no longer sets."""
    t = converged.target
    t.set_vars(metalmart_app_resources={"requests": {"cpu": "50m", "memory": "128Mi"}})
    try:
        t.run("fresh-start", "--target", t.name, "--no-smoke")
        resources = t.objects("apps/v1", "Deployment")["order"]["spec"]["template"]["spec"]["containers"][0][
            "resources"]
    finally:
        t.set_vars(metalmart_app_resources=None)
        t.run("fresh-start", "--target", t.name, "--no-smoke")
    assert resources == {"requests": {"cpu": "50m", "memory": "128Mi"}}, "the memory limit is gone"
    assert t.objects("apps/v1", "Deployment")["order"]["spec"]["template"]["spec"]["containers"][0][
        "resources"]["limits"] == {"memory": "384Mi"}, "and back"


# ---- a run with nothing to change skips what is settled, and still puts right what was changed ------------------

def _env(t: kube.ClusterTarget, deployment: str) -> dict[str, str]:
    container = t.objects("apps/v1", "Deployment")[deployment]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


def _edit_service_label(t: kube.ClusterTarget) -> None:
    from kubernetes import client

    client.CoreV1Api(t.api()).patch_namespaced_service(
        "catalogue", t.namespace, {"metadata": {"labels": {"app.kubernetes.io/part-of": "edited-by-hand"}}})


def _delete_service(t: kube.ClusterTarget) -> None:
    from kubernetes import client

    client.CoreV1Api(t.api()).delete_namespaced_service("catalogue", t.namespace)


def _scale_down(t: kube.ClusterTarget) -> None:
    from kubernetes import client

    client.AppsV1Api(t.api()).patch_namespaced_deployment_scale("order-processor", t.namespace,
                                                                {"spec": {"replicas": 0}})


def _copy_templates_with_an_annotation(t: kube.ClusterTarget) -> None:
    copy = t.root / "templates-edited"
    shutil.copytree(ROOT / "templates", copy)
    service = copy / "k8s" / "app" / "service.yaml.j2"
    text = service.read_text()
    assert '"labels": {' in text
    service.write_text(text.replace('"labels": {', '"annotations": {"metalmart.test/edited": "template"}, "labels": {',
                                    1))
    t.set_vars(k8s_objects_templates_dir=str(copy))


def _catalogue_service(t: kube.ClusterTarget) -> dict[str, Any]:
    return t.objects("v1", "Service").get("catalogue") or {}


# (what is done by hand, what the run must show after, whether the inventory changes back after)
DRIFTS = {
    "an object edited by hand": (
        _edit_service_label,
        lambda t: _catalogue_service(t)["metadata"]["labels"]["app.kubernetes.io/part-of"] == "metalmart"),
    "an object deleted by hand": (
        _delete_service,
        lambda t: bool(_catalogue_service(t))),
    "a Deployment scaled down by hand": (
        _scale_down,
        lambda t: t.objects("apps/v1", "Deployment")["order-processor"]["status"].get("readyReplicas") == 1),
    "a changed inventory value": (
        lambda t: t.set_vars(metalmart_processor_concurrency=64),
        lambda t: _env(t, "order-processor").get("PROCESSOR_CONCURRENCY") == "64"),
    "a changed template": (
        _copy_templates_with_an_annotation,
        lambda t: (_catalogue_service(t)["metadata"].get("annotations") or {}).get("metalmart.test/edited")
        == "template"),
}


@pytest.mark.parametrize("drift", list(DRIFTS))
def test_a_run_after_a_change_puts_it_right_and_the_next_changes_nothing(converged: Converged, drift: str) -> None:
    """Every group settled (as they are after a converge) is skipped; a change made by hand, in the inventory or in
    a template makes its group unsettled, and the run applies it and waits for it again."""
    t = converged.target
    make, fixed = DRIFTS[drift]
    saved = t.vars()
    try:
        make(t)
        put_right = t.run("fresh-start", "--target", t.name, "--no-smoke")
        assert fixed(t), f"{drift}: not put right"
        steps = _steps(put_right.stderr)
        assert steps["metalmart_app"] == "changed", steps
        assert {s for name, s in steps.items() if name != "metalmart_app"} == {"unchanged"}, steps
        assert "(nothing changed)" not in put_right.stdout
    finally:
        t.vars_file.write_text(yaml.safe_dump(saved))
        back = t.run("fresh-start", "--target", t.name, "--no-smoke")
    again = t.run("fresh-start", "--target", t.name, "--no-smoke")
    assert set(_steps(again.stderr).values()) == {"unchanged"} and "(nothing changed)" in again.stdout, \
        f"after {drift} was undone: {back.stderr[-800:]}"


def test_a_failing_smoke_order_is_one_readable_line(converged: Converged, control_plane: ControlPlane,
                                                   pod_backend: PodBackend) -> None:
    t = converged.target
    steps = []
    try:
        control_plane.exec_locally("metalmart-tests", {"ORDER_SERVICE_URL": "http://127.0.0.1:1"}, ROOT)
        failed = t.run("fresh-start", "--target", t.name, check=False)
        control_plane.delete_kwok("ClusterExec", "metalmart-tests")
        refused = t.run("fresh-start", "--target", t.name, check=False)
        steps = [_steps(failed.stderr), _steps(refused.stderr)]
    finally:
        control_plane.exec_locally("metalmart-tests", {"ORDER_SERVICE_URL": pod_backend.stack.base}, ROOT)
    for done, step in zip((failed, refused), steps, strict=True):
        assert done.returncode == 4 and step["verify"] == "FAILED"
        line = next(li for li in done.stderr.splitlines() if "the smoke order in pod" in li)
        assert f"the smoke order in pod {t.namespace}/order-" in line
        assert "Traceback" not in done.stderr and "invalid literal" not in done.stderr
    assert "could not place the smoke order at http://127.0.0.1:1" in failed.stderr, "the smoke's own reason"
    assert 'no exec found for container "order"' in refused.stderr, "the exec was refused"


def test_teardown_asks_first_then_deletes_the_namespace(converged: Converged) -> None:
    t = converged.target
    refused = t.run("teardown", "--target", t.name, check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert t.objects("v1", "Namespace", None).get(t.namespace), "nothing deleted without --yes"
    t.run("teardown", "--target", t.name, "--yes")
    assert t.namespace not in t.objects("v1", "Namespace")
    again = t.run("teardown", "--target", t.name, "--yes")
    assert "nothing was deployed" in again.stderr
