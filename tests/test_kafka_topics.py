"""What Apache Kafka shows and Tansu hides: a topic deleted and created again, or given more partitions, under a
running processor and order service; a missing topic is reported, never created with defaults."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from demokit.errors import UserError
from demokit.kafka import apache, ensure_topic
from demokit.probes import holds, until
from tests import kube
from tests.helpers import AppStack, KafkaBroker, post_orders, request, sql

pytestmark = pytest.mark.stack  # brokers and the topic step

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


@pytest.mark.slow
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
        try:
            # Everything on the new topic committed, nothing beyond its end (the relay may have sent once more an
            # event whose acknowledgement the deletion swallowed: at least once, so the ends may add up to over 10).
            def settled() -> None:
                seen = _committed_within_log(broker.bootstrap, stack.topic, stack.group)
                holds(sum(end for _, end in seen.values()) >= 10 and all(c == end for c, end in seen.values() if end))

            until(settled, 30, "the new topic's offsets committed, and nothing beyond its end")
        except Exception as exc:
            raise AssertionError(f"{exc}; the processor: {stack.processor_health()}; committed: "
                                 f"{_committed_within_log(broker.bootstrap, stack.topic, stack.group)}") from exc
        rows = sql(stack.database_url, "SELECT COUNT(DISTINCT order_id) AS n FROM order_status_history "
                                       "WHERE status = 'shipped'")
        assert int(rows[0]["n"]) == len(before) + len(after)
    finally:
        stack.stop()


@pytest.mark.slow
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


def _topic_job_script(render_minikube: Any, topic: str, partitions: int, broker: KafkaBroker, shim: Path) -> str:
    docs, _ = render_minikube(metalmart_kafka_topic=topic, kafka_topic_partitions=partitions)
    job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"].startswith("kafka-topic-"))
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [3], "a refusal is not retried"
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    return script.replace("/opt/kafka/bin/kafka-topics.sh", str(shim)).replace(
        "kafka.metalmart.svc.cluster.local:9092", broker.bootstrap)


def test_the_topic_job_creates_grows_and_never_shrinks_the_topic(broker: KafkaBroker, render_minikube: Any,
                                                                 tmp_path: Path) -> None:
    """Its script, run against Apache Kafka with Kafka's own TopicCommand (what kafka-topics.sh runs)."""
    shim = tmp_path / "kafka-topics.sh"
    (tmp_path / "log4j.properties").write_text(apache.LOG4J)
    shim.write_text(f'#!/bin/sh\nexec {apache.java()} -cp "{apache.ensure(print)}/*" '
                    f'-Dlog4j.configuration=file:{tmp_path / "log4j.properties"} '
                    'org.apache.kafka.tools.TopicCommand "$@"\n')
    shim.chmod(0o755)
    topic = f"grow-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def partitions() -> int:
        return len(admin.list_topics(topic, timeout=10).topics[topic].partitions)

    for want in (2, 2, 5):
        done = subprocess.run(["sh", "-c", _topic_job_script(render_minikube, topic, want, broker, shim)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert partitions() == want
    done = subprocess.run(["sh", "-c", _topic_job_script(render_minikube, topic, 3, broker, shim)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and partitions() == 5
    assert done.stderr.strip().splitlines()[-1] == (
        f"the topic {topic} has 5 partitions and Kafka cannot take partitions away: set kafka_topic_partitions: 5, "
        "or delete the topic (and its messages) first")


@pytest.mark.parametrize("which", ["broker", "tansu"])
def test_the_local_topic_step_grows_a_topic_and_refuses_to_shrink_it(which: str,
                                                                      request: pytest.FixtureRequest) -> None:
    bootstrap = request.getfixturevalue(which).bootstrap
    topic = f"local-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert ensure_topic(bootstrap, topic, 2) is True
    if which == "tansu":
        with pytest.raises(UserError, match=r"cannot add partitions .* Tansu keeps topics in memory"):
            ensure_topic(bootstrap, topic, 4)
        return
    assert ensure_topic(bootstrap, topic, 4) is False
    until(lambda: holds(len(admin.list_topics(topic, timeout=5).topics[topic].partitions) == 4), 20, "4 partitions")
    with pytest.raises(UserError, match=f"the topic {topic} has 4 partitions and Kafka cannot take partitions away"):
        ensure_topic(bootstrap, topic, 3)


def test_the_brokers_the_tests_run_are_the_version_the_clusters_run() -> None:
    import yaml

    from tests.helpers import ROOT

    image = yaml.safe_load((ROOT / "roles/kafka/defaults/main.yml").read_text())["kafka_image"]
    assert image == f"apache/kafka:{apache.VERSION}"
    assert f"org.apache.kafka:kafka_{apache.SCALA}:{apache.VERSION} " in apache.LOCK.read_text()


def _split_properties(objects: list[dict[str, Any]]) -> dict[str, str]:
    plist = next(o for o in objects if o["kind"] == "MirrordPropertyList")
    if kube.SHARED_MIRRORD.is_dir():
        schema = json.loads((kube.SHARED_MIRRORD / "crd-schema-MirrordPropertyList-v1.json").read_text())
        jsonschema.Draft202012Validator(schema).validate(plist)
    return {p["name"]: p.get("value", "") for p in plist["spec"]["properties"]}


def test_the_operators_temporary_topics_take_the_writes_of_a_replicated_kafka(broker: KafkaBroker,
                                                                              render_minikube: Any) -> None:
    """On a Kafka whose min.insync.replicas is 2 (Strimzi's), a temporary topic made as the operator makes it
    (replication factor 1) is written with the properties `./run render` writes for operator 3.187.0 (the chart
    pinned). From 3.191.0 the list asks for the original's replication factor instead (`copy`), which a broker of one
    node cannot show."""
    strimzi, _ = render_minikube(metalmart_kafka_mode="strimzi")
    old = _split_properties(strimzi)
    assert old["acks"] == "1" and not [k for k in old if k.startswith("mirrord.")], old
    newer, _ = render_minikube(metalmart_kafka_mode="managed", metalmart_kafka_managed_bootstrap="b1.example:9093",
                               mirrord_operator_chart_version="3.191.0")
    assert _split_properties(newer)["mirrord.split_topic.replication_factor"] == "copy"
    in_cluster, _ = render_minikube()
    assert set(_split_properties(in_cluster)) == {"bootstrap.servers"}, "one broker: the operator's defaults hold"

    topic = f"mirrord-tmp-{uuid.uuid4().hex[:8]}-order.created"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={"min.insync.replicas": "2"})])[topic].result(30)

    def write(**config: str) -> object:
        outcome: list[object] = []
        producer = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 8000, **config})
        producer.produce(topic, b"order", on_delivery=lambda err, _msg: outcome.append(err))
        producer.flush(30)
        return outcome[0]

    client = {k: v for k, v in old.items() if k in ("acks",)}
    assert write(**client) is None, "written with the property list's acks"
    # Measured: Apache Kafka 3.7+ takes min(min.insync.replicas, replica count) as the topic's minimum (apache/kafka
    # #14594), so on the Kafka the clusters run the operator's own acks=all is not refused either: the `acks`
    # property is for an older Kafka, the replication factor for a managed service's policy and a broker's restart.
    assert write(acks="all") is None, "Kafka 3.7+ caps the minimum at the topic's replicas"
