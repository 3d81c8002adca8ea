"""Cluster targets reached from the laptop with nothing started by hand: `./run metrics` and `./run load` open their
own port-forwards through the real API server (the converged target of tests/conftest.py), and `./run load
--in-cluster` runs the generator as a Job whose pod's log comes back through the API server. kwok's handlers carry
each pod's port to a local process (tests/kube.py): the bytes that cross the tunnel are real Kafka and HTTP.

The metrics test's broker listens on one port and advertises 127.0.0.1:<kafka_external_port>, as the cluster's
Kafka does for its second listener: clients bootstrap through the tunnel and are sent back to it. Messages are
produced one record per batch (flush after each) because Tansu reports a partition's end offset as its last
batch's base offset + 1."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from demokit import targets
from demokit.kafka import ensure_topic
from demokit.kube import portforward
from demokit.probes import free_port, http_ok
from demokit.testcluster.controlplane import ControlPlane, cri_line
from tests import kube
from tests.conftest import Converged, PodBackend
from tests.helpers import ROOT, RUN, KafkaBroker, wait_broker

pytestmark = pytest.mark.cluster  # against the real control plane (tests/conftest.py)


@pytest.fixture()
def served(converged: Converged, pod_backend: PodBackend) -> kube.ClusterTarget:
    """The converged target's order and catalogue pods served by the pod backend."""
    t = converged.target
    t.serve("order", {8084: pod_backend.order_port})
    t.serve("catalogue", {8082: pod_backend.catalogue_port})
    return t


@pytest.fixture()
def cluster_broker(served: kube.ClusterTarget, tmp_path: Path) -> Iterator[int]:
    """A broker for the kafka-0 pod's external listener; yields the port it advertises (kafka_external_port)."""
    external = free_port()
    broker = KafkaBroker(tmp_path, advertised_port=external).start()  # Apache Kafka, as the cluster runs it
    listener = broker.port
    served.serve("kafka", {9094: listener})
    served.set_vars(kafka_external_port=external)
    try:
        yield external
    finally:
        served.set_vars(kafka_external_port=None)
        broker.remove()


def test_metrics_reach_the_clusters_broker_and_order_service_by_themselves(
        served: kube.ClusterTarget, cluster_broker: int, pod_backend: PodBackend) -> None:
    t = served
    # Seed the topic through a tunnel opened the way the task opens it, so that the broker's advertised address
    # (the tunnel's port) is reachable while producing.
    with portforward.tunnels(targets.load(t.name, t.inventories), {"kafka": (9094, cluster_broker)}) as local:
        bootstrap = f"127.0.0.1:{local['kafka']}"
        wait_broker(bootstrap, 20)
        ensure_topic(bootstrap, "order.created", 3)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        for i in range(7):
            producer.produce("order.created", key=f"k{i}", value=b"{}", partition=i % 3)
            producer.flush(10)  # one record per batch: see the module docstring
        del producer
    done = t.run("metrics", "--target", t.name, "--json")
    snap = json.loads(done.stdout)
    topic = next(x for x in snap["topics"] if x["name"] == "order.created")
    assert topic["end_offset_total"] == 7 and [p["end_offset"] for p in topic["partitions"]] == [3, 2, 2]
    assert snap["orders"] is not None, snap["errors"]
    assert snap["orders"]["by_status"] == http_ok(f"{pod_backend.stack.base}/api/orders/stats")["by_status"]
    assert snap["bootstrap"] == f"127.0.0.1:{cluster_broker}"
    assert "Traceback" not in done.stderr and "ConnectionResetError" not in done.stderr, \
        "a reset forwarded connection closes quietly"


def test_load_reaches_the_clusters_order_service_by_itself(served: kube.ClusterTarget, tmp_path: Path,
                                                           pod_backend: PodBackend) -> None:
    before = http_ok(f"{pod_backend.stack.base}/api/orders/stats")["total"]
    report_path = tmp_path / "report.json"
    served.run("load", "--target", served.name, "--rate", "20", "--duration", "2", "--json", str(report_path))
    report = json.loads(report_path.read_text())
    assert report["scheduled"] == report["sent"] == report["succeeded"] == 40 and report["failed"] == 0
    assert http_ok(f"{pod_backend.stack.base}/api/orders/stats")["total"] == before + 40, \
        "every order crossed the tunnel to the service"


