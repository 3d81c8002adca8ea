"""The names of the mirrord operator's temporary topics, from the one setting that shapes them: the operator's Helm
value `operator.kafkaSplittingTopicFormat` (the inventory's `metalmart_kafka_split_topic_format`; in the processor's
environment KAFKA_SPLIT_TOPIC_FORMAT). The processor tells by it who is processing; metrics and the dashboard which
session a topic feeds."""

from __future__ import annotations

import functools
import re

# The operator's default: mirrord-tmp-<random>-<topic> feeds a developer's session, mirrord-tmp-<random>-fallback-
# <topic> the deployed workload.
DEFAULT = "mirrord-tmp-{{RANDOM}}{{FALLBACK}}{{ORIGINAL_TOPIC}}"
PLACEHOLDERS = ("{{RANDOM}}", "{{FALLBACK}}", "{{ORIGINAL_TOPIC}}")


def problem(fmt: str) -> str:
    """Why `fmt` cannot tell the operator's topics apart ('' when it can)."""
    missing = [p for p in PLACEHOLDERS if p not in fmt]
    return f"the temporary-topic format {fmt!r} lacks {', '.join(missing)}" if missing else ""


@functools.lru_cache(maxsize=64)
def _pattern(fmt: str, original: str | None) -> re.Pattern[str]:
    parts = re.split(r"(\{\{RANDOM\}\}|\{\{FALLBACK\}\}|\{\{ORIGINAL_TOPIC\}\})", fmt)
    out = []
    for part in parts:
        if part == "{{RANDOM}}":
            out.append(r"(?P<session>.+?)-")
        elif part == "{{FALLBACK}}":
            out.append(r"(?P<fallback>fallback-)?")
        elif part == "{{ORIGINAL_TOPIC}}":
            out.append(re.escape(original) if original is not None else r"(?P<original>.+)")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


def parse(name: str, original: str | None = None, fmt: str = DEFAULT) -> tuple[str, bool] | None:
    """(session id, is the fallback) of a temporary topic (of `original`, when given), None for any other topic."""
    found = _pattern(fmt or DEFAULT, original).fullmatch(name)
    if found is None:
        return None
    return found["session"], bool(found["fallback"])
