"""`mirrord up` sessions by key, end to end: an order placed with W3C baggage `mirrord-session=K` (by a person
through the API or the storefront, by `./run load --session-key`) is published with that baggage (and its trace
context) in its Kafka headers, through the outbox, and mirrord's own `mirrord up` filter (built by mirrord's
`all_wildcard` and run by its jq engine, demokit/config/verdict.py) takes exactly K's orders, on Apache Kafka and on
Tansu; `./run metrics` counts them, and a copy the operator routed to a session (its `mirrord-key`) is told apart."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from demokit.config import verdict
from demokit.probes import free_port, http_ok, until
from tests import helpers
from tests.helpers import ROOT, RUN, AppStack, Broker, LocalTarget, order_body, read_topic, request, service, sql

pytestmark = pytest.mark.stack  # brokers, the app, ./run


@pytest.fixture
def stack(broker: Broker, log_dir: Path, tmp_path: Path) -> AppStack:
    s = AppStack(broker.bootstrap, f"sqlite:///{tmp_path / 'metalmart.db'}", log_dir).start()
    yield s  # type: ignore[misc]
    s.stop()


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_orders_marked_for_a_session_carry_its_baggage_to_kafka_and_metrics_count_them(
        stack: AppStack, broker: Broker, tmp_path: Path) -> None:
    report = tmp_path / "load.json"
    load = subprocess.run([*RUN, "load", "--base-url", stack.base, "--rate", "20", "--duration", "2",
                           "--session-key", "alice", "--session-share", "0.5", "--json", str(report)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert load.returncode == 0, load.stderr
    assert "50% for session alice" in load.stderr
    assert json.loads(report.read_text())["succeeded"] == 40

    # A person's order through the API, with other baggage entries around the marker (as a tracing agent adds) and
    # a trace context: both travel on.
    code, bob = request("POST", f"{stack.base}/api/orders", order_body("bob@metalbear.com"),
                        headers={"baggage": "userId=42, mirrord-session=bob;ttl=30, region=emea",
                                 "traceparent": TRACEPARENT})
    assert code == 201 and bob["session_key"] == "bob", bob
    code, refused = request("POST", f"{stack.base}/api/orders", order_body("eve@metalbear.com"),
                            headers={"baggage": "mirrord-session=not%20a%20name"})
    assert code == 422 and refused["field"] == "baggage" and "plain name" in refused["error"], refused

    messages = read_topic(broker.bootstrap, stack.topic, 41)
    headers = {m.key().decode(): {k: v.decode() for k, v in m.headers() or []} for m in messages}
    marks = Counter(h.get("baggage", "") for h in headers.values())
    assert marks == {"mirrord-session=alice": 20, "": 20, "userId=42,mirrord-session=bob%3Bttl%3D30,region=emea": 1}
    assert headers[bob["id"]]["traceparent"] == TRACEPARENT
    assert headers[bob["id"]]["customer_email"] == "bob@metalbear.com", "the e-mail filter still works"
    assert not any("mirrord-session" in h for h in headers.values()), "one marker: the baggage"
    # Through the outbox: the headers are stored with the event, so a broker that is down only delays it.
    rows = sql(stack.database_url, f"SELECT headers FROM outbox WHERE msg_key = '{bob['id']}'")
    assert json.loads(rows[0]["headers"])["baggage"].startswith("userId=42,mirrord-session=bob")

    stack.wait_shipped(41, timeout=60)
    assert stack.stats()["by_session"] == {"alice": {"orders": 20, "shipped": 20}, "bob": {"orders": 1, "shipped": 1}}
    metrics = subprocess.run([*RUN, "metrics", "--bootstrap", broker.bootstrap, "--order-url", stack.base],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert metrics.returncode == 0, metrics.stderr
    rows = {line.split("│")[1].strip(): line for line in metrics.stdout.splitlines()
            if line.count("│") >= 3 and ("alice" in line or "bob" in line)}
    assert set(rows) == {"alice", "bob"} and "20" in rows["alice"], metrics.stdout


def _records(messages: list[Any]) -> dict[str, dict[str, Any]]:
    """Each record as mirrord's jq filter sees it, by order id."""
    return {m.key().decode(): verdict.record(m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(),
                                             m.value(), m.headers() or []) for m in messages}


