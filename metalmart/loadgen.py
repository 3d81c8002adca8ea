"""The load generator: an open loop that holds its rate and accounts for every order it schedules. It lives in the
app package so the app image can run it next to the service (`./run load --in-cluster`): `python -m metalmart
loadgen --rate R --duration D --base-url URL` prints one JSON line per second and the report as the last line.

Order i is due at start + i/rate whether or not earlier orders have answered. Orders that are due are sent at once
(in a batch when several fell due together), so the send lag stays at the event loop's resolution. When the
in-flight limit is reached a due order is dropped and counted, never silently delayed. Latency is measured from the
due time, not the send time, so a slow sender cannot hide a slow service (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from hdrh.histogram import HdrHistogram

from metalmart.errors import UNREACHABLE, USAGE, UserError
from metalmart.services import probe

NON_MATCHING_DOMAIN = "example.com"

# Used when the catalogue cannot be reached: the products it seeds (ids, names and prices).
FALLBACK_PRODUCTS = [
    {"id": "MM-ANVIL-01", "name": "Cast-Iron Anvil 50 kg", "price": 349.0},
    {"id": "MM-HAMMER-02", "name": "Cross-Peen Hammer 1 kg", "price": 42.5},
    {"id": "MM-COPPER-04", "name": "Copper Sheet 1 mm", "price": 58.0},
    {"id": "MM-STEEL-05", "name": "Mild Steel Bar 20 mm", "price": 17.25},
]


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
    Option("max_inflight", "orders in flight at most; a due order beyond it is dropped and counted (1024)"),
    Option("run_id", "the run's id, in every e-mail (default: a new random one)"),
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
    timeout_s: float = 10.0
    grace_s: float = 5.0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

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
            raise UserError(f"--rate must be a number above 0 (got {self.rate}); e.g. --rate 20", USAGE)
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise UserError(f"--duration must be seconds above 0 (got {self.duration}); e.g. --duration 120", USAGE)
        if not 0.0 <= self.match_ratio <= 1.0:
            raise UserError(f"--match-ratio must be between 0 and 1 (got {self.match_ratio}); e.g. 0.5", USAGE)
        if self.max_inflight < 1:
            raise UserError("--max-inflight must be at least 1", USAGE)
        if not self.base_url.startswith(("http://", "https://")):
            raise UserError(f"--base-url must start with http:// or https:// (got {self.base_url!r})", USAGE)
        if "@" in self.email_domain or "." not in self.email_domain:
            raise UserError(f"--email-domain must be a domain like metalbear.com (got {self.email_domain!r})", USAGE)
        if self.email_user is not None and (not self.email_user or any(c in self.email_user for c in "@+ ")):
            raise UserError(f"--email-user must be a plain name like alice (got {self.email_user!r})", USAGE)
        if self.rate * self.duration < 1:
            raise UserError("--rate × --duration schedules no order; raise one of them", USAGE)

    @property
    def scheduled_total(self) -> int:
        return math.floor(self.rate * self.duration + 1e-9)


class Stats:
    """Live counters and histograms (microseconds)."""

    def __init__(self) -> None:
        self.scheduled = 0
        self.sent = 0
        self.succeeded = 0
        self.failed = 0
        self.dropped = 0
        self.errors: Counter[str] = Counter()
        self.status_codes: Counter[str] = Counter()
        self.latency = HdrHistogram(1, 120_000_000, 3)
        self.send_lag = HdrHistogram(1, 120_000_000, 3)
        self.first_send: float | None = None
        self.last_send: float | None = None
        self.recent: list[tuple[float, int]] = []  # (time, sent) samples for the current rate

    @property
    def inflight(self) -> int:
        return self.sent - self.succeeded - self.failed

    def current_rate(self, now: float, window: float = 2.0) -> float:
        """Sends per second over the last `window` seconds; before there is a window, since the first send."""
        self.recent.append((now, self.sent))
        while len(self.recent) > 2 and self.recent[0][0] < now - window:
            self.recent.pop(0)
        (t0, n0), (t1, n1) = self.recent[0], self.recent[-1]
        if t1 > t0 and n1 > n0:
            return (n1 - n0) / (t1 - t0)
        if self.first_send is not None and now > self.first_send:
            return self.sent / (now - self.first_send)
        return 0.0

    def achieved_rate(self) -> float:
        """Sends per second between the first and the last send (exactly the target when every order left on
        time, lower when the sender fell behind)."""
        if self.sent < 2 or self.first_send is None or self.last_send is None or self.last_send <= self.first_send:
            return float(self.sent)
        return (self.sent - 1) / (self.last_send - self.first_send)


def _ms(hist: HdrHistogram, percentile: float | None = None) -> float:
    if hist.get_total_count() == 0:
        return 0.0
    value = hist.get_max_value() if percentile is None else hist.get_value_at_percentile(percentile)
    return round(value / 1000.0, 3)


@dataclass
class Identity:
    first: str
    last: str
    street: str
    city: str
    state: str
    zip_code: str


def identities(seed: str, count: int = 256) -> list[Identity]:
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    return [Identity(fake.first_name(), fake.last_name(), fake.street_address(), fake.city(), fake.state_abbr(),
                     fake.zipcode()) for _ in range(count)]


class OrderFactory:
    """Realistic orders with unique e-mails: the run id in each, and an exact share matching the demo filter."""

    def __init__(self, config: LoadConfig, products: list[dict[str, Any]]) -> None:
        self.config = config
        self.products = products
        self.people = identities(config.run_id)
        self.rng = random.Random(config.run_id)

    def matches(self, i: int) -> bool:
        r = self.config.match_ratio
        return math.floor((i + 1) * r + 1e-9) > math.floor(i * r + 1e-9)

    def email(self, i: int, person: Identity) -> str:
        domain = self.config.email_domain if self.matches(i) else NON_MATCHING_DOMAIN
        if self.config.email_user:
            return f"{self.config.email_user}+{self.config.run_id}-{i}@{domain}"
        return f"{person.first}.{person.last}.{self.config.run_id}-{i}@{domain}".lower()

    def body(self, i: int) -> bytes:
        person = self.people[i % len(self.people)]
        items = []
        for product in self.rng.sample(self.products, k=min(len(self.products), self.rng.randint(1, 3))):
            items.append({"product_id": product["id"], "product_name": product["name"],
                          "quantity": self.rng.randint(1, 4), "price": product["price"]})
        return json.dumps({
            "customer_email": self.email(i, person),
            "customer_name": f"{person.first} {person.last}",
            "shipping_address": {"street": person.street, "city": person.city, "state": person.state,
                                 "zip_code": person.zip_code, "country": "US"},
            "items": items,
        }).encode()


def classify(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = getattr(exc, "os_error", None)
        if isinstance(os_error, ConnectionRefusedError):
            return "refused"
        return "connect"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return "disconnected"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return type(exc).__name__


async def check_target(base_url: str, within_s: float = 5.0) -> None:
    """Fail fast, and in one line, when the order service does not answer."""
    url = f"{base_url.rstrip('/')}{probe('health')}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within_s)) as http, \
                http.get(url) as resp:
            if resp.status != 200:
                raise UserError(f"{url} answered HTTP {resp.status}; is the order service healthy? "
                                "try `./run status`", UNREACHABLE)
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = classify(exc)
        raise UserError(f"cannot reach the order service at {url} ({reason}: {exc or type(exc).__name__}); "
                        "is the stack up? try `./run status` or `./run fresh-start`", UNREACHABLE) from exc


async def fetch_products(catalogue_url: str | None) -> tuple[list[dict[str, Any]], str]:
    if catalogue_url:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http, \
                    http.get(f"{catalogue_url.rstrip('/')}/api/products") as resp:
                products = await resp.json()
                if resp.status == 200 and products:
                    return [{"id": p["id"], "name": p["name"], "price": p["price"]} for p in products], "catalogue"
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            pass
    return FALLBACK_PRODUCTS, "built-in list (catalogue not reachable)"


class LoadRun:
    def __init__(self, config: LoadConfig, products: list[dict[str, Any]], record: bool = False) -> None:
        self.config = config
        # With `record`, the id of every order answered 201 (the fault bench checks each one ships).
        self.accepted: list[str] | None = [] if record else None
        self.stats = Stats()
        self.factory = OrderFactory(config, products)
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self.interrupted = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._url = f"{config.base_url.rstrip('/')}/api/orders"

    async def _send(self, http: aiohttp.ClientSession, i: int, due: float) -> None:
        s = self.stats
        body = self.factory.body(i)
        try:
            async with http.post(self._url, data=body, headers={"Content-Type": "application/json"}) as resp:
                answer = await resp.read()
                s.status_codes[str(resp.status)] += 1
                if resp.status == 201:
                    s.succeeded += 1
                    if self.accepted is not None:
                        self.accepted.append(json.loads(answer)["id"])
                else:
                    s.failed += 1
                    s.errors[f"http_{resp.status}"] += 1
        except (aiohttp.ClientError, TimeoutError, asyncio.CancelledError) as exc:
            s.failed += 1
            s.errors[classify(exc)] += 1
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            s.latency.record_value(max(1, int((time.monotonic() - due) * 1e6)))

    async def run(self, on_tick: Callable[[LoadRun, float], None] | None = None, tick_s: float = 0.25) -> None:
        cfg, s = self.config, self.stats
        total = cfg.scheduled_total
        connector = aiohttp.TCPConnector(limit=cfg.max_inflight, limit_per_host=cfg.max_inflight, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            start = time.monotonic() + 0.01
            next_tick = start
            i = 0
            try:
                while i < total:
                    now = time.monotonic()
                    while i < total and start + i / cfg.rate <= now:
                        due = start + i / cfg.rate
                        s.scheduled += 1
                        if s.inflight >= cfg.max_inflight:
                            s.dropped += 1
                        else:
                            s.sent += 1
                            s.send_lag.record_value(max(1, int((now - due) * 1e6)))
                            if s.first_send is None:
                                s.first_send = now
                            s.last_send = now
                            task = asyncio.create_task(self._send(http, i, due))
                            self._tasks.add(task)
                            task.add_done_callback(self._tasks.discard)
                        i += 1
                    if on_tick is not None and now >= next_tick:
                        on_tick(self, now - start)
                        next_tick = now + tick_s
                    if i < total:
                        await asyncio.sleep(max(0.0, start + i / cfg.rate - time.monotonic()))
            except asyncio.CancelledError:
                self.interrupted = True
            await self._drain(self.config.grace_s if self.interrupted else cfg.timeout_s + 1)
            if on_tick is not None:
                on_tick(self, time.monotonic() - start)

    async def _drain(self, within: float) -> None:
        """Wait for in-flight orders; what is still in flight after `within` s is cancelled and counted failed."""
        pending = set(self._tasks)
        if pending:
            _, still = await asyncio.wait(pending, timeout=within)
            for task in still:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*still, return_exceptions=True)

    def report(self) -> dict[str, Any]:
        cfg, s = self.config, self.stats
        return {
            "target_rate": cfg.rate,
            "duration_s": cfg.duration,
            "scheduled": s.scheduled,
            "sent": s.sent,
            "succeeded": s.succeeded,
            "failed": s.failed,
            "dropped": s.dropped,
            "achieved_rate": round(s.achieved_rate(), 3),
            "latency_ms": {"p50": _ms(s.latency, 50), "p90": _ms(s.latency, 90), "p99": _ms(s.latency, 99),
                           "max": _ms(s.latency)},
            "send_lag_ms": {"p50": _ms(s.send_lag, 50), "p99": _ms(s.send_lag, 99)},
            "errors": dict(s.errors),
            "status_codes": dict(s.status_codes),
            "base_url": cfg.base_url,
            "run_id": cfg.run_id,
            "started_at": self.started_at,
            "interrupted": self.interrupted,
        }


def _line(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


def progress(run: LoadRun, elapsed: float) -> dict[str, Any]:
    """The counts so far: what the progress line shows, here and (as a JSON line) from a Job."""
    s = run.stats
    return {"elapsed_s": round(elapsed, 2), "scheduled": s.scheduled, "total": run.config.scheduled_total,
            "sent": s.sent, "succeeded": s.succeeded, "failed": s.failed, "dropped": s.dropped,
            "rate": round(s.current_rate(time.monotonic()), 2),
            "p99_ms": _ms(s.latency, 99) if s.latency.get_total_count() else 0.0}


async def _main(config: LoadConfig) -> int:
    await check_target(config.base_url)
    products, source = await fetch_products(config.catalogue_url)
    _line("start", run_id=config.run_id, scheduled_total=config.scheduled_total, products=source)
    run = LoadRun(config, products)
    last = [0.0]

    def tick(r: LoadRun, elapsed: float) -> None:
        if elapsed - last[0] >= 1.0:
            last[0] = elapsed
            _line("progress", **progress(r, elapsed))

    await run.run(on_tick=tick)
    _line("report", report=run.report())
    return 0


def parser() -> Any:
    """`python -m metalmart loadgen`'s options: LoadConfig's, with its types and defaults."""
    import argparse

    defaults = {f.name: f for f in dataclasses.fields(LoadConfig)}
    kinds = {"float": float, "int": int}
    result = argparse.ArgumentParser(prog="metalmart loadgen")
    for option in OPTIONS:
        spec = defaults[option.name]
        kind = kinds.get(str(spec.type).split(" ")[0], str)
        required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        default = None if spec.default is dataclasses.MISSING else spec.default
        result.add_argument(option.flag, type=kind, required=required, default=default, help=option.help)
    return result


def cli(argv: list[str]) -> int:
    """`python -m metalmart loadgen ...`: the generator as a program, JSON lines on stdout (for a Job's log)."""
    import sys

    values = {k: v for k, v in vars(parser().parse_args(argv)).items() if v is not None}
    config = LoadConfig(**values)
    try:
        config.check()
        return asyncio.run(_main(config))
    except UserError as exc:
        _line("error", message=str(exc), code=exc.code)
        print(f"metalmart loadgen: {exc}", file=sys.stderr)
        return exc.code
