"""What a real cluster breaks, each reproduced against the real control plane (or, for the laptop's tools, with a
stand-in on PATH): the preflight, storage, a failed image build, a failing object, the operator's chart (installed,
someone else's, removed) and teardown with an APIService that does not answer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from demokit import images, targets
from demokit.kube import cluster
from demokit.probes import holds, until
from demokit.testcluster.controlplane import STORAGE_CLASS, ControlPlane
from tests import kube
from tests.helpers import ROOT, RUN, inventory

pytestmark = pytest.mark.cluster  # against the real control plane (tests/conftest.py)

needs_chart = pytest.mark.skipif(not kube.SHARED_CHART.is_dir(),
                                 reason="../shared/mirrord/charts (the operator's chart) is not beside this checkout")
LICENCE = "licence-" + "7f3a" * 8


def _steps(stderr: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s+\d+/\d+ (\S+)\s+[\d.]+ s\s+(\w+)$", stderr, re.M)}


def _tool(folder: Path, name: str, script: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + script)
    path.chmod(0o755)


# ---- the laptop's tools -----------------------------------------------------------------------------------------

def test_preflight_names_each_missing_tool_with_how_to_install_it() -> None:
    bare = {**os.environ, "PATH": str(Path(sys.executable).parent), "MIRRORD_LICENSE_KEY": "x" * 8,
            "METALMART_KUBE_CACHE": "/nonexistent"}
    done = subprocess.run([*RUN, "fresh-start", "--target", "minikube"], cwd=ROOT,
                          env=bare, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4
    line = done.stderr.strip().splitlines()[-1]
    assert len(done.stderr.strip().splitlines()) == 1, "nothing ran before the preflight"
    for tool, hint in (("minikube", "minikube.sigs.k8s.io"), ("container runtime", "Docker"), ("helm", "helm.sh")):
        assert f"{tool} is missing" in line and hint in line
    assert "x" * 8 not in done.stderr + done.stdout, "the licence is never printed"


def test_helm_4_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """kubernetes.core 6.2.0 drives Helm 3 only."""
    _tool(tmp_path / "bin", "helm", 'echo "v4.0.1"\n')
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin",
           "MIRRORD_LICENSE_KEY": LICENCE}
    done = subprocess.run([*RUN, "fresh-start", "--target", "testcluster"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Helm v4.0.1" in done.stderr and "Helm 3" in done.stderr and LICENCE not in done.stderr


def test_a_failed_image_build_stops_the_run(tmp_path: Path) -> None:
    """`minikube image build` exits 0 when the build fails (kubernetes/minikube#16576): the tag is looked for."""
    calls = tmp_path / "calls"
    _tool(tmp_path / "bin", "minikube", f'echo "$*" >> {calls}\n'
          'case "$2" in ls) echo registry.k8s.io/pause:3.9;; build) echo "ERROR: failed to solve";; esac\nexit 0\n')
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i",
                           "inventories/minikube/hosts.yml", "playbooks/fresh-start.yml", "--tags", "images",
                           "-e", json.dumps({"metalmart_image_tag": images.content_tag()})],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"the image build did not make metalmart:{images.content_tag()} inside minikube" in done.stdout
    assert "ERROR: failed to solve" in done.stdout, "the build's own last lines are shown"
    assert [c.split()[:2] for c in calls.read_text().splitlines()] == [["image", "ls"], ["image", "build"],
                                                                     ["image", "ls"]]


# ---- storage ----------------------------------------------------------------------------------------------------

