"""mirrord configs: what the mirrord CLI would refuse in a filter, checked before a config is written (by the
`mirrord_config` role, through the filter plugin in filter_plugins/, and by `./run mirrord-config` first)."""

from __future__ import annotations

import json
import re
import warnings

from demokit.config import verdict

DOMAIN = "metalbear.com"  # the domain of the e-mails `./run load` and `--user` filters use
EXAMPLE = r"^.+@metalbear\.com$"


def filter_problem(regex: object) -> str:
    """'' when mirrord would take the filter; otherwise what is wrong with it and an example, in one line."""
    return checked(regex)[0]


def checked(regex: object) -> tuple[str, str]:
    """(the filter's problem or '', which checker said so): mirrord's own code where its checker is built
    (demokit.config.verdict: mirrord's config `verify`, which compiles the regex with fancy_regex), else Python's
    `re`, which never refuses what mirrord's dialect reads and says where it cannot tell (`dialect`)."""
    if not isinstance(regex, str) or not regex:
        return f"the e-mail filter is empty, and an empty filter matches nothing; e.g. '{EXAMPLE}'", "empty"
    mirrords = verdict.open_built()
    if mirrords is not None:
        with mirrords:
            answer = mirrords.regex(regex)
        said = f"checked by mirrord {verdict.MIRRORD_VERSION}'s own code"
        if answer["ok"]:
            return "", said
        return _refused(regex, f"mirrord {verdict.MIRRORD_VERSION}'s own check", answer["error"]), said
    return python_check(regex), "checked by Python's re (mirrord's own checker is not built here)"


def python_check(regex: str) -> str:
    """Python's check, where mirrord's own is not built: it never refuses what mirrord's dialect reads, and
    `dialect` says where it cannot tell."""
    error = _python_error(regex)
    if error is None or RUST_ONLY.search(regex) or not error.startswith(SHARED_ERRORS):
        return ""  # mirrord's dialect may read what Python's refuses: `dialect` says the check cannot tell
    return _refused(regex, "Python's re", error)


def _refused(regex: str, who: str, error: str) -> str:
    """The one line for a filter mirrord would not take, whichever checker found it."""
    return f"the e-mail filter {regex!r} is not a regex mirrord takes ({who}: {error}); e.g. '{EXAMPLE}'"


def _python_error(regex: str) -> str | None:
    try:
        python_regex(regex)
    except re.error as exc:
        return str(exc)
    return None


# Where Python's `re` (which checks a filter here) and Rust's fancy_regex (which the mirrord CLI compiles it with, in
# the regex crate's dialect) part ways, as their syntax pages describe them: for these the check here cannot tell
# what mirrord will do, and says so.
DIALECT = (
    (re.compile(r"(?<!\\)\\Z"), "\\Z ends the text in Python but before a trailing newline in fancy_regex"),
    (re.compile(r"\(\?[imsx]*[aL]"), "the flags a and L are Python's only"),
    (re.compile(r"\[\[:\^?[a-z]+:\]\]"), "[[:class:]] is a POSIX class in mirrord's dialect, a plain set in Python's"),
    (re.compile(r"\(\?\("), "a conditional (?(…)…) is read differently by the two dialects"),
    (re.compile(r"(?<!\\)\\[bB]\{"), "\\b{…} is a word-boundary kind in mirrord's dialect"),
    (re.compile(r"(?<!\\)\\[<>]"), "\\< and \\> are word boundaries in mirrord's dialect, plain < and > in Python's"),
    (re.compile(r"(?<!\\)\\[0-9]"), "\\ and digits are an octal or a group in Python's dialect, a back reference "
                                    "in mirrord's"),
)
# Escapes Rust's dialect reads and Python's `re` refuses: the check here does not compile such a filter.
RUST_ONLY = re.compile(r"(?<!\\)\\[pPzhHeKGOR]")
# What Python's `re` refuses that mirrord's fancy_regex refuses too (its error's start); any other refusal may be
# mirrord's dialect (`(?-i)`, `\x{41}`, `[a--b]`, …), where the check here cannot tell and says so. Found by
# fuzzing both engines side by side (tests/test_mirrord_verdict.py).
SHARED_ERRORS = ("missing ), unterminated subpattern", "unbalanced parenthesis", "unterminated character set")


