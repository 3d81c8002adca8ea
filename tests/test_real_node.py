"""The whole demo on real pods: a real node (containerd, runc, kubelet, kube-proxy, CoreDNS; demokit.testcluster.node)
joined to the session's control plane, the app image built from our Dockerfile and stand-in Kafka and PostgreSQL
images made here. One node and one converge serve the module; its last test stops the node and finds nothing left
behind.

Skipped, with the reason, where a node cannot run (not Linux, not root, a package missing)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demokit.probes import holds, http_ok, until
from demokit.testcluster import node as realnode
from demokit.testcluster.controlplane import ControlPlane
from tests import kube
from tests.helpers import shipping_seconds

pytestmark = [pytest.mark.slow, pytest.mark.cluster]  # the real node


@pytest.fixture(scope="module")
def node(control_plane: ControlPlane) -> Iterator[realnode.Node]:
    why = realnode.unavailable()
    if why:
        pytest.skip(f"no real node here: {why}")
    real = realnode.Node(control_plane.dir)
    real.start(control_plane, lambda m: print(m, flush=True))
    yield real
    real.stop(lambda _m: None)


@pytest.fixture(scope="module")
def demo(control_plane: ControlPlane, node: realnode.Node,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[kube.ClusterTarget]:
    target = kube.make_target(
        control_plane, tmp_path_factory.mktemp("real"), name="realnode",
        metalmart_namespace_annotations={"scheduler.alpha.kubernetes.io/node-selector": realnode.NODE_SELECTOR},
        metalmart_app_node_dir=str(node.dir), kafka_image=realnode.images.KAFKA_IMAGE,
        postgres_image=realnode.images.POSTGRES_IMAGE, metalmart_demo_mode=True)
    first = target.run("fresh-start", "--target", target.name)
    target.first = first  # type: ignore[attr-defined]
    yield target


def _core(target: kube.ClusterTarget) -> Any:
    from kubernetes import client

    return client.CoreV1Api(target.api())


def _service_url(target: kube.ClusterTarget, name: str) -> str:
    svc = _core(target).read_namespaced_service(name, target.namespace)
    return f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}"


def _psql(target: kube.ClusterTarget, sql: str) -> list[str]:
    """Rows of a query run by `psql` inside the PostgreSQL pod (exec through the kubelet)."""
    from kubernetes.stream import stream

    values = target.vars()
    user = values.get("metalmart_postgres_user", "metalmart")
    database = values.get("metalmart_postgres_database", "metalmart")
    out = stream(_core(target).connect_get_namespaced_pod_exec, "postgres-0", target.namespace,
                 command=["psql", "-h", "/var/run/postgresql", "-U", user, "-d", database, "-At", "-c", sql],
                 stderr=True, stdin=False, stdout=True, tty=False, _preload_content=True)
    return [line for line in str(out).splitlines() if line]


def _shipped(target: kube.ClusterTarget, email_user: str) -> int:
    """How many orders of `./run load --email-user NAME` are shipped, counted in the database."""
    rows = _psql(target, "SELECT COUNT(*) FROM orders WHERE status = 'shipped' "
                         f"AND customer_email LIKE '{email_user}+%'")
    return int(rows[0])


def test_fresh_start_runs_every_pod_for_real_and_a_second_run_changes_nothing(demo: kube.ClusterTarget) -> None:
    first = demo.first  # type: ignore[attr-defined]
    assert re.search(r"verify .* order ORD-\S+ shipped \(processed by cluster\)", first.stderr, re.S), first.stderr
    pods = _core(demo).list_namespaced_pod(demo.namespace).items
    running = [p for p in pods if p.status.phase == "Running"]
    assert {p.metadata.labels["app.kubernetes.io/name"] for p in running} >= {
        "postgres", "kafka", "order", "order-processor", "catalogue", "storefront"}, \
        [p.metadata.name for p in running]
    for pod in running:
        assert pod.spec.node_name == realnode.NAME, pod.metadata.name
        assert all(c.ready and c.state.running for c in pod.status.container_statuses), pod.metadata.name
        assert pod.status.pod_ip.startswith("198.18."), pod.status.pod_ip
    from kubernetes import client

    jobs = client.BatchV1Api(demo.api()).list_namespaced_job(demo.namespace).items
    done = {j.metadata.labels["app.kubernetes.io/name"] for j in jobs if j.status.succeeded}
    assert "kafka-topic" in done and any("seed" in name for name in done), f"Jobs that ran to the end: {done}"
    again = demo.run("fresh-start", "--target", demo.name)
    assert "done: changed=0" in again.stderr, again.stderr
    assert "order ORD-" in again.stderr and "shipped" in again.stderr


def test_an_order_placed_through_the_storefronts_service_ships_and_the_storefront_shows_it(
        demo: kube.ClusterTarget) -> None:
    store = _service_url(demo, "storefront")
    products = http_ok(f"{_service_url(demo, 'catalogue')}/api/products", timeout=5)
    form = {"email": "ada@metalbear.com", "name": "Ada Smith", "street": "1 Forge Lane", "city": "Sheffield",
            "state": "", "zip_code": "S1 2AB", "country": "GB", "product_id": products[0]["id"], "quantity": "1"}
    from urllib.parse import urlencode

    request = urllib.request.Request(f"{store}/order", data=urlencode(form).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        track = resp.url
    assert "/track/" in track

    def shipped() -> str:
        with urllib.request.urlopen(track, timeout=5) as resp:
            page = resp.read().decode()
        assert '<strong id="status">shipped</strong>' in page, page[-600:]
        return page

    until(shipped, 60, "the storefront showing the order shipped")


def test_load_and_metrics_go_through_the_kubelets_port_forwards_and_every_order_is_accounted_for(
        demo: kube.ClusterTarget, tmp_path: Path) -> None:
    report_path = tmp_path / "load.json"
    run_id = f"rn{uuid.uuid4().hex[:8]}"
    demo.run("load", "--target", demo.name, "--rate", "20", "--duration", "30", "--email-user", run_id,
             "--json", str(report_path), timeout=300)
    report = json.loads(report_path.read_text())
    assert report["scheduled"] == report["sent"] == report["succeeded"] == 600 and report["failed"] == 0

    def all_shipped() -> None:
        assert _shipped(demo, run_id) == 600

    until(all_shipped, 60, "every order of the load shipped")
    metrics = json.loads(demo.run("metrics", "--target", demo.name, "--json").stdout)
    group = next(g for g in metrics["consumer_groups"] if g["group"] == "order-processor")
    assert group["lag_total"] == 0 and not group["beyond_end"], group
    assert metrics["orders"]["by_status"].get("shipped", 0) >= 600

    in_cluster = tmp_path / "in-cluster.json"
    done = demo.run("load", "--target", demo.name, "--in-cluster", "--rate", "10", "--duration", "3",
                    "--json", str(in_cluster), timeout=300)
    job_report = json.loads(in_cluster.read_text())
    assert job_report["scheduled"] == job_report["sent"] == job_report["succeeded"] == 30, job_report
    assert "achieved rate" in done.stdout


def _generations(target: kube.ClusterTarget) -> dict[str, int]:
    from kubernetes import client

    apps = client.AppsV1Api(target.api())
    return {d.metadata.name: d.metadata.generation for d in apps.list_namespaced_deployment(target.namespace).items}


def test_demo_mode_rolls_its_two_deployments_and_sets_how_long_an_order_takes(demo: kube.ClusterTarget) -> None:
    before = _generations(demo)
    demo.run("demo-mode", "off", "--target", demo.name)
    rolled = {n for n, g in _generations(demo).items() if g != before[n]}
    assert rolled == {"order-processor", "storefront"}, f"the Deployments that read DEMO_MODE, and only they: {rolled}"
    slow = shipping_seconds(_service_url(demo, "order"))
    assert slow >= 10.0, f"DEMO_MODE off: 2 s + 3 s + 5 s, took {slow:.2f} s"
    demo.run("demo-mode", "on", "--target", demo.name)
    fast = shipping_seconds(_service_url(demo, "order"))
    assert fast * 5 < slow, f"DEMO_MODE on: 3 × 200 ms, took {fast:.2f} s, against {slow:.2f} s off"


def test_doctor_passes_every_check_but_the_operators_which_name_the_missing_licence(demo: kube.ClusterTarget) -> None:
    done = demo.run("doctor", "--target", demo.name, "--json", check=False)
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    operator = ("the mirrord operator runs", "the splitting resources match the config", "the licence is present")
    failing = {n: c["detail"] for n, c in checks.items() if not c["ok"] and c["blocking"] and n not in operator
               and n != "the mirrord CLI is installed"}
    assert not failing, failing
    assert checks["the stack answers"]["ok"] and "every workload ready" in checks["the stack answers"]["detail"]
    # No licence in the tests, so no operator: its three lines fail, each naming what to do.
    for name in operator:
        assert not checks[name]["ok"] and checks[name]["fix"], checks[name]
    assert "not installed" in checks["the mirrord operator runs"]["detail"]
    # What is missing is the credential: a fresh-start without one would change nothing.
    assert "MIRRORD_CLOUD_API_KEY" in checks["the splitting resources match the config"]["fix"]
    view = checks["the operator's own view of the split"]
    assert view["ok"] and not view["blocking"] and "no mirrord operator answers" in view["detail"], view


def test_kafka_and_processor_pods_deleted_mid_load_lose_nothing_and_ship_nothing_twice(
        demo: kube.ClusterTarget, tmp_path: Path) -> None:
    store = _service_url(demo, "storefront")
    misses: list[str] = []
    polls = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal polls
        while not stop.is_set():
            polls += 1
            try:
                # Reachable: it answers its page, if slowly while Kafka's JVM starts again on two cores.
                with urllib.request.urlopen(f"{store}/", timeout=10) as resp:
                    if resp.status != 200:
                        misses.append(str(resp.status))
            except OSError as exc:
                misses.append(str(exc))
            stop.wait(0.25)

    watcher = threading.Thread(target=poll)
    watcher.start()
    run_id = f"rn{uuid.uuid4().hex[:8]}"
    report_path = tmp_path / "load.json"
    load = subprocess.Popen([*kube.RUN, "load", "--target", demo.name, "--rate", "20", "--duration", "40",
                             "--email-user", run_id, "--json", str(report_path)], cwd=kube.ROOT, env=demo.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        core = _core(demo)
        until(lambda: _psql(demo, f"SELECT 1 FROM orders WHERE customer_email LIKE '{run_id}+%' LIMIT 1"), 60,
              "the load's first order stored")
        core.delete_namespaced_pod("kafka-0", demo.namespace)
        processor = demo.pods("order-processor")[0]
        core.delete_namespaced_pod(processor, demo.namespace)
        _, err = load.communicate(timeout=300)
    finally:
        stop.set()
        watcher.join()
        if load.poll() is None:
            load.kill()
    assert load.returncode == 0, err[-2000:]
    report = json.loads(report_path.read_text())
    assert report["scheduled"] == report["sent"] == 800 and report["dropped"] == 0, report
    accepted = report["succeeded"]

    def all_shipped() -> None:
        shipped = _shipped(demo, run_id)
        assert shipped == accepted, (shipped, accepted)

    until(all_shipped, 240, "every accepted order shipped after the pods came back", 2.0)
    twice = _psql(demo, "SELECT h.order_id FROM order_status_history h JOIN orders o ON o.id = h.order_id "
                        f"WHERE h.status = 'shipped' AND o.customer_email LIKE '{run_id}+%' "
                        "GROUP BY h.order_id HAVING COUNT(*) > 1")
    assert twice == [], f"{len(twice)} orders shipped twice"
    assert polls > 100 and misses == [], f"the storefront missed {len(misses)} of {polls} polls: {misses[:3]}"


def test_a_service_down_is_one_line_in_metrics_and_doctor_and_the_fix_they_print_brings_it_back(
        demo: kube.ClusterTarget) -> None:
    from kubernetes import client

    apps = client.AppsV1Api(demo.api())
    apps.patch_namespaced_deployment_scale("order", demo.namespace, {"spec": {"replicas": 0}})
    until(lambda: holds(not [p for p in _core(demo).list_namespaced_pod(
        demo.namespace, label_selector="app.kubernetes.io/name=order").items]), 120, "the order pods gone")
    metrics = demo.run("metrics", "--target", demo.name, check=False)
    doctor = demo.run("doctor", "--target", demo.name, check=False)
    assert metrics.returncode == 4 and metrics.stdout == "" and metrics.stderr.strip().splitlines() == [
        f"error: no ready order pod in namespace {demo.namespace}; see ./run status --target {demo.name}"]
    lines = doctor.stdout.strip().splitlines()
    stack = [line for line in lines if "the stack answers" in line]
    assert len(stack) == 1 and stack[0].startswith("✗") and "order" in stack[0], lines
    assert len(lines) == len(set(lines)) and "Traceback" not in doctor.stderr
    fix = stack[0].split("→ ")[1].split(" (")[0].split("; ")[0]
    assert fix == f"./run fresh-start --target {demo.name}", fix
    demo.run(*fix.split()[1:])
    assert demo.run("metrics", "--target", demo.name).returncode == 0
    assert "✓ the stack answers" in demo.run("doctor", "--target", demo.name, check=False).stdout


def test_teardown_leaves_no_pod_volume_or_namespace(demo: kube.ClusterTarget) -> None:
    demo.run("teardown", "--target", demo.name, "--yes")
    core = _core(demo)

    def gone() -> None:
        names = {n.metadata.name for n in core.list_namespace().items}
        assert demo.namespace not in names, "namespace still there"
        claims = core.list_persistent_volume_claim_for_all_namespaces().items
        assert not [c for c in claims if c.metadata.namespace == demo.namespace]
        bound = [v for v in core.list_persistent_volume().items
                 if v.spec.claim_ref and v.spec.claim_ref.namespace == demo.namespace and v.status.phase == "Bound"]
        assert not bound, [v.metadata.name for v in bound]

    until(gone, 120, "the namespace, its pods and volumes gone")
    assert not node_pods(demo), "the node runs no pod of the demo"


def pod_netns() -> list[str]:
    """The network namespaces of pods that the node runs (CNI names them cni-…)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith("cni-")]