@pytest.mark.parametrize("which", ["apache", "tansu"])
def test_mirrord_ups_own_filter_takes_exactly_each_keys_orders_end_to_end(
        mirrord: verdict.Verdict, which: str, log_dir: Path, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    """alice's and bob's orders and unmarked ones, placed through the API, `./run load --session-key` and the
    storefront (its session field, and the baggage mirrord's browser extension adds): mirrord's program for key K
    (`SplitQueuesConfig::all_wildcard`, run by mirrord's jq engine on each published record) matches 100% of K's
    orders and none of the others'. A record with the old marker (header `mirrord-session: alice`) is matched by
    no key: what the sixth beat did before."""
    broker: Broker = request.getfixturevalue("broker" if which == "apache" else "tansu")
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "metalmart", "seed"], env={"DATABASE_URL": url},
                   check=True, capture_output=True)
    stack = AppStack(broker.bootstrap, url, log_dir).start(processor=False)
    cat_port, front_port = free_port(), free_port()
    catalogue = service("catalogue", {"DATABASE_URL": url, "PORT": str(cat_port)}, log_dir).start()
    front = service("storefront", {"PORT": str(front_port), "ORDER_SERVICE_URL": stack.base,
                                   "CATALOGUE_URL": f"http://127.0.0.1:{cat_port}"}, log_dir).start()
    try:
        until(lambda: http_ok(f"http://127.0.0.1:{cat_port}/ready"), 30, "catalogue")
        until(lambda: http_ok(f"http://127.0.0.1:{front_port}/ready"), 30, "storefront")
        for key in ("alice", "bob"):
            done = subprocess.run([*RUN, "load", "--base-url", stack.base, "--rate", "10", "--duration", "1",
                                   "--session-key", key, "--session-share", "0.5"],
                                  cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        for key, baggage in (("alice", None), (None, "mirrord-session=bob"), (None, None)):
            form = {"product_id": "MM-ANVIL-01", "quantity": "1", "email": f"{uuid.uuid4().hex[:6]}@shop.example",
                    "name": "Vera Visitor", "street": "7 Rivet Row", "city": "Pittsburgh", "zip_code": "15201",
                    "country": "US", "session_key": key or ""}
            code = _post_form(f"http://127.0.0.1:{front_port}/order", form,
                              {"baggage": baggage} if baggage else {})
            assert code == 303, code
        for key in ("alice", "bob", None):
            code, _ = helpers.request("POST", f"{stack.base}/api/orders", order_body(f"{key}@metalbear.com"),
                                      headers={"baggage": f"mirrord-session={key}"} if key else None)
            assert code == 201
        placed = {r["order_id"]: r["session_key"] for r in sql(url, "SELECT order_id, session_key FROM order_sessions")}
        total = sql(url, "SELECT COUNT(*) AS n FROM orders")[0]["n"]
        records = _records(read_topic(broker.bootstrap, stack.topic, total))
    finally:
        front.stop()
        catalogue.stop()
        stack.stop()
    assert Counter(placed.values()) == {"alice": 7, "bob": 7}, placed
    for key in ("alice", "bob"):
        program = mirrord.up_filter(key)
        ids = sorted(records)
        taken = dict(zip(ids, mirrord.matches({"jq_filter": program}, [records[i] for i in ids]), strict=True))
        assert {i for i, yes in taken.items() if yes} == {i for i, k in placed.items() if k == key}, key
    legacy = {**next(iter(records.values())), "headers": {"customer_email": "a@b.c", "mirrord-session": "alice"}}
    assert mirrord.matches({"jq_filter": mirrord.up_filter("alice")}, [legacy]) == [False]


def _post_form(url: str, form: dict[str, str], headers: dict[str, str]) -> int:
    import urllib.error
    import urllib.parse
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    req = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), headers=headers, method="POST")
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_copy_routed_to_a_session_names_whose_laptop_processed_it(broker: Broker, log_dir: Path,
                                                                    tmp_path: Path) -> None:
    """The operator (3.233+) routes a session's copy to its temporary topic stamped with `mirrord-key: K`. Here the
    copy is written as the operator writes it, and the processor that reads the session's topic (the laptop's)
    steps the order: the order service, the stats and the storefront's tracking page name session K."""
    from confluent_kafka import Producer

    from demokit.kafka import ensure_topic

    stack = AppStack(broker.bootstrap, f"sqlite:///{tmp_path / 'metalmart.db'}", log_dir).start(processor=False)
    session_topic = f"mirrord-tmp-{uuid.uuid4().hex[:8]}-{stack.topic}"
    ensure_topic(broker.bootstrap, session_topic, 1)
    laptop = service("processor", {**stack.processor_env, "KAFKA_TOPIC": session_topic, "PORT": str(free_port())},
                     log_dir).start()
    front_port = free_port()
    front = service("storefront", {"PORT": str(front_port), "ORDER_SERVICE_URL": stack.base,
                                   "CATALOGUE_URL": "http://127.0.0.1:9"}, log_dir).start()
    try:
        until(lambda: http_ok(f"http://127.0.0.1:{laptop.env['PORT']}/ready"), 30, "the laptop's processor")
        code, order = request("POST", f"{stack.base}/api/orders", order_body("routed@metalbear.com"))
        assert code == 201
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        producer.produce(session_topic, key=order["id"], value=json.dumps({"order_id": order["id"]}),
                         headers=[("customer_email", b"routed@metalbear.com"), ("mirrord-key", b"alice")])
        assert producer.flush(10) == 0
        stack.wait_shipped(1, timeout=30)
        tracked = request("GET", f"{stack.base}/api/orders/track/{order['tracking_token']}")[1]
        assert (tracked["processed_by"], tracked["processed_for_session"]) == ("mirrord", "alice"), tracked
        assert stack.stats()["processed_by_session"] == {"alice": 1}
        until(lambda: http_ok(f"http://127.0.0.1:{front_port}/health"), 30, "storefront")
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{front_port}/track/{order['tracking_token']}",
                                    timeout=10) as page:
            assert '<span id="session-key">alice</span>' in page.read().decode()
        code, refused = request("PUT", f"{stack.base}/api/orders/{order['id']}/status", {"status": "shipped"},
                                headers={"X-Mirrord-Key": "not a key"})
        assert code == 422 and refused["field"] == "X-Mirrord-Key", refused
    finally:
        front.stop()
        laptop.stop()
        stack.stop()


