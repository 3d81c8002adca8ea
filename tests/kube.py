"""A Kubernetes API on 127.0.0.1 for the deploy roles: kmock's emulator, with the fixes kmock 0.8 needs to speak to
the official client (kubernetes.core uses it): cluster-scoped namespace paths, PUT as a replace, 201 on create,
`kind`/`apiVersion` on lists, label and field selectors on lists, the core group's discovery as `v1`, server-side
fields (uid, resourceVersion, generation, creationTimestamp), and the `pods/portforward` websocket. It has no
strategic merge (a patch is a JSON merge, which is what our objects need), no dry-run, no defaulting and no
controllers: nothing becomes ready by itself, so roles run here with `k8s_objects_wait=false` and waiting is left to
the module, where it lives."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp.web
import yaml
from kmock import KubernetesEmulator, ResourceInfo, Server, resource
from kmock._internal import parsing, rendering
from kmock._internal.dicts import merge_patch_dict

# group, version, plural, kind, namespaced
RESOURCES = [
    ("", "v1", "namespaces", "Namespace", False),
    ("", "v1", "services", "Service", True),
    ("", "v1", "secrets", "Secret", True),
    ("", "v1", "configmaps", "ConfigMap", True),
    ("", "v1", "pods", "Pod", True),
    ("", "v1", "events", "Event", True),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True),
    ("apps", "v1", "deployments", "Deployment", True),
    ("apps", "v1", "statefulsets", "StatefulSet", True),
    ("batch", "v1", "jobs", "Job", True),
]
MIRRORD_RESOURCES = [
    ("mirrord.metalbear.co", "v1", "mirrordpropertylists", "MirrordPropertyList", True),
    ("queues.mirrord.metalbear.co", "v1", "mirrordsplitconfigs", "MirrordSplitConfig", True),
    ("queues.mirrord.metalbear.co", "v1alpha", "mirrordkafkaclientconfigs", "MirrordKafkaClientConfig", True),
    ("queues.mirrord.metalbear.co", "v1alpha", "mirrordkafkatopicsconsumers", "MirrordKafkaTopicsConsumer", True),
]
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
_NAMESPACES = re.compile(r"^/api/v1/namespaces(?:/([^/]+))?/?$")
_original_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock reads /api/v1/namespaces/NAME as "everything in namespace NAME"; for the Namespace object it is not."""
    match = _NAMESPACES.match(path)
    if match:
        return parsing.ParsedPath(group="", version="v1", plural="namespaces", name=match.group(1))
    return _original_parse_path(path)


parsing.parse_path = _parse_path


