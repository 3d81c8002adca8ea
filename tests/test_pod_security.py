"""Shared clusters: every pod we deploy is admitted where Pod Security "restricted" is enforced (the real API
server's own admission decides, on a dry run of each pod template), and a cluster with another DNS domain gets names
in that domain everywhere."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from demokit import targets
from demokit.kube import incluster
from demokit.testcluster.controlplane import ControlPlane
from metalmart.loadgen import LoadConfig

WORKLOADS = ("Deployment", "StatefulSet", "Job")


def _pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"] for d in docs if d["kind"] in WORKLOADS}


@pytest.mark.cluster
def test_every_pod_is_admitted_where_pod_security_restricted_is_enforced(
        control_plane: ControlPlane, render_minikube: Callable[..., Any]) -> None:
    from kubernetes import client

    docs, _ = render_minikube()
    pods = _pods(docs)
    pods["Job/load"] = incluster.job_manifest(targets.load("minikube"), LoadConfig(20, 10, "http://x"))["spec"][
        "template"]
    assert {"Deployment/order", "StatefulSet/postgres", "StatefulSet/kafka", "Job/load"} <= set(pods)
    core = client.CoreV1Api(control_plane.api())
    ns = f"restricted-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    refused = {}
    try:
        for where, template in pods.items():
            spec = json.loads(json.dumps(template["spec"]))
            spec["volumes"] = [{"name": v["name"], "emptyDir": {}} for v in spec.get("volumes", [])] + [
                {"name": m["name"], "emptyDir": {}} for c in spec["containers"] for m in c.get("volumeMounts", [])
                if m["name"] not in {v["name"] for v in spec.get("volumes", [])}]
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check", "namespace": ns}, "spec": spec}
            try:
                core.create_namespaced_pod(ns, pod, dry_run="All")
            except client.ApiException as exc:
                refused[where] = json.loads(exc.body).get("message", exc.reason)
    finally:
        core.delete_namespace(ns)
    assert refused == {}


def test_another_cluster_domain_reaches_every_name(render_minikube: Callable[..., Any]) -> None:
    docs, config = render_minikube(metalmart_cluster_domain="corp.internal")
    text = json.dumps(docs) + json.dumps(config)
    assert "cluster.local" not in text
    kafka = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "kafka")
    env = {e["name"]: e.get("value") for e in kafka["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "INTERNAL://kafka.metalmart.svc.corp.internal:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    order = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "order")
    env = {e["name"]: e.get("value") for e in order["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFKA_BROKERS"] == "kafka.metalmart.svc.corp.internal:9092"
    assert "@postgres.metalmart.svc.corp.internal:5432/" in env["DATABASE_URL"]
