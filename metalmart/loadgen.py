"""The load generator: an open loop that holds its rate and accounts for every order it schedules. It lives in the
app package so the app image can run it next to the service (`./run load --in-cluster`): `python -m metalmart
loadgen --rate R --duration D --base-url URL` prints one JSON line per second and the report as the last line.

Order i is due at start + i/rate whether or not earlier orders have answered. Past what one process sends on time,
`--workers N` splits the schedule between N processes (worker w sends orders w, w+N, w+2N, ... from one shared
start), and their counts and HDR histograms are merged into one report. Orders that are due are sent at once
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
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from hdrh.histogram import HdrHistogram

from metalmart import sessions
from metalmart.errors import UNREACHABLE, UserError
from metalmart.loadconfig import OPTIONS, LoadConfig
from metalmart.services import probe

NON_MATCHING_DOMAIN = "example.com"

# Used when the catalogue cannot be reached: the products it seeds (ids, names and prices).
FALLBACK_PRODUCTS = [
    {"id": "MM-ANVIL-01", "name": "Cast-Iron Anvil 50 kg", "price": 349.0},
    {"id": "MM-HAMMER-02", "name": "Cross-Peen Hammer 1 kg", "price": 42.5},
    {"id": "MM-COPPER-04", "name": "Copper Sheet 1 mm", "price": 58.0},
    {"id": "MM-STEEL-05", "name": "Mild Steel Bar 20 mm", "price": 17.25},
]


WINDOW_S = 0.1  # the send-rate evenness window


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
        self.windows: Counter[int] = Counter()  # sends per WINDOW_S since the start, by send time

    COUNTS = ("scheduled", "sent", "succeeded", "failed", "dropped")

    def snapshot(self, windows: bool = True) -> dict[str, Any]:
        """Everything a worker process reports; `absorb` merges a set of them. The send windows (one per 0.1 s
        of the run) only go into a worker's last report."""
        return {**{k: getattr(self, k) for k in self.COUNTS}, "errors": dict(self.errors),
                "status_codes": dict(self.status_codes), "latency": self.latency.encode(),
                "send_lag": self.send_lag.encode(), "first_send": self.first_send, "last_send": self.last_send,
                "windows": dict(self.windows) if windows else {}}

    def absorb(self, snapshots: list[dict[str, Any]]) -> None:
        """These counters and histograms become the sum of the workers' (the rate samples are kept)."""
        for k in self.COUNTS:
            setattr(self, k, sum(snap[k] for snap in snapshots))
        self.errors, self.status_codes, self.windows = Counter(), Counter(), Counter()
        self.latency, self.send_lag = HdrHistogram(1, 120_000_000, 3), HdrHistogram(1, 120_000_000, 3)
        for snap in snapshots:
            self.errors.update(snap["errors"])
            self.status_codes.update(snap["status_codes"])
            self.windows.update(snap["windows"])
            self.latency.decode_and_add(snap["latency"])
            self.send_lag.decode_and_add(snap["send_lag"])
        firsts = [snap["first_send"] for snap in snapshots if snap["first_send"] is not None]
        lasts = [snap["last_send"] for snap in snapshots if snap["last_send"] is not None]
        self.first_send, self.last_send = min(firsts, default=None), max(lasts, default=None)

    def evenness(self, duration: float) -> dict[str, float]:
        """Sends in the busiest WINDOW_S window against the mean window over the run (1.0: perfectly even)."""
        count = max(1, round(duration / WINDOW_S))
        mean = self.sent / count if count else 0.0
        busiest = max(self.windows.values(), default=0)
        return {"window_ms": WINDOW_S * 1000, "busiest": busiest, "mean": round(mean, 3),
                "busiest_to_mean": round(busiest / mean, 3) if mean else 0.0}

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


JSON = {"Content-Type": "application/json"}


def _picked(i: int, share: float) -> bool:
    """Whether order `i` is among an exact `share` of the orders, spread evenly (of 10 at 0.3: the 3rd, 6th, 9th)."""
    return math.floor((i + 1) * share + 1e-9) > math.floor(i * share + 1e-9)