def test_a_bad_session_key_is_one_line_before_any_order() -> None:
    done = subprocess.run([*RUN, "load", "--base-url", "http://127.0.0.1:9", "--session-key", "a b"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: --session-key: a session key must be a plain name of at most 64 letters, digits, '.', '_' or '-' "
        "(e.g. alice); got 'a b'"], done.stderr


def test_mirrord_config_up_writes_the_processor_as_a_mirrord_up_service(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path)
    out = tmp_path / "mirrord"
    out.mkdir()
    first = target.run("mirrord-config", "--target", "local", "--user", "alice", "--output",
                       str(out / "alice.json"), "--up")
    assert first.returncode == 0, first.stderr
    up = yaml.safe_load((out / "mirrord-up.yaml").read_text())
    service = up["services"]["order-processor"]
    assert service["target"] == {"path": "deployment/order-processor", "namespace": "metalmart"}
    assert service["run"]["command"] == [str(ROOT / ".venv" / "bin" / "python"), "-m", "metalmart", "processor"]
    assert f"mirrord up -f {out / 'mirrord-up.yaml'} --key KEY" in first.stderr
    again = target.run("mirrord-config", "--target", "local", "--user", "alice", "--output",
                       str(out / "alice.json"), "--up")
    assert again.returncode == 0 and "nothing changed" in again.stderr, again.stderr


def test_a_republished_event_keeps_its_trace_headers_and_an_old_events_session_becomes_baggage() -> None:
    from metalmart.orders import carried_on

    assert carried_on({"customer_email": "a@b.c", "baggage": "mirrord-session=bob,x=1", "traceparent": TRACEPARENT}) \
        == {"baggage": "mirrord-session=bob,x=1", "traceparent": TRACEPARENT}
    # Written before the baggage was carried on: the session's own header, matched by no mirrord up filter.
    assert carried_on({"customer_email": "a@b.c", "mirrord-session": "alice"}) == {"baggage": "mirrord-session=alice"}
    assert carried_on({"customer_email": "a@b.c"}) == {}
