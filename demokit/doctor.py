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

from demokit import cluster, demomode, mirrordcfg, probes, reach, targets
from demokit.errors import UNREACHABLE, UserError
from demokit.kafka import describe
from demokit.metrics import Collector, rates
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
        checks.append(Check("the stack answers", False, str(exc),
                            "" if unreachable else f"./run fresh-start --target {target.name}"))
    if target.kind != "local" and not unreachable:
        checks += _operator(target, config)
    checks.append(_mirrord_cli())
    return checks


def _workloads(target: Target) -> Check:
    fix = f"./run fresh-start --target {target.name}; ./run status --target {target.name}"
    if target.kind == "local":
        from demokit.localstack import LocalStack

        stack = LocalStack(target)
        health = stack.health()
        down = {k: v for k, v in health.items() if v != "ready"}
        detail = (f"every process ready (broker: {stack.broker_name})" if not down else
                  "; ".join(f"{k} {v}" for k, v in down.items()))
        return Check("the stack answers", not down, detail, fix if down else "")
    data = cluster.status(target)
    down = [f"{w['name']} {w['ready']}/{w['replicas']}" for w in data["workloads"] if w["ready"] < w["replicas"]]
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
    collector = Collector(str(found.bootstrap), topic, group, found.url("order"))
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
        data = json.loads(config.read_text())
        split = next(iter(data["feature"]["split_queues"].values()))
        regex = split["message_filter"]["customer_email"]
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        return Check(name, False, f"cannot read {config}: {exc}", write)
    try:
        recent = _http(f"{found.url('order')}/api/orders?limit=50")
    except Exception as exc:
        return Check(name, False, f"the order service does not answer ({exc})", f"./run status --target {target}")
    try:
        pattern = re.compile(regex)
    except (re.error, TypeError) as exc:
        return Check(name, False, f"the filter {regex!r} in {config.name} is not a regular expression ({exc})",
                     write)
    from metalmart.smoke import SMOKE_EMAIL

    # The verify order is outside every filter on purpose (a session must never take it): it is not "being sent".
    emails = [o["customer_email"] for o in recent if o["customer_email"] != SMOKE_EMAIL]
    if not emails:
        return Check(name, True, "no orders yet to compare with", blocking=False)
    matched = sum(1 for e in emails if pattern.search(e))
    send = (f"./run load --target {target} --email-user {config.stem}"
            if regex == mirrordcfg.user_filter(config.stem, mirrordcfg.DOMAIN) else
            f"./run load --target {target} --email-user NAME with ./run mirrord-config --target {target} --user NAME")
    return Check(name, matched > 0, f"{matched} of the last {len(emails)} orders match {regex!r} ({config.name})",
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

    from demokit.portforward import api_client

    state = cluster.operator_state(target, api_client(target))
    ready = re.search(r"(\d+)/\d+ ready", state)
    running = bool(ready and int(ready.group(1)) > 0)
    checks = [Check("the mirrord operator runs", running, state,
                    "" if running else f"MIRRORD_LICENSE_KEY=… ./run fresh-start --target {target.name} (or ask the "
                                       "cluster's owner)")]
    try:
        ids = cluster.queue_ids(target)
        want = next(iter(json.loads(config.read_text())["feature"]["split_queues"]))
    except (UserError, OSError, ValueError, KeyError, StopIteration) as exc:
        checks.append(Check("the splitting resources match the config", False, str(exc),
                            f"./run fresh-start --target {target.name}"))
        ids, want = set(), ""
    else:
        ok = want in ids
        checks.append(Check("the splitting resources match the config", ok,
                            f"queue ids {', '.join(sorted(ids)) or 'none'}; {config.name} names {want!r}",
                            "" if ok else f"./run fresh-start --target {target.name}"))
    secret = str(target.get("mirrord_operator_license_secret"))
    try:
        client.CoreV1Api(api_client(target)).read_namespaced_secret(secret, str(target.get(
            "metalmart_operator_namespace")))
        present = True
    except client.ApiException:
        present = False
    checks.append(Check("the licence is present", present or state.startswith("running"),
                        f"Secret {secret}" + (" present" if present else " absent") + " (never shown)",
                        "" if present else f"MIRRORD_LICENSE_KEY=… ./run fresh-start --target {target.name}, or "
                                           "Ansible Vault"))
    return checks


def _mirrord_cli() -> Check:
    """Not blocking on any target: VS Code's mirrord extension brings its own CLI, so a presenter who works from VS
    Code needs none on PATH; from a terminal, the fix names it."""
    found = shutil.which("mirrord")
    if not found:
        return Check("the mirrord CLI is installed", False, "no mirrord on PATH",
                     "install it: https://metalbear.co/mirrord/docs/overview/quick-start/", blocking=False)
    done = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30)
    version = (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "?"
    return Check("the mirrord CLI is installed", done.returncode == 0, version, "", blocking=False)


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
