"""Kafka and order figures that prove the split, straight from the broker's admin API (no kubectl exec, no JVM).

The mirrord operator feeds a developer's session from `mirrord-tmp-<id>-<topic>` and the deployed workload from
`mirrord-tmp-<id>-fallback-<topic>`; both are shown beside the original topic (only those splitting it), with every
consumer group that reads any of them, its committed offsets and lag (negative, and named a problem, when a committed
offset is beyond the partition's end).
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from metalmart import splittopics


def topic_role(name: str, original: str, fmt: str = splittopics.DEFAULT) -> tuple[str, str] | None:
    """(role, original topic) of a topic worth showing, or None: original | mirrord-local | mirrord-fallback. Only
    the temporary topics that split `original` count: on a shared broker other teams' sessions split other topics.
    `fmt` is the operator's temporary-topic format (metalmart.splittopics)."""
    if name == original:
        return "original", original
    split = splittopics.parse(name, original, fmt)
    if split is None:
        return None
    return ("mirrord-fallback" if split[1] else "mirrord-local"), original


@dataclass
class Collector:
    bootstrap: str
    topic: str
    group: str
    order_url: str | None
    timeout: float = 3.0
    topic_format: str = splittopics.DEFAULT  # the operator's temporary-topic names
    # The operator's own view of the split (demokit.kube.cluster.operator_view), on a cluster target.
    operator: Callable[[], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        self.admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": int(self.timeout * 1000),
                                  "log_level": 0})

    def snapshot(self) -> dict[str, Any]:
        errors: dict[str, str] = {}
        topics: list[dict[str, Any]] = []
        groups: list[dict[str, Any]] = []
        try:
            topics, groups = self._kafka()
        except (KafkaException, RuntimeError) as exc:
            errors["broker"] = f"{self.bootstrap}: {_kafka_reason(exc)}"
        orders = None
        if self.order_url:
            try:
                with urllib.request.urlopen(f"{self.order_url}/api/orders/stats", timeout=self.timeout) as resp:
                    stats = json.loads(resp.read())
                orders = {"by_status": stats["by_status"], "processed_by": stats["processed_by"],
                          "total": stats.get("total", 0),
                          "shipped_by_topic": stats.get("shipped_by_topic", []),
                          "republished": stats.get("republished", 0), "overdue": stats.get("overdue", 0),
                          "overdue_after_s": stats.get("overdue_after_s"),
                          "by_session": stats.get("by_session", {}),
                          "processed_by_session": stats.get("processed_by_session", {})}
            except (OSError, ValueError, KeyError) as exc:
                errors["order_service"] = f"{self.order_url}: {exc}"
        operator = None
        if self.operator is not None:
            try:
                operator = self.operator()
            except Exception as exc:  # the cluster's API: reported beside the other figures
                errors["operator"] = str(exc)
        return {"collected_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "bootstrap": self.bootstrap, "topics": topics, "consumer_groups": groups, "orders": orders,
                "operator": operator, "errors": errors}

    def _kafka(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        meta = self.admin.list_topics(timeout=self.timeout)
        if meta.orig_broker_id < 0 and not meta.brokers:
            raise RuntimeError("no broker answered")
        shown = {name: topic_role(name, self.topic, self.topic_format) for name in meta.topics}
        shown = {k: v for k, v in shown.items() if v is not None}
        partitions = [TopicPartition(name, p) for name in shown for p in meta.topics[name].partitions]
        # The groups' committed offsets are read before the partitions' ends: a commit made between the two reads
        # would otherwise show as beyond an end that had already moved on.
        committed = self._committed(set(shown))
        ends: dict[tuple[str, int], int] = {}
        if partitions:
            futures = self.admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions},
                                              request_timeout=self.timeout)
            for tp, fut in futures.items():
                ends[(tp.topic, tp.partition)] = fut.result().offset
        topics = []
        for name in sorted(shown, key=lambda n: (shown[n][0] != "original", n)):  # type: ignore[index]
            role, original = shown[name]  # type: ignore[misc]
            parts = [{"partition": p, "end_offset": ends[(name, p)]} for p in sorted(meta.topics[name].partitions)]
            topics.append({"name": name, "role": role, "splits": original if role != "original" else None,
                           "partitions": parts, "end_offset_total": sum(x["end_offset"] for x in parts)})
        return topics, self._groups(set(shown), committed, ends)

    def _committed(self, shown: set[str]) -> dict[str, tuple[Any, dict[tuple[str, int], int]]]:
        """Each group's description (None when it could not be read) and committed offsets on the shown topics."""
        listed = self.admin.list_consumer_groups(request_timeout=self.timeout).result()
        names = {g.group_id for g in listed.valid} | {self.group}
        described: dict[str, Any] = {}
        for name, fut in self.admin.describe_consumer_groups(sorted(names), request_timeout=self.timeout).items():
            with contextlib.suppress(KafkaException):
                described[name] = fut.result()
        offsets: dict[str, Future[Any]] = {}
        for name in sorted(names):  # the API takes one group a request
            offsets.update(self.admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(name)],
                                                                  request_timeout=self.timeout))
        found: dict[str, tuple[Any, dict[tuple[str, int], int]]] = {}
        for name in sorted(names):
            committed: dict[tuple[str, int], int] = {}
            with contextlib.suppress(KafkaException):
                for tp in offsets[name].result().topic_partitions:
                    if tp.topic in shown and tp.offset >= 0:
                        committed[(tp.topic, tp.partition)] = tp.offset
            found[name] = (described.get(name), committed)
        return found

    def _groups(self, shown: set[str], found: dict[str, tuple[Any, dict[tuple[str, int], int]]],
                ends: dict[tuple[str, int], int]) -> list[dict[str, Any]]:
        groups = []
        for name, (desc, committed) in found.items():
            assigned = set()
            members = 0
            if desc is not None:
                members = len(desc.members)
                for m in desc.members:
                    for tp in (m.assignment.topic_partitions if m.assignment else []):
                        if tp.topic in shown:
                            assigned.add((tp.topic, tp.partition))
            reads = set(committed) | assigned
            if not reads and name == self.group:  # the processor's group before its first commit: all is lag
                reads = {k for k in ends if k[0] == self.topic}
            if not reads:
                continue
            parts = []
            for topic, partition in sorted(reads):
                end = ends.get((topic, partition), 0)
                done = committed.get((topic, partition))
                # Negative when the committed offset is beyond the partition's end (a topic deleted and created
                # again under the group): the group then skips what arrives until the end passes it. Shown as it
                # is, never as 0.
                parts.append({"topic": topic, "partition": partition, "committed": done, "end_offset": end,
                              "lag": end - (done or 0)})
            state = str(desc.state).rsplit(".", 1)[-1].lower() if desc is not None else "unknown"
            beyond = [f"{p['topic']}[{p['partition']}] committed {p['committed']}, end {p['end_offset']}"
                      for p in parts if p["lag"] < 0]
            groups.append({"group": name, "state": state, "members": members,
                           "reading": sorted({topic for topic, _ in assigned}),
                           "lag_total": sum(max(0, p["lag"]) for p in parts), "partitions": parts,
                           "beyond_end": beyond})
        return groups


