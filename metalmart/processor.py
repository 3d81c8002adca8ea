"""The order processor: a Kafka consumer that steps each order pending → processing → confirmed → shipped.

At least once: an offset is committed only once its order is shipped (or given up after bounded retries), and
commits follow offset order within a partition even though orders are processed concurrently. A redelivered
message is harmless: the order service ignores a step an order already took.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from metalmart import sessions, splittopics
from metalmart.groupcommit import GroupCommit
from metalmart.orders import PIPELINE
from metalmart.services import probe
from metalmart.settings import ProcessorSettings, bind_host, debugger_attached
from metalmart.web import install_stop_signals

log = logging.getLogger("metalmart.processor")

STEPS = ("processing", "confirmed", "shipped")


def processor_source(topic: str, fmt: str = splittopics.DEFAULT) -> str:
    """Who is processing, told by the topic name. The mirrord operator feeds a developer's local process from
    `mirrord-tmp-<id>-<topic>` and the cluster's workload from `mirrord-tmp-<id>-fallback-<topic>` (by default; the
    format is the operator's setting, metalmart.splittopics)."""
    split = splittopics.parse(topic, None, fmt)
    return "mirrord-kafka" if split is not None and not split[1] else "cluster"


class TransientError(Exception):
    """Worth retrying: the order service is unreachable, slow or answered 5xx."""


class GiveUp(Exception):
    """Not worth retrying: the order is unknown or the answer makes no sense."""


@dataclass
class PartitionState:
    """Offsets received on one partition during one assignment, and which of them are finished."""

    received: deque[int] = field(default_factory=deque)
    finished: set[int] = field(default_factory=set)
    commit_at: int | None = None  # the next offset to commit (last finished in order + 1), not yet committed
    active: bool = True
    last: int = -1  # the highest offset received


class OffsetTracker:
    """Commit points kept in offset order while orders finish in any order. Thread-safe: the consumer's
    rebalance callbacks run on the consumer thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[tuple[str, int], PartitionState] = {}

    def received(self, topic: str, partition: int, offset: int) -> PartitionState:
        with self._lock:
            state = self._parts.get((topic, partition))
            if state is not None and offset <= state.last:
                # The partition's offsets went back: its topic was deleted and created again under us (or the
                # group's position was reset). What the old numbering had in flight must not mix with the new one's
                # commit points; those orders are processed all the same, and their offsets are never committed.
                state.active = False
                state = None
            if state is None:
                state = self._parts[(topic, partition)] = PartitionState()
            state.received.append(offset)
            state.last = offset
            return state

    def finished(self, state: PartitionState, offset: int) -> None:
        with self._lock:
            if not state.active:
                return  # the partition was revoked meanwhile; its new owner processes the message again
            state.finished.add(offset)
            while state.received and state.received[0] in state.finished:
                done = state.received.popleft()
                state.finished.discard(done)
                state.commit_at = done + 1

    def take_commits(self, only: set[tuple[str, int]] | None = None) -> list[TopicPartition]:
        with self._lock:
            out = []
            for (topic, partition), state in self._parts.items():
                if only is not None and (topic, partition) not in only:
                    continue
                if state.commit_at is not None:
                    out.append(TopicPartition(topic, partition, state.commit_at))
                    state.commit_at = None
            return out

    def restore(self, offsets: list[TopicPartition]) -> None:
        """Put back commit points whose commit failed, unless a later one was found meanwhile."""
        with self._lock:
            for tp in offsets:
                state = self._parts.get((tp.topic, tp.partition))
                if state is not None and state.active and state.commit_at is None:
                    state.commit_at = tp.offset

    def drop(self, keys: set[tuple[str, int]]) -> None:
        with self._lock:
            for key in keys:
                state = self._parts.pop(key, None)
                if state is not None:
                    state.active = False

    def describe(self) -> dict[str, dict[str, Any]]:
        """Each partition's numbering as /health shows it: in flight, finished out of order, next commit point."""
        with self._lock:
            return {f"{t}[{p}]": {"in_flight": len(s.received) - len(s.finished), "last": s.last,
                                  "commit_at": s.commit_at} for (t, p), s in self._parts.items()}

    @property
    def inflight(self) -> int:
        with self._lock:
            return sum(len(s.received) - len(s.finished) for s in self._parts.values())


