"""One engine: role inputs set in an inventory are followed everywhere. What `render` shows, what a converge applies,
what `status` reads and what `teardown` deletes all come from Ansible's own view of the target's variables (the
roles' defaults under the inventory), so an input cannot be honoured by one and ignored by another."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from demokit import targets
from demokit.config import render
from demokit.testcluster.controlplane import ControlPlane
from tests import kube
from tests.helpers import ROOT

pytestmark = pytest.mark.cluster  # against the real control plane (tests/conftest.py)

LEGACY_CRDS = ROOT.parent / "shared" / "mirrord" / "kafka-crds-v1alpha.yaml"
INPUTS = {
    "queue_splitting_model": "legacy",
    "metalmart_operator_namespace": "mirrord-ops",
    "metalmart_kafka_topic": "orders.v2",
    "metalmart_kafka_group_id": "order-workers",
    "kafka_topic_partitions": 2,
    "metalmart_demo_mode": False,
    "metalmart_processor_concurrency": 64,
    "metalmart_kafka_session_timeout_ms": 8000,
    "metalmart_queue_id": "orders-v2",
    "metalmart_postgres_user": "shop",
    "metalmart_postgres_database": "shop",
    "metalmart_postgres_secret_name": "shop-db",
    "postgres_storage": "3Gi",
    "kafka_storage": "4Gi",
    "seed_resources": {"requests": {"cpu": "20m", "memory": "64Mi"}},
    "metalmart_app_resources": {"requests": {"cpu": "30m", "memory": "96Mi"}},
    "mirrord_config_email_filter": r"^bob@metalbear\.com$",
}


def _by(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.mark.skipif(not LEGACY_CRDS.exists(), reason="../shared/mirrord (the legacy CRDs) is not beside this checkout")
def test_role_inputs_reach_render_converge_status_and_teardown(control_plane: ControlPlane, tmp_path: Path) -> None:
    # A cluster whose operator (someone else's, not running here) brought the legacy CRDs into its own namespace.
    for crd in yaml.safe_load_all(LEGACY_CRDS.read_text()):
        control_plane.apply(crd)
    control_plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mirrord-ops"}})
    target = kube.make_target(control_plane, tmp_path, **INPUTS)

    objects, config = render.rendered(targets.load(target.name, target.inventories))
    deployments = _by(objects, "Deployment")
    processor = _env(deployments["order-processor"])
    assert (processor["KAFKA_TOPIC"], processor["KAFKA_GROUP_ID"], processor["DEMO_MODE"]) == \
        ("orders.v2", "order-workers", "false")
    assert (processor["PROCESSOR_CONCURRENCY"], processor["KAFKA_SESSION_TIMEOUT_MS"]) == ("64", "8000")
    assert _env(deployments["order"])["DATABASE_URL"].startswith("postgresql://shop:$(POSTGRES_PASSWORD)@")
    topic_job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"].startswith("kafka-topic"))
    assert topic_job["metadata"]["name"] == "kafka-topic-orders-v2-p2"
    assert [o["kind"] for o in objects if o["kind"].startswith("Mirrord")] == \
        ["MirrordKafkaClientConfig", "MirrordKafkaTopicsConsumer"]
    assert _by(objects, "MirrordKafkaClientConfig")["metalmart-kafka"]["metadata"]["namespace"] == "mirrord-ops"
    assert list(config["feature"]["split_queues"]) == ["orders-v2"]
    split = config["feature"]["split_queues"]["orders-v2"]
    assert split["message_filter"] == {"customer_email": r"^bob@metalbear\.com$"}

    target.run("fresh-start", "--target", target.name, "--no-smoke")
    for doc in objects:
        target.holds(doc)
    written = json.loads((target.mirrord_dir / "order-processor.json").read_text())
    assert written == config, "the converge wrote the config render shows"
    assert "shop-db" in target.objects("v1", "Secret"), "the generated credentials use the named Secret"
    claims = {n: c["spec"]["resources"]["requests"]["storage"] for n, c in
              target.objects("v1", "PersistentVolumeClaim").items()}
    assert claims == {"data-postgres-0": "3Gi", "data-kafka-0": "4Gi"}

    status = json.loads(target.run("status", "--target", target.name, "--json").stdout)
    assert status["demo_mode"] is False
    assert sorted((s["kind"], s["namespace"]) for s in status["splitting"]) == [
        ("MirrordKafkaClientConfig", "mirrord-ops"), ("MirrordKafkaTopicsConsumer", target.namespace)]

    down = target.run("teardown", "--target", target.name, "--yes")
    assert re.search(r"queue_splitting\s+[\d.]+ s\s+changed", down.stderr)
    assert target.objects("queues.mirrord.metalbear.co/v1alpha", "MirrordKafkaClientConfig", "mirrord-ops") == {}, \
        "the legacy client config in the operator's namespace went too"
    assert target.namespace not in target.objects("v1", "Namespace")
