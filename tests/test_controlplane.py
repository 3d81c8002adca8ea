"""`./run cluster`: the tests' control plane, by hand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from demokit.testcluster import node
from tests.helpers import ROOT, RUN

pytestmark = pytest.mark.cluster  # against the real control plane (tests/conftest.py)


def _cluster(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN, "cluster", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_start_status_env_and_stop(tmp_path: Path) -> None:
    env = {**os.environ, "METALMART_KUBE_DIR": str(tmp_path / "kube")}
    try:
        started = _cluster("start", env=env)
        again = _cluster("start", env=env)
        status = json.loads(_cluster("status", "--json", env=env).stdout)
        exported = _cluster("env", env=env).stdout.strip()
    finally:
        stopped = _cluster("stop", env=env)
    assert started.returncode == 0, started.stderr
    assert "control plane up in" in started.stderr
    assert "already running" in again.stderr and "nothing to do" in again.stderr
    assert status["running"] is True and status["context"] == "metalmart-kube"
    assert set(status["processes"].values()) == {"RUNNING"}
    # Only what the path needs: kwok's fake nodes only where no real node can run.
    fake = {"kwok"} if node.unavailable() else set()
    assert set(status["processes"]) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                        "volumes", *fake}
    assert exported == f"export KUBECONFIG={tmp_path / 'kube' / 'kubeconfig'}"
    if node.unavailable() is None:
        assert f"real node {node.NAME} up in" in started.stderr
        assert status["node"] == dict.fromkeys(("containerd", "kubelet", "kube-proxy", "coredns"), "RUNNING")
        assert "stopped the real node" in stopped.stderr
        assert node.BRIDGE not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert stopped.returncode == 0 and "stopped the control plane" in stopped.stderr
    after = json.loads(_cluster("status", "--json", env=env).stdout)
    assert after["running"] is False and after["processes"] == {} and after["node"] == {}
    assert "was not running" in _cluster("stop", env=env).stderr


def test_where_no_real_node_can_run_one_line_says_why_and_the_kwok_node_takes_its_pods(tmp_path: Path) -> None:
    env = {**os.environ, "METALMART_KUBE_DIR": str(tmp_path / "kube"), "METALMART_NODE": "off"}
    try:
        started = _cluster("start", env=env)
        from kubernetes import client

        from demokit.testcluster.controlplane import NODE, ControlPlane

        labels = client.CoreV1Api(ControlPlane(tmp_path / "kube").api()).read_node(NODE).metadata.labels
    finally:
        _cluster("stop", env=env)
    assert started.returncode == 0, started.stderr
    assert "no real node: METALMART_NODE=off; the kwok nodes run alone (and take the pods meant for it)" in \
        started.stderr.splitlines()
    assert labels.get(node.LABEL[0]) == node.LABEL[1], "the testcluster inventory's pods still find a node"


def test_an_unknown_action_is_one_line() -> None:
    done = _cluster("begin", env=dict(os.environ))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: unknown action 'begin'; use one of start, stop, status, env, e.g. ./run cluster start"]


def test_the_app_image_step_is_skipped_in_one_line_when_no_real_node_runs(tmp_path: Path) -> None:
    """The testcluster inventory names a node folder; with the kwok node carrying the demo's pods nothing is
    imported and nothing fails."""
    done = subprocess.run([sys.executable, "-m", "demokit.testcluster.node", "load", str(tmp_path / "kube" / "node"),
                           "metalmart:0000000000000000"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"changed": False, "skipped": "no real node runs"}


def test_ctrl_c_while_the_node_starts_leaves_nothing_running(tmp_path: Path) -> None:
    env = {**os.environ, "METALMART_KUBE_DIR": str(tmp_path / "kube")}
    # As at a terminal: Ctrl-C's SIGINT is not ignored, whatever started the tests.
    proc = subprocess.Popen([*RUN, "cluster", "start"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "control plane up in" in line:  # the node's start (seconds) comes next
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, "".join(seen) + rest
    assert "stopping what was started" in rest
    status = json.loads(_cluster("status", "--json", env=env).stdout)
    assert status["running"] is False and status["processes"] == {} and status["node"] == {}
    assert node.BRIDGE not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
