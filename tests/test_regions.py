"""Shared demo clusters per sales region. Every region renders and validates; against the real control plane, two
regions provision twice (the second run changes nothing), the context guard refuses a context the inventory does not
name and one that points at another cluster than recorded, the provisioning lease refuses a second holder (naming it)
and is taken over when stale only with --force, the image tag is asked of a real OCI registry (distribution's, on
127.0.0.1) before anything is deployed, engineers get their configs and exactly their RBAC, and no credential
appears in any output."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from demokit import targets
from demokit.config import mirrordcfg, render
from demokit.errors import UserError
from demokit.probes import free_port, until
from demokit.testcluster import kubebuild
from demokit.testcluster.controlplane import ControlPlane
from tests import kube
from tests.conftest import PodBackend
from tests.helpers import ROOT, RUN, Proc

pytestmark = pytest.mark.cluster
SHARED = ROOT.parent / "shared" / "mirrord"
REGIONS = ("amer", "emea", "apac", "region.example")
SASL_PASSWORD = "sasl-" + "9c1e" * 8


# ---- offline: what every region deploys ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]:
    out = {}
    for region in REGIONS:
        folder = tmp_path_factory.mktemp(f"render-{region}")
        render.write(folder, targets.load(region))
        objects = [yaml.safe_load(p.read_text()) for p in sorted((folder / "manifests").glob("*.yaml"))]
        configs = {p.stem: json.loads(p.read_text()) for p in (folder / ".mirrord").glob("*.json")}
        out[region] = (objects, configs)
    return out


@pytest.mark.parametrize("region", REGIONS)
def test_every_region_renders_valid_objects(region: str, rendered: dict[str, Any]) -> None:
    objects, configs = rendered[region]
    target = targets.load(region)
    for doc in objects:
        if not doc["kind"].startswith(("Mirrord", "Kafka")):
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
        if doc["metadata"].get("namespace"):
            assert doc["metadata"]["namespace"] in (target.get("metalmart_namespace"),
                                                    target.get("metalmart_operator_namespace"))
    kinds = {d["kind"] for d in objects}
    assert {"ResourceQuota", "LimitRange", "RoleBinding", "ClusterRoleBinding"} <= kinds
    deployment = next(d for d in objects if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        str(target.get("metalmart_image_name")) + ":")
    people = target.get("engineers_people")
    assert set(configs) == {"order-processor"} | {p["name"] for p in people}


@pytest.mark.skipif(not (SHARED / "mirrord-schema.json").exists(),
                    reason="../shared/mirrord is not beside this checkout")
@pytest.mark.parametrize("region", REGIONS)
def test_engineers_configs_validate_do_not_overlap_and_their_rbac_is_exactly_the_users_role(
        region: str, rendered: dict[str, Any]) -> None:
    objects, configs = rendered[region]
    schema = json.loads((SHARED / "mirrord-schema.json").read_text())
    people = targets.load(region).get("engineers_people")
    for config in configs.values():
        jsonschema.Draft202012Validator(schema).validate(config)
    for person in people:
        regex = configs[person["name"]]["feature"]["split_queues"]["order-created"]["message_filter"][
            "customer_email"]
        for sender in people:
            sent = mirrordcfg.load_sample(50, email_user=sender["name"], email_domain=sender["email"].split("@")[1])
            assert sum(1 for e in sent if re.search(regex, e)) == (50 if sender == person else 0)
    bindings = [d for d in objects if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert sorted((d["kind"], d["roleRef"]["name"]) for d in bindings) == sorted(
        [("RoleBinding", "mirrord-operator-user")] * len(people) + [("ClusterRoleBinding",
                                                                      "mirrord-operator-user-basic")])
    users = sorted(s["name"] for d in bindings if d["kind"] == "RoleBinding" for s in d["subjects"])
    assert users == sorted(p["email"] for p in people)
    assert not [d for d in objects if d["kind"] in ("Role", "ClusterRole")], "no role of our own: the chart's"


# ---- against the control plane ------------------------------------------------------------------------------------

class Registry:
    """distribution's registry on 127.0.0.1 (built from its Go module, as the control plane is)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        config = folder / "registry.yml"
        config.write_text(yaml.safe_dump({"version": 0.1, "log": {"level": "warn"},
                                          "storage": {"filesystem": {"rootdirectory": str(folder / "data")}},
                                          "http": {"addr": f"127.0.0.1:{self.port}"}}))
        binary = kubebuild.ensure(print, ("registry",))["registry"]
        self.proc = Proc("registry", [str(binary), "serve", str(config)], None, folder).start()
        until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=2), 30, "registry")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def push(self, repository: str, tag: str) -> None:
        """A minimal image (a config and no layer) as repository:tag, through the distribution API."""
        config = b"{}"
        digest = "sha256:" + hashlib.sha256(config).hexdigest()
        base = f"http://{self.host}/v2/{repository}"
        start = urllib.request.Request(f"{base}/blobs/uploads/", method="POST")
        with urllib.request.urlopen(start) as answer:
            location = answer.headers["Location"]
        url = location if location.startswith("http") else f"http://{self.host}{location}"
        upload = urllib.request.Request(f"{url}{'&' if '?' in url else '?'}digest={digest}", data=config,
                                        method="PUT", headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(upload).close()
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": digest, "size": len(config)}, "layers": []}).encode()
        put = urllib.request.Request(f"{base}/manifests/{tag}", data=manifest, method="PUT",
                                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        urllib.request.urlopen(put).close()

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture(scope="module")
def oci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    registry = Registry(tmp_path_factory.mktemp("registry"))
    yield registry
    registry.stop()


class RegionSetup:
    """Copies of the emea and apac inventories for the control plane: their clusters' contexts in a kubeconfig of
    their own (pointing at the plane), the image in the test registry, a namespace each."""

    def __init__(self, plane: ControlPlane, root: Path, registry: Registry) -> None:
        self.root, self.plane = root, plane
        self.kubeconfig = root / "kubeconfig"
        config = yaml.safe_load(plane.kubeconfig.read_text())
        real = config["contexts"][0]["context"]
        for region in ("emea", "apac"):
            config["contexts"].append({"name": f"metalmart-{region}-1", "context": dict(real)})
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.inventories = root / "inventories"
        self.tag = "demo-1"
        for region in ("emea", "apac"):
            shutil.copytree(ROOT / "inventories" / region, self.inventories / region)
            values = yaml.safe_load((self.inventories / region / "group_vars" / "all.yml").read_text())
            values.update(kubeconfig_path=str(self.kubeconfig), metalmart_image_name=f"{registry.host}/metalmart",
                          region_image_policy="published", region_image_tag=self.tag,
                          metalmart_namespace=f"{region}-{free_port()}", local_state_dir=str(root / "state" / region),
                          mirrord_config_dir=str(root / "mirrord" / region),
                          mirrord_operator_chart_ref=str(kube.SHARED_CHART))
            if region == "apac":  # a managed Kafka, its login from the environment
                values.update(metalmart_kafka_mode="managed",
                              metalmart_kafka_managed_bootstrap="kafka.example.internal:9093")
            (self.inventories / region / "group_vars" / "all.yml").write_text(yaml.safe_dump(values))
            (root / "mirrord" / region).mkdir(parents=True)
        (root / "tmp").mkdir()
        self.env = {**os.environ, "INVOKE_METALMART_INVENTORIES": str(self.inventories), "TMPDIR": str(root / "tmp"),
                    "KUBECONFIG": str(self.kubeconfig), "KAFKA_SASL_USERNAME": "metalmart",
                    "KAFKA_SASL_PASSWORD": SASL_PASSWORD}
        self.env.pop("MIRRORD_LICENSE_KEY", None)
        registry.push("metalmart", self.tag)

    def run(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*RUN, *args], cwd=ROOT, env={**self.env, **env}, capture_output=True, text=True,
                              timeout=900)
        if check:
            assert done.returncode == 0, done.stderr[-4000:]
        return done

    def target(self, region: str) -> targets.Target:
        return targets.load(region, self.inventories)

    def objects(self, region: str, api_version: str, kind: str, namespace: str | None = None) -> dict[str, Any]:
        t = kube.ClusterTarget(self.plane, self.root, region, str(self.target(region).get("metalmart_namespace")))
        return t.objects(api_version, kind, namespace)


@pytest.fixture(scope="module")
def setup(control_plane: ControlPlane, oci: Registry, pod_backend: PodBackend,
          tmp_path_factory: pytest.TempPathFactory) -> RegionSetup:
    """(The pod backend answers the verify step's smoke order in the order pods.)"""
    return RegionSetup(control_plane, tmp_path_factory.mktemp("regions"), oci)


@contextlib.contextmanager
def _edited(path: Path, change: Callable[[str], str]) -> Iterator[None]:
    """The file as `change` makes it for the block, and as it was afterwards."""
    original = path.read_text()
    path.write_text(change(original))
    try:
        yield
    finally:
        path.write_text(original)


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_two_regions_provision_twice_and_the_second_run_changes_nothing(setup: RegionSetup) -> None:
    outputs = []
    for region in ("emea", "apac"):
        first = setup.run("provision", "--region", region)
        second = setup.run("provision", "--region", region)
        outputs += [first.stdout + first.stderr, second.stdout + second.stderr]
        assert f"{region}-1: recorded its API server" in first.stderr
        assert f"image: {setup.target(region).get('metalmart_image_name')}:demo-1 is in the registry" in first.stderr
        assert f"{region}-1: (nothing changed)" in second.stderr and "recorded" not in second.stderr
        record = yaml.safe_load((setup.inventories / region / "host_vars" / f"{region}-1" / "recorded.yml").read_text())
        assert record["cluster_recorded_server"].startswith("https://127.0.0.1:")
        ns = str(setup.target(region).get("metalmart_namespace"))
        assert setup.objects(region, "coordination.k8s.io/v1", "Lease", ns) == {}, "the lease is released"
        people = setup.target(region).get("engineers_people")
        bindings = setup.objects(region, "rbac.authorization.k8s.io/v1", "RoleBinding", ns)
        assert sorted(bindings) == sorted(f"mirrord-user-{p['name']}" for p in people)
        configs = sorted(p.stem for p in (setup.root / "mirrord" / region).glob("*.json"))
        assert configs == sorted(["order-processor", *(p["name"] for p in people)])
        assert setup.objects(region, "v1", "ResourceQuota", ns), "the region's quota"
    apac = setup.target("apac")
    ns = str(apac.get("metalmart_namespace"))
    order = setup.objects("apac", "apps/v1", "Deployment", ns)["order"]
    env = {e["name"]: e for e in order["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFKA_BROKERS"]["value"] == "kafka.example.internal:9093"
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kafka-credentials"
    assert "kafka" not in setup.objects("apac", "apps/v1", "StatefulSet", ns), "a managed Kafka: none deployed"
    logs = "".join(p.read_text() for p in (setup.root / "state").rglob("*.log"))
    rendered = "".join(p.read_text() for p in (setup.root / "mirrord").rglob("*.json"))
    assert SASL_PASSWORD not in logs + rendered + "".join(outputs), "the Kafka login is never shown"


def test_check_shows_what_would_change_and_changes_nothing(setup: RegionSetup) -> None:
    values = setup.inventories / "emea" / "group_vars" / "all.yml"
    with _edited(values, lambda text: text + "metalmart_demo_mode: false\n"):
        ns = str(setup.target("emea").get("metalmart_namespace"))
        before = setup.objects("emea", "apps/v1", "Deployment", ns)["order-processor"]["metadata"]["generation"]
        done = setup.run("provision", "--region", "emea", "--check")
        after = setup.objects("emea", "apps/v1", "Deployment", ns)["order-processor"]["metadata"]["generation"]
    assert re.search(r"emea-1: \d+ change\(s\) would be made", done.stderr), done.stderr[-2000:]
    assert before == after, "--check changed nothing"


def test_the_context_guard_refuses_an_unknown_and_a_moved_context(setup: RegionSetup) -> None:
    hosts = setup.inventories / "emea" / "hosts.yml"
    with _edited(hosts, lambda text: text.replace("metalmart-emea-1", "metalmart-emea-9")):
        unknown = setup.run("provision", "--region", "emea", check=False)
    assert unknown.returncode == 2
    assert "the kube context 'metalmart-emea-9' that the inventory names for emea is not in your kubeconfig" in \
        _lines(unknown.stderr)[-1]
    record = setup.inventories / "emea" / "host_vars" / "emea-1" / "recorded.yml"
    with _edited(record, lambda text: text.replace("cluster_recorded_uid: ", "cluster_recorded_uid: 0ther-")):
        moved = setup.run("provision", "--region", "emea", check=False)
    assert moved.returncode == 5
    line = _lines(moved.stderr)[-1]
    assert "context 'metalmart-emea-1' now points at https://127.0.0.1:" in line
    assert "not at the cluster recorded for emea-1" in line and "recorded.yml" in line


def test_the_lease_refuses_a_second_holder_and_force_takes_a_stale_one(setup: RegionSetup) -> None:
    from kubernetes import client

    target = setup.target("emea")
    ns = str(target.get("metalmart_namespace"))
    api = client.CoordinationV1Api(setup.plane.api())
    now = datetime.datetime.now(datetime.UTC)
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "metalmart-provision"},
             "spec": {"holderIdentity": "dana@laptop (pid 4242)", "leaseDurationSeconds": 30, "acquireTime": now,
                      "renewTime": now}}
    api.create_namespaced_lease(ns, lease)
    try:
        busy = setup.run("provision", "--region", "emea", check=False)
        stale = api.read_namespaced_lease("metalmart-provision", ns)
        stale.spec.renew_time = now - datetime.timedelta(minutes=5)
        api.replace_namespaced_lease("metalmart-provision", ns, stale)
        refused = setup.run("provision", "--region", "emea", check=False)
        forced = setup.run("provision", "--region", "emea", "--force")
    finally:
        with contextlib.suppress(client.ApiException):
            api.delete_namespaced_lease("metalmart-provision", ns)
    assert busy.returncode == 5 and "emea-1 is being provisioned by dana@laptop (pid 4242) since" in busy.stderr
    assert refused.returncode == 5 and "stopped renewing it" in refused.stderr and "--force" in refused.stderr
    assert "took over the provisioning lease from dana@laptop (pid 4242)" in forced.stderr