def test_a_volume_that_could_never_bind_stops_the_run_in_one_line(control_plane: ControlPlane,
                                                                   tmp_path: Path) -> None:
    from kubernetes import client

    target = kube.make_target(control_plane, tmp_path, postgres_storage_class="fast-ssd")
    named = target.run("fresh-start", "--target", target.name, "--no-smoke", check=False)
    assert named.returncode == 4 and _steps(named.stderr)["postgres"] == "FAILED"
    assert f"StorageClass fast-ssd does not exist in the cluster (it has: {STORAGE_CLASS})" in named.stderr
    assert "set postgres_storage_class in the inventory" in named.stderr

    storage = client.StorageV1Api(control_plane.api())
    default = {"storageclass.kubernetes.io/is-default-class": "true"}
    storage.patch_storage_class(STORAGE_CLASS, {"metadata": {"annotations": {
        "storageclass.kubernetes.io/is-default-class": "false"}}})
    try:
        target.set_vars(postgres_storage_class=None)
        unnamed = target.run("fresh-start", "--target", target.name, "--no-smoke", check=False)
        target.set_vars(postgres_storage_class=STORAGE_CLASS, kafka_storage_class=STORAGE_CLASS)
        bound = target.playbook("deploy-cluster", "--tags", "namespace,postgres")
        claim = target.objects("v1", "PersistentVolumeClaim")["data-postgres-0"]
    finally:
        storage.patch_storage_class(STORAGE_CLASS, {"metadata": {"annotations": default}})
        target.run("teardown", "--target", target.name, "--yes")
    assert unnamed.returncode == 4 and _steps(unnamed.stderr)["postgres"] == "FAILED"
    assert "the cluster has no default StorageClass (it has: metalmart-local)" in unnamed.stderr
    assert bound.returncode == 0, bound.stdout[-2000:]
    assert claim["spec"]["storageClassName"] == STORAGE_CLASS and claim["status"]["phase"] == "Bound", \
        "a named class binds without a default"


def test_a_failing_object_stops_the_run_with_its_events(control_plane: ControlPlane, tmp_path: Path) -> None:
    """Pods that no node can hold: the Deployment never becomes available, and the report names it, with the
    scheduler's own warning, after the group's one wait: its four Deployments, none of which can roll out, share the
    timeout instead of each waiting it out in turn (300 s each by default: 20 minutes before the error)."""
    target = kube.make_target(control_plane, tmp_path, k8s_objects_wait_timeout=15,
                              metalmart_app_resources={"requests": {"cpu": "5000", "memory": "128Mi"}})
    try:
        done = target.run("fresh-start", "--target", target.name, check=False)
    finally:
        target.run("teardown", "--target", target.name, "--yes")
    assert done.returncode == 4
    steps = _steps(done.stderr)
    assert steps["metalmart_app"] == "FAILED" and "seed" not in steps, "nothing after the failing step runs"
    failed = re.search(r"app/deployment\.yaml\.j2 \(Deployment/(\S+)\) failed: not ready after 15 s", done.stderr)
    assert failed, done.stderr[-2000:]
    assert "Insufficient cpu" in done.stderr, "the scheduler's warning about that Deployment's pod"
    assert f"describe deployment/{failed.group(1)}" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: deploy-cluster failed on {target.name}")
    log = (target.state / "ansible-deploy-cluster.log").read_text()
    waits = [int(s) for s in re.findall(r"failed: \[localhost\] \(item=Deployment/[^)]+\) => .*"
                                         r"even after waiting for (\d+) seconds", log)]
    assert len(waits) == 4 and sum(waits) <= 15 + len(waits), f"each waited its own timeout: {waits}"


# ---- the mirrord operator's chart, through a real helm ------------------------------------------------------------

def _split_session(plane: ControlPlane, namespace: str) -> str:
    """A MirrordClusterSplitSession on `namespace` as the operator writes one (the chart's CRD), whose session is
    gone: no owner. Returns its name."""
    from kubernetes import client

    name = f"mm-left-{namespace}"
    client.CustomObjectsApi(plane.api()).create_cluster_custom_object(
        "queues.mirrord.metalbear.co", "v1", "mirrordclustersplitsessions", {
            "apiVersion": "queues.mirrord.metalbear.co/v1", "kind": "MirrordClusterSplitSession",
            "metadata": {"name": name},
            "spec": {"namespace": namespace,
                     "owner": {"hostname": "laptop", "k8sUsername": "alice", "userId": "1", "username": "alice"},
                     "queues": [{"id": "order-created", "kind": "kafka"}], "sessionKey": "alice",
                     "target": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "order-processor"}}})
    return name


