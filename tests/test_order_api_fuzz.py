"""The order API against hostile input, fuzzed with Hypothesis on both databases: any body (wrong types, huge and
non-finite numbers, deep nesting, unicode, missing and extra fields, not JSON at all) is answered without a 5xx, and
an order is stored exactly when the answer is 201."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers import AppStack, Broker, order_body, request

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
FIELDS = ("customer_email", "customer_name", "shipping_address", "items", "reservation_id")
ITEM_FIELDS = ("product_id", "product_name", "quantity", "price")


def _with(body: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    if value is _DROP:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return body


_DROP = object()


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A request body: mostly a valid order with one part changed, sometimes anything at all."""
    base = order_body(draw(st.emails()) if draw(st.booleans()) else "fuzz@metalbear.com")
    kind = draw(st.sampled_from(["field", "item", "extra", "anything", "nested", "number", "text"]))
    if kind == "field":
        body: Any = _with(base, (draw(st.sampled_from(FIELDS)),), draw(JSON | st.just(_DROP)))
    elif kind == "item":
        body = _with(base, ("items", 0, draw(st.sampled_from(ITEM_FIELDS))), draw(JSON | st.just(_DROP)))
    elif kind == "extra":
        body = {**base, **draw(st.dictionaries(st.text(max_size=12), JSON, min_size=1, max_size=3))}
    elif kind == "anything":
        body = draw(JSON)
    elif kind == "nested":
        depth = draw(st.integers(min_value=50, max_value=200_000))
        opener = draw(st.sampled_from(['[', '{"a":']))
        closer = "]" if opener == "[" else "}"
        return (opener * depth + "1" + closer * depth).encode()
    elif kind == "number":
        number = draw(st.sampled_from(["1e400", "-1e400", "10" + "0" * 40, "1" * 5000, "0.000000001", "NaN"]))
        field = draw(st.sampled_from(["quantity", "price"]))
        text = json.dumps(_with(base, ("items", 0, field), 12345)).replace("12345", number)
        return text.encode()
    else:
        return draw(st.binary(max_size=200)) if draw(st.booleans()) else draw(st.text(max_size=200)).encode()
    return json.dumps(body, allow_nan=True).encode()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request: pytest.FixtureRequest, broker: Broker, log_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppStack]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'metalmart.db'}" if request.param == "sqlite" else \
        request.getfixturevalue("postgres").new_database()
    stack = AppStack(broker.bootstrap, url, log_dir).start(processor=False)
    yield stack
    stack.stop()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(body=bodies())
def test_any_body_is_answered_without_a_5xx_and_stored_only_on_201(service: AppStack, body: bytes) -> None:
    before = service.stats()["total"]
    code, answer = request("POST", f"{service.base}/api/orders", raw=body)
    after = service.stats()["total"]
    assert code < 500, (code, answer, body[:200])
    assert after == before + (1 if code == 201 else 0), (code, answer)
    if code != 201:
        assert code in (400, 413, 422) and answer.get("field"), answer


BAGGAGE_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"),
                       max_size=80)


@st.composite
def baggages(draw: st.DrawFn) -> str:
    """A `baggage` header: anything printable, or entries around a `mirrord-session` one of any value."""
    if draw(st.booleans()):
        return draw(BAGGAGE_TEXT)
    entries = draw(st.lists(BAGGAGE_TEXT, max_size=3))
    entries.insert(draw(st.integers(0, len(entries))), "mirrord-session=" + draw(
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}", fullmatch=True) | BAGGAGE_TEXT))
    return ",".join(entries)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(baggage=baggages())
# Found by this test: a byte that is not UTF-8 reached OpenTelemetry as a lone surrogate, and the order was refused
# with Python's codec error for its text (and so was a session's order whose baggage held such a member).
@example(baggage="\x80")
@example(baggage="mirrord-session=bob,x=\x80")
def test_any_baggage_header_is_answered_without_a_5xx_and_a_session_key_is_a_plain_name(
        service: AppStack, baggage: str) -> None:
    from opentelemetry import baggage as otel_baggage
    from opentelemetry.baggage.propagation import W3CBaggagePropagator

    from metalmart import sessions

    code, answer = request("POST", f"{service.base}/api/orders", order_body("fuzz@metalbear.com"),
                           headers={"baggage": baggage})
    assert code in (201, 422), (code, answer, baggage)
    # The oracle: OpenTelemetry's own reading of the header (an entry's properties after ';' are not its key).
    entry = otel_baggage.get_baggage("mirrord-session", W3CBaggagePropagator().extract({"baggage": baggage}))
    expected = None if entry is None else str(entry).split(";", 1)[0].strip()
    if expected is not None and not sessions.KEY.fullmatch(expected):
        assert code == 422 and answer["field"] == "baggage", answer
        return
    assert code == 201, answer
    assert answer.get("session_key") == expected