class OrderFactory:
    """Realistic orders with unique e-mails: the run id in each, and an exact share matching the demo filter."""

    def __init__(self, config: LoadConfig, products: list[dict[str, Any]]) -> None:
        self.config = config
        self.products = products
        self.people = identities(config.run_id)
        self.rng = random.Random(config.run_id)
        # The session's marker as mirrord's browser extension sends it: W3C baggage `mirrord-session=KEY`.
        self._marked = {**JSON, **sessions.marked(config.session_key)} if config.session_key else JSON

    def matches(self, i: int) -> bool:
        return _picked(i, self.config.match_ratio)

    def headers(self, i: int) -> dict[str, str]:
        """The request's headers: JSON, and the `mirrord up` session's marker for the share --session-key asks."""
        key = self.config.session_key
        if key and _picked(i, self.config.session_share):
            return self._marked
        return JSON

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


async def check_target(base_url: str, within_s: float = 5.0,
                       hint: str = "is the stack up? try `./run status` or `./run fresh-start`") -> None:
    """Fail fast, and in one line ending in `hint`, when the order service does not answer."""
    url = f"{base_url.rstrip('/')}{probe('health')}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within_s)) as http, \
                http.get(url) as resp:
            if resp.status != 200:
                raise UserError(f"{url} answered HTTP {resp.status}; the order service is not healthy: {hint}",
                                UNREACHABLE)
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = classify(exc)
        raise UserError(f"cannot reach the order service at {url} ({reason}: {exc or type(exc).__name__}); {hint}",
                        UNREACHABLE) from exc


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
    """One process's share of a run: orders part, part + parts, ... of the schedule (all of it by default)."""

    def __init__(self, config: LoadConfig, products: list[dict[str, Any]], record: bool = False,
                 part: tuple[int, int] = (0, 1)) -> None:
        self.config = config
        self.part = part
        # With `record`, the id of every order answered 201 (the fault bench checks each one ships).
        self.accepted: list[str] | None = [] if record else None
        self.stats = Stats()
        self.factory = OrderFactory(config, products)
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self.interrupted = False
        self._scheduling: asyncio.Task[Any] | None = None  # run()'s task while it still schedules orders
        self._tasks: set[asyncio.Task[None]] = set()
        self._url = f"{config.base_url.rstrip('/')}/api/orders"

    async def _send(self, http: aiohttp.ClientSession, i: int, due: float) -> None:
        s = self.stats
        body = self.factory.body(i)
        try:
            async with http.post(self._url, data=body, headers=self.factory.headers(i)) as resp:
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

    async def run(self, on_tick: Callable[[Any, float], None] | None = None, tick_s: float = 0.25,
                  start_at: float | None = None) -> None:
        """Send this part's orders, each at its due time from `start_at` (time.monotonic(), which every process
        on the machine shares; default: now)."""
        cfg, s = self.config, self.stats
        total = cfg.scheduled_total
        connector = aiohttp.TCPConnector(limit=cfg.max_inflight, limit_per_host=cfg.max_inflight, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            start = time.monotonic() + 0.01 if start_at is None else start_at
            next_tick = start
            i, step = self.part
            self._scheduling = asyncio.current_task()
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
                            s.windows[int((now - start) / WINDOW_S)] += 1
                            if s.first_send is None:
                                s.first_send = now
                            s.last_send = now
                            task = asyncio.create_task(self._send(http, i, due))
                            self._tasks.add(task)
                            task.add_done_callback(self._tasks.discard)
                        i += step
                    if on_tick is not None and now >= next_tick:
                        on_tick(self, now - start)
                        next_tick = now + tick_s
                    if i < total:
                        await asyncio.sleep(max(0.0, start + i / cfg.rate - time.monotonic()))
            except asyncio.CancelledError:
                self.interrupted = True
            self._scheduling = None
            await self._drain(self.config.grace_s if self.interrupted else cfg.timeout_s + 1)
            if on_tick is not None:
                on_tick(self, time.monotonic() - start)

    def stop(self) -> None:
        """Ctrl-C: schedule no more orders; those in flight are waited for (briefly) and counted. Once every order
        is scheduled there is nothing to stop: the run is finishing."""
        if self._scheduling is not None:
            self._scheduling.cancel()
            self._scheduling = None

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
        return _report(self.config, self.stats, self.part[1], self.started_at, self.interrupted)


def _report(cfg: LoadConfig, s: Stats, workers: int, started_at: str, interrupted: bool) -> dict[str, Any]:
    """The run's report, from its (merged) stats: what ./run load prints and --json writes."""
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
        "send_evenness": s.evenness(cfg.duration),
        "workers": workers,
        "errors": dict(s.errors),
        "status_codes": dict(s.status_codes),
        "base_url": cfg.base_url,
        "run_id": cfg.run_id,
        "started_at": started_at,
        "interrupted": interrupted,
    }