def _run_as_printed(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A fix doctor printed, run as printed, with the pinned kubectl the test setup builds on PATH."""
    import shlex

    from demokit.testcluster import kubebuild

    path = f"{kubebuild.ensure(print, ('kubectl',))['kubectl'].parent}:{env['PATH']}"
    return subprocess.run(shlex.split(command), env={**env, "PATH": path}, capture_output=True, text=True,
                          timeout=60)


def _helm(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    from demokit.testcluster import kubebuild

    done = subprocess.run([str(kubebuild.binary("helm")), "--kubeconfig", str(plane.kubeconfig), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


@needs_chart
def test_the_operator_installs_with_a_licence_and_teardown_uninstalls_it(control_plane: ControlPlane,
                                                                         tmp_path: Path) -> None:
    from kubernetes import client

    target = kube.make_target(control_plane, tmp_path)
    licensed = {"MIRRORD_LICENSE_KEY": LICENCE}
    first = target.run("fresh-start", "--target", target.name, "--no-smoke", env=licensed)
    second = target.run("fresh-start", "--target", target.name, "--no-smoke", env=licensed)
    status = json.loads(target.run("status", "--target", target.name, "--json").stdout)
    operator = target.objects("apps/v1", "Deployment", "mirrord").get("mirrord-operator")
    secret = target.objects("v1", "Secret", "mirrord").get("mirrord-license")
    # A split session its session left behind (no owner, written as the operator writes one): doctor names it with
    # the command that removes it.
    left_behind = _split_session(control_plane, target.namespace)

    def doctor_now() -> dict[str, Any]:
        return {c["name"]: c for c in json.loads(target.run("doctor", "--target", target.name, "--json", "--config",
                                                            str(target.mirrord_dir / "order-processor.json"),
                                                            check=False).stdout)["checks"]}

    doctor = doctor_now()
    removed = _run_as_printed(str(doctor["no split sessions left behind"]["fix"]), target.env)
    doctor_after_fix = doctor_now()
    config = target.run("mirrord-config", "--target", target.name, "--user", "alice", "--output",
                        str(target.mirrord_dir / "alice.json"))
    target.set_vars(metalmart_queue_id="orders-v2")
    drifted = target.run("mirrord-config", "--target", target.name, "--user", "alice", "--output",
                         str(target.mirrord_dir / "alice.json"), check=False)
    target.set_vars(metalmart_queue_id=None)
    down = target.run("teardown", "--target", target.name, "--yes")
    after = {c["name"]: c for c in json.loads(target.run("doctor", "--target", target.name, "--json",
                                                         check=False).stdout)["checks"]}

    steps = _steps(first.stderr)
    assert steps["mirrord_operator"] == steps["queue_splitting"] == "changed"
    assert "installed by this project, 1/1 ready" in first.stdout
    assert set(_steps(second.stderr).values()) == {"unchanged"}, "the release is left as it is"
    assert operator is not None and operator["status"]["readyReplicas"] == 1
    assert operator["spec"]["template"]["spec"]["containers"][0]["envFrom"] == \
        [{"secretRef": {"name": "mirrord-license"}}], "the licence reaches the operator from the Secret"
    assert secret is not None, "the licence Secret the chart refers to"
    assert sorted(s["kind"] for s in status["splitting"]) == ["MirrordPropertyList", "MirrordSplitConfig"]
    assert status["operator"].startswith("installed by this project")
    logs = "".join(p.read_text() for p in target.state.glob("*.log"))
    assert LICENCE not in logs + first.stdout + first.stderr + second.stderr + down.stderr
    api = client.ApiregistrationV1Api(control_plane.api())
    assert "v1.operator.metalbear.co" not in {a.metadata.name for a in api.list_api_service().items}
    namespaces = target.objects("v1", "Namespace")
    assert target.namespace not in namespaces and "mirrord" not in namespaces, "the operator went with its namespace"
    assert _steps(down.stderr)["mirrord_operator"] == "changed"
    for check in ("the mirrord operator runs", "the splitting resources match the config", "the licence is present"):
        assert doctor[check]["ok"], doctor[check]
        assert not after[check]["ok"], after[check]
    assert LICENCE not in json.dumps(doctor)
    # The operator's own view: nothing answers its API here (kwok's pod serves nothing), said in one line.
    view, left = doctor["the operator's own view of the split"], doctor["no split sessions left behind"]
    assert view["ok"] and "no mirrord operator answers operator.metalbear.co/v1" in view["detail"], view
    assert not left["ok"] and not left["blocking"] and left_behind in left["detail"] and "alice" in left["detail"]
    assert left["fix"].startswith("kubectl ") and left_behind in left["fix"], left
    assert removed.returncode == 0, removed.stderr
    assert doctor_after_fix["no split sessions left behind"]["ok"], doctor_after_fix["no split sessions left behind"]
    version = doctor["the mirrord operator's version"]
    assert version["ok"] and version["detail"].startswith("3.187.0"), version
    assert config.returncode == 0 and (target.mirrord_dir / "alice.json").exists()
    assert drifted.returncode == 2 and drifted.stderr.strip().splitlines() == [
        "error: the target's splitting resources declare queue id(s) order-created, but the config would name "
        f"'orders-v2': set metalmart_queue_id in the inventory to match, or ./run fresh-start --target {target.name} "
        "to apply it"]


@needs_chart
def test_the_operator_installs_with_a_cloud_api_key_alone(control_plane: ControlPlane, tmp_path: Path) -> None:
    """The chart's default credential from 3.179: the key in a Secret of its own, named by cloud.apiKey.keyRef; the
    key itself never in the release's values, a log or the output."""
    key = "cloud-key-" + "9c1e" * 8
    target = kube.make_target(control_plane, tmp_path)
    try:
        first = target.run("fresh-start", "--target", target.name, "--no-smoke", env={"MIRRORD_CLOUD_API_KEY": key})
        operator = target.objects("apps/v1", "Deployment", "mirrord").get("mirrord-operator")
        secrets = target.objects("v1", "Secret", "mirrord")
        values = _helm(control_plane, "get", "values", "mirrord-operator", "-n", "mirrord", "-o", "yaml").stdout
        doctor = {c["name"]: c for c in json.loads(target.run(
            "doctor", "--target", target.name, "--json", "--config",
            str(target.mirrord_dir / "order-processor.json"), check=False).stdout)["checks"]}
    finally:
        down = target.run("teardown", "--target", target.name, "--yes")
    assert "installed by this project" in first.stdout
    container = operator["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["OPERATOR_CLOUD_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "mirrord-cloud-api-key",
                                                                           "key": "apiKey"}
    assert "envFrom" not in container, "no licence key was given"
    assert "mirrord-cloud-api-key" in secrets and "mirrord-license" not in secrets
    assert yaml.safe_load(values)["cloud"] == {"apiKey": {"keyRef": "mirrord-cloud-api-key"}}
    licence = doctor["the licence is present"]
    assert licence["ok"] and "mirrord-cloud-api-key" in licence["detail"], licence
    logs = "".join(p.read_text() for p in target.state.glob("*.log"))
    assert key not in logs + values + first.stdout + first.stderr + down.stderr + json.dumps(doctor)


@needs_chart
def test_someone_elses_operator_is_left_alone_and_its_dead_api_stops_teardown_at_once(
        control_plane: ControlPlane, tmp_path: Path) -> None:
    """An operator another team installed (with an APIService no pod serves, as on this control plane): fresh-start
    leaves it alone, teardown says which APIService would make the namespace deletion hang instead of waiting;
    once it is uninstalled, the next run sees that (the CRDs, not a discovery cache) and skips the resources."""
    # As the chart's README installs it: the release in `default`, the operator in the namespace the chart makes.
    _helm(control_plane, "install", "mirrord-operator", str(kube.SHARED_CHART),
          "--set", "license.key=someone-elses", "--set", "operator.kafkaSplitting=true", "--wait")
    target = kube.make_target(control_plane, tmp_path)
    try:
        licensed = {"MIRRORD_LICENSE_KEY": LICENCE}
        first = target.run("fresh-start", "--target", target.name, "--no-smoke", env=licensed)
        refused = target.run("teardown", "--target", target.name, "--yes", check=False)
        values = yaml.safe_load(_helm(control_plane, "get", "values", "mirrord-operator", "-o", "yaml").stdout)
    finally:
        _helm(control_plane, "uninstall", "mirrord-operator", "--wait")
    after = target.run("fresh-start", "--target", target.name, "--no-smoke")
    down = target.run("teardown", "--target", target.name, "--yes")

    assert "already runs in this cluster (not installed by this project): left alone" in first.stderr
    assert "running, installed by someone else (left alone)" in first.stdout
    assert _steps(first.stderr)["queue_splitting"] == "changed", "its CRDs are there: the resources are applied"
    assert values == {"license": {"key": "someone-elses"}, "operator": {"kafkaSplitting": True}}, \
        "its values are its owner's"
    assert refused.returncode == 4 and _steps(refused.stderr)["namespace"] == "FAILED"
    assert "APIService v1.operator.metalbear.co is unavailable" in refused.stderr
    assert "kubectl delete apiservice v1.operator.metalbear.co" in refused.stderr
    assert "was not installed by this project: left alone" in refused.stderr
    assert "the cluster has no mirrord splitting resources" in after.stderr, "asked the cluster, not a cache"
    assert "404" not in after.stderr
    assert target.namespace not in target.objects("v1", "Namespace") and "deleted" in down.stderr


def _may_get(api: Any, namespace: str, secret: str | None, verb: str = "get") -> bool:
    """Whether the operator's ServiceAccount, as the chart creates it, may `verb` the Secret (SubjectAccessReview)."""
    from kubernetes import client

    account = "system:serviceaccount:mirrord:mirrord-operator"
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=account, groups=["system:serviceaccounts", "system:serviceaccounts:mirrord", "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(namespace=namespace, verb=verb, resource="secrets",
                                                        name=secret)))
    return bool(client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed)


