"""`./run load --in-cluster`: the generator as a Kubernetes Job from the app image, next to the order service, for
rates a port-forward cannot carry. Its progress is read from the pod's log (one JSON line per second) and its last
line is the same report the local generator makes."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from demokit import images, probes
from demokit.errors import NOT_READY, UserError
from demokit.kube import cluster
from demokit.kube.cluster import PlaybookRun
from demokit.kube.portforward import api_client
from demokit.targets import Target
from metalmart.loadconfig import LoadConfig

PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


def _job(target: Target, config: LoadConfig, extra: dict[str, Any] | None = None) -> PlaybookRun:
    """Apply (or, with metalmart_render_dir in `extra`, render) the load Job through playbooks/load-job.yml. The
    generator inside reaches the services by the URLs the cluster gives them (metalmart_urls)."""
    urls = target.get("metalmart_urls")
    values = {"load_run_id": config.run_id,
              "load_args": config.args(base_url=urls["order"], catalogue_url=urls["catalogue"]), **(extra or {})}
    return cluster.run_playbook(target, "load-job", lambda _m: None, values, log_name="load-job")


def job_manifest(target: Target, config: LoadConfig) -> dict[str, Any]:
    """The Job `./run load --in-cluster` would start, rendered without a cluster."""
    with tempfile.TemporaryDirectory(prefix="metalmart-load-job-") as folder:
        _job(target, config, {"metalmart_render_dir": folder})
        return yaml.safe_load(next((Path(folder) / "groups").glob("*.yaml")).read_text())[0]


def run(target: Target, config: LoadConfig, on_progress: Callable[[dict[str, Any]], None],
        say: Callable[[str], None], start_timeout: float = 180.0) -> dict[str, Any]:
    """Create the Job, follow its log, return the report; the Job is deleted however the run ends."""
    from kubernetes import client

    api = api_client(target)
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    ns = str(target.get("metalmart_namespace"))
    name = f"load-{config.run_id}"
    _job(target, config)
    say(f"load: Job {ns}/{name} started from image {target.get('metalmart_image_name')}:{images.content_tag()}")
    try:
        pod = _wait_for_pod(core, ns, config.run_id, start_timeout)
        report = None
        # A log asked for too early (the container still starting) is refused for a moment: ask again, bounded.
        try:
            stream = probes.until(lambda: core.read_namespaced_pod_log(pod, ns, follow=True,
                                                                       _preload_content=False),
                                  30, f"the log of pod {pod}")
        except probes.NotReady as exc:
            raise UserError(f"{exc}; kubectl -n {ns} describe pod {pod}", NOT_READY) from None
        for line in lines(stream.stream()):
            event = _event(line)
            if event is None:
                continue
            if event["event"] == "progress":
                on_progress(event)
            elif event["event"] == "report":
                report = event["report"]
                break  # the last line: the Job is done (a follow may stay open until the pod is gone)
            elif event["event"] == "error":
                raise UserError(f"the in-cluster generator stopped: {event['message']}", int(event["code"]))
        if report is None:
            raise UserError(f"the Job's pod {pod} ended without a report; kubectl -n {ns} logs {pod}", NOT_READY)
        return report
    finally:
        with contextlib.suppress(client.ApiException):
            batch.delete_namespaced_job(name, ns, propagation_policy="Background")


def lines(chunks: Any) -> Any:
    """Whole lines from a stream of byte chunks: a line split across two chunks is carried over, and the last one
    counts even without a final newline (the report is the last line)."""
    partial = b""
    for chunk in chunks:
        partial += chunk
        *complete, partial = partial.split(b"\n")
        for line in complete:
            yield line.decode(errors="replace")
    if partial:
        yield partial.decode(errors="replace")


def _event(line: str) -> dict[str, Any] | None:
    with contextlib.suppress(ValueError):
        data = json.loads(line)
        if isinstance(data, dict) and "event" in data:
            return data
    return None


def _wait_for_pod(core: Any, ns: str, run_id: str, timeout: float) -> str:
    """The Job's pod once it runs (or has already finished); an image that cannot be pulled fails at once."""

    def started() -> str:
        pods = core.list_namespaced_pod(ns, label_selector=f"metalmart.metalbear.co/run-id={run_id}").items
        if not pods:
            raise probes.NotReady("no pod yet")
        pod = pods[0]
        for status in (pod.status.container_statuses or []) if pod.status else []:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason in PULL_FAILURES:
                raise UserError(f"the load Job's image cannot be pulled ({waiting.reason}); the app image of "
                                "this code is not in the cluster yet: ./run deploy", NOT_READY)
        if not pod.status or pod.status.phase not in ("Running", "Succeeded", "Failed"):
            raise probes.NotReady(f"pod {pod.metadata.name} is {pod.status.phase if pod.status else 'pending'}")
        return pod.metadata.name

    try:
        return probes.until(started, timeout, "the load Job's pod")
    except probes.NotReady as exc:
        raise UserError(str(exc), NOT_READY) from None
