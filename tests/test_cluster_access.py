"""Cluster targets reached from the laptop with nothing started by hand: `./run metrics` and `./run load` open their
own port-forwards through the Kubernetes API (the same websocket protocol kubectl uses). The API is kmock's emulator
with a `pods/portforward` endpoint; the "pods" behind it are a real Tansu broker and the stub order service on
127.0.0.1, so the bytes that cross the tunnel are real Kafka and HTTP.

The broker listens on one port and advertises 127.0.0.1:<kafka_external_port>, as the cluster's Kafka does for its
second listener: clients bootstrap through the tunnel and are sent back to it. Messages are produced one record per
batch (flush after each) because Tansu reports a partition's end offset as its last batch's base offset + 1."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from demokit import portforward, targets
from demokit.kafka import ensure_topic, tansu_binary
from demokit.probes import free_port
from tests import kube
from tests.helpers import ROOT, Proc, wait_broker
from tests.test_deploy_roles import Env, make_env
from tests.test_load import Stub


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[tuple[Env, Stub, int]]:
    broker_port, external = free_port(), free_port()
    broker = Proc("broker", [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{broker_port}",
                             "--advertised-listener-url", f"tcp://127.0.0.1:{external}",
                             "--storage-engine", "memory://tansu/"], {"RUST_LOG": "warn"}, tmp_path).start()
    stub = Stub(tmp_path)
    try:
        with kube.running() as (cluster, url):
            env = make_env(tmp_path, cluster, url)
            env.set_vars(kafka_external_port=external)
            cluster.add_ready_pod("metalmart", "kafka-0", "kafka", {9094: ("127.0.0.1", broker_port)})
            cluster.add_ready_pod("metalmart", "order-7d9f", "order", {8084: ("127.0.0.1", stub.port)})
            cluster.add_ready_pod("metalmart", "catalogue-5c2a", "catalogue", {8082: ("127.0.0.1", stub.port)})
            yield env, stub, broker_port
    finally:
        stub.proc.stop()
        broker.stop()


# The official client's proxy thread raises ConnectionResetError when a forwarded connection closes with bytes unread
# (librdkafka closes its sockets abruptly); it is that thread's noise, not a lost message: the offsets below are exact.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_metrics_reach_the_clusters_broker_and_order_service_by_themselves(world: tuple[Env, Stub, int],
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    env, _, _ = world
    # Seed the topic through a tunnel opened the way the task opens it, so that the broker's advertised address
    # (the tunnel's port) is reachable while producing.
    monkeypatch.setenv("METALMART_INVENTORY_DIR", str(env.inventories))
    monkeypatch.setenv("KUBECONFIG", env.env["KUBECONFIG"])
    with portforward.tunnels(targets.load(env.name), {"kafka": (9094, _external(env))}) as local:
        bootstrap = f"127.0.0.1:{local['kafka']}"
        wait_broker(bootstrap, 20)
        ensure_topic(bootstrap, "order.created", 3)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        for i in range(7):
            producer.produce("order.created", key=f"k{i}", value=b"{}", partition=i % 3)
            producer.flush(10)  # one record per batch: see the module docstring
        del producer
    done = env.run("metrics", "--target", env.name, "--json")
    snap = json.loads(done.stdout)
    topic = next(t for t in snap["topics"] if t["name"] == "order.created")
    assert topic["end_offset_total"] == 7 and [p["end_offset"] for p in topic["partitions"]] == [3, 2, 2]
    assert snap["orders"] is not None, snap["errors"]
    assert snap["orders"]["by_status"] == {"pending": 0}
    assert snap["bootstrap"] == f"127.0.0.1:{_external(env)}"


def test_load_reaches_the_clusters_order_service_by_itself(world: tuple[Env, Stub, int], tmp_path: Path) -> None:
    env, stub, _ = world
    report_path = tmp_path / "report.json"
    env.run("load", "--target", env.name, "--rate", "20", "--duration", "2", "--json", str(report_path))
    report = json.loads(report_path.read_text())
    assert report["scheduled"] == report["sent"] == report["succeeded"] == 40 and report["failed"] == 0
    assert len(stub.emails()) == 40, "every order crossed the tunnel to the service"


def test_no_ready_pod_is_one_line_and_exit_4(tmp_path: Path) -> None:
    with kube.running() as (cluster, url):
        env = make_env(tmp_path, cluster, url)
        done = env.run("metrics", "--target", env.name, check=False)
    assert done.returncode == 4
    assert done.stderr.strip().splitlines() == ["error: no ready kafka pod in namespace metalmart; see ./run status"]


def _external(env: Env) -> int:
    values = yaml.safe_load((env.inventories / env.name / "group_vars" / "all.yml").read_text())
    return int(values["kafka_external_port"])


def test_load_in_cluster_runs_the_generator_as_a_job_and_brings_back_the_report(
        world: tuple[Env, Stub, int], tmp_path: Path) -> None:
    """The test plays the Job controller and the kubelet: when the Job is created it runs the Job's own container
    command (`python -m metalmart loadgen ...`) as a process whose output is the pod's log, with the cluster's
    service names resolved to the stub."""
    env, stub, _ = world
    jobs: list[dict[str, Any]] = []
    procs: list[Proc] = []

    def kubelet(job: dict[str, Any]) -> None:
        jobs.append(job)
        container = job["spec"]["template"]["spec"]["containers"][0]
        args = [a.replace("http://order:8084", stub.url).replace("http://catalogue:8082", stub.url)
                for a in container["args"]]
        proc = Proc("load-pod", [sys.executable, "-m", "metalmart", *args], None, tmp_path).start()
        procs.append(proc)
        pod = f"{job['metadata']['name']}-x7k2p"
        labels = job["spec"]["template"]["metadata"]["labels"]
        env.cluster.objects[kube.resource("", "v1", "pods"), "metalmart", pod] = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": "metalmart", "labels": labels},
            "status": {"phase": "Running"}}
        env.cluster.add_log("metalmart", pod, proc.log_path, proc.alive)

    env.cluster.on_create("Job", kubelet)
    report_path = tmp_path / "report.json"
    try:
        done = env.run("load", "--target", env.name, "--in-cluster", "--rate", "25", "--duration", "2",
                       "--json", str(report_path))
    finally:
        for proc in procs:
            proc.stop()
    report = json.loads(report_path.read_text())
    assert report["scheduled"] == report["sent"] == report["succeeded"] == 50 and report["dropped"] == 0
    args = jobs[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--base-url") + 1] == "http://order:8084", "the Job reaches the service by its name"
    assert len(stub.emails()) == 50
    assert len(jobs) == 1 and jobs[0]["spec"]["backoffLimit"] == 0
    assert jobs[0]["spec"]["template"]["spec"]["containers"][0]["image"].startswith("metalmart:")
    assert not env.cluster.objects_of("Job"), "the Job is deleted once its report is in"
    assert "achieved rate" in done.stdout


def test_load_in_cluster_refuses_a_local_target_in_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "invoke", "load", "--target", "local", "--in-cluster"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "needs a cluster target" in done.stderr
