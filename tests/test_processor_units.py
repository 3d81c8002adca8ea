"""The processor's pure parts: who processed a message, and commit points kept in offset order."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from metalmart import processor
from metalmart.processor import OffsetTracker, processor_source

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("topic", "source"),
    [
        ("order.created", "cluster"),
        ("mirrord-tmp-1a2b3c4d5e-order.created", "mirrord-kafka"),  # what a developer's session reads
        ("mirrord-tmp-1a2b3c4d5e-fallback-order.created", "cluster"),  # what the deployed workload reads
    ],
)
def test_the_topic_name_tells_a_mirrord_session_from_the_cluster(topic: str, source: str) -> None:
    assert processor_source(topic) == source


def _commits(tracker: OffsetTracker) -> dict[int, int]:
    return {tp.partition: tp.offset for tp in tracker.take_commits()}


def test_commits_wait_for_the_oldest_unfinished_offset() -> None:
    tracker = OffsetTracker()
    states = {off: tracker.received("t", 0, off) for off in (10, 11, 12)}
    tracker.finished(states[12], 12)
    tracker.finished(states[11], 11)
    assert _commits(tracker) == {}, "offset 10 is still in flight: nothing may be committed"
    tracker.finished(states[10], 10)
    assert _commits(tracker) == {0: 13}
    assert _commits(tracker) == {}, "a commit point is handed out once"
    assert tracker.inflight == 0


def test_a_revoked_partition_forgets_late_finishers() -> None:
    tracker = OffsetTracker()
    old = tracker.received("t", 1, 5)
    tracker.drop({("t", 1)})
    tracker.finished(old, 5)
    assert _commits(tracker) == {}
    new = tracker.received("t", 1, 5)  # redelivered to us after a new assignment
    tracker.finished(new, 5)
    assert _commits(tracker) == {1: 6}


def test_readme_names_the_line_of_the_demo_breakpoint() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"`metalmart/processor\.py:(\d+)`", readme)
    assert match, "README must name metalmart/processor.py:<line> as the breakpoint"
    line = (ROOT / "metalmart/processor.py").read_text().splitlines()[int(match.group(1)) - 1]
    assert 'log.info("received order message' in line
    source, start = inspect.getsourcelines(processor.OrderProcessor.handle_order_message)
    assert start <= int(match.group(1)) < start + len(source)


def test_offsets_that_go_back_start_a_new_numbering() -> None:
    """A topic deleted and created again under the processor: the old topic's orders still in flight must not mix
    their commit points with the new topic's (the same offsets mean other messages now)."""
    tracker = OffsetTracker()
    old = {off: tracker.received("t", 0, off) for off in (20, 21, 22)}
    tracker.finished(old[22], 22)  # 20 and 21 still in flight when the topic comes back empty
    new = {off: tracker.received("t", 0, off) for off in (0, 1, 2)}
    for off in (0, 1, 2):
        tracker.finished(new[off], off)
    assert _commits(tracker) == {0: 3}, "the new numbering commits as its own"
    tracker.finished(old[20], 20)
    tracker.finished(old[21], 21)
    assert _commits(tracker) == {}, "the old numbering's late finishers are never committed"
    assert tracker.inflight == 0
