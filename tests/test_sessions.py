"""`mirrord up` sessions by key, end to end on Apache Kafka: an order placed with `baggage: mirrord-session=K` (by a
person through the API, by `./run load --session-key`) is published with the Kafka header `mirrord-session: K`
through the outbox, so a session routing on that header gets exactly its orders; `./run metrics` counts them."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.helpers import ROOT, RUN, AppStack, Broker, LocalTarget, order_body, read_topic, request, sql


@pytest.fixture
def stack(broker: Broker, log_dir: Path, tmp_path: Path) -> AppStack:
    s = AppStack(broker.bootstrap, f"sqlite:///{tmp_path / 'metalmart.db'}", log_dir).start()
    yield s  # type: ignore[misc]
    s.stop()


def test_orders_marked_for_a_session_carry_its_key_to_kafka_and_metrics_count_them(
        stack: AppStack, broker: Broker, tmp_path: Path) -> None:
    report = tmp_path / "load.json"
    load = subprocess.run([*RUN, "load", "--base-url", stack.base, "--rate", "20", "--duration", "2",
                           "--session-key", "alice", "--session-share", "0.5", "--json", str(report)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert load.returncode == 0, load.stderr
    assert "50% for session alice" in load.stderr
    assert json.loads(report.read_text())["succeeded"] == 40

    # A person's order through the API, with other baggage entries around the marker (as a tracing agent adds).
    code, bob = request("POST", f"{stack.base}/api/orders", order_body("bob@metalbear.com"),
                        headers={"baggage": "userId=42, mirrord-session=bob;ttl=30, region=emea"})
    assert code == 201 and bob["session_key"] == "bob", bob
    code, refused = request("POST", f"{stack.base}/api/orders", order_body("eve@metalbear.com"),
                            headers={"baggage": "mirrord-session=not%20a%20name"})
    assert code == 422 and refused["field"] == "baggage" and "plain name" in refused["error"], refused

    messages = read_topic(broker.bootstrap, stack.topic, 41)
    keys = Counter(dict(m.headers() or []).get("mirrord-session", b"").decode() for m in messages)
    assert keys == {"alice": 20, "": 20, "bob": 1}, keys
    marked = next(m for m in messages if m.key().decode() == bob["id"])
    assert dict(marked.headers())["customer_email"] == b"bob@metalbear.com", "the e-mail filter still works"
    # Through the outbox: the header is stored with the event, so a broker that is down only delays it.
    rows = sql(stack.database_url, f"SELECT headers FROM outbox WHERE msg_key = '{bob['id']}'")
    assert json.loads(rows[0]["headers"])["mirrord-session"] == "bob"

    stack.wait_shipped(41, timeout=60)
    assert stack.stats()["by_session"] == {"alice": {"orders": 20, "shipped": 20}, "bob": {"orders": 1, "shipped": 1}}
    metrics = subprocess.run([*RUN, "metrics", "--bootstrap", broker.bootstrap, "--order-url", stack.base],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert metrics.returncode == 0, metrics.stderr
    rows = {line.split("│")[1].strip(): line for line in metrics.stdout.splitlines()
            if line.count("│") >= 3 and ("alice" in line or "bob" in line)}
    assert set(rows) == {"alice", "bob"} and "20" in rows["alice"], metrics.stdout


def test_a_bad_session_key_is_one_line_before_any_order() -> None:
    done = subprocess.run([*RUN, "load", "--base-url", "http://127.0.0.1:9", "--session-key", "a b"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: --session-key: a session key must be a plain name of at most 64 letters, digits, '.', '_' or '-' "
        "(e.g. alice); got 'a b'"], done.stderr


# `mirrord up`'s file, as its config model reads it (mirrord's `mirrord-up` crate, CLI 3.245+; no schema of it is in
# ../shared): closed objects, as mirrord up refuses a field it does not know.
UP_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["services"],
    "properties": {
        "common": {"type": "object", "additionalProperties": False, "properties": {
            k: {"type": "boolean"} for k in ("accept_invalid_certificates", "operator", "telemetry")} | {
            "context": {"type": "string"}}},
        "services": {"type": "object", "minProperties": 1, "additionalProperties": {
            "type": "object", "additionalProperties": False, "required": ["target", "run"],
            "properties": {
                "target": {"oneOf": [{"const": "none"}, {
                    "type": "object", "additionalProperties": False, "required": ["path"],
                    "properties": {"path": {"type": "string", "pattern": "^(deployment|pod|statefulset)/"},
                                   "namespace": {"type": "string"}}}]},
                "default_mode": {"enum": ["split", "replace"]},
                "http_filter": {"type": "object"},
                "ignore_ports": {"type": "array"},
                "skip": {"type": "boolean"},
                "run": {"type": "object", "additionalProperties": False, "required": ["command"],
                        "properties": {"type": {"enum": ["exec", "container"]},
                                       "command": {"type": "array", "minItems": 1, "items": {"type": "string"}}}},
            }}},
    },
}


def test_mirrord_config_up_writes_the_processor_as_a_mirrord_up_service(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path)
    out = tmp_path / "mirrord"
    out.mkdir()
    first = target.run("mirrord-config", "--target", "local", "--user", "alice", "--output",
                       str(out / "alice.json"), "--up")
    assert first.returncode == 0, first.stderr
    up = yaml.safe_load((out / "mirrord-up.yaml").read_text())
    jsonschema.validate(up, UP_SCHEMA)
    service = up["services"]["order-processor"]
    assert service["target"] == {"path": "deployment/order-processor", "namespace": "metalmart"}
    assert service["run"]["command"] == ["python", "-m", "metalmart", "processor"]
    assert f"mirrord up -f {out / 'mirrord-up.yaml'} --key KEY" in first.stderr
    again = target.run("mirrord-config", "--target", "local", "--user", "alice", "--output",
                       str(out / "alice.json"), "--up")
    assert again.returncode == 0 and "nothing changed" in again.stderr, again.stderr