def test_no_ready_pod_is_one_line_and_exit_4(control_plane: ControlPlane, tmp_path: Path) -> None:
    t = kube.make_target(control_plane, tmp_path)  # never deployed: its namespace has no pod
    done = t.run("metrics", "--target", t.name, check=False)
    assert done.returncode == 4
    assert done.stderr.strip().splitlines() == [f"error: no ready kafka pod in namespace {t.namespace}; "
                                                f"see ./run status --target {t.name}"]


class JobKubelet:
    """Plays the load Job's container: when its pod appears, runs the pod's own command (`python -m metalmart
    loadgen ...`, service names resolved to the pod backend) as a local process whose output is the pod's log (in
    the CRI format kwok's log handler reads)."""

    def __init__(self, target: kube.ClusterTarget, backend: PodBackend, folder: Path) -> None:
        self.target, self.backend, self.folder = target, backend, folder
        self.jobs: list[dict[str, Any]] = []
        self.procs: list[subprocess.Popen[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        from kubernetes import client, watch
        from urllib3.exceptions import HTTPError

        core = client.CoreV1Api(self.target.api())
        w = watch.Watch()
        try:
            for event in w.stream(core.list_namespaced_pod, self.target.namespace,
                                  label_selector="app.kubernetes.io/name=load", timeout_seconds=120):
                if event["type"] == "ADDED":
                    self._run(event["object"])
                if self._stop.is_set():
                    w.stop()
        except HTTPError:
            if not self._stop.is_set():
                raise  # the watch broke while the test still needed it

    def _run(self, pod: Any) -> None:
        log = self.folder / f"{pod.metadata.name}.log"
        log.touch()
        container = pod.spec.containers[0]
        args = [a.replace("http://order:8084", self.backend.stack.base)
                 .replace("http://catalogue:8082", f"http://127.0.0.1:{self.backend.catalogue_port}")
                for a in container.args]
        from kubernetes import client

        owner = pod.metadata.owner_references[0].name
        job = client.BatchV1Api(self.target.api()).read_namespaced_job(owner, self.target.namespace)
        self.jobs.append({"pod": pod.metadata.name, "args": list(container.args), "image": container.image,
                          "backoff_limit": job.spec.backoff_limit})
        self.target.plane.pod_log(self.target.namespace, pod.metadata.name, log)
        proc = subprocess.Popen([sys.executable, "-m", "metalmart", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)

        def copy() -> None:
            assert proc.stdout is not None
            with log.open("a") as out:
                for line in proc.stdout:
                    out.write(cri_line(line.rstrip("\n")))
                    out.flush()

        threading.Thread(target=copy, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        for proc in self.procs:
            proc.wait(30)


def test_load_in_cluster_runs_the_generator_as_a_job_and_brings_back_the_report(
        served: kube.ClusterTarget, pod_backend: PodBackend, tmp_path: Path) -> None:
    kubelet = JobKubelet(served, pod_backend, tmp_path)
    report_path = tmp_path / "report.json"
    before = http_ok(f"{pod_backend.stack.base}/api/orders/stats")["total"]
    try:
        done = served.run("load", "--target", served.name, "--in-cluster", "--rate", "25", "--duration", "2",
                          "--json", str(report_path))
    finally:
        kubelet.stop()
    report = json.loads(report_path.read_text())
    assert report["scheduled"] == report["sent"] == report["succeeded"] == 50 and report["dropped"] == 0
    assert http_ok(f"{pod_backend.stack.base}/api/orders/stats")["total"] == before + 50
    args = kubelet.jobs[0]["args"]
    assert args[args.index("--base-url") + 1] == "http://order:8084", "the Job reaches the service by its name"
    assert len(kubelet.jobs) == 1 and kubelet.jobs[0]["image"].startswith("metalmart:")
    assert kubelet.jobs[0]["backoff_limit"] == 0, "a retry would send the orders twice"
    job = [j for j in served.objects("batch/v1", "Job").values() if j["metadata"]["name"].startswith("load-")]
    assert not job, "the Job is deleted once its report is in"
    assert "achieved rate" in done.stdout


def test_load_in_cluster_refuses_a_local_target_in_one_line() -> None:
    done = subprocess.run([*RUN, "load", "--target", "local", "--in-cluster"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "needs a cluster target" in done.stderr