def node_pods(target: kube.ClusterTarget) -> list[str]:
    return [p.metadata.name for p in _core(target).list_pod_for_all_namespaces(
        field_selector=f"spec.nodeName={realnode.NAME}").items if p.metadata.namespace == target.namespace]


def test_a_node_killed_outright_leaves_no_process_mount_link_or_rule_once_stopped(
        control_plane: ControlPlane, node: realnode.Node) -> None:
    """As a session killed with the node running leaves it (kill -9 to all of it, the pods' shims too; nobody asks
    CNI to take the pods' links away), then `./run cluster stop` (or the next start, which stops first)."""
    import psutil
    from kubernetes import client

    forward_before_the_node = (node.dir / "ip_forward.saved").read_text()
    assert node.running()
    # Pods running on it (the demo's are gone with its teardown): two of the pause image, each with its own network.
    core = client.CoreV1Api(control_plane.api())
    namespace = f"killed-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace, "annotations": {
        "scheduler.alpha.kubernetes.io/node-selector": realnode.NODE_SELECTOR}}})
    for name in ("one", "two"):
        core.create_namespaced_pod(namespace, {"metadata": {"name": name}, "spec": {"containers": [{
            "name": "pause", "image": realnode.PAUSE_IMAGE, "imagePullPolicy": "Never"}]}})
    until(lambda: holds(all(core.read_namespaced_pod(n, namespace).status.phase == "Running"
                            for n in ("one", "two"))), 120, "two pods running on the node")
    assert len(pod_netns()) >= 2, "the pods' network namespaces exist"
    mine = [p for p in psutil.process_iter(["cmdline"])
            if any(str(node.dir) in a or str(node.socket) in a for a in (p.info["cmdline"] or []))]
    doomed = {p.pid: p for top in mine for p in [top, *top.children(recursive=True)]}
    for proc in doomed.values():
        proc.kill()
    psutil.wait_procs(list(doomed.values()), timeout=30)
    assert not node.running()
    strays = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "veth" in strays, "the pods' links outlive everything killed"
    node.stop(lambda _m: None)
    leftovers = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
                 if any(str(node.dir) in a or str(node.socket) in a for a in (p.info["cmdline"] or []))]
    assert not leftovers, leftovers
    mounts = [m for m in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(node.dir) in m or str(node.store) in m or str(realnode.RUNTIME_DIR) in m]
    assert not mounts, mounts[:3]
    assert not realnode.RUNTIME_DIR.exists(), "the sockets' and the kubelet's folder is gone"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert realnode.BRIDGE not in links and "veth" not in links and not pod_netns(), links
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert "KUBE-" not in rules and "198.19." not in rules, [r for r in rules.splitlines() if "KUBE" in r][:5]
    assert not Path("/sys/fs/cgroup/memory" + realnode.CGROUP_ROOT).exists()
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forward_before_the_node
