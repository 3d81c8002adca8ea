"""The load generator's options, declared once for `./run load`, `python -m metalmart loadgen` and the Job, and
their checks. Apart from the generator (metalmart.loadgen), so that what only parses or checks them (`./run`'s
help, a Job's arguments) does not load an HTTP client."""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from metalmart import sessions
from metalmart.errors import USAGE, UserError


@dataclass(frozen=True)
class Option:
    """One option of the generator, declared once for `./run load`, `python -m metalmart loadgen` and the Job."""

    name: str  # the LoadConfig field; on a command line --name-with-dashes
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS = (
    Option("rate", "orders per second (fractions allowed), e.g. 20"),
    Option("duration", "seconds to run, e.g. 120"),
    Option("base_url", "order service URL; default: the target's"),
    Option("catalogue_url", "catalogue URL, for real products and prices; default: the target's"),
    Option("email_domain", "domain of the e-mails that match the demo filter (metalbear.com)"),
    Option("match_ratio", "share of orders whose e-mail matches the filter, 0..1 (1.0); the rest use example.com"),
    Option("email_user", "e-mails NAME+<run>-<n>@<domain>, so one person's mirrord filter catches exactly theirs"),
    Option("max_inflight", "orders in flight at most (per worker); a due order beyond it is dropped and counted "
                           "(1024)"),
    Option("workers", "processes sharing the schedule; default: one per 1,000 orders/s, up to the machine's cores"),
    Option("run_id", "the run's id, in every e-mail (default: a new random one)"),
    Option("session_key", "mark orders for the `mirrord up` session with this key (baggage: mirrord-session=KEY)"),
    Option("session_share", "share of orders marked with --session-key, 0..1 (1.0)"),
)


@dataclass(frozen=True)
class LoadConfig:
    rate: float
    duration: float
    base_url: str
    catalogue_url: str | None = None
    email_domain: str = "metalbear.com"
    match_ratio: float = 1.0
    email_user: str | None = None
    max_inflight: int = 1024
    workers: int | None = None
    timeout_s: float = 10.0
    grace_s: float = 5.0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    session_key: str | None = None
    session_share: float = 1.0

    def args(self, **replace: Any) -> list[str]:
        """The options of this run as command-line arguments (`replace` swaps some values, e.g. the URLs a Job
        inside the cluster uses); unset ones are left out."""
        values = {**{o.name: getattr(self, o.name) for o in OPTIONS}, **replace}
        out: list[str] = []
        for option in OPTIONS:
            value = values[option.name]
            if value is not None:
                out += [option.flag, f"{value:g}" if isinstance(value, float) else str(value)]
        return out

    def check(self) -> None:
        """Every problem as a UserError naming the option and a valid value."""
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise UserError(f"--rate must be a number above 0 (got {self.rate:g}); e.g. --rate 20", USAGE)
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise UserError(f"--duration must be seconds above 0 (got {self.duration:g}); e.g. --duration 120", USAGE)
        if not 0.0 <= self.match_ratio <= 1.0:
            raise UserError(f"--match-ratio must be between 0 and 1 (got {self.match_ratio}); e.g. 0.5", USAGE)
        if self.max_inflight < 1:
            raise UserError("--max-inflight must be at least 1", USAGE)
        if self.workers is not None and not 1 <= self.workers <= MAX_WORKERS:
            raise UserError(f"--workers must be between 1 and {MAX_WORKERS} (got {self.workers}); e.g. --workers "
                            f"{cores()}, this machine's cores", USAGE)
        if not self.base_url.startswith(("http://", "https://")):
            raise UserError(f"--base-url must start with http:// or https:// (got {self.base_url!r})", USAGE)
        if "@" in self.email_domain or "." not in self.email_domain:
            raise UserError(f"--email-domain must be a domain like metalbear.com (got {self.email_domain!r})", USAGE)
        if self.email_user is not None and (not self.email_user or any(c in self.email_user for c in "@+ ")):
            raise UserError(f"--email-user must be a plain name like alice (got {self.email_user!r})", USAGE)
        if self.session_key is not None and sessions.key_problem(self.session_key):
            raise UserError(f"--session-key: {sessions.key_problem(self.session_key)}", USAGE)
        if not 0.0 <= self.session_share <= 1.0:
            raise UserError(f"--session-share must be between 0 and 1 (got {self.session_share}); e.g. 0.5", USAGE)
        if self.rate * self.duration < 1:
            raise UserError("--rate × --duration schedules no order; raise one of them", USAGE)

    @property
    def scheduled_total(self) -> int:
        return math.floor(self.rate * self.duration + 1e-9)

    @property
    def worker_count(self) -> int:
        """--workers, or one process per PER_WORKER_RATE orders/s up to the cores (a demo's 20/s stays one)."""
        if self.workers is not None:
            return self.workers
        return max(1, min(cores(), math.ceil(self.rate / PER_WORKER_RATE), self.scheduled_total))


# What one process sends on time (bench.load's single-process cell holds it within 1% against a 0 ms stub here).
PER_WORKER_RATE = 1000.0
MAX_WORKERS = 64


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
