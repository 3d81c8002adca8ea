"""A real Kubernetes control plane on 127.0.0.1, for the tests and for trying a cluster target by hand (`./run cluster
start`): etcd, kube-apiserver, kube-controller-manager, kube-scheduler and, where asked, kwok (fake nodes without a
kubelet: pods become Running and Ready by kwok's stages, Job pods complete), under a private supervisord, with
certificates made for each run (demokit.testcluster.pki). Binaries come from `demokit.testcluster.kubebuild` (built
once from pinned Go modules).

What a bare control plane lacks, and what stands in for it here:
- storage: a default StorageClass with no provisioner, and hostPath PersistentVolumes that this module keeps
  available (the `volumes` program replaces a released volume with a fresh one, as a local-volume provisioner
  does); the real PV controller binds them to claims;
- a kubelet: kwok's debugging handlers serve `exec`, `logs` and `port-forward` through the real API server from local
  processes, configured with kwok's ClusterPortForward / ClusterExec / Logs objects (`forward`, `exec_locally`,
  `pod_log`).
Images are never pulled and probes never run: only a real kubelet (minikube) shows those.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import ssl
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from demokit import probes
from demokit.local.supervise import Program, Supervisor
from demokit.targets import CONTROL_PLANE_CONTEXT
from demokit.testcluster import kubebuild, node, pki

Say = Callable[[str], None]
CONTEXT = CONTROL_PLANE_CONTEXT
NODE = "kwok-node-0"
STORAGE_CLASS = "metalmart-local"
KWOK_CRDS = ("clusterportforwards", "portforwards", "clusterexecs", "execs", "clusterlogs", "logs")
KWOK_GROUP = "kwok.x-k8s.io"
VOLUMES = 6
VOLUME_SIZE = "10Gi"
SERVICE_CIDR = node.SERVICE_CIDR


# ---- the control plane --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ControlPlane:
    """One control plane in `dir` (certificates, etcd's data, logs, kubeconfig, supervisord)."""

    dir: Path
    context: str = CONTEXT

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.dir)

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def ports(self) -> dict[str, int]:
        return {k: int(v) for k, v in json.loads((self.dir / "ports.json").read_text()).items()}

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def running(self) -> bool:
        return self.supervisor.all_running()

    @property
    def fake_nodes(self) -> bool:
        """Whether this plane runs kwok's fake nodes (the tests' cheap cases, or where no real node can run)."""
        return "kwok" in self.ports

    # -- programs --

    def _programs(self) -> list[Program]:
        bins = {c.name: str(kubebuild.binary(c.name)) for c in kubebuild.COMPONENTS}
        p, certs, d = self.ports, self.pki, self.dir
        kwok = [Program("kwok", [
            bins["kwok"], "--kubeconfig", str(d / "kwok.kubeconfig"), "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector", "kwok.x-k8s.io/node=fake",
            "--node-ip", "127.0.0.1", "--node-port", str(p["kwok"]), "--node-lease-duration-seconds", "40",
            "--server-address", f"127.0.0.1:{p['kwok']}", "--cidr", node.KWOK_POD_CIDR,
            "--config", str(d / "kwok-stages.yaml"),
            "--enable-crds", ",".join(_kind(plural) for plural in KWOK_CRDS)],
            env={"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"})] if self.fake_nodes else []
        etcd = f"http://127.0.0.1:{p['etcd']}"
        return [
            Program("etcd", [bins["etcd"], "--name", "metalmart", "--data-dir", str(d / "etcd"),
                             "--listen-client-urls", etcd, "--advertise-client-urls", etcd,
                             "--listen-peer-urls", f"http://127.0.0.1:{p['etcd_peer']}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{p['etcd_peer']}",
                             "--initial-cluster", f"metalmart=http://127.0.0.1:{p['etcd_peer']}",
                             "--listen-metrics-urls", f"http://127.0.0.1:{p['etcd_metrics']}",
                             "--unsafe-no-fsync", "--log-level", "warn"], stopwaitsecs=10),
            Program("kube-apiserver", [
                bins["kube-apiserver"], "--etcd-servers", etcd, "--bind-address", "127.0.0.1",
                "--advertise-address", "127.0.0.1", "--secure-port", str(p["apiserver"]),
                "--cert-dir", str(d / "apiserver-certs"),
                "--tls-cert-file", str(certs / "apiserver.crt"), "--tls-private-key-file", str(certs / "apiserver.key"),
                "--client-ca-file", str(certs / "ca.crt"),
                "--kubelet-client-certificate", str(certs / "apiserver-kubelet-client.crt"),
                "--kubelet-client-key", str(certs / "apiserver-kubelet-client.key"),
                "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file", str(certs / "sa.pub"),
                "--service-account-signing-key-file", str(certs / "sa.key"),
                "--service-cluster-ip-range", SERVICE_CIDR, "--authorization-mode", "Node,RBAC",
                "--endpoint-reconciler-type", "none", "--allow-privileged=true",
                # A real node's exec, logs and port-forward go to its address, never to its name looked up in DNS.
                "--kubelet-preferred-address-types", "InternalIP,Hostname",
                # With fake nodes, pods go to them unless their namespace asks for the real node
                # (demokit.testcluster.node).
                "--enable-admission-plugins", "PodNodeSelector",
                "--admission-control-config-file", str(d / "admission.yaml"),
                "--enable-priority-and-fairness=false", "--v", "1"]),
            Program("kube-controller-manager", [
                bins["kube-controller-manager"], "--kubeconfig", str(d / "controller-manager.kubeconfig"),
                "--use-service-account-credentials", "--service-account-private-key-file", str(certs / "sa.key"),
                "--root-ca-file", str(certs / "ca.crt"), "--leader-elect=false", "--secure-port", "0",
                "--cluster-signing-cert-file", str(certs / "ca.crt"),
                "--cluster-signing-key-file", str(certs / "ca.key"),
                "--concurrent-deployment-syncs", "10", "--v", "1"]),
            Program("kube-scheduler", [bins["kube-scheduler"], "--kubeconfig", str(d / "scheduler.kubeconfig"),
                                       "--leader-elect=false", "--secure-port", "0", "--v", "1"]),
            *kwok,
            Program("volumes", [sys.executable, "-m", "demokit.testcluster.controlplane", "volumes", str(d),
                                self.context]),
        ]

    # -- lifecycle --

    def start(self, say: Say, fake_nodes: bool = True) -> bool:
        """Bring it up (building what is missing); False when it was already running. `fake_nodes`: with kwok and
        its node (pods go to it unless their namespace asks for the real node); without, the pods wait for a real
        node."""
        if self.running():
            return False
        kubebuild.ensure(say, kubebuild.CONTROL_PLANE + (kubebuild.FAKE_NODES if fake_nodes else ()))
        if self.supervisor.up():
            self.stop(say)
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in ("etcd", "apiserver-certs", "volumes"):
            shutil.rmtree(self.dir / stale, ignore_errors=True)
        (self.dir / "ports.json").write_text(json.dumps({
            name: probes.free_port() for name in ("etcd", "etcd_peer", "etcd_metrics", "apiserver",
                                                  *(("kwok",) if fake_nodes else ()))}))
        pki.authority(self.pki, SERVICE_CIDR)
        default = {"clusterDefaultNodeSelector": node.KWOK_SELECTOR} if fake_nodes else {}
        (self.dir / "admission.yaml").write_text(yaml.safe_dump({
            "apiVersion": "apiserver.config.k8s.io/v1", "kind": "AdmissionConfiguration",
            "plugins": [{"name": "PodNodeSelector", "configuration": {"podNodeSelectorPluginConfig": default}}]}))
        for user in ("admin", "controller-manager", "scheduler", *(("kwok",) if fake_nodes else ())):
            path = self.kubeconfig if user == "admin" else self.dir / f"{user}.kubeconfig"
            path.write_text(pki.kubeconfig(self.pki, user, self.server, self.context))
            path.chmod(0o600)
        if fake_nodes:
            stages = [yaml.safe_load(f.read_text()) for f in
                      sorted((kubebuild.binary("kwok").parent / "stages").glob("*.yaml"))]
            (self.dir / "kwok-stages.yaml").write_text(yaml.safe_dump_all(stages))
        programs = self._programs()
        t0 = time.monotonic()
        sup = self.supervisor
        sup.launch(programs, server=self.server)
        try:
            sup.start(["etcd"])
            self._until(lambda: probes.http_ok(f"http://127.0.0.1:{self.ports['etcd_metrics']}/health"), 30, "etcd")
            sup.start(["kube-apiserver"])
            self._until(self._readyz, 60, "kube-apiserver")
            if fake_nodes:
                self._install_kwok_crds()
            sup.start(["kube-controller-manager", "kube-scheduler", *(("kwok",) if fake_nodes else ())])
            if fake_nodes:
                self._node()
            self._storage()
            sup.start(["volumes"])
            self._until(self._settled, 60, "node Ready, default ServiceAccount, volumes available")
        except BaseException:
            self.stop(lambda _m: None)
            raise
        say(f"control plane up in {time.monotonic() - t0:.1f} s at {self.server} (context {self.context}, "
            f"kubeconfig {self.kubeconfig})")
        return True

    def start_node(self, say: Say) -> bool:
        """The real node joined to this (running) control plane where the machine allows one; where it cannot, one
        line says why and the kwok nodes carry on alone. True when a node runs."""
        real = node.Node(self.dir)
        if real.running():
            return True
        node.install_packages(say)
        why = node.unavailable(real.dir)
        if why:
            if not self.fake_nodes:
                say(f"no real node: {why}; the demo's pods wait for one")
                return False
            say(f"no real node: {why}; the kwok nodes run alone (and take the pods meant for it)")
            from kubernetes import client

            client.CoreV1Api(self.api()).patch_node(NODE, {"metadata": {"labels": {node.LABEL[0]: node.LABEL[1]}}})
            return False
        real.start(self, say)
        return True

    def issue_client(self, where: Path, file: str, cn: str, org: str | None = None) -> None:
        pki.issue(self.pki, where, file, cn, org)

    def kubeconfig_for(self, where: Path, user: str) -> str:
        """A kubeconfig for the client certificate `where/<user>.crt` (the CA is this plane's)."""
        shutil.copyfile(self.pki / "ca.crt", where / "ca.crt")
        return pki.kubeconfig(where, user, self.server, self.context)

    def stop(self, say: Say) -> bool:
        node.Node(self.dir).stop(say)
        was = self.supervisor.shutdown()
        if was:
            say("stopped the control plane")
        return was

    def _until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        return self.supervisor.until(check, timeout, what, "the control plane did not come up",
                                     ("etcd", "kube-apiserver", *(("kwok",) if self.fake_nodes else ()),
                                      "kube-controller-manager", "volumes"))

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _readyz(self) -> None:
        with urllib.request.urlopen(f"{self.server}/readyz", timeout=2, context=self._ssl()) as resp:
            if resp.status != 200:
                raise probes.NotReady(f"/readyz answered {resp.status}")

    # -- API --

    def api(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig), context=self.context)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of one object (created or updated)."""
        from kubernetes import dynamic

        client = dynamic.DynamicClient(self.api())
        resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        meta = obj["metadata"]
        return client.server_side_apply(resource, body=obj, name=meta["name"], namespace=meta.get("namespace"),
                                        field_manager="metalmart-controlplane", force_conflicts=True).to_dict()

    def _install_kwok_crds(self) -> None:
        crds = kubebuild.binary("kwok").parent / "crds"
        for plural in KWOK_CRDS:
            self.apply(yaml.safe_load((crds / f"{KWOK_GROUP}_{plural}.yaml").read_text()))

        def established() -> None:
            from kubernetes import client

            ext = client.ApiextensionsV1Api(self.api())
            for plural in KWOK_CRDS:
                crd = ext.read_custom_resource_definition(f"{plural}.{KWOK_GROUP}")
                if not any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
                    raise probes.NotReady(f"{plural} not established")

        self._until(established, 30, "kwok's CRDs")

    def _node(self) -> None:
        self.apply({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": NODE, "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                       "type": "kwok"}}})

    def _storage(self) -> None:
        self.apply({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {
            "name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate",
            "reclaimPolicy": "Retain"})

    def _settled(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api())
        if self.fake_nodes:
            fake = core.read_node(NODE)
            if not any(c.type == "Ready" and c.status == "True" for c in (fake.status.conditions or [])):
                raise probes.NotReady(f"node {NODE} is not Ready yet")
        core.read_namespaced_service_account("default", "default")
        available = [v for v in core.list_persistent_volume().items if v.status.phase == "Available"]
        if len(available) < VOLUMES:
            raise probes.NotReady(f"{len(available)} of {VOLUMES} volumes available")

    # -- kwok's debugging handlers: what stands in for a kubelet's exec, logs and port-forward --

    def forward(self, name: str, ports: dict[int, int]) -> None:
        """Every pod's port P (a key) is served by 127.0.0.1:ports[P]; a ClusterPortForward named `name`."""
        self.apply({"apiVersion": f"{KWOK_GROUP}/v1alpha1", "kind": "ClusterPortForward",
                    "metadata": {"name": name}, "spec": {"forwards": [
                        {"ports": [pod], "target": {"port": local, "address": "127.0.0.1"}}
                        for pod, local in sorted(ports.items())]}})

    def exec_locally(self, name: str, env: dict[str, str], workdir: Path) -> None:
        """`exec` in any pod runs the command as a local process in `workdir` with `env` (kwok's own PATH, which
        starts with this Python's bin folder)."""
        self.apply({"apiVersion": f"{KWOK_GROUP}/v1alpha1", "kind": "ClusterExec", "metadata": {"name": name},
                    "spec": {"execs": [{"local": {"workDir": str(workdir),
                                                  "envs": [{"name": k, "value": v} for k, v in env.items()]}}]}})

    def pod_log(self, namespace: str, pod: str, path: Path) -> None:
        """The pod's log is `path` (CRI log format; see `cri_line`), followed while it grows."""
        self.apply({"apiVersion": f"{KWOK_GROUP}/v1alpha1", "kind": "Logs",
                    "metadata": {"name": pod, "namespace": namespace},
                    "spec": {"logs": [{"logsFile": str(path), "follow": True}]}})

    def delete_kwok(self, kind: str, name: str, namespace: str | None = None) -> None:
        from kubernetes import client

        api = client.CustomObjectsApi(self.api())
        plural = kind.lower() + "s"
        try:
            if namespace:
                api.delete_namespaced_custom_object(KWOK_GROUP, "v1alpha1", namespace, plural, name)
            else:
                api.delete_cluster_custom_object(KWOK_GROUP, "v1alpha1", plural, name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


def cri_line(text: str, stream: str = "stdout") -> str:
    """One line of a container log in the CRI format kubelet writes (and kwok's Logs handler reads)."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp} {stream} F {text}\n"


def _kind(plural: str) -> str:
    return {"clusterportforwards": "ClusterPortForward", "portforwards": "PortForward",
            "clusterexecs": "ClusterExec", "execs": "Exec", "clusterlogs": "ClusterLogs", "logs": "Logs"}[plural]


# ---- the volumes program: a local-volume provisioner for the test cluster -----------------------------------------

def keep_volumes(where: Path, context: str) -> None:
    """Keep VOLUMES hostPath volumes Available: make them at start, and replace each one a deleted claim released
    (a Retain volume never binds again), following the API's watch of PersistentVolumes."""
    from kubernetes import client, watch

    plane = ControlPlane(where, context)
    core = client.CoreV1Api(plane.api())
    root = where / "volumes"
    root.mkdir(exist_ok=True)

    def make(n: int) -> None:
        path = root / f"pv-{n}-{int(time.time() * 1000)}"
        path.mkdir()
        # Any pod user may write it, as a provisioner's volume with the pod's fsGroup would allow (the kubelet
        # applies no fsGroup to a hostPath volume).
        path.chmod(0o777)
        plane.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {
            "name": path.name, "labels": {"metalmart.metalbear.co/test-volume": "true"}},
            "spec": {"capacity": {"storage": VOLUME_SIZE}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
                     "hostPath": {"path": str(path), "type": "Directory"}}})

    def reconcile() -> str:
        vols = core.list_persistent_volume(label_selector="metalmart.metalbear.co/test-volume=true")
        for v in vols.items:
            if v.status.phase in ("Released", "Failed"):
                core.delete_persistent_volume(v.metadata.name)
                shutil.rmtree(root / v.metadata.name, ignore_errors=True)
        live = [v for v in vols.items if v.status.phase not in ("Released", "Failed")]
        free = sum(1 for v in live if v.status.phase in ("Available", "Pending"))
        for n in range(max(0, VOLUMES - free)):
            make(n)
        return str(vols.metadata.resource_version)

    while True:
        version = reconcile()
        watcher = watch.Watch()
        for event in watcher.stream(core.list_persistent_volume, resource_version=version, timeout_seconds=300,
                                    label_selector="metalmart.metalbear.co/test-volume=true"):
            if event["type"] != "ADDED":  # bound, released or deleted: count again
                watcher.stop()
                break


def main(argv: list[str]) -> int:
    if argv[:1] == ["volumes"] and len(argv) == 3:
        keep_volumes(Path(argv[1]), argv[2])
        return 0
    print("usage: python -m demokit.testcluster.controlplane volumes DIR CONTEXT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
