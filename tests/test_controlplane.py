"""`./run cluster`: the tests' control plane, by hand."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

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
    assert set(status["processes"]) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                        "kwok", "volumes"}
    assert exported == f"export KUBECONFIG={tmp_path / 'kube' / 'kubeconfig'}"
    assert stopped.returncode == 0 and "stopped the control plane" in stopped.stderr
    after = json.loads(_cluster("status", "--json", env=env).stdout)
    assert after["running"] is False and after["processes"] == {}
    assert "was not running" in _cluster("stop", env=env).stderr


def test_an_unknown_action_is_one_line() -> None:
    done = _cluster("begin", env=dict(os.environ))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: unknown action 'begin'; use one of start, stop, status, env, e.g. ./run cluster start"]
