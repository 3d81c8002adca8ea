"""What Apache Kafka shows and Tansu hides: a topic deleted and created again, or given more partitions, under a
running processor and order service; a missing topic is reported, never created with defaults."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions

from demokit.kafka import ensure_topic
from demokit.probes import holds, until
from tests.helpers import AppStack, KafkaBroker, post_orders, request, sql

NO_REPUBLISH = {"ORDER_REPUBLISH_AFTER_S": "3600"}  # the reconciler must not hide a stalled processor


def _emails(n: int) -> list[str]:
    return [f"topic-{i}-{uuid.uuid4().hex[:4]}@metalbear.com" for i in range(n)]


def _committed_within_log(bootstrap: str, topic: str, group: str) -> dict[int, tuple[int, int]]:
    """{partition: (committed, log end)} for the group; asserts no commit is beyond the end."""
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10).topics[topic]
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = reader.committed([TopicPartition(topic, p) for p in meta.partitions], timeout=10)
        out = {tp.partition: (tp.offset, reader.get_watermark_offsets(tp, timeout=10)[1]) for tp in committed}
    finally:
        reader.close()
    assert all(c <= end for c, end in out.values()), f"committed beyond the log end: {out}"
    return out


def _delete(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic])[topic].result(30)
    until(lambda: holds(topic not in admin.list_topics(timeout=5).topics), 60, f"{topic} deleted")


@pytest.mark.parametrize("partitions", [3, 1], ids=["as before", "fewer partitions"])
def test_a_deleted_and_recreated_topic_does_not_stall_the_processor(broker: KafkaBroker, database_url: str,
                                                                     log_dir: Path, partitions: int) -> None:
    stack = AppStack(broker.bootstrap, database_url, log_dir, demo=False, order_env=NO_REPUBLISH).start()
    try:
        before = post_orders(stack.base, _emails(60))
        until(lambda: holds(stack.processor_health()["received"] >= 60), 60, "every order taken by the processor")
        _delete(broker.bootstrap, stack.topic)  # while its orders are still in flight (10 s each)
        ensure_topic(broker.bootstrap, stack.topic, partitions)
        stack.wait_shipped(60, timeout=120)
        after = post_orders(stack.base, _emails(10))
        stack.wait_shipped(70, timeout=120)
        assert stack.processor.alive(), "recovered by itself, without a restart"
        until(lambda: holds(stack.processor_health()["commits"] > 0 and sum(
            c for c, _ in _committed_within_log(broker.bootstrap, stack.topic, stack.group).values()) == 10), 30,
            "the new topic's offsets committed, and nothing beyond its end")
        rows = sql(stack.database_url, "SELECT COUNT(DISTINCT order_id) AS n FROM order_status_history "
                                       "WHERE status = 'shipped'")
        assert int(rows[0]["n"]) == len(before) + len(after)
    finally:
        stack.stop()


def test_more_partitions_are_consumed_without_a_restart(broker: KafkaBroker, database_url: str,
                                                        log_dir: Path) -> None:
    stack = AppStack(broker.bootstrap, database_url, log_dir, partitions=1, order_env=NO_REPUBLISH).start()
    try:
        post_orders(stack.base, _emails(5))
        stack.wait_shipped(5)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_partitions([NewPartitions(stack.topic, 4)])[stack.topic].result(30)
        until(lambda: holds(len(stack.processor_health()["assigned"]) == 4), 60, "the new partitions assigned")
        post_orders(stack.base, _emails(40))
        stack.wait_shipped(45, timeout=120)
        _committed_within_log(broker.bootstrap, stack.topic, stack.group)
    finally:
        stack.stop()


def test_a_missing_topic_is_reported_by_the_order_service_and_never_created(broker: KafkaBroker,
                                                                            database_url: str,
                                                                            log_dir: Path) -> None:
    stack = AppStack(broker.bootstrap, database_url, log_dir, order_env=NO_REPUBLISH)
    _delete(broker.bootstrap, stack.topic)
    stack.start(processor=False)
    try:
        post_orders(stack.base, _emails(3))
        until(lambda: holds(stack.topic in str(request("GET", f"{stack.base}/ready")[1].get("degraded", {}))), 60,
              "the missing topic reported")
        ready = request("GET", f"{stack.base}/ready")[1]
        assert f"topic {stack.topic} does not exist" in ready["degraded"]["outbox"], ready
        assert stack.topic not in AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5).topics
        assert stack.stats()["outbox_unpublished"] == 3, "the events wait in the outbox"
        ensure_topic(broker.bootstrap, stack.topic, 3)
        until(lambda: holds(stack.stats()["outbox_unpublished"] == 0), 60, "published once the topic exists")
        until(lambda: holds("degraded" not in request("GET", f"{stack.base}/ready")[1]), 10, "nothing reported")
    finally:
        stack.stop()
