"""Where mirrord's own checker is not built (no ../shared, no cargo), the filter check falls back to Python's `re`:
what mirrord's CLI reads that Python reads differently, and the two forms of `feature.split_queues`. The fallback
never refuses a filter mirrord takes, and says when it cannot tell what it matches (tests/test_mirrord_verdict.py
holds it against mirrord's own engine)."""

from __future__ import annotations

import pytest

from demokit.config import mirrordcfg, verdict


@pytest.mark.parametrize(("regex", "problem", "warning"), [
    (r"^alice(\+.*)?@metalbear\.com$", "", ""),
    (r"^(alice", "is not a regex mirrord takes (Python's re: ", ""),
    (r"^\p{L}+@metalbear\.com$", "", "mirrord's (Rust's) regex"),       # Rust reads it, Python refuses it
    (r"^alice@metalbear\.com\z", "", "mirrord's (Rust's) regex"),
    (r"^alice@metalbear\.com\Z", "", "before a trailing newline in fancy_regex"),
    (r"^[[:alpha:]]+@metalbear\.com$", "", "POSIX class"),
    (r"(?a)^\w+@metalbear\.com$", "", "Python's only"),
    (r"^a[b[c]@x\.y$", "", "nested set"),
    (r"(?-i)^alice@metalbear\.com$", "", "Python's re refuses it"),      # Rust reads it, Python refuses it
    (r"^\x{61}lice@metalbear\.com$", "", "Python's re refuses it"),
])
def test_without_mirrords_checker_the_filter_check_reads_mirrords_dialect(
        regex: str, problem: str, warning: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdict, "open_built", lambda: None)
    assert "Python's re" in mirrordcfg.checked(r"^a$")[1]
    found = mirrordcfg.filter_problem(regex)
    assert (problem in found) if problem else found == "", found
    if not problem:
        said = mirrordcfg.coverage_warning(regex)
        assert (warning in said) if warning else "cannot tell" not in said, said


def test_both_forms_of_split_queues_name_the_same_queue() -> None:
    as_map = {"feature": {"split_queues": {"order-created": {"queue_type": "Kafka",
                                                             "message_filter": {"customer_email": "^a@b\\.c$"}}}}}
    as_list = {"feature": {"split_queues": [{"queue_id": "order-created", "queue_type": "Kafka",
                                             "message_filter": {"customer_email": "^a@b\\.c$"}}]}}
    for form in (as_map, as_list):
        [(queue, entry)] = mirrordcfg.split_entries(form)
        assert queue == "order-created" and entry["message_filter"] == {"customer_email": "^a@b\\.c$"}, form
    assert mirrordcfg.split_entries({"feature": {}}) == []