class Fleet:
    """A run split between worker processes (`--workers N`), with LoadRun's face (config, stats, run, stop, report,
    accepted, interrupted); its stats are the merge of the workers'. Each worker is `python -m metalmart loadgen
    --worker W/N` (the same program the image runs), told its products on stdin, then "go" with one shared start
    once every worker is ready; it writes its counts and histograms as a JSON line every TICK_S and its final ones
    last. Ctrl-C reaches the workers only through this process (they ignore SIGINT), so each stops the same way
    and reports what it did."""

    TICK_S = 0.25

    def __init__(self, config: LoadConfig, products: list[dict[str, Any]], record: bool = False) -> None:
        self.config = config
        self.parts = config.worker_count
        self.products = products
        self.record = record
        self.accepted: list[str] | None = [] if record else None
        self.stats = Stats()
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self.interrupted = False
        self.lost_workers: list[int] = []
        self._last: dict[int, dict[str, Any]] = {}
        self._running: asyncio.Task[Any] | None = None

    def stop(self) -> None:
        """Ctrl-C: every worker is told to stop scheduling, and reports what it did."""
        if self._running is not None:
            self._running.cancel()
            self._running = None

    async def run(self, on_tick: Callable[[Any, float], None] | None = None, tick_s: float = 0.25) -> None:
        import sys

        procs: dict[int, asyncio.subprocess.Process] = {}
        ready: set[int] = set()
        done: set[int] = set()
        changed = asyncio.Event()
        start: float | None = None

        async def follow(w: int, proc: asyncio.subprocess.Process) -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                event = json.loads(raw)
                if event["event"] == "ready":
                    ready.add(w)
                elif event["event"] in ("progress", "report"):
                    self._last[w] = _unpack(event["stats"])
                if event["event"] == "report":
                    if self.accepted is not None:
                        self.accepted.extend(event["accepted"])
                    self.interrupted |= event["interrupted"]
                    done.add(w)
                changed.set()
            await proc.wait()
            if w not in done:  # it died without its report (kill -9)
                self.lost_workers.append(w)
                done.add(w)
            changed.set()

        def tell(message: dict[str, Any]) -> None:
            for w, proc in procs.items():
                if w not in done and proc.stdin is not None and not proc.stdin.is_closing():
                    proc.stdin.write(json.dumps(message).encode() + b"\n")

        async def until(condition: Callable[[], bool]) -> None:
            while not condition():
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), tick_s)
                self._merge()
                if on_tick is not None and start is not None:
                    on_tick(self, time.monotonic() - start)

        self._running = asyncio.current_task()
        followers = []
        try:
            for w in range(self.parts):
                procs[w] = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "metalmart", "loadgen", "--worker", f"{w}/{self.parts}",
                    *self.config.args(workers=None), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    limit=LINE_LIMIT,
                    # Its own session: a Ctrl-C at the terminal reaches this process only, which tells each worker.
                    start_new_session=True)
                followers.append(asyncio.create_task(follow(w, procs[w])))
            tell({"products": self.products, "record": self.record})
            try:
                await until(lambda: len(ready | done) == self.parts)
                start = time.monotonic() + 0.05
                tell({"go": start})
                await until(lambda: len(done) == self.parts)
            except asyncio.CancelledError:
                self.interrupted = True
                self._running = None
                tell({"stop": True})
                await until(lambda: len(done) == self.parts)
        finally:
            for proc in procs.values():
                if proc.returncode is None and proc.stdin is not None:
                    proc.stdin.close()
            for proc in procs.values():
                if proc.returncode is None:
                    try:
                        await asyncio.wait_for(proc.wait(), self.config.timeout_s)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
            for follower in followers:
                follower.cancel()
            await asyncio.gather(*followers, return_exceptions=True)
        # A worker that died leaves its last counts; what it had in flight then has no known answer.
        for w in self.lost_workers:
            snap = self._last.get(w)
            if snap is not None:
                unknown = snap["sent"] - snap["succeeded"] - snap["failed"]
                snap["failed"] += unknown
                snap["errors"] = {**snap["errors"], "worker_died": snap["errors"].get("worker_died", 0) + unknown}
        self._merge()
        if on_tick is not None and start is not None:
            on_tick(self, time.monotonic() - start)

    def _merge(self) -> None:
        self.stats.absorb(list(self._last.values()))

    def report(self) -> dict[str, Any]:
        result = _report(self.config, self.stats, self.parts, self.started_at, self.interrupted)
        if self.lost_workers:
            result["lost_workers"] = sorted(self.lost_workers)
        return result


