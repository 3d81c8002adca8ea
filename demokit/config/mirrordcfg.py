"""mirrord configs: what the mirrord CLI would refuse in a filter, checked before a config is written (by the
`mirrord_config` role, through the filter plugin in filter_plugins/, and by `./run mirrord-config` first)."""

from __future__ import annotations

import re
import warnings

DOMAIN = "metalbear.com"  # the domain of the e-mails `./run load` and `--user` filters use
EXAMPLE = r"^.+@metalbear\.com$"


def filter_problem(regex: object) -> str:
    """'' when mirrord would take the filter; otherwise what is wrong with it and an example, in one line."""
    if not isinstance(regex, str) or not regex:
        return f"the e-mail filter is empty, and an empty filter matches nothing; e.g. '{EXAMPLE}'"
    if RUST_ONLY.search(regex):
        return ""  # mirrord's dialect reads it, Python's cannot: coverage_warning says so
    try:
        python_regex(regex)
    except re.error as exc:
        return f"the e-mail filter {regex!r} is not a valid regex ({exc}); e.g. '{EXAMPLE}'"
    return ""


# Where Python's `re` (which checks a filter here) and Rust's fancy_regex (which the mirrord CLI compiles it with, in
# the regex crate's dialect) part ways, as their syntax pages describe them: for these the check here cannot tell
# what mirrord will do, and says so.
DIALECT = (
    (re.compile(r"(?<!\\)\\Z"), "\\Z ends the text in Python but before a trailing newline in fancy_regex"),
    (re.compile(r"\(\?[imsx]*[aL]"), "the flags a and L are Python's only"),
    (re.compile(r"\[\[:\^?[a-z]+:\]\]"), "[[:class:]] is a POSIX class in mirrord's dialect, a plain set in Python's"),
    (re.compile(r"\(\?\("), "a conditional (?(…)…) is read differently by the two dialects"),
)
# Escapes Rust's dialect reads and Python's `re` refuses: the check here does not compile such a filter.
RUST_ONLY = re.compile(r"(?<!\\)\\[pPzhHeKGOR]")


def python_regex(regex: str) -> re.Pattern[str]:
    """The filter compiled by Python's `re`, without its FutureWarnings (a `[[:class:]]` is warned about here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return re.compile(regex)


def dialect(regex: str) -> str:
    """A warning when the filter uses what mirrord's regex dialect (Rust's fancy_regex) reads differently from
    Python's, or only mirrord's reads; '' when both read it alike."""
    for pattern, what in DIALECT:
        if pattern.search(regex):
            return f"warning: {what}: the check here cannot tell what mirrord matches; try the filter in a session"
    if RUST_ONLY.search(regex):
        return ("warning: \\p, \\z, \\h, \\K, \\G, \\R and the like are mirrord's (Rust's) regex, not "
                "Python's: the check here cannot tell what the filter matches; try it in a session")
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
    presenter should know before the call."""
    warning = dialect(regex)
    if warning:
        return warning
    sample = load_sample()
    matched = sum(1 for email in sample if re.search(regex, email))
    if matched == 0:
        return (f"warning: the filter matches none of the e-mails ./run load sends by default (e.g. {sample[0]}): "
                "the breakpoint will not hit under that load; send matching ones (./run load --email-user NAME)")
    if matched == len(sample):
        return ("warning: the filter matches every e-mail ./run load sends by default: the session takes all of "
                "that load and the cluster's processor none; narrow it (--user NAME or --email ADDRESS)")
    return ""


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
