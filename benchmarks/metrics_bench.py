"""One `./run metrics` snapshot against a running stack, beside the bare AdminClient calls it makes."""

from __future__ import annotations

import statistics
import time

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from rich.console import Console

from demokit.observe.metrics import Collector


def bare(bootstrap: str, topic: str, group: str) -> float:
    t0 = time.perf_counter()
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    meta = admin.list_topics(timeout=3)
    tps = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
    for f in admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}).values():
        f.result()
    groups = [g.group_id for g in admin.list_consumer_groups().result().valid]
    for f in admin.describe_consumer_groups(groups or [group]).values():
        f.result()
    for g in groups or [group]:
        for f in admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)]).values():
            f.result()
    return time.perf_counter() - t0


def ours(bootstrap: str, topic: str, group: str, order_url: str) -> float:
    t0 = time.perf_counter()
    snap = Collector(bootstrap, topic, group, order_url).snapshot()
    elapsed = time.perf_counter() - t0
    if snap["errors"]:
        raise SystemExit(f"the stack is not healthy: {snap['errors']}; run ./run fresh-start first")
    return elapsed


def main(bootstrap: str, topic: str, group: str, order_url: str, rounds: int = 20) -> int:
    a = [ours(bootstrap, topic, group, order_url) for _ in range(rounds)]
    b = [bare(bootstrap, topic, group) for _ in range(rounds)]
    ma, mb = statistics.median(a), statistics.median(b)
    Console(width=150).print(
        f"metrics snapshot (new client each time, {rounds} rounds, median): ours {ma * 1000:.1f} ms, "
        f"bare AdminClient calls {mb * 1000:.1f} ms, ratio {ma / mb:.2f}×; slowest ours {max(a) * 1000:.1f} ms "
        f"(goal < 1000 ms: {'met' if max(a) < 1 else 'missed'})")
    return 0
