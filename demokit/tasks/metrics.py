"""`./run metrics`: live Kafka and order figures that prove the split."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from invoke import Context
from rich.console import Group
from rich.live import Live
from rich.table import Table

from demokit import targets
from demokit.errors import CONFLICT, NOT_READY, UNREACHABLE, USAGE, UserError
from demokit.kube import cluster, reach
from demokit.local.localstack import port_holder
from demokit.observe.metrics import Collector, leftovers, rates
from demokit.targets import ROOT
from demokit.taskdef import task
from demokit.tasks.common import TARGET_HELP, emit_json, out, say, target_of


@contextlib.contextmanager
def _collector(target: targets.Target | None, bootstrap: str | None, order_url: str | None) -> Iterator[Collector]:
    """A collector for the target: what is not given is the target's own (on a cluster, through port-forwards
    this task opens itself)."""
    if target is None:
        assert bootstrap and order_url
        yield Collector(bootstrap, "order.created", "order-processor", order_url)
        return
    topic, group = str(target.get("metalmart_kafka_topic")), str(target.get("metalmart_kafka_group_id"))
    with reach.endpoints(target, broker=not bootstrap, services=() if order_url else ("order",)) as found:
        bootstrap = bootstrap or found.bootstrap
        assert bootstrap is not None
        if ":" not in bootstrap:
            raise UserError(f"--bootstrap must be HOST:PORT (got {bootstrap!r})", USAGE)
        yield Collector(bootstrap, topic, group, order_url or found.url("order"),
                        topic_format=str(target.get("metalmart_kafka_split_topic_format")),
                        operator=(lambda: cluster.operator_view(target)) if target.kind != "local" else None)


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
        # A stable group has members; a broker that answers "stable, 0 members" (Tansu does, while the group
        # consumes) is not taken at its word: the lag tells whether it consumes.
        unreported = str(g["state"]).lower() == "stable" and not g["members"]
        state, members = ("not reported", "?") if unreported else (str(g["state"]), str(g["members"]))
        for i, (topic, ps) in enumerate(sorted(by_topic.items())):
            lags = [p["lag"] for p in ps]
            lag = " ".join(str(x) for x in lags) if min(lags) < 0 else str(sum(lags))
            groups.add_row(g["group"] if i == 0 else "", state if i == 0 else "",
                           members if i == 0 else "", topic,
                           " ".join("-" if p["committed"] is None else str(p["committed"]) for p in ps),
                           " ".join(str(p["end_offset"]) for p in ps), f"[red]{lag}" if min(lags) < 0 else lag)
    parts.append(groups)
    for g in snap["consumer_groups"]:
        if g.get("beyond_end"):
            parts.append(f"[red]group {g['group']} committed beyond the end ({'; '.join(g['beyond_end'])}): it skips "
                         "new messages until the end passes its offset; restart the processor, or reset the group's "
                         "offsets")
    if snap["orders"] is not None:
        o = snap["orders"]
        orders = Table(title="orders")
        # Orders not moved for the reconciler's bound are waiting (a breakpoint, a slow consumer) unless the broker
        # lost their record, which the reconciler reads and publishes again: counted, not alarming.
        bound = o.get("overdue_after_s")
        waiting = f"not moved > {bound:g} s" if isinstance(bound, (int, float)) else "not moved for long"
        for col in ("pending", "processing", "confirmed", "shipped", "by the cluster", "by a mirrord session",
                    waiting, "republished"):
            orders.add_column(col, justify="right")
        s = o["by_status"]
        orders.add_row(*(str(s.get(k, 0)) for k in ("pending", "processing", "confirmed", "shipped")),
                       str(o["processed_by"].get("cluster", 0)), str(o["processed_by"].get("mirrord", 0)),
                       str(o.get("overdue", 0)), str(o.get("republished", 0)))
        parts.append(orders)
        placed, routed = o.get("by_session") or {}, o.get("processed_by_session") or {}
        if placed or routed:
            sessions = Table(title="orders per mirrord up session (baggage: mirrord-session=KEY)")
            for col, justify in (("session key", "left"), ("orders", "right"), ("shipped", "right"),
                                 ("processed on its laptop", "right")):
                sessions.add_column(col, justify=justify)  # type: ignore[arg-type]
            for key in sorted(set(placed) | set(routed)):
                counts = placed.get(key, {"orders": 0, "shipped": 0})
                sessions.add_row(key, str(counts["orders"]), str(counts["shipped"]), str(routed.get(key, 0)))
            parts.append(sessions)
    if snap.get("operator") is not None:
        parts.extend(_operator_lines(snap["operator"]))
    if delta and delta.get("produced_per_s") is not None:
        trend = "↑" if delta["lag_delta"] > 0 else "↓" if delta["lag_delta"] < 0 else "→"
        parts.append(f"produced {delta['produced_per_s']:.1f}/s · consumed {delta['consumed_per_s']:.1f}/s · "
                     f"lag {trend} ({delta['lag_delta']:+d})")
    for what, why in snap["errors"].items():
        parts.append(f"[red]{what} unreachable: {why}")
    return Group(*parts)


def _operator_lines(view: dict[str, Any]) -> list[Any]:
    """The operator's own view beside our reading of the topics: its queue splits, or one line why there are none
    to show, and the split sessions on the demo's namespace."""
    splits = view["queue_splits"]
    lines: list[Any] = [
        "the operator's view: " + ("; ".join(view["unavailable"][:1]) if splits is None else
                                   f"{len(splits)} queue split(s)" + "".join(f", {s['name']}" for s in splits))]
    sessions = view.get("split_sessions") or []
    if sessions:
        table = Table(title="the operator's split sessions (MirrordClusterSplitSession)")
        for col in ("session", "owner", "key", "queues", "state"):
            table.add_column(col)
        for s in sessions:
            state = f"[red]{s['state']}, left behind" if s["left_behind"] else s["state"]
            table.add_row(s["name"], s["owner"], s["session_key"] or "", ", ".join(s["queues"]), state)
        lines.append(table)
    return lines


