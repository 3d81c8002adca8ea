"""Reach a pod's port from this machine through the Kubernetes API, as `kubectl port-forward` does, with no kubectl
and nothing for the user to start by hand: a listener on 127.0.0.1 whose every connection is carried over the API
server's port-forward websocket to a running, ready pod of a workload."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from demokit.errors import CONFLICT, NOT_READY, UNREACHABLE, UserError
from demokit.targets import Target, start_command


def ready_pod(api: Any, namespace: str, app: str, fix: str = "./run status", start: str = "") -> str:
    """A running pod of the workload `app` (label app.kubernetes.io/name) whose Ready condition is true."""
    from kubernetes import client
    from urllib3.exceptions import HTTPError

    try:
        pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/name={app}",
                                                         field_selector="status.phase=Running").items
    except HTTPError as exc:
        raise UserError(f"the Kubernetes API is unreachable ({exc.__class__.__name__}); is the cluster up? {start}"
                        .rstrip(), UNREACHABLE) from None
    except client.ApiException as exc:
        raise UserError(f"could not list the {app} pods in {namespace}: {exc.status} {exc.reason}",
                        UNREACHABLE) from None
    for pod in pods:
        conditions = (pod.status.conditions or []) if pod.status else []
        if any(c.type == "Ready" and c.status == "True" for c in conditions):
            return pod.metadata.name
    raise UserError(f"no ready {app} pod in namespace {namespace}; see {fix}", NOT_READY)


class _Forward:
    """One forwarded connection: a local socket and the API server's port-forward websocket (v4.channel.k8s.io:
    channel 0 carries data, channel 1 errors, and the first frame of each holds the port number). Driven here rather
    than through the official client's proxy thread, which prints a traceback when a connection is reset; any end of
    the connection simply closes both sides."""

    def __init__(self, api: Any, namespace: str, pod: str, port: int) -> None:
        from kubernetes.stream.ws_client import create_websocket, get_websocket_url

        cfg = api.configuration
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)  # exec plugins and expiring tokens (EKS, GKE)
        token = cfg.get_api_key_with_prefix("authorization")
        headers = {"sec-websocket-protocol": "v4.channel.k8s.io", **({"authorization": token} if token else {})}
        url = get_websocket_url(f"{cfg.host}/api/v1/namespaces/{namespace}/pods/{pod}/portforward?ports={port}")
        self.ws = create_websocket(cfg, url, headers)
        self.where = f"{namespace}/{pod}:{port}"
        self._seen: set[int] = set()

    def _frame(self) -> tuple[int, bytes] | None:
        """The next (channel, payload) from the websocket, the port-number prefix removed; None when it closed."""
        import websocket

        opcode, frame = self.ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return None
        if opcode not in (websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_TEXT) or not frame.data:
            return -1, b""
        data = frame.data if isinstance(frame.data, bytes) else frame.data.encode()
        channel, payload = data[0], data[1:]
        if channel not in self._seen:
            self._seen.add(channel)
            payload = payload[2:]
        return channel, payload

    def pump(self, conn: socket.socket, say_once: Callable[[str], None]) -> None:
        import websocket

        sock = self.ws.sock
        try:
            while True:
                pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
                readable = [sock] if pending else select.select([conn, sock], [], [], 60)[0]
                if conn in readable:
                    data = conn.recv(65536)
                    if not data:
                        return
                    self.ws.send_binary(b"\0" + data)
                if sock in readable:
                    got = self._frame()
                    if got is None:
                        return
                    channel, payload = got
                    if channel == 0 and payload:
                        conn.sendall(payload)
                    elif channel == 1 and payload:
                        say_once(f"port-forward to {self.where}: {payload.decode(errors='replace')[:200]}")
                        return
        except (OSError, websocket.WebSocketException):
            return  # either side reset the connection: close both, as kubectl does
        finally:
            with contextlib.suppress(OSError, websocket.WebSocketException):
                self.ws.close()
            with contextlib.suppress(OSError):
                conn.close()


class Tunnel:
    """127.0.0.1:<local_port> → <pod>:<remote_port>; local_port 0 picks a free one."""

    def __init__(self, api: Any, namespace: str, app: str, remote_port: int, local_port: int = 0,
                 fix: str = "./run status", start: str = "") -> None:
        self.api, self.namespace, self.app, self.remote_port = api, namespace, app, remote_port
        # A failing forward fails every connection a task makes (a metrics watch makes one a second): each distinct
        # failure is said once, with the fix.
        self.fix = fix
        self._said: set[str] = set()
        self._said_lock = threading.Lock()
        self.pod = ready_pod(api, namespace, app, fix, start)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind(("127.0.0.1", local_port))
        except OSError:
            self.listener.close()
            from demokit.local.localstack import port_holder

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
        import websocket

        try:
            forward = _Forward(self.api, self.namespace, self.pod, self.remote_port)
        except (OSError, websocket.WebSocketException) as exc:  # the API refused the upgrade: drop this connection
            self.say_once(f"port-forward to {self.namespace}/{self.pod}:{self.remote_port} failed: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}")
            conn.close()
            return
        forward.pump(conn, self.say_once)

    def say_once(self, message: str) -> None:
        with self._said_lock:
            if message in self._said:
                return
            self._said.add(message)
        sys.stderr.write(f"{message} → {self.fix}\n")

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
        return config.new_client_from_config(config_file=target.kubeconfig(), context=context)
    except (config.ConfigException, OSError) as exc:
        raise UserError(f"no Kubernetes config for target {target.name!r} (context {context!r}): {exc}; is the "
                        f"cluster up? {start_command(target)}", NOT_READY) from None


@contextlib.contextmanager
def tunnels(target: Target, wanted: dict[str, tuple[int, int]]) -> Iterator[dict[str, int]]:
    """Open {name: (remote_port, local_port)} tunnels to the target's workloads; yields {name: local_port}."""
    api = api_client(target)
    opened: list[Tunnel] = []
    try:
        for app, (remote, local) in wanted.items():
            opened.append(Tunnel(api, str(target.get("metalmart_namespace")), app, remote, local,
                                 fix=f"./run status --target {target.name}", start=start_command(target)))
        yield {t.app: t.port for t in opened}
    finally:
        for t in opened:
            t.close()
