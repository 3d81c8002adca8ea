"""A real node beside the test control plane's kwok nodes: containerd (Debian's, with runc and the standard CNI
plugins), a kubelet, kube-proxy and CoreDNS as host processes under a supervisord of their own, so that pods really
start, probes really run, Services route and names resolve.

One node per machine: it owns a bridge (`mmbr0`), the node address and the pod and Service ranges, all from
198.18.0.0/15 (reserved for benchmarking; the traffic stays on the bridge). Pods go to it only from namespaces
annotated with `NODE_SELECTOR` (the API server's PodNodeSelector plugin sends every other namespace to the kwok
nodes), so the tests that only need the API keep kwok's speed.

`stop` leaves nothing behind: the pods are stopped through the CRI (their network namespaces and links go with
them), then the processes, every mount under the node's folders, the bridge, kube-proxy's iptables chains, the
kubelet's cgroups and the sysctl it set. containerd's image store is kept in the cache folder, so a second start
imports nothing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from demokit import probes
from demokit.errors import NOT_READY, UserError
from demokit.local.supervise import Program, Supervisor
from demokit.testcluster import kubebuild

Say = Callable[[str], None]
NAME = "metalmart-node"
BRIDGE = "mmbr0"
POD_CIDR = "198.18.16.0/20"
# The bridge's one IPv4 address (the CNI bridge plugin allows no second) is the pods' gateway and the node's address:
# the kubelet, kube-proxy's node ports and CoreDNS listen on it.
NODE_IP = POD_GATEWAY = "198.18.16.1"
NODE_PREFIX = 20
SERVICE_CIDR = "198.19.0.0/16"
KWOK_POD_CIDR = "198.18.32.0/20"  # what kwok hands out (never routed)
CLUSTER_DOMAIN = "cluster.local"
LABEL = ("metalmart.metalbear.co/node", "real")
NODE_SELECTOR = f"{LABEL[0]}={LABEL[1]}"
KWOK_SELECTOR = "type=kwok"
CGROUP_ROOT = "/metalmart-node"
CNI_BIN = Path("/usr/lib/cni")
# What the node runs on, and what makes its images (nothing can be pulled: buildah over a debootstrapped base).
PACKAGES = {"containerd": "containerd", "runc": "runc", "iptables": "iptables", "conntrack": "conntrack",
            "ip": "iproute2", "buildah": "buildah", "debootstrap": "debootstrap"}
LOCK = Path("/run/metalmart-node.json")  # which folder the machine's one node belongs to
# The node's sockets and the kubelet's root (its pod-resources and plugin sockets live there): a short path of the
# machine's, since a Unix socket's path may not pass 107 bytes and a plane's folder can be deep (a test's temporary
# folder under pytest-xdist made the kubelet's socket 112 bytes, and the kubelet stopped). One node per machine.
RUNTIME_DIR = Path("/var/lib/metalmart-node")


def cache_dir() -> Path:
    base = os.environ.get("METALMART_NODE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "metalmart", "node")
    return Path(base)


def unavailable(mine: Path | None = None, packages: bool = True) -> str | None:
    """Why a real node cannot run on this machine (None when it can); `mine`: the folder of the node asking, which
    may take its own place back; `packages=False`: not counting Debian's packages (they are being installed)."""
    if platform.system() != "Linux":
        return f"a real node needs Linux (this is {platform.system()})"
    if os.geteuid() != 0:
        return "a real node needs root (network, mounts and cgroups)"
    absent = missing_packages() if packages else []
    if absent:
        return f"a real node needs {', '.join(absent)} (apt-get install {' '.join(absent)})"
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        return "a real node needs the kernel's br_netfilter (modprobe br_netfilter)"
    if os.environ.get("METALMART_NODE", "").lower() in ("0", "off", "false", "no"):
        return "METALMART_NODE=off"
    owner = _owner()
    if owner is not None and owner != str(mine):
        return f"this machine's real node already belongs to the control plane in {owner}"
    return None


def missing_packages() -> list[str]:
    """The Debian packages a real node needs that this machine lacks."""
    absent = sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None})
    if not (CNI_BIN / "bridge").is_file():
        absent.append("containernetworking-plugins")
    return absent


def installs_packages() -> bool:
    """Whether install_packages will install what the node lacks here: root on Debian or Ubuntu, something missing."""
    return bool(missing_packages()) and os.geteuid() == 0 and shutil.which("apt-get") is not None \
        and Path("/etc/debian_version").exists()