class Cluster(KubernetesEmulator):
    """kmock's emulator with the fixes above; `objects_of(kind)` reads back what was applied."""

    kinds: dict[str, str]
    # (namespace, pod, port) -> (host, port) on 127.0.0.1 that the pod's port stands for
    forwards: dict[tuple[str, str, int], tuple[str, int]]

    def add_ready_pod(self, namespace: str, name: str, app: str, ports: dict[int, tuple[str, int]]) -> None:
        """A running, ready pod of workload `app` whose ports are served by local listeners (the emulator has no
        kubelet, so the test says where each port goes)."""
        self.objects[resource("", "v1", "pods"), namespace, name] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": app}},
            "spec": {"containers": [{"name": app, "image": f"{app}:emulated"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
        self.forwards = getattr(self, "forwards", {})
        for port, where in ports.items():
            self.forwards[namespace, name, port] = where

    def on_create(self, kind: str, hook: Callable[[dict[str, Any]], None]) -> None:
        """Call `hook(object)` after an object of `kind` is created: the test plays the controller and kubelet."""
        self.hooks = {**getattr(self, "hooks", {}), kind: hook}

    def add_log(self, namespace: str, pod: str, path: Path, alive: Callable[[], bool]) -> None:
        """The pod's log is the file `path`, growing while `alive()` (a process the test started for the pod)."""
        self.logs = {**getattr(self, "logs", {}), (namespace, pod): (path, alive)}

    async def _log(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path, alive = self.logs[request.namespace or "", request.name or ""]
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request._raw_request)
        sent = 0
        while True:
            running = alive()
            data = path.read_bytes()[sent:] if path.exists() else b""
            if data:
                await response.write(data)
                sent += len(data)
            if not running or request.params.get("follow") != "true":
                break
            await asyncio.sleep(0.05)  # polling a growing file, as `tail -f` does
        await response.write_eof()
        return response

    async def _portforward(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """The API server's side of `pods/portforward` (protocol v4.channel.k8s.io, one port): channel 0 carries
        data, channel 1 errors, each opened with a frame holding the port number."""
        port = int(request.params.get("ports", "0"))
        host, local = self.forwards[request.namespace or "", request.name or "", port]
        ws = aiohttp.web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
        await ws.prepare(request._raw_request)
        reader, writer = await asyncio.open_connection(host, local)
        for channel in (0, 1):
            await ws.send_bytes(bytes([channel]) + port.to_bytes(2, "little"))

        async def upstream() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == b"\0":
                    writer.write(msg.data[1:])
                    await writer.drain()
            writer.close()

        async def downstream() -> None:
            # The websocket stays open until the client closes it: the official client drops data it has not yet
            # handed over when the server closes first.
            while data := await reader.read(65536):
                await ws.send_bytes(b"\0" + data)

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        return ws

    def declare(self, served: list[tuple[str, str, str, str, bool]]) -> None:
        self.kinds = getattr(self, "kinds", {})
        for group, version, plural, kind, namespaced in served:
            subresources = {"log", "portforward", "exec", "status"} if plural == "pods" else {"status"}
            self.resources[resource(group, version, plural)] = ResourceInfo(kind=kind, namespaced=namespaced,
                                                                            verbs=VERBS, subresources=subresources)
            self.kinds[plural] = kind

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.subresource == "portforward":
            return await self._portforward(request)
        if request.subresource == "log":
            return await self._log(request)
        method = (request.method or "").upper()
        if request.resource is not None and isinstance(request.data, dict):
            if method == "POST":
                meta = request.data.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
                meta["resourceVersion"] = "1"
                meta["generation"] = 1
                if request.namespace and request.resource.plural != "namespaces":
                    meta.setdefault("namespace", request.namespace)
            elif method in ("PUT", "PATCH") and request.name:
                key = (request.resource, request.namespace, request.name)
                if key in self.objects and not self.objects[key].deleted:
                    current = dict(self.objects[key].raw)
                    meta = current.get("metadata", {})
                    bump = {"resourceVersion": str(int(meta.get("resourceVersion", "1")) + 1)}
                    if method == "PUT":  # a replace: every key the body does not name is dropped
                        data = dict(request.data)
                        dropped = {k: None for k in current if k not in data}
                        data.setdefault("metadata", {}).update(
                            {k: meta[k] for k in ("uid", "creationTimestamp") if k in meta} | bump)
                        object.__setattr__(request, "data", {**dropped, **data})
                        object.__setattr__(request, "action", parsing.enums.action.UPDATE)
                    elif merge_patch_dict(current, request.data) != current:  # kmock's own merge
                        request.data.setdefault("metadata", {}).update(bump)
        response = await super()._handle(request)
        if method == "POST" and request.resource is not None and response.status == 200:
            response.set_status(201)
            hook = getattr(self, "hooks", {}).get(self.kinds.get(request.resource.plural or "", ""))
            if hook is not None and isinstance(request.data, dict):
                hook(request.data)
        if request.action == parsing.enums.action.LIST and isinstance(response, aiohttp.web.Response) \
                and response.status == 200 and request.resource is not None \
                and (request.resource.plural or "") in self.kinds:
            body = yaml.safe_load(response.text)
            kind = self.kinds.get(request.resource.plural or "", "")
            group = request.resource.group
            body["kind"] = f"{kind}List"
            body["apiVersion"] = f"{group}/{request.resource.version}" if group else request.resource.version
            body["metadata"] = {"resourceVersion": "1"}
            body["items"] = [i for i in body["items"] if self._selected(i, request.params)]
            response.text = json.dumps(body)
        return response

    @staticmethod
    def _selected(obj: dict[str, Any], params: dict[str, str]) -> bool:
        """labelSelector and fieldSelector, the equality forms (k=v,k2=v2), which is what clients here send."""
        labels = obj.get("metadata", {}).get("labels") or {}
        for term in filter(None, params.get("labelSelector", "").split(",")):
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
        for term in filter(None, params.get("fieldSelector", "").split(",")):
            path, _, value = term.partition("=")
            node: Any = obj
            for part in path.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if str(node) != value:
                return False
        return True

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_version(request)
        if request.resource is not None and request.resource.group == "":
            payload["groupVersion"] = request.resource.version  # the core group is "v1", not "/v1"
        return payload

    def objects_of(self, kind: str) -> dict[tuple[str | None, str], dict[str, Any]]:
        return {(ns, name): obj.raw for (res, ns, name), obj in self.objects.items()
                if not obj.deleted and self.kinds.get(res.plural) == kind}


@contextmanager
def running(mirrord: bool = True) -> Iterator[tuple[Cluster, str]]:
    """The emulator on a free port of 127.0.0.1, served from a thread; yields it and its URL."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        async with Cluster() as cluster, Server(cluster, host="127.0.0.1") as server:
            cluster.declare(RESOURCES + (MIRRORD_RESOURCES if mirrord else []))
            state["cluster"], state["url"] = cluster, str(server.url).rstrip("/")
            state["stop"] = asyncio.Event()
            ready.set()
            await state["stop"].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the Kubernetes emulator did not start")
    try:
        yield state["cluster"], state["url"]
    finally:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(10)


def kubeconfig(path: Path, url: str, context: str = "emulator") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": context, "cluster": {"server": url}}],
        "users": [{"name": context, "user": {"token": "emulator"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
    }))
    return path
