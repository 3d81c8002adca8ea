"""Shared demo clusters per sales region: the guards around `./run provision --region R`.

- The context guard: the kube context the inventory names for a cluster must be in the kubeconfig, and must point
  at the cluster recorded for it on its first provision (its API server's URL and the UID of its `kube-system`
  namespace, kept in `inventories/<region>/host_vars/<cluster>/recorded.yml` to be committed), so a context renamed
  or re-pointed at another cluster is refused before anything is applied.
- One provisioner at a time: a `coordination.k8s.io` Lease in the demo's namespace, held for the run and renewed
  while it lasts; a second run stops naming the holder and since when; a lease whose holder stopped renewing can be
  taken over with --force.
"""

from __future__ import annotations

import datetime
import getpass
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from demokit.errors import CONFLICT, NOT_READY, UNREACHABLE, USAGE, UserError
from demokit.targets import Target

Say = Callable[[str], None]
LEASE = "metalmart-provision"
LEASE_SECONDS = 30
RENEW_EVERY_S = 10.0


@dataclass(frozen=True)
class Identity:
    server: str
    uid: str


def _api(target: Target) -> Any:
    from demokit.kube.portforward import api_client

    return api_client(target)


def identity(target: Target) -> Identity:
    """The API server's URL and the kube-system namespace's UID behind the cluster's kube context."""
    from kubernetes import client, config
    from urllib3.exceptions import HTTPError

    context = str(target.get("kube_context"))
    try:
        contexts, _ = config.list_kube_config_contexts(config_file=target.kubeconfig())
    except (config.ConfigException, OSError) as exc:
        raise UserError(f"no kubeconfig to read ({exc}); get the cluster's credentials first", NOT_READY) from None
    if context not in {c["name"] for c in contexts}:
        raise UserError(f"the kube context {context!r} that the inventory names for {target.name} is not in your "
                        "kubeconfig; get the cluster's credentials under that name (e.g. gcloud container clusters "
                        "get-credentials …, then kubectl config rename-context)", USAGE)
    api = _api(target)
    try:
        uid = client.CoreV1Api(api).read_namespace("kube-system").metadata.uid
    except HTTPError as exc:
        raise UserError(f"the cluster behind context {context!r} is unreachable ({type(exc).__name__})",
                        UNREACHABLE) from None
    except client.ApiException as exc:
        raise UserError(f"the cluster behind context {context!r} refused to show kube-system: {exc.status} "
                        f"{exc.reason}", NOT_READY) from None
    return Identity(str(api.configuration.host), str(uid))


def record_path(target: Target, cluster: str) -> Path:
    return target.path / "host_vars" / cluster / "recorded.yml"


def guard(target: Target, cluster: str, say: Say) -> Identity:
    """Refuse a context that points elsewhere than the cluster recorded for `cluster`; record it the first time."""
    found = identity(target)
    path = record_path(target, cluster)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Recorded by the first ./run provision of this cluster: every later run refuses a context "
                        "that points elsewhere.\n# Commit this file; delete it only when the cluster was rebuilt on "
                        "purpose.\n" + yaml.safe_dump({"cluster_recorded_server": found.server,
                                                        "cluster_recorded_uid": found.uid}))
        say(f"{cluster}: recorded its API server {found.server} and kube-system UID {found.uid[:8]}… in {path} "
            "(commit it, so every engineer's provision is guarded)")
        return found
    recorded = yaml.safe_load(path.read_text()) or {}
    want = Identity(str(recorded.get("cluster_recorded_server")), str(recorded.get("cluster_recorded_uid")))
    if found != want:
        raise UserError(f"context {target.get('kube_context')!r} now points at {found.server} (kube-system "
                        f"{found.uid[:8]}…), not at the cluster recorded for {cluster} ({want.server}, "
                        f"{want.uid[:8]}…): fix the context in your kubeconfig, or delete {path} if the cluster was "
                        "rebuilt on purpose", CONFLICT)
    return found


# ---- one provisioner at a time ------------------------------------------------------------------------------------