def test_a_tag_the_registry_does_not_have_is_never_deployed(setup: RegionSetup) -> None:
    values = setup.inventories / "emea" / "group_vars" / "all.yml"
    with _edited(values, lambda text: text.replace("region_image_tag: demo-1", "region_image_tag: never-pushed")):
        done = setup.run("provision", "--region", "emea", check=False)
    with _edited(values, lambda text: text.replace("region_image_policy: published", "region_image_policy: content")):
        # Only this Python's folder on PATH: no Docker, Podman or Buildah.
        no_builder = setup.run("provision", "--region", "emea", check=False, PATH=str(Path(sys.executable).parent))
    assert done.returncode == 4
    assert _lines(done.stderr)[-1] == (f"error: the registry has no {setup.target('emea').get('metalmart_image_name')}"
                                       ":never-pushed: publish it first, or set region_image_tag to a tag it has")
    assert no_builder.returncode == 4 and "no Docker, Podman or Buildah here" in _lines(no_builder.stderr)[-1]


def test_status_and_teardown_work_for_a_region(setup: RegionSetup) -> None:
    status = json.loads(setup.run("status", "--target", "emea", "--json").stdout)
    assert status["namespace"] == setup.target("emea").get("metalmart_namespace")
    assert {w["name"] for w in status["workloads"]} >= {"order", "order-processor", "catalogue", "storefront"}
    for region in ("emea", "apac"):
        done = setup.run("teardown", "--target", region, "--yes")
        assert "deleted" in done.stderr