def _kafka_reason(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args:
        err = exc.args[0]
        return getattr(err, "str", lambda: str(err))()
    return str(exc)


def rates(prev: dict[str, Any] | None, cur: dict[str, Any]) -> dict[str, float | None]:
    """produced/s on the original topic and consumed/s (committed) by every group, between two snapshots."""
    if prev is None:
        return {"produced_per_s": None, "consumed_per_s": None, "lag_delta": None}
    dt = max(1e-3, _ts(cur["collected_at"]) - _ts(prev["collected_at"]))

    def produced(s: dict[str, Any]) -> int:
        return sum(t["end_offset_total"] for t in s["topics"] if t["role"] == "original")

    def consumed(s: dict[str, Any]) -> int:
        return sum(p["committed"] or 0 for g in s["consumer_groups"] for p in g["partitions"])

    def lag(s: dict[str, Any]) -> int:
        return sum(g["lag_total"] for g in s["consumer_groups"])

    return {"produced_per_s": (produced(cur) - produced(prev)) / dt,
            "consumed_per_s": (consumed(cur) - consumed(prev)) / dt, "lag_delta": lag(cur) - lag(prev)}


def _ts(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def leftovers(snap: dict[str, Any]) -> list[str]:
    """The operator's temporary topics of this split that no consumer reads now: left behind by a session that
    ended (the cleanup race MetalBear lists among Kafka splitting's known issues)."""
    reading = {t for g in snap["consumer_groups"] for t in g.get("reading", [])}
    return [t["name"] for t in snap["topics"] if t["role"] != "original" and t["name"] not in reading]