def me() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Lease:
    """The provisioning lease of one cluster's namespace, held (and renewed by a thread) while the run lasts."""

    def __init__(self, target: Target, cluster: str, say: Say, holder: str | None = None) -> None:
        from kubernetes import client

        self.target, self.cluster, self.say = target, cluster, say
        self.holder = holder or me()
        self.namespace = str(target.get("metalmart_namespace"))
        self.api = client.CoordinationV1Api(_api(target))
        self.core = client.CoreV1Api(self.api.api_client)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    def _body(self, transitions: int) -> dict[str, Any]:
        stamp = _now()
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": LEASE, "namespace": self.namespace,
                             "labels": {"app.kubernetes.io/part-of": "metalmart"}},
                "spec": {"holderIdentity": self.holder, "leaseDurationSeconds": LEASE_SECONDS,
                         "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": transitions}}

    def acquire(self, force: bool = False) -> None:
        from kubernetes import client

        self._namespace()
        try:
            current = self.api.read_namespaced_lease(LEASE, self.namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise UserError(f"{self.cluster}: cannot read the provisioning lease: {exc.reason}",
                                NOT_READY) from None
            try:
                self.api.create_namespaced_lease(self.namespace, self._body(0))
            except client.ApiException as exc2:
                if exc2.status == 409:  # someone took it between our read and our create
                    return self.acquire(force)
                raise
            return self._start()
        spec = current.spec
        holder, renewed = spec.holder_identity, spec.renew_time or spec.acquire_time
        if holder and holder != self.holder:
            age = (_now() - renewed).total_seconds() if renewed else float("inf")
            since = spec.acquire_time.strftime("%Y-%m-%d %H:%M:%S UTC") if spec.acquire_time else "an unknown time"
            if age < (spec.lease_duration_seconds or LEASE_SECONDS):
                raise UserError(f"{self.cluster} is being provisioned by {holder} since {since} (lease renewed "
                                f"{age:.0f} s ago); wait for it to finish", CONFLICT)
            if not force:
                raise UserError(f"{self.cluster}: {holder} holds the provisioning lease since {since} but stopped "
                                f"renewing it {age:.0f} s ago; --force takes it over", CONFLICT)
            self.say(f"{self.cluster}: took over the provisioning lease from {holder} (it stopped renewing "
                     f"{age:.0f} s ago)")
        body = self._body((spec.lease_transitions or 0) + (1 if holder != self.holder else 0))
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        try:
            self.api.replace_namespaced_lease(LEASE, self.namespace, body)
        except client.ApiException as exc:
            if exc.status == 409:
                raise UserError(f"{self.cluster}: someone else took the provisioning lease just now; run again",
                                CONFLICT) from None
            raise
        self._start()
        return None

    def _namespace(self) -> None:
        """The lease lives in the demo's namespace: made here on a first provision (the namespace role then applies
        the rest of it)."""
        from kubernetes import client

        try:
            self.core.read_namespace(self.namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            self.core.create_namespace({"metadata": {"name": self.namespace,
                                                     "labels": {"app.kubernetes.io/part-of": "metalmart"}}})

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._renew, name=f"lease {self.cluster}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        from kubernetes import client

        while not self._stop.wait(RENEW_EVERY_S):  # the renewal period of the lease
            try:
                current = self.api.read_namespaced_lease(LEASE, self.namespace)
                if current.spec.holder_identity != self.holder:
                    self.lost = f"{current.spec.holder_identity} took the lease over"
                    return
                current.spec.renew_time = _now()
                self.api.replace_namespaced_lease(LEASE, self.namespace, current)
            except client.ApiException as exc:
                self.lost = f"renewing the lease failed: {exc.reason}"
                return
            except Exception as exc:  # the API is unreachable for a moment: try again next period
                self.say(f"{self.cluster}: could not renew the provisioning lease ({type(exc).__name__}); retrying")

    def release(self) -> None:
        from kubernetes import client

        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            current = self.api.read_namespaced_lease(LEASE, self.namespace)
            if current.spec.holder_identity == self.holder:
                self.api.delete_namespaced_lease(LEASE, self.namespace)
        except client.ApiException:
            return