@needs_chart
def test_the_operator_may_read_the_kafka_login_its_property_list_names_and_nothing_more(
        control_plane: ControlPlane, render_minikube: Any) -> None:
    """The chart's own RBAC (installed by Helm, as a platform team does) with what `./run render` writes for each
    Kafka mode applied beside it: asked of the real API server's authorizer."""
    from kubernetes import client, utils

    api = control_plane.api()
    _helm(control_plane, "install", "mirrord-operator", str(kube.SHARED_CHART),
          "--set", "license.key=someone-elses", "--set", "operator.kafkaSplitting=true")
    try:
        for mode, values, secret in (
                ("strimzi", {}, "metalmart-app"),
                ("managed", {"metalmart_kafka_managed_bootstrap": "b1.example:9093",
                             "mirrord_operator_chart_version": "3.191.0"}, "kafka-credentials"),
                ("in-cluster", {}, None)):
            namespace = f"rbac-{mode}"
            objects, _ = render_minikube(metalmart_kafka_mode=mode, metalmart_namespace=namespace, **values)
            login = secret or "kafka-credentials"
            assert not _may_get(api, namespace, login), f"{mode}: the chart alone grants no Secret here"
            rbac = [o for o in objects if o["kind"] in ("Namespace", "Role", "RoleBinding")]
            for obj in rbac:
                utils.create_from_dict(api, obj)
            names = {(o["kind"], o["metadata"]["name"]) for o in rbac if o["kind"] != "Namespace"}
            if secret is None:
                assert names == set(), f"no login, nothing granted: {names}"
                assert not _may_get(api, namespace, login)
            else:
                assert names == {("Role", "mirrord-operator-kafka-login"),
                                 ("RoleBinding", "mirrord-operator-kafka-login")}
                # The API server's RBAC authorizer reads Roles through an informer: a grant just created is seen a
                # moment later, so the first "allowed" is waited for; everything denied below is asked after it.
                until(lambda ns=namespace, s=secret: holds(_may_get(api, ns, s)), 30,
                      f"{mode}: the operator may read {secret}")
                assert not _may_get(api, namespace, "postgres-credentials"), f"{mode}: and no other Secret"
                assert not _may_get(api, namespace, None, "list") and not _may_get(api, namespace, secret, "update")
                assert not _may_get(api, "default", secret), f"{mode}: only in the demo's namespace"
            client.CoreV1Api(api).delete_namespace(namespace)
    finally:
        _helm(control_plane, "uninstall", "mirrord-operator", "--wait")


