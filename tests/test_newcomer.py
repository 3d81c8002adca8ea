"""Paths a newcomer takes as the README offers them: plain `invoke` from an Invoke installed outside `.venv`,
`mirrord-config` with no cluster on the machine, and a fix `./run doctor` prints, run as printed after its cause was
staged."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from demokit import targets
from demokit.local.localstack import LocalStack
from demokit.probes import holds, http_ok, until
from tests.helpers import ROOT, RUN, LocalTarget, inventory, post_orders, request

pytestmark = [pytest.mark.slow, pytest.mark.stack]  # ./run on a new machine's paths


@pytest.fixture
def target(tmp_path: Path) -> Iterator[LocalTarget]:
    t = LocalTarget(tmp_path, local_kafka="apache")
    yield t
    t.run("teardown", "--target", "local", "--purge")


def test_invoke_installed_outside_the_project_runs_the_same_tasks(tmp_path: Path) -> None:
    """Invoke in its own virtualenv (as pipx installs it), without the project's dependencies."""
    venv = tmp_path / "invoke-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pinned = next(line.split()[0] for line in (ROOT / "requirements" / "automation.txt").read_text().splitlines()
                  if line.startswith("invoke=="))
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", pinned], check=True,
                   timeout=300)
    listed = subprocess.run([str(venv / "bin" / "invoke"), "--list"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    assert "fresh-start" in listed.stdout and "load" in listed.stdout
    bad = subprocess.run([str(venv / "bin" / "invoke"), "load", "--rate", "abc"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert bad.stderr.strip().splitlines() == ["error: --rate takes a number (got 'abc'); e.g. --rate 20"], bad.stderr


def test_mirrord_config_without_a_cluster_picks_local_like_every_task(target: LocalTarget, tmp_path: Path) -> None:
    out = tmp_path / "alice.json"
    env = {**target.env}
    env.pop("INVOKE_METALMART_TARGET", None)
    done = subprocess.run([*RUN, "mirrord-config", "--user", "alice", "--output", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no minikube on this machine: using the `local` target" in done.stderr
    assert "could not read the splitting resources" not in done.stderr
    config = json.loads(out.read_text())
    assert config["feature"]["split_queues"]["order-created"]["message_filter"]["customer_email"] == \
        r"^alice(\+.*)?@metalbear\.com$"
    assert (target.state / "ansible-mirrord-config.log").is_file(), "its log is the local target's"


def _doctor(target: LocalTarget, config: Path) -> dict[str, dict[str, Any]]:
    done = target.run("doctor", "--target", "local", "--json", "--config", str(config))
    assert "Traceback" not in done.stderr, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    blocking = [c for c in checks.values() if not c["ok"] and c["blocking"]]
    assert done.returncode == (4 if blocking else 0), (done.returncode, blocking)
    return checks


def _commands(fix: str) -> list[list[str]]:
    """The commands of a printed fix, run as printed: each `./run …` in it, up to a note in parentheses."""
    found = re.findall(r"\./run [^;()]+", fix)
    assert found, f"the fix names a command: {fix!r}"
    return [shlex.split(command.split(" with ")[0].strip())[1:] for command in found]


def _put_right(target: LocalTarget, checks: dict[str, dict[str, Any]], name: str,
               timeout: float = 300) -> list[subprocess.CompletedProcess[str]]:
    check = checks[name]
    assert not check["ok"] and check["fix"], check
    done = []
    for argv in _commands(check["fix"]):
        assert "--target" in argv and argv[argv.index("--target") + 1] == "local", f"the fix keeps --target: {argv}"
        ran = target.run(*argv, timeout=timeout)
        assert ran.returncode == 0 and "Traceback" not in ran.stderr, (argv, ran.stderr)
        done.append(ran)
    return done


@pytest.fixture
def demo_target(tmp_path: Path) -> Iterator[LocalTarget]:
    """In demo mode, as before a call: the loads the fixes start are shipped in seconds, not queued for minutes."""
    t = LocalTarget(tmp_path, local_kafka="apache", metalmart_demo_mode=True)
    yield t
    t.run("teardown", "--target", "local", "--purge")


def test_every_fix_doctor_and_ready_print_does_what_it_says(demo_target: LocalTarget, tmp_path: Path) -> None:
    """Each cause staged as it happens on a presenter's laptop, doctor's fix run as printed, and doctor again."""
    target = demo_target
    up = target.run("fresh-start", "--target", "local", timeout=300)
    assert up.returncode == 0, up.stderr
    config = tmp_path / "mirrord" / "bob.json"
    config.parent.mkdir()
    base = f"http://127.0.0.1:{target.ports['order']}"

    # No mirrord config where doctor looks: the fix writes it.
    checks = _doctor(target, config)
    assert not checks["the mirrord filter matches the orders being sent"]["ok"]
    _put_right(target, checks, "the mirrord filter matches the orders being sent")
    assert json.loads(config.read_text())["feature"]["split_queues"], "the fix wrote the config doctor reads"

    # A filter that no order being sent matches (bob's, while the load sends the default e-mails); and no orders
    # arriving. Each fix is a load: run as printed while doctor looks, as a presenter runs it in a second terminal.
    _put_right(target, {"c": {"ok": False, "fix": "./run mirrord-config --target local --user bob --output "
                                                   f"{config}"}}, "c")
    post_orders(base, [f"someone-{i}@example.com" for i in range(5)])
    checks = _doctor(target, config)
    for name in ("the mirrord filter matches the orders being sent", "orders are arriving now"):
        check = checks[name]
        assert not check["ok"], check
        [argv] = _commands(check["fix"])
        load = target.start(*argv)
        try:
            def looks_right(n: str = name) -> bool:
                return bool(_doctor(target, config)[n]["ok"])

            until(lambda: holds(looks_right()), 90, f"doctor: {name} ✓ while the fix runs")
        finally:
            load.send_signal(signal.SIGINT)
            _out, err = load.communicate(timeout=60)
        assert load.returncode == 130 and "interrupted" in err and "Traceback" not in err, err  # Ctrl-C

    # A service stopped (supervisorctl stop, or a crash supervisord gave up on): the stack does not answer.
    stack = LocalStack(targets.load("local", target.inventories))
    stack.supervisor.rpc().supervisor.stopProcess("catalogue")
    checks = _doctor(target, config)
    assert not checks["the stack answers"]["ok"] and "catalogue" in checks["the stack answers"]["detail"]
    ran = _put_right(target, checks, "the stack answers")
    assert re.search(r"catalogue\s+│?\s*RUNNING", ran[-1].stdout), ran[-1].stdout
    assert _doctor(target, config)["the stack answers"]["ok"]

    # The catalogue emptied (a mistaken DELETE): the fix seeds it again.
    database = next(target.state.rglob("metalmart.db"))
    with sqlite3.connect(database) as db:
        db.execute("DELETE FROM products")
    checks = _doctor(target, config)
    [ran] = _put_right(target, checks, "the catalogue is seeded")
    assert "seeded again" in ran.stderr and "(nothing changed)" not in ran.stdout, ran.stderr
    assert _doctor(target, config)["the catalogue is seeded"]["ok"]

    # The order topic deleted (as a mistaken kafka-topics --delete would): doctor and /ready name the same fix.
    bootstrap = f"127.0.0.1:{target.ports['broker']}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics(["order.created"])["order.created"].result(30)
    until(lambda: holds("order.created" not in admin.list_topics(timeout=5).topics), 30, "topic deleted")
    status, ready = request("GET", f"{base}/ready")  # ready: orders still come in, and wait in the outbox
    assert status == 200 and "./run fresh-start --target local creates it" in ready["degraded"]["outbox"], ready
    checks = _doctor(target, config)
    [done] = _put_right(target, checks, "the order topic exists")
    assert "put right: topic order.created created" in done.stderr, done.stderr
    assert "(nothing changed)" not in done.stdout
    until(lambda: holds("degraded" not in request("GET", f"{base}/ready")[1]), 60, "the outbox no longer waits")
    orders = post_orders(base, [f"bob+after-fix-{i}@metalbear.com" for i in range(20)])
    for order in orders:
        until(lambda o=order: holds(http_ok(f"{base}/api/orders/{o['id']}", timeout=5)["status"] == "shipped"), 90,
              f"order {order['id']} shipped")
    after = _doctor(target, config)
    assert [c for c in after.values() if not c["ok"] and c["blocking"]] == [], after
    again = target.run("fresh-start", "--target", "local", timeout=300)
    assert again.returncode == 0 and "(nothing changed)" in again.stdout, again.stderr


def test_fresh_start_on_the_test_cluster_without_its_real_node_refuses_before_deploying(tmp_path: Path) -> None:
    """kwok's nodes only pretend to run pods: without the real node nothing would answer, so nothing is deployed."""
    folders = inventory(tmp_path, "testcluster", metalmart_app_node_dir=str(tmp_path / "kube" / "node"),
                        local_state_dir=str(tmp_path / "state"))
    env = {**os.environ, "INVOKE_METALMART_INVENTORIES": str(folders)}
    done = subprocess.run([*RUN, "fresh-start", "--target", "testcluster"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pods need its real node, and none runs" in lines[0], done.stderr
    assert "./run cluster start" in lines[0] and "./run fresh-start --target testcluster" in lines[0]
    assert not (tmp_path / "state" / "ansible-deploy-cluster.log").exists(), "nothing was deployed"


def test_cluster_start_installs_what_the_real_node_lacks_in_one_line(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """As root on Debian, the node's missing packages come from Debian's packages, said first in one line, then the
    time it took (apt-get stands in here: this machine has them all)."""
    from demokit.testcluster import node

    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(node, "missing_packages", lambda: ["conntrack", "containerd"])
    said: list[str] = []
    node.install_packages(said.append)
    assert said[0] == ("the real node needs conntrack, containerd: installing them from Debian's packages "
                       "(apt-get install conntrack containerd)")
    assert len(said) == 2 and re.fullmatch(r"installed conntrack, containerd in \d+ s", said[1]), said
    assert calls.read_text().splitlines() == ["update -qq",
                                              "install -y -qq --no-install-recommends conntrack containerd"]


def test_a_failing_port_forward_is_said_once_with_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Every connection through a failing forward fails alike (a metrics watch makes one a second): one line."""
    import socket
    import types

    from demokit.kube import portforward
    from demokit.probes import free_port

    monkeypatch.setattr(portforward, "ready_pod", lambda _api, _ns, app, _fix, _start="": f"{app}-0")
    dead = f"http://127.0.0.1:{free_port()}"  # no API server there: every upgrade is refused
    config = types.SimpleNamespace(host=dead, refresh_api_key_hook=None, get_api_key_with_prefix=lambda _k: None,
                                   verify_ssl=False, ssl_ca_cert=None, cert_file=None, key_file=None,
                                   assert_hostname=None, proxy=None, no_proxy=None, proxy_headers=None,
                                   tls_server_name=None)
    tunnel = portforward.Tunnel(types.SimpleNamespace(configuration=config), "demo", "order", 8084,
                                fix="./run status --target kubetest")
    try:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", tunnel.port), timeout=5) as conn:
                conn.settimeout(5)
                assert conn.recv(1) == b"", "the failed forward closes the connection"
    finally:
        tunnel.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("port-forward to demo/order-0:8084 failed: ")
    assert lines[0].endswith(" → ./run status --target kubetest")


@pytest.mark.parametrize(("says", "ok", "detail"), [
    ("mirrord 3.250.0", True, "mirrord 3.250.0 (every beat of the demo)"),
    ("mirrord 3.230.0", False, "mirrord 3.230.0; mirrord up, for sessions by key (the sixth beat) needs 3.245.0+"),
    ("mirrord 3.200.1", False, "the splitting resources the demo applies (MirrordSplitConfig) needs 3.221.0+"),
])
def test_doctor_names_the_mirrord_cli_upgrade_each_beat_needs(tmp_path: Path, says: str, ok: bool,
                                                               detail: str) -> None:
    """A stand-in for the CLI's `--version` (no mirrord CLI can be installed offline: the README says so)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mirrord").write_text(f"#!/bin/sh\necho '{says}'\n")
    (bin_dir / "mirrord").chmod(0o755)
    target = LocalTarget(tmp_path)
    target.env["PATH"] = f"{bin_dir}{os.pathsep}{target.env['PATH']}"
    done = target.run("doctor", "--target", "local", "--json")
    check = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "the mirrord CLI is installed")
    assert check["ok"] is ok and detail in check["detail"] and not check["blocking"], check
    if not ok:
        assert check["fix"].startswith("upgrade the mirrord CLI to 3.245.0 or later"), check