LINE_LIMIT = 64 * 1024 * 1024  # a worker's last line holds its send windows: 10 a second of the run


def _pack(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A Stats snapshot as JSON (histograms are base64 already; window numbers become keys)."""
    return {**snapshot, "latency": snapshot["latency"].decode(), "send_lag": snapshot["send_lag"].decode(),
            "windows": {str(k): v for k, v in snapshot["windows"].items()}}


def _unpack(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "latency": data["latency"].encode(), "send_lag": data["send_lag"].encode(),
            "windows": {int(k): v for k, v in data["windows"].items()}}


async def _worker(config: LoadConfig, part: int, parts: int) -> int:
    """`python -m metalmart loadgen --worker W/N ...`: one Fleet worker. stdin: its products, then go or stop;
    stdout: ready, progress every TICK_S, and its report."""
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent tells it to stop
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    first = json.loads(await reader.readline())
    run = LoadRun(config, first["products"], record=first["record"], part=(part, parts))
    emit("ready")
    go: asyncio.Future[float | None] = loop.create_future()

    async def listen() -> None:
        async for raw in reader:
            message = json.loads(raw)
            if "go" in message and not go.done():
                go.set_result(message["go"])
            elif "stop" in message:
                break
        # told to stop, or the parent is gone (stdin closed): schedule no more
        if not go.done():
            go.set_result(None)
        run.stop()

    listening = asyncio.create_task(listen())
    start_at = await go
    if start_at is None:
        run.interrupted = True
    else:
        def tick(r: LoadRun, _elapsed: float) -> None:  # run() calls it every TICK_S
            emit("progress", stats=_pack(r.stats.snapshot(windows=False)))

        await run.run(on_tick=tick, tick_s=Fleet.TICK_S, start_at=start_at)
    listening.cancel()
    emit("report", stats=_pack(run.stats.snapshot()), accepted=run.accepted or [], interrupted=run.interrupted)
    return 0


def emit(event: str, **data: Any) -> None:
    """A worker's line to its parent; a parent that is gone (killed) leaves nobody to tell."""
    with contextlib.suppress(BrokenPipeError):
        _line(event, **data)


def new_run(config: LoadConfig, products: list[dict[str, Any]], record: bool = False) -> LoadRun | Fleet:
    """The run for this config: in this process for one worker, worker processes for more."""
    if config.worker_count == 1:
        return LoadRun(config, products, record=record)
    return Fleet(config, products, record=record)


def _line(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


def progress(run: LoadRun | Fleet, elapsed: float) -> dict[str, Any]:
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
    run = new_run(config, products)
    last = [0.0]

    def tick(r: Any, elapsed: float) -> None:
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
    result.add_argument("--worker", help=argparse.SUPPRESS)  # W/N: one of a Fleet's workers (stdin/stdout JSON)
    return result


def cli(argv: list[str]) -> int:
    """`python -m metalmart loadgen ...`: the generator as a program, JSON lines on stdout (for a Job's log)."""
    import sys

    values = {k: v for k, v in vars(parser().parse_args(argv)).items() if v is not None}
    worker = values.pop("worker", None)
    config = LoadConfig(**values)
    try:
        config.check()
        if worker is not None:
            part, parts = (int(n) for n in worker.split("/"))
            return asyncio.run(_worker(config, part, parts))
        return asyncio.run(_main(config))
    except UserError as exc:
        _line("error", message=str(exc), code=exc.code)
        print(f"metalmart loadgen: {exc}", file=sys.stderr)
        return exc.code
