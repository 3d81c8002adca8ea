"""`./run doctor`: the demo guide's troubleshooting list as live checks, one line each, with the fix.

Blocking checks are what breaks the demo (a service down, no topic, a processor that does not consume, a filter
that matches none of the orders being sent, and on a cluster: no operator, no splitting resources, a queue id the
config does not name, no licence, no mirrord CLI); the others say what is going on (DEMO_MODE, whether orders are
arriving now)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from demokit import probes, targets
from demokit.config import demomode, mirrordcfg
from demokit.errors import UNREACHABLE, UserError
from demokit.kafka import describe
from demokit.kube import cluster, reach
from demokit.observe.metrics import Collector, leftovers, rates
from demokit.targets import Target

SAMPLE_S = 2.0  # between the two metrics snapshots that tell whether the processor consumes and orders arrive


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    blocking: bool = True


def _http(url: str) -> Any:
    return probes.http_ok(url, timeout=3.0)


def run(target: Target, config: Path) -> list[Check]:
    checks: list[Check] = []
    unreachable = False
    try:
        workloads = _workloads(target)
        checks.append(workloads)
        with reach.endpoints(target) as found:
            if workloads.ok and target.kind != "local":
                _answering(workloads, found, target)
            checks += _app(target, found, config)
    except UserError as exc:
        # A cluster that does not answer is the one problem: the operator's checks would only say it again.
        unreachable = exc.code == UNREACHABLE
        failed = Check("the stack answers", False, str(exc),
                       "" if unreachable else f"./run fresh-start --target {target.name}")
        # One line per check: a stack that looked ready but cannot be reached replaces its ✓; a ✗ already said
        # (nothing deployed, a workload down) stays the one line.
        if not any(c.name == failed.name and not c.ok for c in checks):
            checks = [c for c in checks if c.name != failed.name] + [failed]
    if target.kind != "local" and not unreachable:
        checks += _operator(target, config)
    checks.append(_mirrord_cli())
    return checks


def _workloads(target: Target) -> Check:
    fix = f"./run fresh-start --target {target.name}; ./run status --target {target.name}"
    if target.kind == "local":
        from demokit.local.localstack import LocalStack

        stack = LocalStack(target)
        health = stack.health()
        down = {k: v for k, v in health.items() if v != "ready"}
        detail = (f"every process ready (broker: {stack.broker_name})" if not down else
                  "; ".join(f"{k} {v}" for k, v in down.items()))
        return Check("the stack answers", not down, detail, fix if down else "")
    data = cluster.status(target)
    # A workload scaled to zero is down too (0 of 0 ready would read as ready).
    down = [f"{w['name']} {w['ready']}/{w['replicas']}" + (" (scaled to zero)" if not w["replicas"] else "")
            for w in data["workloads"] if w["ready"] < w["replicas"] or not w["replicas"]]
    if not data["workloads"]:
        return Check("the stack answers", False, f"nothing deployed in {data['namespace']}", fix)
    return Check("the stack answers", not down, f"every workload ready (broker: {describe(target)})" if not down
                 else "not ready: " + ", ".join(down), fix if down else "")


def _answering(check: Check, found: reach.Endpoints, target: Target) -> None:
    """Ready workloads that do not answer through the port-forwards (pods that only look ready, as on kwok's nodes)
    turn the check into a ✗: ready is not answering."""
    from metalmart.services import probe

    silent = []
    for command in ("order", "catalogue"):
        try:
            probes.http_ok(f"{found.url(command)}{probe('health')}", timeout=5.0)
        except Exception as exc:
            silent.append(f"{command} ({exc})")
    if found.bootstrap:
        try:
            probes.broker_answers(str(found.bootstrap), 5.0)
        except Exception as exc:
            silent.append(f"the broker ({exc})")
    if silent:
        check.ok = False
        check.detail = f"every workload ready, but these do not answer: {'; '.join(silent)}"
        check.fix = f"./run status --target {target.name}"


def _app(target: Target, found: reach.Endpoints, config: Path) -> list[Check]:
    checks: list[Check] = []
    try:
        products = _http(f"{found.url('catalogue')}/api/products")
        seeded = isinstance(products, list) and len(products) > 0
        checks.append(Check("the catalogue is seeded", seeded, f"{len(products) if seeded else 0} products",
                            "" if seeded else f"./run fresh-start --target {target.name} (it seeds the catalogue)"))
    except Exception as exc:
        checks.append(Check("the catalogue is seeded", False, f"the catalogue does not answer ({exc})",
                            f"./run status --target {target.name}"))
    topic, group = str(target.get("metalmart_kafka_topic")), str(target.get("metalmart_kafka_group_id"))
    collector = Collector(str(found.bootstrap), topic, group, found.url("order"),
                          topic_format=str(target.get("metalmart_kafka_split_topic_format")))
    first = collector.snapshot()
    time.sleep(SAMPLE_S)  # the sampling interval of the two snapshots, not a readiness wait
    second = collector.snapshot()
    delta = rates(first, second)
    original = next((t for t in second["topics"] if t["role"] == "original"), None)
    if "broker" in second["errors"]:
        checks.append(Check("the order topic exists", False,
                            f"the broker does not answer: {second['errors']['broker']}",
                            f"./run status --target {target.name}"))
    else:
        want = target.get("kafka_topic_partitions")
        checks.append(Check("the order topic exists", original is not None,
                            f"{topic}, {len(original['partitions'])} partitions" if original else f"no topic {topic}",
                            "" if original else f"./run fresh-start --target {target.name} (it creates {topic}, "
                                                f"{want} partitions)"))
        mine = next((g for g in second["consumer_groups"] if g["group"] == group), None)
        before = next((g for g in first["consumer_groups"] if g["group"] == group), None)
        lag, growing = (mine["lag_total"] if mine else 0), (mine and before and mine["lag_total"] > before["lag_total"])
        stuck = lag > 0 and (delta["consumed_per_s"] or 0) <= 0
        beyond = (mine or {}).get("beyond_end") or []
        ok = not growing and not stuck and not beyond
        fix = (f"the group's offsets are beyond the topic's end (was it deleted and created again?): restart the "
               f"processor, or reset them: kafka-consumer-groups.sh --group {group} --topic {topic} --reset-offsets "
               "--to-latest --execute (with the processor stopped)") if beyond else \
            f"is the processor running? ./run status --target {target.name}; its log"
        checks.append(Check("the processor's group is consuming", bool(ok),
                            f"group {group}, lag {lag}" + (" and growing" if growing else "") +
                            (", nothing consumed in the last seconds" if stuck else "") +
                            (f", committed beyond the end: {'; '.join(beyond)}" if beyond else ""),
                            "" if ok else fix))
        left = leftovers(second)
        checks.append(Check("no leftover temporary topics", not left,
                            f"{len(left)} no one reads: {', '.join(left[:3])}{' …' if len(left) > 3 else ''}" if left
                            else "every temporary topic of the split is read", f"./run split-topics --target "
                            f"{target.name} --delete-unread" if left else "", blocking=False))
        produced = delta["produced_per_s"] or 0.0
        checks.append(Check("orders are arriving now", produced > 0,
                            f"{produced:.1f} orders/s" if produced > 0 else "no orders in the last seconds",
                            "" if produced > 0 else f"./run load --target {target.name} --preset medium",
                            blocking=False))
    values = demomode.live(target)
    now = demomode.state(values)
    checks.append(Check("DEMO_MODE", True, f"{now}" + (f": {demomode.per_order(now == 'on')}" if now in ("on", "off")
                                                       else ""), blocking=False))
    checks.append(_filter_matches(found, config, target.name))
    if target.kind == "local" and target.get("local_kafka") != "apache":
        checks.append(Check("consumers of other client libraries", True,
                            "Tansu has refused a Go (sarama) consumer in a group our processor had left; for a "
                            "consumer of another language, set local_kafka: apache in "
                            f"inventories/{target.name}/group_vars/all.yml and ./run fresh-start --target "
                            f"{target.name} again", blocking=False))
    return checks


def _filter_matches(found: reach.Endpoints, config: Path, target: str) -> Check:
    name = "the mirrord filter matches the orders being sent"
    write = _write_config(config, target)
    try:
        entries = mirrordcfg.split_entries(json.loads(config.read_text()))
        kafka = next(e for _, e in entries if e.get("queue_type") == "Kafka"
                     and (isinstance(e.get("message_filter"), dict) or isinstance(e.get("jq_filter"), str)))
    except (OSError, ValueError, StopIteration) as exc:
        why = "no Kafka filter in its split_queues" if isinstance(exc, StopIteration) else str(exc)
        return Check(name, False, f"cannot read {config}: {why}", write)
    shown = kafka.get("jq_filter") or kafka.get("message_filter")
    try:
        recent = _http(f"{found.url('order')}/api/orders?limit=50")
    except Exception as exc:
        return Check(name, False, f"the order service does not answer ({exc})", f"./run status --target {target}")
    from metalmart.smoke import SMOKE_EMAIL

    # The verify order is outside every filter on purpose (a session must never take it): it is not "being sent".
    orders = [o for o in recent if o["customer_email"] != SMOKE_EMAIL]
    if not orders:
        return Check(name, True, "no orders yet to compare with", blocking=False)
    try:
        matched, checker = mirrordcfg.matched(kafka, orders)
    except ValueError as exc:
        return Check(name, False, f"the filter {shown!r} in {config.name} is refused: {exc}", write)
    if matched is None:
        return Check(name, True, f"{shown!r} ({config.name}) not compared here: {checker}", blocking=False)
    regex = (kafka.get("message_filter") or {}).get("customer_email")
    send = (f"./run load --target {target} --email-user {config.stem}"
            if regex == mirrordcfg.user_filter(config.stem, mirrordcfg.DOMAIN) else
            f"./run load --target {target} --email-user NAME with ./run mirrord-config --target {target} --user NAME")
    return Check(name, matched > 0, f"{matched} of the last {len(orders)} orders match {shown!r} ({config.name}; "
                                    f"{checker})",
                 "" if matched else f"your breakpoint will never hit; send orders it matches: {send}")


def _write_config(config: Path, target: str) -> str:
    """The command that writes `config` again, as doctor was pointed at it."""
    command = f"./run mirrord-config --target {target}"
    if config == targets.ROOT / ".mirrord" / "order-processor.json":
        return command
    if config.parent == targets.ROOT / ".mirrord" and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", config.stem):
        return f"{command} --user {config.stem}"
    return f"{command} --output {config}"


def _operator(target: Target, config: Path) -> list[Check]:
    from kubernetes import client

    from demokit.kube.portforward import api_client

    state = cluster.operator_state(target, api_client(target))
    ready = re.search(r"(\d+)/\d+ ready", state)
    running = bool(ready and int(ready.group(1)) > 0)
    version_check = _operator_version(target)
    checks = [Check("the mirrord operator runs", running, state,
                    "" if running else f"MIRRORD_CLOUD_API_KEY=… ./run fresh-start --target {target.name} (or ask the "
                                       "cluster's owner)")]
    # Without an operator there are no splitting resources, and a fresh-start without its credential changes
    # nothing: the fix names the credential.
    apply = f"./run fresh-start --target {target.name}" if running else \
        f"no operator runs, so nothing splits: give its credential ({cluster.CREDENTIALS}) and ./run fresh-start " \
        f"--target {target.name}"
    try:
        ids = cluster.queue_ids(target)
        want = mirrordcfg.split_entries(json.loads(config.read_text()))[0][0]
    except (UserError, OSError, ValueError, IndexError) as exc:
        checks.append(Check("the splitting resources match the config", False, str(exc), apply))
        ids, want = set(), ""
    else:
        ok = want in ids
        checks.append(Check("the splitting resources match the config", ok,
                            f"queue ids {', '.join(sorted(ids)) or 'none'}; {config.name} names {want!r}",
                            "" if ok else apply))
    checks += _operator_view(target)
    if version_check is not None:
        checks.append(version_check)
    # The operator's credential: the cloud API key (chart 3.179+) or the licence key, each in a Secret of its own.
    core = client.CoreV1Api(api_client(target))
    found = []
    for secret in (str(target.get("mirrord_operator_cloud_api_key_secret")),
                   str(target.get("mirrord_operator_license_secret"))):
        try:
            core.read_namespaced_secret(secret, str(target.get("metalmart_operator_namespace")))
            found.append(secret)
        except client.ApiException:
            continue
    checks.append(Check("the licence is present", bool(found) or state.startswith("running"),
                        (f"Secret {' and '.join(found)} present" if found else "no credential Secret") +
                        " (never shown)",
                        "" if found else f"MIRRORD_CLOUD_API_KEY=… ./run fresh-start --target {target.name} (or "
                                         "MIRRORD_LICENSE_KEY, or Ansible Vault)"))
    return checks


def _operator_view(target: Target) -> list[Check]:
    """The operator's own view (its QueueSplits, the cluster's split sessions), beside our reading of the topics;
    its absence is one line, never a failure: the operator is closed source and only a running one serves it."""
    try:
        view = cluster.operator_view(target)
    except UserError as exc:
        return [Check("the operator's own view of the split", True, f"not read: {exc}", blocking=False)]
    splits = view["queue_splits"]
    detail = ("; ".join(view["unavailable"][:1]) if splits is None else
              f"{len(splits)} queue split(s)" + (": " + ", ".join(
                  f"{s['name']} ({', '.join(sorted(s['status'])) or 'no status'})" for s in splits[:3]) if splits
                                                  else " (no session splits the topic now)"))
    checks = [Check("the operator's own view of the split", True, detail, blocking=False)]
    sessions = view["split_sessions"]
    if sessions is not None:
        left = [s for s in sessions if s["left_behind"]]
        checks.append(Check(
            "no split sessions left behind", not left,
            f"{len(left)} of {len(sessions)} left behind: " + ", ".join(
                f"{s['name']} ({s['owner']}, {s['state']})" for s in left[:3]) if left else
            f"{len(sessions)} split session(s) on {target.get('metalmart_namespace')}, none left behind",
            "; ".join(cluster.delete_split_session_command(target, s["name"]) for s in left[:3]) if left else "",
            blocking=False))
    return checks


def _operator_version(target: Target) -> Check | None:
    """The operator's version (its image's tag) against what the demo needs of it; None when no operator runs."""
    from demokit.kube.portforward import api_client

    image = cluster.operator_image(target, api_client(target))
    have = mirrordcfg.version(image.rsplit(":", 1)[-1]) if image else None
    if image is None:
        return None
    name = "the mirrord operator's version"
    if have is None:
        return Check(name, True, f"image {image}: no version in its tag, not checked", blocking=False)
    needs = mirrordcfg.OPERATOR_NEEDS + (
        mirrordcfg.OPERATOR_NEEDS_MANAGED if target.get("metalmart_kafka_mode") == "managed" else ())
    short = mirrordcfg.short_of(have, needs)
    if not short:
        return Check(name, True, f"{'.'.join(map(str, have))} (what the demo needs of it)")
    newest = short[-1][0]
    gaps = "; ".join(f"{what} needs {low}+" for low, what in short)
    return Check(name, False, f"{'.'.join(map(str, have))}; {gaps}",
                 f"set mirrord_operator_chart_version to {newest} or later in {target.path}/group_vars/all.yml and "
                 f"./run fresh-start --target {target.name} (an operator someone else installed: ask its owner)")


def _mirrord_cli() -> Check:
    """Not blocking on any target: VS Code's mirrord extension brings its own CLI, so a presenter who works from VS
    Code needs none on PATH; from a terminal, the fix names it."""
    found = shutil.which("mirrord")
    if not found:
        return Check("the mirrord CLI is installed", False, "no mirrord on PATH",
                     "install it: https://metalbear.co/mirrord/docs/overview/quick-start/", blocking=False)
    done = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30)
    said = (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "?"
    have = mirrordcfg.version(said)
    if done.returncode != 0 or have is None:
        return Check("the mirrord CLI is installed", False, f"`mirrord --version` said {said!r}",
                     f"install it again: {mirrordcfg.CLI_UPGRADE}", blocking=False)
    short = mirrordcfg.short_of(have, mirrordcfg.CLI_NEEDS)
    if not short:
        return Check("the mirrord CLI is installed", True, f"{said} (every beat of the demo)", blocking=False)
    newest = short[-1][0]
    return Check("the mirrord CLI is installed", False,
                 f"{said}; " + "; ".join(f"{what} needs {low}+" for low, what in short),
                 f"upgrade the mirrord CLI to {newest} or later: {mirrordcfg.CLI_UPGRADE}", blocking=False)


def as_json(checks: list[Check]) -> list[dict[str, Any]]:
    return [asdict(c) for c in checks]


def lines(checks: list[Check], mark: Callable[[bool], str]) -> list[str]:
    out = []
    for c in checks:
        text = f"{mark(c.ok)} {c.name}: {c.detail}"
        if not c.ok and c.fix:
            text += f" → {c.fix}"
        if not c.ok:
            text += " (blocks the demo)" if c.blocking else " (does not block the demo)"
        out.append(text)
    return out
