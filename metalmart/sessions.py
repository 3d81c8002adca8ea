"""`mirrord up` sessions: an order placed with `baggage: mirrord-session=K` (W3C Baggage) carries the Kafka header
`mirrord-session: K`, and mirrord routes it to the session whose key is K. Shared by the order service (which reads
the marker), the load generator and the storefront (which send it)."""

from __future__ import annotations

import re
import urllib.parse

HEADER = "mirrord-session"  # the Kafka header `mirrord up` routes on, and the baggage entry it comes from
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RULE = "a plain name of at most 64 letters, digits, '.', '_' or '-' (e.g. alice)"


def key_problem(key: str) -> str:
    """Why `key` cannot be a session key ("" when it can)."""
    return "" if KEY.fullmatch(key) else f"a session key must be {RULE}; got {key!r}"


def baggage(key: str) -> str:
    """The `baggage` header value that marks a request for session `key`."""
    return f"{HEADER}={urllib.parse.quote(key)}"


def from_baggage(value: str | None) -> str | None:
    """The `mirrord-session` entry of a `baggage` header (`k=v;props, k2=v2`), None when there is none. Entries that
    are not `key=value` are skipped, as the W3C format asks. Raises ValueError for a key that is not a plain name: it
    would never match a session."""
    if not value:
        return None
    for entry in value.split(","):
        name, sep, rest = entry.partition("=")
        if not sep or name.strip() != HEADER:
            continue
        key = urllib.parse.unquote(rest.split(";", 1)[0].strip())
        problem = key_problem(key)
        if problem:
            raise ValueError(f"{HEADER}: {problem}")
        return key
    return None
