"""Every Kubernetes object fresh-start applies, rendered offline: valid for Kubernetes 1.30 and the newest version
kubernetes-validate knows (strict: an unknown field or kind fails), mirrord's resources valid against its CRDs, and
shaped the way the demo needs (names, wiring, no secrets)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from demokit import images, targets
from tests.conftest import Rendered
from tests.helpers import ROOT, RUN

pytestmark = pytest.mark.stack  # ./run render (Ansible)

SHARED = ROOT.parent / "shared" / "mirrord"
CRD_SCHEMAS = {"MirrordPropertyList": "crd-schema-MirrordPropertyList-v1.json",
               "MirrordSplitConfig": "crd-schema-MirrordSplitConfig-v1.json",
               "MirrordKafkaClientConfig": "crd-schema-MirrordKafkaClientConfig-v1alpha.json",
               "MirrordKafkaTopicsConsumer": "crd-schema-MirrordKafkaTopicsConsumer-v1alpha.json"}
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


Objects = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="module")
def objects(render_minikube: Callable[..., Rendered]) -> Objects:
    """objects(**inventory_values): every object fresh-start applies to minikube with those values."""
    return lambda fresh=False, **values: render_minikube(fresh, **values)[0]


def _by(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_kubernetes_object_validates_strictly(version: str, objects: Objects) -> None:
    kube = [d for d in objects() if d["kind"] not in CRD_SCHEMAS]
    assert len(kube) >= 15
    for doc in kube:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_is_strict_about_unknown_fields_and_kinds(objects: Objects) -> None:
    deployment = _by(objects(), "Deployment")["order"]
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSIONS[0], strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate({**deployment, "kind": "Deploymnet"}, K8S_VERSIONS[0], strict=True)


@pytest.mark.skipif(not (SHARED / "mirrord-schema.json").exists(),
                    reason="../shared/mirrord (mirrord's CRD schemas) is not beside this checkout")
@pytest.mark.parametrize("model", ["current", "legacy"])
def test_the_mirrord_resources_validate_against_the_operators_crds(model: str, objects: Objects) -> None:
    mirrord = [d for d in objects(queue_splitting_model=model) if d["kind"] in CRD_SCHEMAS]
    assert len(mirrord) == 2
    for doc in mirrord:
        schema = json.loads((SHARED / CRD_SCHEMAS[doc["kind"]]).read_text())
        jsonschema.Draft202012Validator(schema).validate(doc)


def test_workloads_are_named_after_the_services_and_wired_together(objects: Objects) -> None:
    docs = objects()
    deployments = _by(docs, "Deployment")
    assert sorted(deployments) == ["catalogue", "order", "order-processor", "storefront"]
    assert sorted(_by(docs, "StatefulSet")) == ["kafka", "postgres"]
    processor = deployments["order-processor"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in processor["env"]}
    split = _by(docs, "MirrordSplitConfig")["order-processor"]["spec"]["queues"][0]["appConfig"]
    assert split["topic"][0] == {"env": "KAFKA_TOPIC", "containers": [processor["name"]]}
    assert env["KAFKA_TOPIC"] == "order.created" and env["KAFKA_GROUP_ID"] == "order-processor"
    assert env["KAFKA_BROKERS"] == "kafka.metalmart.svc.cluster.local:9092"
    assert env["DEMO_MODE"] == "true"
    kafka_env = {e["name"]: e["value"] for e in
                 _by(docs, "StatefulSet")["kafka"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "ZOOKEEPER" not in json.dumps(kafka_env).upper()
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "EXTERNAL://127.0.0.1:19094" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    topic_job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"].startswith("kafka-topic"))
    command = topic_job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["/bin/sh", "-c"] and "--create --if-not-exists --partitions 3 " in command[2]
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "a missing topic is reported, never made"
    assert _by(docs, "Service")["storefront"]["spec"]["type"] == "NodePort"


def test_no_secret_is_rendered_the_password_is_referenced(objects: Objects) -> None:
    docs = objects()
    assert not [d for d in docs if d["kind"] == "Secret"]
    order = _by(docs, "Deployment")["order"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in order["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "postgres-credentials"
    assert "$(POSTGRES_PASSWORD)" in env["DATABASE_URL"]["value"]


def test_demo_mode_and_the_image_tag_change_the_pod_template_and_nothing_else_does(objects: Objects) -> None:
    on, again, off = objects(), objects(fresh=True), objects(metalmart_demo_mode=False)
    assert on == again, "rendering is deterministic"
    pods = lambda docs: {n: d["spec"]["template"] for n, d in _by(docs, "Deployment").items()}  # noqa: E731
    changed = sorted(n for n in pods(on) if pods(on)[n] != pods(off)[n])
    assert changed == ["order-processor", "storefront"], "DEMO_MODE rolls exactly the pods that read it"
    assert images.content_tag() == images.content_tag()


def test_render_writes_every_object_in_apply_order(tmp_path: Path) -> None:
    done = subprocess.run([*RUN, "render", "--target", "minikube", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    files = sorted((tmp_path / "manifests").iterdir())
    kinds = [yaml.safe_load(f.read_text())["kind"] for f in files]
    assert kinds[0] == "Namespace" and kinds[-1] == "MirrordSplitConfig"
    assert kinds.index("StatefulSet") < kinds.index("Deployment") < kinds.index("Job", kinds.index("Deployment"))
    assert json.loads((tmp_path / ".mirrord" / "order-processor.json").read_text())["operator"] is True


def test_render_refuses_the_local_target_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run([*RUN, "render", "--target", "local", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "local target" in done.stderr


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_in_cluster_load_job_validates_and_never_retries(version: str) -> None:
    from demokit.kube import incluster
    from metalmart.loadgen import LoadConfig

    job = incluster.job_manifest(targets.load("minikube"), LoadConfig(20, 120, "http://x", email_user="alice"))
    kubernetes_validate.validate(job, version, strict=True)
    assert job["spec"]["backoffLimit"] == 0, "a retried generator would send its orders twice"
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "loadgen" and args[args.index("--email-user") + 1] == "alice"