def python_regex(regex: str) -> re.Pattern[str]:
    """The filter compiled by Python's `re`, without its FutureWarnings (a `[[:class:]]` is warned about here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return re.compile(regex)


def _nested_set(regex: str) -> bool:
    """Whether a `[` stands inside a set (`[a[b]`): a nested set in mirrord's dialect, a plain `[` in Python's."""
    i, start = 0, -1  # start: where the open set's first member is, -1 outside a set
    while i < len(regex):
        char = regex[i]
        if char == "\\":
            i += 2
            continue
        if start < 0:
            if char == "[":
                start = i + 1 + (regex[i + 1 : i + 2] == "^")
                i = start + (regex[start : start + 1] == "]")  # a leading ] is a member
                continue
        elif char == "[":
            return True
        elif char == "]":
            start = -1
        i += 1
    return False


def dialect(regex: str) -> str:
    """A warning when the filter uses what mirrord's regex dialect (Rust's fancy_regex) reads differently from
    Python's, or only mirrord's reads; '' when both read it alike."""
    for pattern, what in DIALECT:
        if pattern.search(regex):
            return f"warning: {what}: the check here cannot tell what mirrord matches; try the filter in a session"
    if _nested_set(regex):
        return ("warning: a [ inside a set opens a nested set in mirrord's dialect and is a plain [ in Python's: the "
                "check here cannot tell what mirrord matches; try the filter in a session")
    if RUST_ONLY.search(regex):
        return ("warning: \\p, \\z, \\h, \\K, \\G, \\R and the like are mirrord's (Rust's) regex, not "
                "Python's: the check here cannot tell what the filter matches; try it in a session")
    error = _python_error(regex)
    if error is not None and not error.startswith(SHARED_ERRORS):
        return (f"warning: Python's re refuses it ({error}), mirrord's dialect may read it: the check here cannot "
                "tell; try the filter in a session, or build mirrord's own checker (./run test does)")
    return ""


def split_entries(config: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
    """(queue id, entry) of `feature.split_queues` in either form the CLI takes: a map from queue id to its filter,
    or (CLI 3.227+) a list of entries that each name their `queue_id`."""
    feature = config.get("feature")
    queues = feature.get("split_queues") if isinstance(feature, dict) else None
    if isinstance(queues, dict):
        return [(str(k), v) for k, v in queues.items() if isinstance(v, dict)]
    if isinstance(queues, list):
        return [(str(e.get("queue_id")), e) for e in queues if isinstance(e, dict) and e.get("queue_id")]
    return []


def amount_filter(email_regex: str, min_total: float) -> str:
    """A Kafka `jq_filter` (mirrord CLI 3.232+, operator 3.183+): the orders whose `customer_email` header matches
    `email_regex` (jq's `test`) and whose JSON body's `total_amount` is at least `min_total`. mirrord runs it on
    each record's JSON (`headers`, and `payload` as text)."""
    return (f'(.headers.customer_email // "" | test({json.dumps(email_regex)})) and '
            f"(.payload | fromjson | .total_amount >= {min_total:g})")


def user_filter(user: str, domain: str) -> str:
    """Matches exactly the e-mails `./run load --email-user USER` sends (USER+<run>-<n>@DOMAIN), and USER@DOMAIN."""
    return f"^{re.escape(user)}(\\+.*)?@{re.escape(domain)}$"


def address_filter(address: str) -> str:
    return f"^{re.escape(address)}$"


def load_sample(count: int = 200, **options: object) -> list[str]:
    """E-mails `./run load` sends (with its default options, unless given)."""
    from metalmart.loadgen import FALLBACK_PRODUCTS, LoadConfig, OrderFactory

    factory = OrderFactory(LoadConfig(rate=1, duration=count, base_url="http://127.0.0.1", **options),
                           FALLBACK_PRODUCTS)
    return [factory.email(i, factory.people[i % len(factory.people)]) for i in range(count)]


def coverage_warning(regex: str) -> str:
    """'' when the filter matches some but not all of the e-mails `./run load` sends by default; otherwise what a
    presenter should know before the call. Matched by mirrord's own regex engine where its checker is built, else
    by Python's (which says where the two dialects part)."""
    sample = load_sample()
    mirrords = verdict.open_built()
    if mirrords is not None:
        with mirrords:
            matched = sum(mirrords.matches({"message_filter": {"customer_email": regex}},
                                           [{"headers": {"customer_email": email}} for email in sample]))
    else:
        warning = dialect(regex)
        if warning:
            return warning
        matched = sum(1 for email in sample if re.search(regex, email))
    if matched == 0:
        return (f"warning: the filter matches none of the e-mails ./run load sends by default (e.g. {sample[0]}): "
                "the breakpoint will not hit under that load; send matching ones (./run load --email-user NAME)")
    if matched == len(sample):
        return ("warning: the filter matches every e-mail ./run load sends by default: the session takes all of "
                "that load and the cluster's processor none; narrow it (--user NAME or --email ADDRESS)")
    return ""


def matched(kafka_filter: dict[str, object], orders: list[dict[str, object]]) -> tuple[int | None, str]:
    """(how many of `orders` the Kafka filter takes, which checker said so), the filter run on each order's event as
    the app publishes it (metalmart.orders.event_for). By mirrord's own code where its checker is built; else a
    `customer_email` regex by Python's (None where its dialect cannot tell, or for a jq program). ValueError, naming
    the checker, when it refuses the filter."""
    from metalmart.orders import event_for

    mirrords = verdict.open_built()
    if mirrords is not None:
        records = []
        for order in orders:
            key, value, headers = event_for(order)
            records.append(verdict.record("order.created", 0, 0, None, key.encode(), json.dumps(value).encode(),
                                          [(k, v.encode()) for k, v in headers.items()]))
        with mirrords:
            try:
                taken = mirrords.matches(kafka_filter, records)
            except ValueError as exc:
                raise ValueError(f"mirrord {verdict.MIRRORD_VERSION}'s own code: {exc}") from None
        return sum(taken), f"matched by mirrord {verdict.MIRRORD_VERSION}'s own code"
    regex = (kafka_filter.get("message_filter") or {}).get("customer_email")  # type: ignore[union-attr]
    if not isinstance(regex, str) or kafka_filter.get("jq_filter"):
        return None, "a jq program needs mirrord's own checker (./run test builds it)"
    if dialect(regex):
        return None, "it is mirrord's regex dialect, not Python's; try it in a session"
    try:
        pattern = python_regex(regex)
    except re.error as exc:
        raise ValueError(f"Python's re: not a regular expression ({exc})") from None
    return sum(1 for o in orders if pattern.search(str(o["customer_email"]))), "matched by Python's re"


# What each part of the demo needs of mirrord, by version (mirrord's docs and changelog to CLI 3.250.0; chart 3.187.0).
CLI_NEEDS = (("3.221.0", "the splitting resources the demo applies (MirrordSplitConfig)"),
             ("3.245.0", "mirrord up, for sessions by key (the sixth beat)"))
OPERATOR_NEEDS = (("3.170.0", "the splitting resources the demo applies (MirrordSplitConfig, MirrordPropertyList)"),)
OPERATOR_NEEDS_MANAGED = (("3.191.0", "temporary topics at the order topic's replication factor (a managed Kafka "
                                      "refuses 1)"),)
CLI_UPGRADE = "https://metalbear.co/mirrord/docs/overview/quick-start/"


def version(text: str) -> tuple[int, int, int] | None:
    """The first x.y.z in `text` (`mirrord 3.250.0`, an image tag `3.187.0`)."""
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


def short_of(have: tuple[int, int, int], needs: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The (minimum, what needs it) of `needs` that version `have` does not reach."""
    return [(low, what) for low, what in needs if have < version(low)]  # type: ignore[operator]