@dataclass
class Counters:
    received: int = 0
    shipped: int = 0
    already_done: int = 0
    gave_up: int = 0
    malformed: int = 0
    commits: int = 0
    redelivered: int = 0  # messages handed back by a rebalance that this process had already taken


# Messages taken, remembered so that a rebalance handing them back does not take them twice: many more than a
# process has in flight (PROCESSOR_CONCURRENCY) and takes between two commits.
TAKEN_REMEMBERED = 20_000


class OrderProcessor:
    def __init__(self, settings: ProcessorSettings) -> None:
        self.settings = settings
        self.counters = Counters()
        self.tracker = OffsetTracker()
        self.assigned: set[tuple[str, int]] = set()
        self.joined = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer")  # every consumer call
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        # (topic, partition, offset) → the message's key, and its task while it runs.
        self._taken: OrderedDict[tuple[str, int, int], tuple[bytes | None, asyncio.Task[None] | None]] = OrderedDict()
        self._http: aiohttp.ClientSession | None = None
        # The status steps due at once go to the order service together (its batch endpoint): one request and one
        # answer for many, each step still answered on its own. An order service without it takes them one by one.
        self._steps: GroupCommit[_Due, tuple[str, bool]] = GroupCommit(self._send_steps)
        self._batches = True
        self.consumer = Consumer(
            {
                **settings.kafka.client_config(),
                "group.id": settings.group_id,
                "enable.auto.commit": False,
                # A new group reads from the start: a mirrord session's temporary topic is new, and a consumer that
                # starts at `latest` can miss the first message routed to it.
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.session_timeout_ms,
                # How long without a poll before the consumer leaves its group (a debugger holding the process):
                # see metalmart/settings.py. Past it, the processor rejoins when it runs again.
                "max.poll.interval.ms": settings.max_poll_interval_ms,
                "client.id": "metalmart-order-processor",
                # A topic deleted, created again or given more partitions is seen within seconds (the default is
                # 5 minutes): the group rebalances onto the partitions that exist.
                "topic.metadata.refresh.interval.ms": 5000,
            }
        )

    # ---- Kafka side -------------------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.joined = True
        self.assigned |= {(p.topic, p.partition) for p in partitions}
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "no partitions")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        offsets = self.tracker.take_commits(keys)
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                self.counters.commits += 1
            except Exception as exc:  # the group moved on; the new owner reprocesses, which is harmless
                log.warning("commit on revoke failed: %s", exc)
        self.tracker.drop(keys)
        self.assigned -= keys
        log.info("revoked %s", ", ".join(f"{t}[{p}]" for t, p in sorted(keys)) or "nothing")

    async def _consumer_call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _commit(self) -> None:
        offsets = self.tracker.take_commits()
        if not offsets:
            return
        offsets = await self._consumer_call(self._within_log, offsets)
        if not offsets:
            return
        try:
            await self._consumer_call(lambda: self.consumer.commit(offsets=offsets, asynchronous=False))
            self.counters.commits += 1
        except Exception as exc:
            # Put back only what can still be committed: a partition that no longer exists (its topic deleted, or
            # created again with fewer partitions) would fail every commit after it, for ever.
            kept = await self._consumer_call(self._still_there, offsets)
            log.warning("commit failed (%s); %d of %d commit point(s) are tried again", exc, len(kept), len(offsets))
            self.tracker.restore(kept)

    def _within_log(self, offsets: list[TopicPartition]) -> list[TopicPartition]:
        """The commit points not beyond their partition's end as last fetched: a message of a deleted topic that
        finished after the topic was created again must not move the new topic's committed offset past its end."""
        kept = []
        for tp in offsets:
            _low, high = self.consumer.get_watermark_offsets(tp, cached=True) or (-1, -1)
            if high < 0:  # nothing fetched from it yet (a topic just created again): ask the broker
                try:
                    _low, high = self.consumer.get_watermark_offsets(tp, timeout=2.0) or (-1, -1)
                except Exception:  # the broker does not answer: commit; a failed commit is handled
                    high = -1
            if high >= 0 and tp.offset > high:
                log.warning("not committing %s[%d] at %d: the partition ends at %d (the topic was deleted and "
                            "created again?)", tp.topic, tp.partition, tp.offset, high)
                continue
            kept.append(tp)
        return kept

    def _still_there(self, offsets: list[TopicPartition]) -> list[TopicPartition]:
        kept = []
        for topic in {tp.topic for tp in offsets}:
            try:
                meta = self.consumer.list_topics(topic, timeout=2.0).topics.get(topic)
            except Exception:  # the broker does not answer: keep them all, the next commit tries again
                return offsets
            exists = set(meta.partitions) if meta is not None and meta.error is None else set()
            for tp in offsets:
                if tp.topic != topic:
                    continue
                if tp.partition in exists:
                    kept.append(tp)
                else:
                    log.warning("dropping the commit of %s[%d] at %d: the partition no longer exists", tp.topic,
                                tp.partition, tp.offset)
        return kept

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        log.info("consuming %s as group %s from %s; demo mode %s (steps %s s); concurrency %d; max.poll.interval.ms "
                 "%d%s", s.kafka.topic, s.group_id, s.kafka.brokers, "on" if s.demo_mode else "off",
                 " + ".join(f"{d:g}" for d in s.step_delays), s.concurrency, s.max_poll_interval_ms,
                 " (a debugger is attached)" if debugger_attached() else "")
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10), connector=aiohttp.TCPConnector(limit=s.concurrency)
        )
        await self._consumer_call(
            lambda: self.consumer.subscribe([s.kafka.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                            on_lost=self._on_revoke)
        )
        last_commit = time.monotonic()
        try:
            while not stop.is_set():
                room = s.concurrency - self.tracker.inflight
                if room <= 0:
                    self._room.clear()
                    await _first(self._room.wait(), stop.wait(), timeout=0.5)
                else:
                    batch = await self._consumer_call(self._fetch, min(room, 500))
                    for msg in batch:
                        self._accept(msg)
                if time.monotonic() - last_commit >= 0.5:
                    await self._commit()
                    last_commit = time.monotonic()
        finally:
            await self._shutdown()

    def _fetch(self, most: int) -> list[Message]:
        """The next message as soon as it is there (waiting at most 0.2 s), then up to `most` in all of those already
        fetched. consume(n, timeout) alone waits out its whole timeout unless n messages come, which held every
        order of a trickle back by up to 0.2 s before its first step."""
        first = self.consumer.poll(0.2)
        if first is None:
            return []
        return [first, *self.consumer.consume(most - 1, 0)] if most > 1 else [first]

    def _accept(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._MAX_POLL_EXCEEDED:
                log.warning("held longer than max.poll.interval.ms (%d ms: a breakpoint?): the consumer left its "
                            "group and joins it again; messages handed back that this process already took are not "
                            "taken twice", self.settings.max_poll_interval_ms)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
            return
        where = (msg.topic(), msg.partition(), msg.offset())
        state = self.tracker.received(*where)
        before = self._taken.get(where)
        if before is not None and before[0] == msg.key():
            # Handed back by a rebalance from the last commit (the group moved on while this process stood still,
            # or the broker restarted): this process has it already, in flight or done. Its offset is finished
            # when that is, and the order is neither processed nor shown at the breakpoint again.
            self.counters.redelivered += 1
            task = asyncio.create_task(self._taken_already(before[1], state, msg.offset()))
        else:
            task = asyncio.create_task(self._process(msg, state))
            self._taken[where] = (msg.key(), task)
            while len(self._taken) > TAKEN_REMEMBERED:
                self._taken.popitem(last=False)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, msg: Message, state: PartitionState) -> None:
        await self.handle_order_message(msg)
        self.tracker.finished(state, msg.offset())
        where = (msg.topic(), msg.partition(), msg.offset())
        if where in self._taken:
            self._taken[where] = (msg.key(), None)  # done: keep the key, not the task
        self._room.set()

    async def _taken_already(self, first: asyncio.Task[None] | None, state: PartitionState, offset: int) -> None:
        if first is not None and not first.done():
            await asyncio.wait([first])
        self.tracker.finished(state, offset)
        self._room.set()

    async def _shutdown(self) -> None:
        """Stop fetching, release in-flight orders (uncommitted: they are redelivered), commit what finished."""
        inflight = list(self._tasks)
        for task in inflight:
            task.cancel()
        await asyncio.gather(*inflight, return_exceptions=True)
        await self._commit()
        await self._consumer_call(self.consumer.close)
        if self._http is not None:
            await self._http.close()
        self._executor.shutdown(wait=True)
        log.info("stopped: released %d in-flight order(s) uncommitted; %s", len(inflight), self.counters)

    # ---- The demo's breakpoint --------------------------------------------------------------------------------

    async def handle_order_message(self, msg: Message) -> None:
        """Every `order.created` message this process receives comes through here: put the demo breakpoint on
        the log line below, and only messages whose header matches your mirrord filter stop at it."""
        headers = {k: (v or b"").decode(errors="replace") for k, v in (msg.headers() or [])}
        customer = headers.get("customer_email", "?")
        where = (msg.topic(), msg.partition(), msg.offset(), customer)
        # One line on purpose: a call spread over two lines stops a debugger twice at its first line (Python 3.11
        # reports that line again for the call itself), so the presenter would press Continue twice per message.
        log.info("received order message topic=%s partition=%d offset=%d customer=%s", *where)
        self.counters.received += 1
        try:
            event = json.loads(msg.value() or b"")
            order_id = event["order_id"]
            if not isinstance(order_id, str) or not order_id:
                raise ValueError("order_id is not a non-empty string")
        except (ValueError, KeyError, TypeError) as exc:
            self.counters.malformed += 1
            log.warning("skipping malformed message topic=%s partition=%d offset=%d: %s",
                        msg.topic(), msg.partition(), msg.offset(), exc)
            return
        # A copy the mirrord operator routed to a session (3.233+) names the session's key: the order service records
        # which session's laptop processed the order.
        routed = headers.get(sessions.ROUTED)
        try:
            await self.ship(order_id, msg.topic(), routed if routed and not sessions.key_problem(routed) else None)
        except GiveUp as exc:
            self.counters.gave_up += 1
            log.error("giving up on order %s (offset %d): %s", order_id, msg.offset(), exc)

    # ---- Order side -------------------------------------------------------------------------------------------

    async def ship(self, order_id: str, topic: str, routed: str | None = None) -> None:
        """Step the order on from where it stands: each step is one PUT, and the order service's answer says where
        the order is (a 409 names it when it is further along already: someone else took that step), so no read
        comes first and a redelivered order costs no more calls than a new one. `routed`: the key of the mirrord
        session the message was routed to."""
        headers = {"X-Processor-Source": processor_source(topic, self.settings.split_topic_format),
                   "X-Kafka-Topic": topic}
        if routed:
            headers[sessions.ROUTED_HEADER] = routed
        current = "pending"
        stepped = False
        for target, delay in zip(STEPS, self.settings.step_delays, strict=True):
            if PIPELINE.index(current) >= PIPELINE.index(target):
                continue
            await asyncio.sleep(delay)
            current, changed = await self._call(_Due(order_id, target, headers))
            stepped = stepped or changed
            if current not in PIPELINE:
                raise GiveUp(f"order is {current}; nothing to do")
        if stepped:
            self.counters.shipped += 1
        else:
            self.counters.already_done += 1

    async def _call(self, step: _Due) -> tuple[str, bool]:
        """One status step, with bounded retries: the status the order has afterwards, and whether this call moved
        it. Sent beside the other steps due at the same moment (`_send_steps`)."""
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(8) | stop_after_delay(60),
                wait=wait_exponential(multiplier=0.2, max=5),
                retry=retry_if_exception_type(TransientError),
                reraise=True,
            ):
                with attempt:
                    return await self._steps.submit(step)
        except TransientError as exc:
            raise GiveUp(f"order service kept failing: {exc}") from exc
        raise AssertionError("unreachable")

    async def _send_steps(self, steps: list[_Due]) -> list[tuple[str, bool] | Exception]:
        """Steps due together, in one POST /api/orders/status (each answered as its own PUT would be); one PUT each
        where the order service has no batch endpoint (an older one, in a rolling update)."""
        assert self._http is not None
        if not self._batches:
            return list(await asyncio.gather(*(self._once(s) for s in steps), return_exceptions=True))
        url = f"{self.settings.order_service_url}/api/orders/status"
        body = {"steps": [{"id": s.order_id, "status": s.status, "source": s.headers.get("X-Processor-Source"),
                           "topic": s.headers.get("X-Kafka-Topic"),
                           "routed": s.headers.get(sessions.ROUTED_HEADER)} for s in steps]}
        try:
            async with self._http.post(url, json=body) as resp:
                if resp.status in (404, 405):
                    log.warning("the order service has no batch endpoint; sending each status step on its own")
                    self._batches = False
                    return await self._send_steps(steps)
                if resp.status >= 500:
                    raise TransientError(f"POST {url} answered {resp.status}")
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            raise TransientError(f"POST {url}: {type(exc).__name__} {exc}") from exc
        if resp.status != 200 or len(answer.get("results") or []) != len(steps):
            raise GiveUp(f"POST {url} answered {resp.status}: {str(answer)[:200]}")
        return [_outcome(r.pop("code", 0), r, f"{s.status} of {s.order_id}") for s, r in zip(steps, answer["results"],
                                                                                              strict=True)]

    async def _once(self, step: _Due) -> tuple[str, bool] | Exception:
        """One step as its own PUT."""
        assert self._http is not None
        url = f"{self.settings.order_service_url}/api/orders/{step.order_id}/status"
        try:
            async with self._http.put(url, headers=step.headers, json={"status": step.status}) as resp:
                body = await resp.json(content_type=None) if resp.content_length != 0 else {}
                return _outcome(resp.status, body, f"PUT {url}")
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            return TransientError(f"PUT {url}: {type(exc).__name__} {exc}")


