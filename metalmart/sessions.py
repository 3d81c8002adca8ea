"""`mirrord up` sessions, as mirrord matches them: a request marked with the W3C baggage entry
`mirrord-session=K` (what mirrord's browser extension adds) carries that baggage on into its `order.created` event's
Kafka headers, `baggage: mirrord-session=K[,other entries]` (with `traceparent` beside it where the request had one),
and `mirrord up --key K`'s Kafka filter takes every record with a header value containing `mirrord-session=K`
(mirrord's `SplitQueuesConfig::all_wildcard`, CLI 3.250.0).

OpenTelemetry's W3C propagators read and write the headers (`baggage`, `traceparent`, `tracestate`); this module is
the one place that knows the session's entry. Shared by the order service (which reads it and carries it on), the
storefront and the load generator (which send it), the processor (which learns a routed copy's key) and metrics."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from opentelemetry import baggage as otel_baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

ENTRY = "mirrord-session"  # the baggage entry `mirrord up` routes on
ROUTED = "mirrord-key"  # the Kafka header the operator (3.233+) stamps on a copy it routed to a session
ROUTED_HEADER = "X-Mirrord-Key"  # the processor's PUT names that key to the order service
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RULE = "a plain name of at most 64 letters, digits, '.', '_' or '-' (e.g. alice)"
PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
CARRIED = frozenset(PROPAGATOR.fields)  # the headers that travel on: baggage, traceparent, tracestate

# OpenTelemetry's propagator logs each baggage member it skips as malformed; the W3C format asks to skip them, and
# a client's malformed baggage is not the service's warning.
logging.getLogger("opentelemetry.baggage.propagation").setLevel(logging.ERROR)


def key_problem(key: str) -> str:
    """Why `key` cannot be a session key ("" when it can)."""
    return "" if KEY.fullmatch(key) else f"a session key must be {RULE}; got {key!r}"


def _entry_key(value: object) -> str | None:
    """The key of a baggage value: OpenTelemetry keeps an entry's properties (`bob;ttl=30`) in its value."""
    if value is None:
        return None
    return str(value).split(";", 1)[0].strip()


def _field(value: str) -> str:
    """A header value as text: bytes that are not UTF-8 reach us as lone surrogates (the HTTP server keeps them that
    way), which OpenTelemetry cannot encode; such a value is read as ISO-8859-1, as HTTP has historically allowed
    (RFC 9110, 5.5), and the propagator then skips its malformed members as the W3C format asks."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("latin-1")
    return value


def _trace_fields(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers the propagators read (lower-cased names), each value as text."""
    return {k.lower(): _field(v) for k, v in headers.items() if k.lower() in CARRIED}


def carried(headers: Mapping[str, str]) -> tuple[str | None, dict[str, str]]:
    """(the session key, the headers to carry on) of a request: its W3C trace context and baggage as OpenTelemetry
    reads and writes them. Raises ValueError for a session key that is not a plain name: it would never match a
    session (and a substring of another's key would match the wrong one)."""
    present = _trace_fields(headers)
    if not present:  # most orders: nothing to read or carry on
        return None, {}
    context = PROPAGATOR.extract(present)
    key = _entry_key(otel_baggage.get_baggage(ENTRY, context))
    if key is not None:
        problem = key_problem(key)
        if problem:
            raise ValueError(f"{ENTRY}: {problem}")
    out: dict[str, str] = {}
    PROPAGATOR.inject(out, context)
    return key, out


def marked(key: str, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """The trace headers of a request for session `key`: the baggage (and trace context) of `headers` with the
    session's entry set, as mirrord's browser extension marks a browser's requests."""
    context = PROPAGATOR.extract(_trace_fields(headers or {}))
    out: dict[str, str] = {}
    PROPAGATOR.inject(out, otel_baggage.set_baggage(ENTRY, key, context))
    return out


def key_of(headers: Mapping[str, str]) -> str | None:
    """The session key a record's (or a request's) headers carry in their baggage; None when none or malformed."""
    try:
        return carried(headers)[0]
    except ValueError:
        return None
