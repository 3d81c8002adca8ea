"""Cluster targets (minikube and the regions): preflight, and the playbooks run with one line per step for people
and Ansible's whole output in a log file."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demokit import images
from demokit.errors import NOT_READY, UNREACHABLE, USAGE, UserError
from demokit.targets import ROOT, Target, start_command
from metalmart import services as table

Say = Callable[[str], None]
INSTALL = {
    "minikube": "install minikube: https://minikube.sigs.k8s.io/docs/start/",
    "container runtime": "install Docker (https://docs.docker.com/get-docker/) or Podman (https://podman.io/docs/installation)",
    "helm": "install Helm: https://helm.sh/docs/intro/install/",
}
_RECAP = re.compile(r"^\S+\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


CREDENTIALS = "MIRRORD_CLOUD_API_KEY or MIRRORD_LICENSE_KEY, or Ansible Vault"


def licence_given() -> bool:
    """A credential for the operator in the environment: the cloud API key (chart 3.179+) or the licence key (see
    has_vault_licence for Ansible Vault)."""
    return bool(os.environ.get("MIRRORD_CLOUD_API_KEY") or os.environ.get("MIRRORD_LICENSE_KEY"))


def tool_path() -> str:
    """PATH for Ansible: the user's, then (as a fallback) the pinned Helm 3 that `./run cluster start` builds."""
    from demokit.testcluster import kubebuild

    helm = kubebuild.binary("helm")
    extra = [str(helm.parent)] if helm.is_file() else []
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", ""), *extra])


def missing_tools(target: Target, vault_licence: bool = False, say: Say | None = None) -> list[str]:
    """What the target's deploy needs and this machine lacks, each with how to install it. Helm, needed only for the
    operator's chart, is built from its pinned module where Go is here (once, said first), as `./run cluster start`
    builds the rest of a cluster."""
    needed: list[tuple[str, tuple[str, ...]]] = []
    if target.kind == "minikube":
        needed += [("minikube", ("minikube",)), ("container runtime", ("docker", "podman"))]
    if licence_given() or vault_licence:
        needed.append(("helm", ("helm",)))
        if not shutil.which("helm", path=tool_path()) and shutil.which("go") and say is not None:
            from demokit.testcluster import kubebuild

            say(f"no helm here: building the pinned Helm {kubebuild.HELM} from its Go module (once)")
            kubebuild.ensure(say, ("helm",))
    path = tool_path()
    return [f"{name} is missing: {INSTALL[name]}" for name, cmds in needed
            if not any(shutil.which(c, path=path) for c in cmds)]


def helm_problem() -> str | None:
    """kubernetes.core 6.2.0 (in ansible 12.3.0) predates Helm 4: its helm modules misread Helm 4 (e.g. "too many
    values to unpack" with a plugin installed, kubernetes.core#1041). Refuse it before anything runs."""
    helm = shutil.which("helm", path=tool_path())
    if helm is None:
        return None
    done = subprocess.run([helm, "version", "--template", "{{.Version}}"], capture_output=True, text=True,
                          timeout=30)
    version = done.stdout.strip()
    if done.returncode != 0 or not version.startswith("v"):
        return f"{helm} did not tell its version ({(done.stderr or done.stdout).strip()[:120]}); is it Helm 3?"
    if not version.startswith("v3."):
        return (f"{helm} is Helm {version}; the pinned kubernetes.core 6.2.0 drives Helm 3 only (Helm 4 breaks its "
                "helm modules, kubernetes.core#1041): install Helm 3 (https://helm.sh/docs/intro/install/, e.g. "
                "v3.21) first on PATH")
    return None


def has_vault_licence(target: Target) -> bool:
    """An Ansible Vault file among the target's group_vars (e.g. group_vars/all/vault.yml holding
    mirrord_license_key); its content is encrypted, so only its presence can be seen without the password."""
    return any(p.is_file() and p.read_text(errors="ignore").startswith("$ANSIBLE_VAULT")
               for p in (target.path / "group_vars").rglob("*"))


def verify_order_problem(target: Target) -> str | None:
    """The verify step's order must reach the cluster's processor even while a mirrord session runs."""
    from metalmart.smoke import SMOKE_EMAIL

    pattern = str(target.get("mirrord_config_email_filter") or "")
    try:
        taken = bool(pattern) and re.search(pattern, SMOKE_EMAIL) is not None
    except re.error:
        return None  # the mirrord config's own check names a filter that is not a regex
    if taken:
        return (f"mirrord_config_email_filter {pattern!r} matches the verify order's e-mail {SMOKE_EMAIL}: a running "
                "mirrord session would take that order and fresh-start would wait for it; narrow the filter to the "
                "demo's addresses (e.g. '^.+@metalbear\\.com$')")
    return None


