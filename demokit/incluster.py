"""`./run load --in-cluster`: the generator as a Kubernetes Job from the app image, next to the order service, for
rates a port-forward cannot carry. Its progress is read from the pod's log (one JSON line per second) and its last
line is the same report the local generator makes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import yaml

from demokit import images, probes, render
from demokit.errors import NOT_READY, UserError
from demokit.portforward import api_client
from demokit.targets import Target
from metalmart.loadgen import LoadConfig

PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


def job_manifest(target: Target, config: LoadConfig, image_tag: str) -> dict[str, Any]:
    args = ["--rate", f"{config.rate:g}", "--duration", f"{config.duration:g}", "--base-url", "http://order:8084",
            "--catalogue-url", "http://catalogue:8082", "--email-domain", config.email_domain,
            "--match-ratio", f"{config.match_ratio:g}", "--max-inflight", str(config.max_inflight),
            "--run-id", config.run_id]
    if config.email_user:
        args += ["--email-user", config.email_user]
    values = {**render.variables(target, image_tag), "load_run_id": config.run_id, "load_args": args}
    text = render.environment().get_template("k8s/load/job.yaml.j2").render(**values)
    return yaml.safe_load(text)


def run(target: Target, config: LoadConfig, on_progress: Callable[[dict[str, Any]], None],
        say: Callable[[str], None], start_timeout: float = 180.0) -> dict[str, Any]:
    """Create the Job, follow its log, return the report; the Job is deleted however the run ends."""
    from kubernetes import client

    api = api_client(target)
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    ns = str(target.get("metalmart_namespace"))
    job = job_manifest(target, config, images.content_tag())
    name = job["metadata"]["name"]
    batch.create_namespaced_job(ns, job)
    say(f"load: Job {ns}/{name} started from image {job['spec']['template']['spec']['containers'][0]['image']}")
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