@dataclass(frozen=True)
class _Due:
    """A status step due now: the order, the status it steps to, and who takes it (the processor's headers)."""

    order_id: str
    status: str
    headers: dict[str, str] = field(compare=False, hash=False)


def _outcome(code: int, body: dict[str, Any], what: str) -> tuple[str, bool] | Exception:
    """A step's answer as the processor reads it: the status the order has now and whether this step moved it; a 409
    names where the order is (someone else took this step); a 404 or any other refusal is given up on."""
    if code == 409:
        return str(body.get("current")), False
    if code == 404:
        return GiveUp("the order service does not know this order")
    if code >= 500:
        return TransientError(f"{what} answered {code}")
    if code != 200:
        return GiveUp(f"{what} answered {code}: {body}")
    return str(body["status"]), bool(body.get("changed", False))


async def _first(*aws: Any, timeout: float) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def health_app(proc: OrderProcessor) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        c = proc.counters
        return web.json_response({"status": "ok", "joined": proc.joined, "inflight": proc.tracker.inflight,
                                  "received": c.received, "shipped": c.shipped, "gave_up": c.gave_up,
                                  "malformed": c.malformed, "already_done": c.already_done, "commits": c.commits,
                                  "redelivered": c.redelivered,
                                  "max_poll_interval_ms": proc.settings.max_poll_interval_ms,
                                  "assigned": sorted(f"{t}[{p}]" for t, p in proc.assigned),
                                  "partitions": proc.tracker.describe(),
                                  "demo_mode": proc.settings.demo_mode})

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"status": "ready" if proc.joined else "joining"}, status=200 if proc.joined else 503)

    app = web.Application()
    app.router.add_get(probe("health"), health)
    app.router.add_get(probe("ready"), ready)
    return app


async def main(settings: ProcessorSettings | None = None) -> None:
    settings = settings or ProcessorSettings()
    stop = asyncio.Event()
    install_stop_signals(stop)
    proc = OrderProcessor(settings)
    runner = None
    if settings.health_port:
        runner = web.AppRunner(health_app(proc), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, bind_host(), settings.health_port).start()
    try:
        await proc.run(stop)
    finally:
        if runner is not None:
            await runner.cleanup()