# ---- minikube's resources -----------------------------------------------------------------------------------------

def _minikube(folder: Path, status_rc: int, calls: Path) -> None:
    _tool(folder, "minikube", f'echo "$*" >> {calls}\n'
          f'case "$1" in status) exit {status_rc};; config) exit 14;; esac\nexit 0\n')


@pytest.mark.parametrize(("status_rc", "flags"), [(85, True), (7, False)], ids=["new profile", "stopped profile"])
def test_cpus_and_memory_are_passed_only_when_the_profile_is_created(tmp_path: Path, status_rc: int,
                                                                      flags: bool) -> None:
    """A stopped profile started with --memory again is refused (MK_USAGE) when the driver now offers less."""
    calls = tmp_path / "calls"
    _minikube(tmp_path / "bin", status_rc, calls)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i",
                           "inventories/minikube/hosts.yml", "playbooks/fresh-start.yml", "--tags", "minikube"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    start = next(c.split() for c in calls.read_text().splitlines() if c.startswith("start"))
    assert start[:3] == ["start", "--profile", "metalmart"]
    assert ("--memory" in start and "--cpus" in start and "--kubernetes-version" in start) is flags, start
    if flags:
        assert start[start.index("--memory") + 1] == "4096" and start[start.index("--cpus") + 1] == "2"


