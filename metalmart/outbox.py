"""The outbox relay: publishes stored `order.created` events to Kafka, in order, at least once.

An order is answered 201 only after it and its event are committed together (see OrderStore.create). This relay
then hands the event to an idempotent producer (acks=all) and marks it published when the broker acknowledged it.
When the broker is down, events wait in the table (they survive a restart of the service) and go out when it is
back. On PostgreSQL an advisory lock keeps one relay active when several replicas run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import KafkaError, Producer

from metalmart.db import Database
from metalmart.orders import now_iso, unpublished

log = logging.getLogger("metalmart.outbox")

RELAY_LOCK_KEY = 8084


def producer_config(kafka: dict[str, str]) -> dict[str, Any]:
    return {
        **kafka,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 10,
        # The outbox keeps every event, so a delivery may time out early: the relay then sends it again.
        "message.timeout.ms": 10000,
        "reconnect.backoff.max.ms": 1000,
        "client.id": "metalmart-order",
    }


Reconcile = Callable[[], Awaitable[int]]

# An acknowledged event: its outbox id, and the partition and offset the broker gave its record.
Landing = tuple[int, int, int]


class OutboxRelay:
    def __init__(self, db: Database, kafka: dict[str, str], batch_size: int = 500, idle_poll_s: float = 1.0,
                 reconcile: Reconcile | None = None, reconcile_every_s: float = 5.0) -> None:
        self.db = db
        # Publishes again the events the broker lost (metalmart/reconcile.py); run by the relay, so on PostgreSQL
        # only the replica holding the lock does it.
        self.reconcile = reconcile
        self.reconcile_every_s = reconcile_every_s
        self.republished = 0
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.kafka = kafka  # the client configuration: brokers, and the login when there is one
        self.producer = Producer(producer_config(kafka))
        self._generation = 0
        self.published = 0
        self.failed_attempts = 0
        self._wake = asyncio.Event()
        self._inflight: set[int] = set()
        self._acked: list[Landing] = []
        self._nacked: list[int] = []
        self._acks_lock = threading.Lock()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._reconciling: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Called after an order is committed, so its event goes out at once instead of at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.producer.flush, 5.0)
        await self._mark()

    def _on_delivery(self, generation: int, outbox_id: int, err: KafkaError | None, msg: Any) -> None:
        if generation != self._generation:
            return  # from a producer session we gave up on; its events are being sent again
        with self._acks_lock:
            if err is None:
                self._acked.append((outbox_id, msg.partition(), msg.offset()))
            else:
                self._nacked.append(outbox_id)
        if err is not None:
            log.debug("event %s not delivered: %s", outbox_id, err)

    async def _mark(self) -> None:
        with self._acks_lock:
            acked, self._acked = self._acked, []
            nacked, self._nacked = self._nacked, []
        if nacked:
            # Undelivered in time (broker down, or it no longer knows this producer's id, as after a broker that
            # lost its state): start a new producer session and send everything not yet acknowledged again.
            self.failed_attempts += len(nacked)
            log.warning("%d event(s) not delivered in time; new producer session, sending them again", len(nacked))
            self.producer.purge()
            self.producer = Producer(producer_config(self.kafka))
            self._generation += 1
            self._inflight.clear()
        if not acked:
            return
        stamp = now_iso()
        for start in range(0, len(acked), 500):
            chunk = acked[start : start + 500]
            ids = [outbox_id for outbox_id, _, _ in chunk]
            marks = ", ".join("?" for _ in chunk)
            async with self.db.transaction() as tx:
                await tx.execute(f"UPDATE outbox SET published_at = ? WHERE id IN ({marks})", (stamp, *ids))
                # Where the record landed: the reconciler reads it back before it would publish the event again.
                await tx.insert_many(
                    "INSERT INTO outbox_landed (outbox_id, kafka_partition, kafka_offset)", chunk,
                    " ON CONFLICT (outbox_id) DO UPDATE SET kafka_partition = excluded.kafka_partition,"
                    " kafka_offset = excluded.kafka_offset, checked_at = NULL")
        self._inflight.difference_update(outbox_id for outbox_id, _, _ in acked)
        self.published += len(acked)

    async def _run(self) -> None:
        """Relay while holding the relay lock; a lock lost with its connection (the database restarted) is taken
        again before relaying on, so two replicas never relay at once."""
        while not self._stopping:
            try:
                async with self.db.exclusive(RELAY_LOCK_KEY) as lock:
                    await self._relay(lock)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is unreachable: keep trying, as a service must
                log.warning("outbox relay cannot take its lock (%s); trying again in 1 s", exc)
                await asyncio.sleep(1.0)

    async def _reconcile(self) -> None:
        assert self.reconcile is not None
        try:
            republished = await self.reconcile()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reconciler round failed; trying again at the next")
            return
        if republished:
            self.republished += republished
            self._wake.set()

    async def _relay(self, lock: Any) -> None:
        try:
            await self._relay_events(lock)
        finally:
            if self._reconciling is not None:
                self._reconciling.cancel()
                await asyncio.gather(self._reconciling, return_exceptions=True)

    async def _relay_events(self, lock: Any) -> None:
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self.reconcile_every_s
        while not self._stopping:
            try:
                if loop.time() >= next_check:
                    next_check = loop.time() + self.reconcile_every_s
                    if not await lock.held():
                        log.warning("outbox relay lost its lock (database restarted?); taking it again")
                        return
                    # Beside the relay, not in its way: reading records back can take a few seconds.
                    if self.reconcile is not None and (self._reconciling is None or self._reconciling.done()):
                        self._reconciling = asyncio.create_task(self._reconcile(), name="outbox-reconciler")
                await self._mark()
                async with self.db.transaction() as tx:
                    rows = await unpublished(tx, self.batch_size, self._inflight)
                for row in rows:
                    headers = [(k, v.encode()) for k, v in json.loads(row["headers"]).items()]
                    self._produce(row, headers)
                # Serve delivery callbacks off the event loop; short so new orders are picked up quickly.
                await loop.run_in_executor(None, self.producer.poll, 0.05 if self._inflight else 0)
                if rows:
                    continue
                if not self._inflight:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.idle_poll_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay iteration failed; retrying")
                await asyncio.sleep(1.0)

    def _produce(self, row: dict[str, Any], headers: list[tuple[str, bytes]]) -> None:
        while True:
            try:
                self.producer.produce(
                    row["topic"], key=row["msg_key"].encode(), value=row["msg_value"].encode(), headers=headers,
                    on_delivery=functools.partial(self._on_delivery, self._generation, row["id"]),
                )
                self._inflight.add(row["id"])
                return
            except BufferError:
                self.producer.poll(0.1)  # local queue full: let deliveries drain it
