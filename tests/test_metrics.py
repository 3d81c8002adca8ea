"""`./run metrics` against the real broker: exact offsets and lag, mirrord topics classified, full lag before commits.

Messages are produced one record per batch (flush after each): Tansu reports a partition's end offset as the base
offset of its last batch + 1, which is the true end offset only when every batch holds one record.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from demokit.kafka import ensure_topic
from demokit.observe.metrics import Collector, topic_role
from demokit.probes import free_port, until
from tests.helpers import ROOT, RUN, Broker


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("order.created", ("original", "order.created")),
        ("mirrord-tmp-8dk2jw7q1x-order.created", ("mirrord-local", "order.created")),
        ("mirrord-tmp-8dk2jw7q1x-fallback-order.created", ("mirrord-fallback", "order.created")),
        ("payments", None),
        ("mirrord-tmp-8dk2jw7q1x-payments", None),
        ("mirrord-tmp-8dk2jw7q1x-fallback-payments", None),
        ("mirrord-tmp-8dk2-jw7q-order.created", ("mirrord-local", "order.created")),
        ("mirrord-tmp-order.created", None),
    ],
)
def test_topics_are_classified_as_the_operator_names_them(name: str, expected: tuple[str, str] | None) -> None:
    assert topic_role(name, "order.created") == expected


def _produce(bootstrap: str, topic: str, per_partition: dict[int, int]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition, count in per_partition.items():
        for i in range(count):
            producer.produce(topic, value=f"m{i}".encode(), partition=partition)
            producer.flush(10)  # one record per batch: see the module docstring


def _commit(bootstrap: str, group: str, offsets: list[TopicPartition]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.assign(offsets)
    consumer.commit(offsets=offsets, asynchronous=False)
    consumer.close()


def test_exact_offsets_lag_and_temporary_topics(broker: Broker) -> None:
    original = f"orders-{uuid.uuid4().hex[:6]}"
    local_tmp = f"mirrord-tmp-q7w8e9r0t1-{original}"
    fallback_tmp = f"mirrord-tmp-q7w8e9r0t1-fallback-{original}"
    other_team = f"mirrord-tmp-a1b2c3d4e5-payments-{uuid.uuid4().hex[:4]}"  # a session splitting another topic
    for topic in (original, local_tmp, fallback_tmp, f"unrelated-{uuid.uuid4().hex[:4]}", other_team):
        ensure_topic(broker.bootstrap, topic, 3 if topic == original else 1)
    _produce(broker.bootstrap, original, {0: 5, 1: 3, 2: 0})
    _produce(broker.bootstrap, local_tmp, {0: 2})
    _produce(broker.bootstrap, fallback_tmp, {0: 4})
    reader = f"reader-{uuid.uuid4().hex[:6]}"
    _commit(broker.bootstrap, reader, [TopicPartition(original, 0, 2), TopicPartition(original, 1, 3)])
    session = f"session-{uuid.uuid4().hex[:6]}"
    _commit(broker.bootstrap, session, [TopicPartition(local_tmp, 0, 1)])
    processor_group = f"processor-{uuid.uuid4().hex[:6]}"  # never committed

    snap = Collector(broker.bootstrap, original, processor_group, None).snapshot()
    assert snap["errors"] == {}
    topics = {t["name"]: t for t in snap["topics"]}
    assert set(topics) == {original, local_tmp, fallback_tmp}
    assert [p["end_offset"] for p in topics[original]["partitions"]] == [5, 3, 0]
    assert topics[original]["end_offset_total"] == 8
    assert (topics[local_tmp]["role"], topics[local_tmp]["splits"]) == ("mirrord-local", original)
    assert (topics[fallback_tmp]["role"], topics[fallback_tmp]["end_offset_total"]) == ("mirrord-fallback", 4)

    groups = {g["group"]: g for g in snap["consumer_groups"]}
    assert [(p["partition"], p["committed"], p["end_offset"], p["lag"]) for p in groups[reader]["partitions"]] == [
        (0, 2, 5, 3), (1, 3, 3, 0)]
    assert groups[reader]["lag_total"] == 3
    assert groups[session]["lag_total"] == 1
    assert groups[processor_group]["lag_total"] == 8, "a group with no commits is behind by everything"
    assert {p["committed"] for p in groups[processor_group]["partitions"]} == {None}
    assert all(g["beyond_end"] == [] for g in groups.values())


def test_a_committed_offset_beyond_the_end_is_negative_lag_and_named(broker: Broker) -> None:
    """What a topic deleted and created again under a group leaves (Kafka's own tool shows lag -7 here)."""
    topic = f"orders-{uuid.uuid4().hex[:6]}"
    ensure_topic(broker.bootstrap, topic, 1)
    _produce(broker.bootstrap, topic, {0: 3})
    group = f"processor-{uuid.uuid4().hex[:6]}"
    _commit(broker.bootstrap, group, [TopicPartition(topic, 0, 10)])
    snap = Collector(broker.bootstrap, topic, group, None).snapshot()
    mine = next(g for g in snap["consumer_groups"] if g["group"] == group)
    assert [(p["committed"], p["end_offset"], p["lag"]) for p in mine["partitions"]] == [(10, 3, -7)]
    assert mine["beyond_end"] == [f"{topic}[0] committed 10, end 3"]
    ensure_topic(broker.bootstrap, "order.created", 3)  # what ./run metrics shows without a target's topic
    _commit(broker.bootstrap, group, [TopicPartition("order.created", 2, 1_000_000)])
    done = _metrics("--bootstrap", broker.bootstrap, "--order-url", f"http://127.0.0.1:{free_port()}")
    assert f"group {group} committed beyond the end (order.created[2] committed 1000000, end" in " ".join(
        done.stdout.split()), done.stdout


def _metrics(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN, "metrics", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_json_only_on_stdout_and_a_missing_order_service_is_named(broker: Broker) -> None:
    ensure_topic(broker.bootstrap, "order.created", 3)
    dead = f"http://127.0.0.1:{free_port()}"
    done = _metrics("--bootstrap", broker.bootstrap, "--order-url", dead, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert {"collected_at", "bootstrap", "topics", "consumer_groups", "orders"} <= set(data)
    assert data["orders"] is None
    assert dead in data["errors"]["order_service"]
    assert any(t["name"] == "order.created" and t["role"] == "original" for t in data["topics"])
    assert "order_service unreachable" in done.stderr


@pytest.mark.stack
def test_nothing_reachable_is_one_line_and_non_zero() -> None:
    done = _metrics("--bootstrap", f"127.0.0.1:{free_port()}", "--order-url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 3
    assert done.stderr.strip().startswith("error: nothing could be collected")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_a_stable_group_without_members_is_shown_as_not_reported() -> None:
    """Tansu answers "stable, 0 members" for a group that consumes: not shown as a fact."""
    from rich.console import Console

    from demokit.tasks.metrics import render

    def shown(state: str, members: int) -> str:
        snap = {"bootstrap": "127.0.0.1:9092", "collected_at": "now", "topics": [], "orders": None, "errors": {},
                "consumer_groups": [{"group": "order-processor", "state": state, "members": members,
                                     "partitions": [{"topic": "order.created", "partition": 0, "committed": 5,
                                                     "end_offset": 5, "lag": 0}]}]}
        console = Console(width=200, record=True)
        console.print(render(snap))
        return console.export_text()

    assert "not reported" in shown("Stable", 0) and re.search(r"│\s+\?\s+│", shown("Stable", 0))
    assert "not reported" not in shown("Stable", 1) and "Stable" in shown("Stable", 1)
    assert "Empty" in shown("Empty", 0)


@pytest.mark.parametrize(
    ("name", "source"),
    [("mm.order.created.ab12-", "mirrord-kafka"), ("mm.order.created.ab12-fallback-", "cluster"),
     ("mirrord-tmp-ab12-order.created", "cluster"), ("order.created", "cluster")],
)
def test_the_processor_tells_a_session_by_the_operators_topic_format(name: str, source: str) -> None:
    from metalmart.processor import processor_source

    fmt = "mm.{{ORIGINAL_TOPIC}}.{{RANDOM}}{{FALLBACK}}"
    assert processor_source(name, fmt) == source


@pytest.mark.stack
def test_a_temporary_topic_no_one_reads_is_reported_and_its_fix_deletes_only_it(tmp_path: Path) -> None:
    """On `local` with Apache Kafka and the operator's topic format set in the inventory: the topics of a session
    that runs (read by its consumer and the fallback's) and one a session left behind."""
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient, NewTopic

    from tests.helpers import LocalTarget

    target = LocalTarget(tmp_path, local_kafka="apache")
    with (target.inventories / "local" / "group_vars" / "all.yml").open("a") as values:
        values.write('metalmart_kafka_split_topic_format: !unsafe "mm-{{RANDOM}}{{FALLBACK}}{{ORIGINAL_TOPIC}}"\n')
    try:
        assert target.run("fresh-start", "--target", "local", timeout=300).returncode == 0
        bootstrap = f"127.0.0.1:{target.ports['broker']}"
        live, fallback, left = "mm-ab12cd-order.created", "mm-ab12cd-fallback-order.created", "mm-zz99-order.created"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for fut in admin.create_topics([NewTopic(t, 1, 1) for t in (live, fallback, left)]).values():
            fut.result(30)
        readers = []
        for topic in (live, fallback):
            reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reads-{topic}"})
            reader.subscribe([topic])
            readers.append(reader)

        def assigned() -> None:
            for reader in readers:
                reader.poll(0.2)
                assert reader.assignment(), "the session's consumers hold their topics"

        until(assigned, 60, "the session's consumers assigned")
        stop = threading.Event()

        def keep_reading() -> None:  # as the session's consumers do: poll, or their group drops them
            while not stop.is_set():
                for reader in readers:
                    reader.poll(0.2)

        polling = threading.Thread(target=keep_reading)
        polling.start()
        try:
            metrics = json.loads(target.run("metrics", "--target", "local", "--json").stdout)
            roles = {t["name"]: t["role"] for t in metrics["topics"]}
            assert roles == {"order.created": "original", live: "mirrord-local", fallback: "mirrord-fallback",
                             left: "mirrord-local"}, roles
            checks = {c["name"]: c for c in json.loads(target.run("doctor", "--target", "local", "--json").stdout)[
                "checks"]}
            check = checks["no leftover temporary topics"]
            assert not check["ok"] and not check["blocking"] and left in check["detail"], check
            assert live not in check["detail"] and fallback not in check["detail"]
            fix = shlex.split(check["fix"])
            assert fix[:2] == ["./run", "split-topics"], fix
            done = target.run(*fix[1:])
            assert done.returncode == 0 and f"deleted 1 unread temporary topic(s): {left}" in done.stderr, done.stderr
            assert set(admin.list_topics(timeout=10).topics) >= {live, fallback} and \
                left not in admin.list_topics(timeout=10).topics
            after = {c["name"]: c for c in json.loads(target.run("doctor", "--target", "local", "--json").stdout)[
                "checks"]}
            assert after["no leftover temporary topics"]["ok"], after["no leftover temporary topics"]
        finally:
            stop.set()
            polling.join()
            for reader in readers:
                reader.close()
    finally:
        target.run("teardown", "--target", "local", "--purge")
