"""`./run metrics`: live Kafka and order figures that prove the split."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from invoke import Context, task
from rich.console import Group
from rich.live import Live
from rich.table import Table

from demokit import portforward, targets
from demokit.errors import UNREACHABLE, USAGE, UserError, friendly
from demokit.metrics import Collector, rates
from demokit.tasks.common import emit_json, out, say


@contextlib.contextmanager
def _collector(target_name: str | None, bootstrap: str | None, order_url: str | None) -> Iterator[Collector]:
    """A collector for the target. On a cluster target, what is not given is reached through port-forwards this
    task opens itself: the broker's second listener (advertised as 127.0.0.1:<kafka_external_port>, so the
    forwarded port must be that one) and the order service."""
    target = targets.resolve(target_name, say) if not (bootstrap and order_url) else None
    topic, group = "order.created", "order-processor"
    wanted: dict[str, tuple[int, int]] = {}
    if target is not None:
        topic = str(target.get("kafka_topic", topic))
        group = str(target.get("kafka_group_id", group))
        if target.kind == "local":
            ports = target.get("local_ports", {})
            bootstrap = bootstrap or f"127.0.0.1:{ports['broker']}"
            order_url = order_url or f"http://127.0.0.1:{ports['order']}"
        else:
            if not bootstrap:
                wanted["kafka"] = (9094, int(target.get("kafka_external_port", 19094)))
            if not order_url:
                wanted["order"] = (8084, 0)
    with portforward.tunnels(target, wanted) if wanted and target else contextlib.nullcontext({}) as local:
        bootstrap = bootstrap or f"127.0.0.1:{local['kafka']}"
        order_url = order_url or f"http://127.0.0.1:{local['order']}"
        if ":" not in bootstrap:
            raise UserError(f"--bootstrap must be HOST:PORT (got {bootstrap!r})", USAGE)
        yield Collector(bootstrap, topic, group, order_url)


def render(snap: dict[str, Any], delta: dict[str, Any] | None = None) -> Group:
    parts: list[Any] = []
    topics = Table(title=f"topics on {snap['bootstrap']} at {snap['collected_at']}")
    for col in ("topic", "role", "splits", "partitions", "end offsets", "total"):
        topics.add_column(col, justify="right" if col in ("partitions", "total") else "left")
    role_names = {"original": "original", "mirrord-local": "mirrord session (local)",
                  "mirrord-fallback": "mirrord fallback (cluster)"}
    for t in snap["topics"]:
        topics.add_row(t["name"], role_names[t["role"]], t["splits"] or "", str(len(t["partitions"])),
                       " ".join(str(p["end_offset"]) for p in t["partitions"]), str(t["end_offset_total"]))
    parts.append(topics)
    groups = Table(title="consumer groups")
    for col in ("group", "state", "members", "topic", "committed", "end", "lag"):
        groups.add_column(col, justify="right" if col in ("members", "lag") else "left")
    for g in snap["consumer_groups"]:
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for p in g["partitions"]:
            by_topic.setdefault(p["topic"], []).append(p)
        for i, (topic, ps) in enumerate(sorted(by_topic.items())):
            groups.add_row(g["group"] if i == 0 else "", g["state"] if i == 0 else "",
                           str(g["members"]) if i == 0 else "", topic,
                           " ".join("-" if p["committed"] is None else str(p["committed"]) for p in ps),
                           " ".join(str(p["end_offset"]) for p in ps), str(sum(p["lag"] for p in ps)))
    parts.append(groups)
    if snap["orders"] is not None:
        o = snap["orders"]
        orders = Table(title="orders")
        for col in ("pending", "processing", "confirmed", "shipped", "by the cluster", "by a mirrord session"):
            orders.add_column(col, justify="right")
        s = o["by_status"]
        orders.add_row(*(str(s.get(k, 0)) for k in ("pending", "processing", "confirmed", "shipped")),
                       str(o["processed_by"].get("cluster", 0)), str(o["processed_by"].get("mirrord", 0)))
        parts.append(orders)
    if delta and delta.get("produced_per_s") is not None:
        trend = "↑" if delta["lag_delta"] > 0 else "↓" if delta["lag_delta"] < 0 else "→"
        parts.append(f"produced {delta['produced_per_s']:.1f}/s · consumed {delta['consumed_per_s']:.1f}/s · "
                     f"lag {trend} ({delta['lag_delta']:+d})")
    for what, why in snap["errors"].items():
        parts.append(f"[red]{what} unreachable: {why}")
    return Group(*parts)


@task(
    help={
        "target": "an inventory under inventories/; default: minikube if installed, else local",
        "bootstrap": "Kafka bootstrap HOST:PORT; default: the target's",
        "order_url": "order service URL for the order figures; default: the target's",
        "watch": "refresh until Ctrl-C",
        "interval": "seconds between refreshes with --watch (2)",
        "json": "print JSON only (one document per interval with --watch)",
    }
)
@friendly
def metrics(c: Context, target: str | None = None, bootstrap: str | None = None, order_url: str | None = None,
            watch: bool = False, interval: float = 2.0, json: bool = False) -> None:
    """Topics, mirrord temporary topics, consumer groups with lag, and who processed the orders."""
    if interval <= 0:
        raise UserError("--interval must be above 0 seconds", USAGE)
    with _collector(target, bootstrap, order_url) as collector:
        _show(collector, watch, interval, json)


def _show(collector: Collector, watch: bool, interval: float, json: bool) -> None:
    snap = collector.snapshot()
    if not watch:
        _emit(snap, None, json)
        _exit_if_empty(snap)
        return
    prev: dict[str, Any] | None = None
    live = sys.stdout.isatty() and not json
    try:
        if live:
            with Live(render(snap), console=out, refresh_per_second=4) as view:
                while True:
                    time.sleep(interval)  # the refresh period the user asked for, not a readiness wait
                    prev, snap = snap, collector.snapshot()
                    view.update(render(snap, rates(prev, snap, collector.group)))
        else:
            while True:
                _emit(snap, rates(prev, snap, collector.group) if prev else None, json)
                time.sleep(interval)  # the refresh period the user asked for
                prev, snap = snap, collector.snapshot()
    except KeyboardInterrupt:
        say("stopped watching")


def _emit(snap: dict[str, Any], delta: dict[str, Any] | None, as_json: bool) -> None:
    if as_json:
        emit_json({**snap, **({"rates": delta} if delta else {})})
    else:
        out.print(render(snap, delta))


def _exit_if_empty(snap: dict[str, Any]) -> None:
    if snap["errors"] and not snap["topics"] and snap["orders"] is None:
        from invoke.exceptions import Exit

        raise Exit("error: nothing could be collected: " + "; ".join(f"{k}: {v}" for k, v in snap["errors"].items()),
                   code=UNREACHABLE)
    for what, why in snap["errors"].items():
        say(f"warning: {what} unreachable ({why}); the other figures are shown")


TASKS = {"metrics": metrics}