def test_strimzi_and_managed_kafka_render_their_objects_and_logins(render_minikube: Any,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    strimzi, _ = render_minikube(metalmart_kafka_mode="strimzi")
    kinds = [d["kind"] for d in strimzi]
    assert {"KafkaNodePool", "Kafka", "KafkaUser", "KafkaTopic"} <= set(kinds) and "StatefulSet" in kinds
    assert not [d for d in strimzi if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "kafka"]
    user = next(d for d in strimzi if d["kind"] == "KafkaUser")
    acls = {(a["resource"]["type"], a["resource"].get("name"), a["resource"].get("patternType")) for a in
            user["spec"]["authorization"]["acls"]}
    assert ("topic", "mirrord-tmp-", "prefix") in acls and ("topic", "order.created", "literal") in acls
    order = next(d for d in strimzi if d["kind"] == "Deployment" and d["metadata"]["name"] == "order")
    env = {e["name"]: e for e in order["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFKA_BROKERS"]["value"] == "metalmart-kafka-bootstrap.metalmart.svc.cluster.local:9092"
    assert env["KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "metalmart-app", "key": "password",
                                                                      "optional": True}
    managed, _ = render_minikube(metalmart_kafka_mode="managed", metalmart_kafka_managed_bootstrap="b1.example:9093",
                                 mirrord_operator_chart_version="3.191.0")
    capfd.readouterr()
    with pytest.raises(UserError, match="render failed"):
        render_minikube(metalmart_kafka_mode="managed", metalmart_kafka_managed_bootstrap="b1.example:9093")
    said = "".join(capfd.readouterr())
    assert re.search(r"queue_splitting .* FAILED\n\s+a managed Kafka refuses topics of replication factor 1, .* set "
                     r"mirrord_operator_chart_version to 3\.191\.0 or later", said), said[-2000:]
    assert not [d for d in managed if d["kind"].startswith("Kafka") or d["metadata"]["name"].startswith("kafka")]
    props = {p["name"]: p for p in next(d for d in managed if d["kind"] == "MirrordPropertyList")["spec"]["properties"]}
    assert props["bootstrap.servers"]["value"] == "b1.example:9093"
    assert props["sasl.password"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-credentials", "key": "password"}
    assert "value" not in props["sasl.password"], "the login stays in its Secret"
    if SHARED.exists():
        schema = json.loads((SHARED / "crd-schema-MirrordPropertyList-v1.json").read_text())
        jsonschema.Draft202012Validator(schema).validate(next(d for d in managed if d["kind"] == "MirrordPropertyList"))