@pytest.mark.parametrize(("cpus", "memory_mb", "expected"), [
    (8, 3072, "minikube_memory_mb is 4096 but Docker offers 3072 MiB: set minikube_memory_mb: 3072 in "
              "inventories/minikube/group_vars/all.yml (the demo requests about 2 GiB), or give Docker more memory"),
    (1, 7800, "minikube_cpus is 2 but Docker offers 1: set minikube_cpus: 1 in inventories/minikube/group_vars/all.yml,"
              " or give Docker more CPUs"),
], ids=["memory", "cpus"])
def test_a_new_profile_asking_more_than_docker_offers_is_one_line_before_anything_runs(
        tmp_path: Path, cpus: int, memory_mb: int, expected: str) -> None:
    calls = tmp_path / "calls"
    _minikube(tmp_path / "bin", 85, calls)
    info = json.dumps({"NCPU": cpus, "MemTotal": memory_mb * 2**20})
    _tool(tmp_path / "bin", "docker", f"echo '{info}'\n")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    env.pop("MIRRORD_LICENSE_KEY", None)
    done = subprocess.run([*RUN, "fresh-start", "--target", "minikube"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 4 and done.stderr.strip().splitlines() == [f"error: {expected}"], done.stderr
    assert not [c for c in calls.read_text().splitlines() if c.startswith("start")], "minikube was never started"


def test_a_filter_that_would_take_the_verify_order_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """The verify order's e-mail is outside the demo's filter, so a running mirrord session never takes it."""
    from metalmart.smoke import SMOKE_EMAIL

    for name in ("minikube", "amer", "emea", "apac", "region.example", "testcluster"):
        target = targets.load(name)
        assert re.search(str(target.get("mirrord_config_email_filter")), SMOKE_EMAIL) is None, name
        assert cluster.verify_order_problem(target) is None
    inventories = inventory(tmp_path, "minikube", mirrord_config_email_filter=r"@metalmart\.invalid$")
    assert "matches the verify order's e-mail" in str(cluster.verify_order_problem(targets.load("minikube",
                                                                                                inventories)))