def preflight(target: Target, say: Say | None = None) -> None:
    licence = has_vault_licence(target) or licence_given()
    problems = missing_tools(target, licence, say)
    if not problems and licence:
        problem = helm_problem()
        problems = [problem] if problem else []
    if not problems:
        problem = verify_order_problem(target)
        problems = [problem] if problem else []
    if not problems and target.kind == "minikube":
        from demokit.kube import minikube

        problem = minikube.problem(target)
        problems = [problem] if problem else []
    if problems:
        raise UserError("; ".join(problems), NOT_READY)


@dataclass
class PlaybookRun:
    changed: int
    log: Path
    # What the playbook told ./run through set_stats for the target's cluster (the summary after a fresh-start).
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)


def log_path(target: Target, playbook: str) -> Path:
    return target.state_dir() / f"ansible-{playbook}.log"


def run_playbook(target: Target, playbook: str, say: Say, extra: dict[str, Any] | None = None,
                 verbose: bool = False, tags: tuple[str, ...] = (), log_name: str | None = None,
                 check: bool = False) -> PlaybookRun:
    """Run playbooks/<playbook>.yml on the target (only the roles tagged `tags`, when given). Extra variables go
    through a file (never the command line); a licence reaches Ansible only through the environment or Vault."""
    values = {"metalmart_image_tag": images.content_tag(), **(extra or {})}
    log = log_path(target, log_name or playbook)
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(values, fh)
        extra_file = fh.name
    with tempfile.NamedTemporaryFile("w", suffix=".stats.json", delete=False) as fh:
        stats_file = Path(fh.name)
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(target.path / "hosts.yml"),
               str(ROOT / "playbooks" / f"{playbook}.yml"), "-e", f"@{extra_file}",
               *(["--tags", ",".join(tags)] if tags else []),
               # A region of several clusters: this run is for the target's cluster only.
               *(["--limit", target.host] if len(target.hosts) > 1 else []),
               *(["--check", "--diff"] if check else [])]
    run_env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
               "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "callback_plugins"),
               "ANSIBLE_CALLBACKS_ENABLED": "metalmart_steps", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
               "METALMART_PLAYBOOK_STATS": str(stats_file), "PATH": tool_path()}
    if os.environ.get("METALMART_PROFILE_TASKS") == "1":  # ./run bench.converge: Ansible's time per task, in the log
        run_env.update(ANSIBLE_CALLBACKS_ENABLED="metalmart_steps,ansible.posix.profile_tasks",
                       PROFILE_TASKS_TASK_OUTPUT_LIMIT="all")
    say(f"running {log_name or playbook} on {target.name}; Ansible's log: {log}")
    changed = failed = 0
    try:
        with log.open("w") as out, subprocess.Popen(command, cwd=ROOT, env=run_env, stdout=subprocess.PIPE,
                                                    text=True, bufsize=1) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                if verbose:
                    sys.stdout.write(line)
                m = _RECAP.match(line)
                if m:
                    changed += int(m.group(1))
                    failed += int(m.group(2)) + int(m.group(3))
            rc = proc.wait()
        stats = stats_file.read_text()
    finally:
        Path(extra_file).unlink(missing_ok=True)
        stats_file.unlink(missing_ok=True)
    if rc != 0 or failed:
        raise UserError(f"{log_name or playbook} failed on {target.name} (ansible-playbook exited {rc}); the failing "
                        f"step is above, the whole log is {log}", NOT_READY)
    return PlaybookRun(changed, log, json.loads(stats or "{}").get(target.host, {}))


