"""Reach a pod's port from this machine through the Kubernetes API, as `kubectl port-forward` does, with no kubectl
and nothing for the user to start by hand: a listener on 127.0.0.1 whose every connection is carried over the API
server's port-forward websocket to a running, ready pod of a workload."""

from __future__ import annotations

import contextlib
import select
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

from demokit.errors import CONFLICT, NOT_READY, UNREACHABLE, UserError
from demokit.targets import Target


def ready_pod(api: Any, namespace: str, app: str) -> str:
    """A running pod of the workload `app` (label app.kubernetes.io/name) whose Ready condition is true."""
    from kubernetes import client
    from urllib3.exceptions import HTTPError

    try:
        pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/name={app}",
                                                         field_selector="status.phase=Running").items
    except HTTPError as exc:
        raise UserError(f"the Kubernetes API is unreachable ({exc.__class__.__name__}); is the cluster up?",
                        UNREACHABLE) from None
    except client.ApiException as exc:
        raise UserError(f"could not list the {app} pods in {namespace}: {exc.status} {exc.reason}",
                        UNREACHABLE) from None
    for pod in pods:
        conditions = (pod.status.conditions or []) if pod.status else []
        if any(c.type == "Ready" and c.status == "True" for c in conditions):
            return pod.metadata.name
    raise UserError(f"no ready {app} pod in namespace {namespace}; see ./run status", NOT_READY)


def _pump(a: Any, b: Any) -> None:
    """Copy bytes both ways until either side closes."""
    try:
        while True:
            readable, _, _ = select.select([a, b], [], [], 60)
            for src in readable:
                data = src.recv(65536)
                if not data:
                    return
                (b if src is a else a).sendall(data)
    except OSError:
        return
    finally:
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.close()


class Tunnel:
    """127.0.0.1:<local_port> → <pod>:<remote_port>; local_port 0 picks a free one."""

    def __init__(self, api: Any, namespace: str, app: str, remote_port: int, local_port: int = 0) -> None:
        self.api, self.namespace, self.app, self.remote_port = api, namespace, app, remote_port
        self.pod = ready_pod(api, namespace, app)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind(("127.0.0.1", local_port))
        except OSError:
            self.listener.close()
            from demokit.localstack import port_holder

            holder = port_holder(local_port) or "another process"
            raise UserError(f"port {local_port} on 127.0.0.1 is taken by {holder}; the {app} port-forward needs "
                            "it (stop that process or change the port in the inventory)", CONFLICT) from None
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name=f"port-forward {app}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._carry, args=(conn,), daemon=True).start()

    def _carry(self, conn: socket.socket) -> None:
        from kubernetes import client
        from kubernetes.stream import portforward

        try:
            # A client of its own per connection: kubernetes.stream swaps the ApiClient's request method while it
            # upgrades, which is not safe across threads.
            own = client.CoreV1Api(client.ApiClient(self.api.configuration))
            pf = portforward(own.connect_get_namespaced_pod_portforward, self.pod,
                             self.namespace, ports=str(self.remote_port))
            remote = pf.socket(self.remote_port)
            remote.setblocking(True)
        except Exception as exc:  # the API refused the upgrade: drop this connection, the client sees it closed
            reason = getattr(exc, "reason", None) or exc
            sys.stderr.write(f"port-forward to {self.namespace}/{self.pod}:{self.remote_port} failed: "
                             f"{str(reason).splitlines()[0][:200]}\n")
            conn.close()
            return
        _pump(conn, remote)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread, so the port is free at once
        with contextlib.suppress(OSError):
            self.listener.close()


def api_client(target: Target) -> Any:
    from kubernetes import config

    context = target.get("kube_context")
    try:
        return config.new_client_from_config(context=context)
    except (config.ConfigException, OSError) as exc:
        raise UserError(f"no Kubernetes config for target {target.name!r} (context {context!r}): {exc}; is the "
                        f"cluster up? ./run fresh-start --target {target.name}", NOT_READY) from None


@contextlib.contextmanager
def tunnels(target: Target, wanted: dict[str, tuple[int, int]]) -> Iterator[dict[str, int]]:
    """Open {name: (remote_port, local_port)} tunnels to the target's workloads; yields {name: local_port}."""
    api = api_client(target)
    opened: list[Tunnel] = []
    try:
        for app, (remote, local) in wanted.items():
            opened.append(Tunnel(api, str(target.get("metalmart_namespace")), app, remote, local))
        yield {t.app: t.port for t in opened}
    finally:
        for t in opened:
            t.close()