def install_packages(say: Say) -> None:
    """As root on Debian or Ubuntu, install what a real node lacks from Debian's packages, as the tests' setup does
    (scripts/ensure-test-deps.sh), saying so in one line first; elsewhere nothing (unavailable() names the command)."""
    if not installs_packages():
        return
    absent = missing_packages()
    t0 = time.monotonic()
    say(f"the real node needs {', '.join(absent)}: installing them from Debian's packages "
        f"(apt-get install {' '.join(absent)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *absent]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"{' '.join(argv[:2])} failed ({last[0]}); install them by hand: apt-get install "
                            f"{' '.join(absent)}", NOT_READY)
    say(f"installed {', '.join(absent)} in {time.monotonic() - t0:.0f} s")


def _owner() -> str | None:
    """The folder of the control plane whose node runs, when its supervisord is alive."""
    try:
        held = json.loads(LOCK.read_text())
    except (OSError, ValueError):
        return None
    if Supervisor(Path(held["dir"])).up():
        return str(held["dir"])
    return None


def _run(*argv: str, check: bool = True, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kw)
    if check and done.returncode != 0:
        raise UserError(f"{' '.join(argv[:3])} failed: {(done.stderr or done.stdout).strip()[-300:]}", NOT_READY)
    return done


@dataclass(frozen=True)
class Node:
    """The node of the control plane in `plane_dir` (its certificates and API server); its own files in
    `plane_dir/node`."""

    plane_dir: Path

    @property
    def dir(self) -> Path:
        return self.plane_dir / "node"

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.dir)

    @property
    def socket(self) -> Path:
        return RUNTIME_DIR / "containerd.sock"

    @property
    def store(self) -> Path:
        """containerd's root (image content and snapshots), kept across starts."""
        return cache_dir() / "containerd"

    def running(self) -> bool:
        return self.supervisor.all_running()

    def crictl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return _run(str(kubebuild.binary("crictl")), "--runtime-endpoint", f"unix://{self.socket}",
                    "--image-endpoint", f"unix://{self.socket}", "--timeout", "60s", *args, check=check,
                    timeout=timeout)

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return _run("ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args, check=check,
                    timeout=timeout)

    # -- files --

    def _containerd_config(self) -> str:
        d = self.dir
        return f"""version = 2
root = "{self.store}"
state = "{d / 'containerd-state'}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{RUNTIME_DIR / 'containerd.sock.ttrpc'}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_unprivileged_ports = false
  # No CAP_SYS_RESOURCE here: an OOM score below containerd's own (the kubelet asks -998 for a sandbox) is refused.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which('runc')}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d / 'cni'}"
"""

    def _cni(self) -> dict[str, Any]:
        return {"cniVersion": "0.4.0", "name": "metalmart", "plugins": [{
            "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.dir / "cni-ipam")}}]}

    def _kubelet_config(self, ports: dict[str, int], ca: Path) -> dict[str, Any]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": NODE_IP, "port": ports["kubelet"], "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": ports["kubelet_healthz"],
            "authentication": {"x509": {"clientCAFile": str(ca)}, "webhook": {"enabled": True},
                               "anonymous": {"enabled": False}},
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs", "cgroupRoot": CGROUP_ROOT, "failSwapOn": False, "failCgroupV1": False,
            "clusterDNS": [NODE_IP], "clusterDomain": CLUSTER_DOMAIN, "resolvConf": str(self.dir / "resolv.conf"),
            "containerRuntimeEndpoint": f"unix://{self.socket}", "podCIDR": POD_CIDR,
            "serializeImagePulls": False, "registerNode": True, "maxPods": 60,
            # Images are imported, never pulled: the kubelet must not collect them when the disk fills.
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
            "syncFrequency": "10s", "fileCheckFrequency": "0s", "httpCheckFrequency": "0s",
            "nodeStatusReportFrequency": "10s", "shutdownGracePeriod": "0s",
        }

    def _proxy_config(self, ports: dict[str, int]) -> dict[str, Any]:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.dir / "kube-proxy.kubeconfig")},
            "mode": "iptables", "clusterCIDR": POD_CIDR, "hostnameOverride": NAME,
            "bindAddress": NODE_IP, "healthzBindAddress": f"127.0.0.1:{ports['proxy_healthz']}",
            "metricsBindAddress": f"127.0.0.1:{ports['proxy_metrics']}",
            "nodePortAddresses": [f"{NODE_IP}/32"],
            # Neither conntrack sysctls nor route_localnet: nothing the node does not put back.
            "conntrack": {"maxPerCore": 0, "min": 0},
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        }

    def _corefile(self, kubeconfig: Path, context: str, port: int) -> str:
        return f""".:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} {context}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""

    def programs(self, ports: dict[str, int]) -> list[Program]:
        d, bins = self.dir, {n: str(kubebuild.binary(n)) for n in kubebuild.NODE}
        return [
            Program("containerd", ["containerd", "--config", str(d / "containerd.toml")], stopwaitsecs=20),
            Program("kubelet", [bins["kubelet"], "--config", str(d / "kubelet.yaml"),
                                "--kubeconfig", str(d / "kubelet.kubeconfig"),
                                "--root-dir", str(RUNTIME_DIR / "kubelet"),
                                "--cert-dir", str(d / "kubelet-pki"), "--hostname-override", NAME,
                                "--node-ip", NODE_IP, "--node-labels", NODE_SELECTOR, "--v", "1"],
                    stopwaitsecs=20),
            Program("kube-proxy", [bins["kube-proxy"], "--config", str(d / "kube-proxy.yaml"), "--v", "1"]),
            Program("coredns", [bins["coredns"], "-conf", str(d / "Corefile")]),
        ]

    # -- lifecycle --

    def start(self, plane: Any, say: Say) -> bool:
        """Bring the node up and joined to `plane` (a running ControlPlane); False when it already runs."""
        if self.running():
            return False
        why = unavailable(self.dir)
        if why:
            raise UserError(why, NOT_READY)
        kubebuild.ensure(say, kubebuild.NODE)
        t0 = time.monotonic()
        self.stop(lambda _m: None)
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        RUNTIME_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        LOCK.write_text(json.dumps({"dir": str(d)}))
        ports = {n: probes.free_port() for n in ("kubelet", "kubelet_healthz", "proxy_healthz", "proxy_metrics",
                                                  "dns_health")}
        (d / "ports.json").write_text(json.dumps(ports))
        plane.issue_client(d / "pki", "kubelet", f"system:node:{NAME}", "system:nodes")
        plane.issue_client(d / "pki", "kube-proxy", "system:kube-proxy", "system:node-proxier")
        plane.issue_client(d / "pki", "coredns", "coredns", "system:masters")
        for user in ("kubelet", "kube-proxy", "coredns"):
            path = d / f"{user}.kubeconfig"
            path.write_text(plane.kubeconfig_for(d / "pki", user))
            path.chmod(0o600)
        (d / "containerd.toml").write_text(self._containerd_config())
        (d / "cni").mkdir(exist_ok=True)
        (d / "cni" / "10-metalmart.conflist").write_text(json.dumps(self._cni(), indent=2))
        (d / "resolv.conf").write_text(_host_resolv())
        (d / "kubelet.yaml").write_text(yaml.safe_dump(self._kubelet_config(ports, plane.pki / "ca.crt")))
        (d / "kube-proxy.yaml").write_text(yaml.safe_dump(self._proxy_config(ports)))
        (d / "Corefile").write_text(self._corefile(d / "coredns.kubeconfig", plane.context, ports["dns_health"]))
        self._network_up()
        _make_cgroups(CGROUP_ROOT)
        sup = self.supervisor
        sup.launch(self.programs(ports), server=plane.server)
        try:
            sup.start(["containerd"])
            self._until(self._containerd_answers, 30, "containerd")
            from demokit.testcluster.node import images

            images.ensure_pause(self, say, PAUSE_IMAGE)
            images.ensure_services(self, say)
            sup.start(["kubelet", "kube-proxy", "coredns"])
            self._until(lambda: self._ready(plane, ports), 60, f"node {NAME} Ready, DNS answering")
        except BaseException:
            self.stop(lambda _m: None)
            raise
        say(f"real node {NAME} up in {time.monotonic() - t0:.1f} s (address {NODE_IP}, pods {POD_CIDR}, "
            f"Services {SERVICE_CIDR})")
        return True

    def _ready(self, plane: Any, ports: dict[str, int]) -> None:
        from kubernetes import client

        node = client.CoreV1Api(plane.api()).read_node(NAME)
        if not any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or [])):
            raise probes.NotReady(f"node {NAME} is not Ready yet")
        probes.http_ok(f"http://127.0.0.1:{ports['dns_health']}/health")
        probes.http_ok(f"http://127.0.0.1:{ports['proxy_healthz']}/healthz")

    def _containerd_answers(self) -> None:
        """Not yet, rather than a failure, while containerd makes its socket: its first start on a machine sets up
        its root first (a fresh machine's first cluster start failed here, 0.06 s after containerd started)."""
        done = self.crictl("info", check=False, timeout=10)
        if done.returncode != 0:
            raise probes.NotReady(f"crictl info: {(done.stderr or done.stdout).strip()[-200:]}")

    def _until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        return self.supervisor.until(check, timeout, what, "the real node did not come up",
                                     ("containerd", "kubelet", "kube-proxy", "coredns"))

    def _network_up(self) -> None:
        links = _run("ip", "-j", "link", "show").stdout
        if BRIDGE not in {link["ifname"] for link in json.loads(links)}:
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
        addrs = json.loads(_run("ip", "-j", "addr", "show", "dev", BRIDGE).stdout)
        if not any(a.get("local") == NODE_IP for a in addrs[0].get("addr_info", [])):
            _run("ip", "addr", "add", f"{NODE_IP}/{NODE_PREFIX}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        forward = Path("/proc/sys/net/ipv4/ip_forward")
        saved = self.dir / "ip_forward.saved"
        if not saved.exists():
            saved.write_text(forward.read_text())
        forward.write_text("1\n")

    def stop(self, say: Say) -> bool:
        """Everything the node made, gone; True when anything was running."""
        sup = self.supervisor
        was = sup.up()
        if was:
            with contextlib.suppress(Exception):
                sup.rpc().supervisor.stopProcess("kubelet", True)
            if kubebuild.binary("crictl").is_file() and self.socket.exists():
                # Each sandbox stopped through the CRI: containerd calls CNI DEL, so links and addresses go too.
                self.crictl("rmp", "--all", "--force", check=False, timeout=180)
            sup.shutdown()
        self._leftovers()
        _remove_pod_netns()
        if kubebuild.binary("kube-proxy").is_file():
            _run(str(kubebuild.binary("kube-proxy")), "--cleanup", check=False)
        _remove_kubelet_chains()
        if shutil.which("ip"):
            _run("ip", "link", "delete", BRIDGE, check=False)
        saved = self.dir / "ip_forward.saved"
        if saved.exists():
            Path("/proc/sys/net/ipv4/ip_forward").write_text(saved.read_text())
            saved.unlink()
        _remove_cgroups(CGROUP_ROOT)
        for transient in ("containerd-state", "kubelet", "cni-ipam", "opt"):
            shutil.rmtree(self.dir / transient, ignore_errors=True)
        if _owner() in (None, str(self.dir)):  # the machine's runtime folder, unless another plane's node runs
            shutil.rmtree(RUNTIME_DIR, ignore_errors=True)
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(LOCK.read_text())["dir"] == str(self.dir):
                LOCK.unlink()
        if was:
            say("stopped the real node")
        return was

    def _leftovers(self) -> None:
        """containerd's shims (and their containers) outlive containerd: kill the ones of this node's socket, then
        unmount whatever is still mounted under the node's folders, deepest first."""
        mine = str(self.socket)
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                cmd = proc.info["cmdline"] or []
                if cmd and "containerd-shim" in cmd[0] and mine in cmd:
                    for child in proc.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            child.kill()
                    proc.kill()
        roots = (str(self.dir) + "/", str(self.store) + "/", str(RUNTIME_DIR) + "/")
        for point in sorted(_mounts(), key=len, reverse=True):
            if point.startswith(roots):
                _run("umount", "--lazy", point, check=False)


def _remove_pod_netns() -> None:
    """The pods' network namespaces a node killed outright left behind (nobody called CNI DEL): each holds its veth,
    so the links outlive everything else. Ours are the ones whose addresses all lie in the node's pod range."""
    if shutil.which("ip") is None:
        return
    listed = _run("ip", "-j", "netns", "list", check=False).stdout.strip()
    for ns in json.loads(listed or "[]"):
        shown = _run("ip", "-n", ns["name"], "-j", "addr", "show", check=False).stdout.strip()
        addrs = [a["local"] for link in json.loads(shown or "[]") for a in link.get("addr_info", ())
                 if a.get("family") == "inet" and a.get("scope") == "global"]
        if addrs and all(ipaddress.ip_address(a) in ipaddress.ip_network(POD_CIDR) for a in addrs):
            _run("ip", "netns", "delete", ns["name"], check=False)


KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")


def _remove_kubelet_chains() -> None:
    """The chains the kubelet makes (kube-proxy --cleanup takes away its own), and the rules that jump to them."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            rules = _run(tool, "-t", table, "-S", check=False).stdout.splitlines()
            for rule in rules:
                words = rule.split()
                if words[:1] == ["-A"] and words[1] not in KUBELET_CHAINS and any(
                        f"-j {c}" in rule for c in KUBELET_CHAINS):
                    _run(tool, "-t", table, "-D", *words[1:], check=False)
            for chain in KUBELET_CHAINS:
                if f"-N {chain}" in rules:
                    _run(tool, "-t", table, "-F", chain, check=False)
                    _run(tool, "-t", table, "-X", chain, check=False)


def _mounts() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        points.append(point)
    return points


def _make_cgroups(root: str) -> None:
    """The kubelet's cgroup root in every hierarchy (it refuses to start without it)."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if (hierarchy / "cgroup.procs").exists():
            (hierarchy / root.lstrip("/")).mkdir(exist_ok=True)


def _remove_cgroups(root: str) -> None:
    base = Path("/sys/fs/cgroup")
    candidates = [base / root.lstrip("/")] + [d / root.lstrip("/") for d in base.iterdir() if d.is_dir()]
    for top in candidates:
        if not top.is_dir():
            continue
        for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def _host_resolv() -> str:
    """The host's resolver settings without a loopback nameserver (a pod's 127.0.0.1 is its own)."""
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        lines = []
    kept = [line for line in lines if not (line.startswith("nameserver") and ("127." in line or "::1" in line))]
    return "\n".join(kept) + "\n"


PAUSE_IMAGE = "localhost/metalmart-pause:1"


def prepare(say: Say, binaries: tuple[str, ...] = kubebuild.NODE, mine: Path | None = None) -> None:
    """`binaries` built and, where a node can run, what it lacks from Debian's packages installed and its stand-in
    images made, side by side with the Go builds: the installs', downloads' and writes' waits (apt, debootstrap,
    Maven, buildah) overlap the compiles. Where no node can run, one line says why and only the binaries are built.
    `./run cluster start` and the test setup call it, so nothing waits for a cold build later."""
    why = unavailable(mine, packages=not installs_packages())
    if why:
        say(f"no real node here ({why})")
        kubebuild.ensure(say, tuple(b for b in binaries if b not in kubebuild.NODE))
        return
    from demokit.testcluster.node import images

    def node_side() -> None:
        install_packages(say)
        images.build_services(say)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="node-images") as pool:
        made = pool.submit(node_side)
        try:
            kubebuild.ensure(say, binaries)
        finally:
            made.result()


def main(argv: list[str]) -> int:
    """`python -m demokit.testcluster.node load DIR REF`: import REF (built in the image storage) into the node whose
    folder is DIR, for the metalmart_app role; prints {"changed": bool}. `python -m demokit.testcluster.node prepare`:
    build ahead."""
    if argv == ["prepare"]:
        try:
            # What the tests run: the control plane with fake nodes, the real node, helm for the operator's chart and
            # the registry of a region's image push; built side by side with the node's images.
            prepare(lambda m: print(m if m.startswith(("node:", "image:", "kafka:")) else f"node: {m}",
                                    file=sys.stderr, flush=True), kubebuild.TESTS)
        except UserError as exc:
            print(f"node: {exc}", file=sys.stderr)
            return exc.code
        return 0
    if len(argv) == 3 and argv[0] == "load":
        from demokit.testcluster.node import images

        real = Node(Path(argv[1]).parent)
        if not real.running():  # the kwok node carries the demo's pods: they need no image
            print(json.dumps({"changed": False, "skipped": "no real node runs"}))
            return 0
        try:
            changed = images.load_app(real, argv[2], lambda m: print(m, file=sys.stderr, flush=True))
        except UserError as exc:
            print(str(exc), file=sys.stderr)
            return exc.code
        print(json.dumps({"changed": changed}))
        return 0
    print("usage: python -m demokit.testcluster.node load NODE_DIR IMAGE_REF | prepare", file=sys.stderr)
    return 2