def confirm_teardown(target: Target, yes: bool, delete_cluster: bool) -> None:
    if yes:
        return
    what = f"the minikube profile {target.get('minikube_profile')}" if delete_cluster else \
        f"namespace {target.get('metalmart_namespace')} (app, Kafka, PostgreSQL and their data)"
    if not sys.stdin.isatty():
        raise UserError(f"teardown deletes {what}; add --yes to confirm", USAGE)
    answer = input(f"delete {what} on {target.name}? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise UserError("nothing deleted", USAGE)


OWNER_LABEL = "metalmart.metalbear.co/installed-by"


def operator_state(target: Target, api: Any) -> str:
    """The truth about the mirrord operator: installed by this project, running but someone else's, or absent."""
    from kubernetes import client

    ns = str(target.get("metalmart_operator_namespace"))
    try:
        client.ApiregistrationV1Api(api).read_api_service("v1.operator.metalbear.co")
    except client.ApiException as exc:
        if exc.status == 404:
            return "not installed"
        raise
    try:
        labels = client.CoreV1Api(api).read_namespace(ns).metadata.labels or {}
    except client.ApiException:
        labels = {}
    try:
        deployment = api.sanitize_for_serialization(client.AppsV1Api(api).read_namespaced_deployment(
            "mirrord-operator", ns))
    except client.ApiException:
        deployment = None
    return describe_operator(True, labels.get(OWNER_LABEL) == "metalmart", deployment)


def describe_operator(installed: bool, ours: bool, deployment: dict[str, Any] | None) -> str:
    """The operator in one phrase: not installed; installed by this project or by someone else (left alone); and
    how many of its pods are ready. The one wording, for `./run status` and doctor here and for the summary after a
    fresh-start (roles/metalmart/tasks/summary.yml, through filter_plugins/metalmart.py)."""
    if not installed:
        return "not installed"
    owner = "installed by this project" if ours else "running, installed by someone else (left alone)"
    if not deployment:
        return owner
    return (f"{owner}, {(deployment.get('status') or {}).get('readyReplicas') or 0}/"
            f"{(deployment.get('spec') or {}).get('replicas')} ready")


def operator_image(target: Target, api: Any) -> str | None:
    """The image the mirrord operator's Deployment runs (its tag is the operator's version); None when there is none."""
    from kubernetes import client

    try:
        op = client.AppsV1Api(api).read_namespaced_deployment("mirrord-operator",
                                                              str(target.get("metalmart_operator_namespace")))
    except client.ApiException:
        return None
    containers = op.spec.template.spec.containers or []
    return str(containers[0].image) if containers else None


def status(target: Target) -> dict[str, Any]:
    """Workloads and their readiness, DEMO_MODE, the operator and the splitting resources, read from the cluster."""
    from kubernetes import client
    from urllib3.exceptions import HTTPError

    from demokit.kube.portforward import api_client

    api = api_client(target)
    ns = target.get("metalmart_namespace")
    apps, custom = client.AppsV1Api(api), client.CustomObjectsApi(api)
    try:
        deployments = apps.list_namespaced_deployment(ns).items
        statefulsets = apps.list_namespaced_stateful_set(ns).items
    except client.ApiException as exc:
        if exc.status == 404:
            deployments, statefulsets = [], []
        else:
            raise UserError(f"the cluster refused to list {ns}: {exc.status} {exc.reason}", NOT_READY) from None
    except HTTPError as exc:
        raise UserError(f"the cluster of target {target.name!r} is unreachable ({exc.__class__.__name__}); "
                        f"is it running? {start_command(target)}", UNREACHABLE) from None
    workloads, demo_mode = [], None
    for kind, items in (("StatefulSet", statefulsets), ("Deployment", deployments)):
        for w in items:
            want = w.spec.replicas or 0
            ready = (w.status.ready_replicas if w.status else 0) or 0
            container = w.spec.template.spec.containers[0]
            workloads.append({"kind": kind, "name": w.metadata.name, "ready": ready, "replicas": want,
                              "image": container.image})
            if w.metadata.name == table.by_command("processor").name:
                env = {e.name: e.value for e in container.env or []}
                demo_mode = env.get("DEMO_MODE") == "true"
    operator = operator_state(target, api)
    splitting = []
    queues, operator_ns = "queues.mirrord.metalbear.co", str(target.get("metalmart_operator_namespace"))
    # Both models, whichever the inventory chose: what is in the cluster is what counts.
    kinds = [("mirrord.metalbear.co", "v1", "mirrordpropertylists", ns),
             (queues, "v1", "mirrordsplitconfigs", ns),
             (queues, "v1alpha", "mirrordkafkaclientconfigs", operator_ns),
             (queues, "v1alpha", "mirrordkafkatopicsconsumers", ns)]
    for group, version, plural, where in kinds:
        try:
            found = custom.list_namespaced_custom_object(group, version, where, plural,
                                                         label_selector="app.kubernetes.io/part-of=metalmart")
            splitting += [{"kind": o["kind"], "name": o["metadata"]["name"], "namespace": where}
                          for o in found["items"]]
        except client.ApiException:
            continue
    return {"target": target.name, "namespace": ns, "workloads": workloads, "demo_mode": demo_mode,
            "operator": operator, "splitting": splitting}


def queue_ids(target: Target) -> set[str]:
    """The queue ids the target's splitting resources declare in the cluster (either model); empty when there are
    none (or the target is local)."""
    if target.kind == "local":
        return set()
    from kubernetes import client
    from urllib3.exceptions import HTTPError

    from demokit.kube.portforward import api_client

    custom = client.CustomObjectsApi(api_client(target))
    ns = str(target.get("metalmart_namespace"))
    found: set[str] = set()
    for version, plural, field in (("v1", "mirrordsplitconfigs", "queues"), ("v1alpha", "mirrordkafkatopicsconsumers",
                                                                             "topics")):
        try:
            items = custom.list_namespaced_custom_object("queues.mirrord.metalbear.co", version, ns, plural)["items"]
        except client.ApiException as exc:
            if exc.status == 404:
                continue
            raise UserError(f"the cluster refused to list {plural}: {exc.status} {exc.reason}", NOT_READY) from None
        except HTTPError as exc:
            raise UserError(f"the cluster of target {target.name!r} is unreachable ({type(exc).__name__})",
                            UNREACHABLE) from None
        found |= {q["id"] for item in items for q in item.get("spec", {}).get(field, [])}
    return found


OPERATOR_API = ("operator.metalbear.co", "v1")  # served by the operator itself (its APIService), not by a CRD
SPLIT_SESSIONS = ("queues.mirrord.metalbear.co", "v1", "mirrordclustersplitsessions")


def operator_view(target: Target) -> dict[str, Any]:
    """The mirrord operator's own view of queue splitting in the demo's namespace, as `kubectl get queuesplits` and
    `mirrord queues status` show it (CLI 3.227+): its QueueSplits (operator.metalbear.co/v1, answered only by a
    running operator) and the cluster-scoped MirrordClusterSplitSessions whose target is in the namespace (a CRD the
    chart installs; one per session). `unavailable` says in one line why a part could not be read: no operator
    serves it, or the chart's CRDs are not there."""
    from kubernetes import client
    from urllib3.exceptions import HTTPError

    from demokit.kube.portforward import api_client

    custom = client.CustomObjectsApi(api_client(target))
    ns = str(target.get("metalmart_namespace"))
    view: dict[str, Any] = {"queue_splits": None, "split_sessions": None, "unavailable": []}
    try:
        items = custom.list_namespaced_custom_object(*OPERATOR_API, ns, "queuesplits")["items"]
        view["queue_splits"] = [{"name": i["metadata"]["name"], "status": i.get("status") or {}} for i in items]
    except client.ApiException as exc:
        view["unavailable"].append(f"queue splits: no mirrord operator answers {'/'.join(OPERATOR_API)} "
                                   f"({exc.status} {exc.reason})")
    except HTTPError as exc:
        raise UserError(f"the cluster of target {target.name!r} is unreachable ({type(exc).__name__})",
                        UNREACHABLE) from None
    try:
        items = custom.list_cluster_custom_object(*SPLIT_SESSIONS)["items"]
    except client.ApiException as exc:
        view["unavailable"].append(f"split sessions: the operator's CRDs are not installed ({exc.status} {exc.reason})")
        return view
    view["split_sessions"] = [split_session(i) for i in items if (i.get("spec") or {}).get("namespace") == ns]
    return view


def split_session(item: dict[str, Any]) -> dict[str, Any]:
    """A MirrordClusterSplitSession as a person reads it: whose, on what, its state, and whether it is left behind
    (its session gone: no owner, or an error while it was set up or cleaned up)."""
    spec, status = item.get("spec") or {}, item.get("status") or {}
    owner = spec.get("owner") or {}
    # The status is one of these (the chart's CRD, a oneOf); a session not yet given one is starting.
    state = next((k for k in ("ready", "resourcesReady", "starting", "startError", "cleanupError") if k in status),
                 "starting")
    orphaned = not (item["metadata"].get("ownerReferences") or [])
    return {"name": item["metadata"]["name"], "owner": owner.get("username") or owner.get("k8sUsername") or "?",
            "session_key": spec.get("sessionKey"), "target": (spec.get("target") or {}).get("name"),
            "queues": [q.get("id") for q in spec.get("queues") or []], "state": state,
            "created": item["metadata"].get("creationTimestamp"),
            "left_behind": orphaned or state in ("startError", "cleanupError")}


def delete_split_session_command(target: Target, name: str) -> str:
    """What removes a split session left behind, against the target's own context."""
    where = "".join(f" --{flag} {shlex.quote(str(value))}" for flag, value in (
        ("kubeconfig", target.kubeconfig()), ("context", target.get("kube_context"))) if value)
    return f"kubectl{where} delete {SPLIT_SESSIONS[2]}.{SPLIT_SESSIONS[0]} {name}"