@task(
    help={
        "target": TARGET_HELP,
        "bootstrap": "Kafka bootstrap HOST:PORT; default: the target's",
        "order_url": "order service URL for the order figures; default: the target's",
        "watch": "refresh until Ctrl-C",
        "interval": "seconds between refreshes with --watch (2)",
        "json": "print JSON only (one document per interval with --watch)",
        "web": "serve the split, live, as a page on 127.0.0.1 (for the shared screen) until Ctrl-C",
        "port": "the page's port with --web (8765)",
    }
)
def metrics(c: Context, target: str | None = None, bootstrap: str | None = None, order_url: str | None = None,
            watch: bool = False, interval: float = 2.0, json: bool = False, web: bool = False,
            port: int = 8765) -> None:
    """Topics, mirrord temporary topics, consumer groups with lag, and who processed the orders."""
    if interval <= 0:
        raise UserError("--interval must be above 0 seconds", USAGE)
    if not 1 <= port <= 65535:
        raise UserError(f"--port must be between 1 and 65535 (got {port}); e.g. --port 8765", USAGE)
    resolved = target_of(c, target) if not (bootstrap and order_url) else None
    if web:
        holder = port_holder(port)
        if holder is not None:  # said before the broker is reached or a port-forward opened
            raise UserError(f"port {port} on 127.0.0.1 is taken by {holder}; give the page another: --port N",
                            CONFLICT)
    with _collector(resolved, bootstrap, order_url) as collector:
        if web:
            _web(collector, resolved, port)
        else:
            _show(collector, watch, interval, json)


def _web(collector: Collector, target: targets.Target | None, port: int) -> None:
    from demokit.config import demomode
    from demokit.observe import dashboard

    board = dashboard.Dashboard(
        collector, target.name if target else collector.bootstrap,
        filters=lambda: dashboard.read_filters(ROOT / ".mirrord"),
        demo_mode=(lambda: demomode.state(demomode.live(target))) if target else (lambda: "unknown"))
    dashboard.serve(board, port, say)
    say("stopped the metrics page")


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
                    view.update(render(snap, rates(prev, snap)))
        else:
            while True:
                _emit(snap, rates(prev, snap) if prev else None, json)
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


@task(help={"target": TARGET_HELP, "delete_unread": "delete the temporary topics no consumer reads now",
            "json": "print JSON only"})
def split_topics(c: Context, target: str | None = None, delete_unread: bool = False, json: bool = False) -> None:
    """List the mirrord operator's temporary topics of the order topic, and who reads each; delete the unread ones."""
    resolved = target_of(c, target)
    with _collector(resolved, None, None) as collector:
        snap = collector.snapshot()
        if "broker" in snap["errors"]:
            raise UserError(f"the broker does not answer: {snap['errors']['broker']}; ./run status --target "
                            f"{resolved.name}", NOT_READY)
        reading = {t: g["group"] for g in snap["consumer_groups"] for t in g.get("reading", [])}
        split = [t for t in snap["topics"] if t["role"] != "original"]
        unread = leftovers(snap)
        deleted: list[str] = []
        if delete_unread and unread:
            from confluent_kafka.admin import AdminClient

            admin = AdminClient({"bootstrap.servers": collector.bootstrap, "log_level": 0})
            for name, fut in admin.delete_topics(unread, operation_timeout=30).items():
                fut.result()
                deleted.append(name)
    if json:
        emit_json({"target": resolved.name, "topics": [{"name": t["name"], "role": t["role"],
                                                        "read_by": reading.get(t["name"])} for t in split],
                   "unread": unread, "deleted": deleted})
        return
    if not split:
        say(f"no temporary topics of {collector.topic} on target {resolved.name}; nothing to do")
        return
    table = Table(title=f"the operator's temporary topics of {collector.topic}")
    for col in ("topic", "role", "read by"):
        table.add_column(col)
    for t in split:
        table.add_row(t["name"], t["role"], reading.get(t["name"], "no one"))
    out.print(table)
    if deleted:
        say(f"deleted {len(deleted)} unread temporary topic(s): {', '.join(deleted)}")
    elif unread:
        say(f"{len(unread)} no one reads: ./run split-topics --target {resolved.name} --delete-unread deletes them")


TASKS = {"metrics": metrics, "split-topics": split_topics}
