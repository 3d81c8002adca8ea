"""mirrord configs: what the mirrord CLI would refuse in a filter, checked before a config is written (by the
`mirrord_config` role, through the filter plugin in filter_plugins/, and by `./run mirrord-config` first)."""

from __future__ import annotations

import re

DOMAIN = "metalbear.com"  # the domain of the e-mails `./run load` and `--user` filters use
EXAMPLE = r"^.+@metalbear\.com$"


def filter_problem(regex: object) -> str:
    """'' when mirrord would take the filter; otherwise what is wrong with it and an example, in one line."""
    if not isinstance(regex, str) or not regex:
        return f"the e-mail filter is empty, and an empty filter matches nothing; e.g. '{EXAMPLE}'"
    try:
        re.compile(regex)
    except re.error as exc:
        return f"the e-mail filter {regex!r} is not a valid regex ({exc}); e.g. '{EXAMPLE}'"
    return ""


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
    sample = load_sample()
    matched = sum(1 for email in sample if re.search(regex, email))
    if matched == 0:
        return (f"warning: the filter matches none of the e-mails ./run load sends by default (e.g. {sample[0]}): "
                "the breakpoint will not hit under that load; send matching ones (./run load --email-user NAME)")
    if matched == len(sample):
        return ("warning: the filter matches every e-mail ./run load sends by default: the session takes all of "
                "that load and the cluster's processor none; narrow it (--user NAME or --email ADDRESS)")
    return ""
