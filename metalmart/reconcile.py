"""The reconciler: publishes an order's event again only when the broker no longer holds its record.

An event the broker acknowledged and then lost (the `local` target's memory broker killed, a topic deleted and
created again, records past retention) leaves its order stuck for good. Time alone cannot tell that from an order
waiting for a consumer: a processor held at a breakpoint for ten minutes, or one slower than the load. So time only
says when to look (an order not moved `ORDER_REPUBLISH_AFTER_S` after its event was published), and the look is a
read of the broker: the relay records where each acknowledged event landed (partition and offset, from the delivery
report), and the reconciler reads the record at that place back. The event is published again only when the
broker certainly no longer holds it there with the order's key: the topic or the partition is gone, the offset is
below the partition's start, or the partition was read past that offset without finding the record. An order whose
record is there is waiting, and is looked at again one bound later; a broker that does not answer decides nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from metalmart.orders import OrderStore

log = logging.getLogger("metalmart.reconcile")

# What a read of the broker found at a (partition, offset): held, gone, or unknown (None: it did not answer).
Verdicts = dict[tuple[int, int], bool | None]


class RecordCheck:
    """Reads records back from the broker to see whether it still holds them. Blocking: run it off the event loop,
    one call at a time.

    Each check has a consumer of its own, closed at its end: a consumer kept from one check to the next carries
    librdkafka's metadata cache of a topic deleted in between, and librdkafka 2.16.0 crashed the whole process
    (SIGSEGV in rd_kafka_metadata_update_op → rd_kafka_metadata_cache_find): on Tansu, 10 of 40 runs of three
    checks of a just-deleted topic; with a consumer per check, 0 of 40, interleaved in one run. A deleted and re-made
    topic is what the reconciler is for, and a check runs only for an order not moved for a bound: a client per
    check is cheap."""

    def __init__(self, kafka: dict[str, Any], timeout_s: float = 5.0) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        # A round cancelled on the event loop (the relay lock lost) leaves its read running in its thread: the next
        # round's read waits for it.
        self._lock = threading.Lock()

    def _consumer(self) -> Consumer:
        return Consumer({
            **self.kafka,
            # Only assign() is used: the group is never joined and nothing is committed.
            "group.id": "metalmart-order-reconciler",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # A start outside the partition is an error to see, not a jump to one of its ends.
            "auto.offset.reset": "error",
            "client.id": "metalmart-order-reconciler",
        })

    def close(self) -> None:
        """Waits for a check still running (its consumer is closed at its end)."""
        with self._lock:
            pass

    def check(self, topic: str, wanted: dict[int, dict[int, str]]) -> Verdicts:
        """For each partition → {offset: key}: whether the broker holds a record with that key at that offset."""
        with self._lock:
            consumer = self._consumer()
            try:
                return self._check(consumer, topic, wanted)
            finally:
                consumer.close()

    def _check(self, consumer: Consumer, topic: str, wanted: dict[int, dict[int, str]]) -> Verdicts:
        verdicts: Verdicts = {(p, o): None for p, offsets in wanted.items() for o in offsets}
        try:
            meta = consumer.list_topics(topic, timeout=self.timeout_s).topics.get(topic)
        except Exception as exc:  # the broker does not answer: nothing is decided
            log.info("cannot read %s to check %d event(s): %s", topic, len(verdicts), exc)
            return verdicts
        gone = meta is None or (meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART)
        if meta is not None and meta.error is not None and not gone:
            return verdicts
        starts: dict[int, int] = {}
        highs: dict[int, int] = {}
        for partition, offsets in wanted.items():
            if gone or partition not in meta.partitions:
                verdicts.update({(partition, o): False for o in offsets})
                continue
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=self.timeout_s)
            except Exception as exc:
                log.info("cannot read the offsets of %s[%d]: %s", topic, partition, exc)
                continue
            for offset in offsets:
                if offset < low:
                    verdicts[(partition, offset)] = False  # deleted from the log (retention, or truncated)
            rest = [o for o in offsets if o >= low]
            if rest:
                # The read starts at the first offset asked for, or at the partition's last reported offset when
                # it is beyond that: a broker may report a partition's end as its last batch's first offset + 1
                # (Tansu does), so records of the last batch can lie past the end it reports.
                starts[partition] = max(low, min(min(rest), high - 1))
                highs[partition] = high
        if starts:
            self._read(consumer, topic, {p: wanted[p] for p in starts}, starts, highs, verdicts)
        return verdicts

    def _read(self, consumer: Consumer, topic: str, wanted: dict[int, dict[int, str]], starts: dict[int, int],
              highs: dict[int, int], verdicts: Verdicts) -> None:
        seen: dict[int, dict[int, bytes | None]] = defaultdict(dict)
        open_parts = set(starts)
        last = {p: max(offsets) for p, offsets in wanted.items()}
        consumer.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
        deadline = time.monotonic() + self.timeout_s
        try:
            while open_parts and time.monotonic() < deadline:
                batch = consumer.consume(500, min(0.5, max(0.0, deadline - time.monotonic())))
                if not batch:
                    # Read up to the end the broker reported, then nothing more for a round: the partition was read
                    # as far as it goes, also on a broker that signals no end past a batch it reported short.
                    for partition in [p for p in open_parts if max(seen[p], default=-1) >= highs[p] - 1]:
                        self._settle(partition, wanted[partition], seen[partition], verdicts, True)
                        open_parts.discard(partition)
                for msg in batch:
                    partition = msg.partition()
                    err = msg.error()
                    if err is not None:
                        # The end of the partition, or a start past it: it was read as far as it goes.
                        if partition in open_parts and (err.code() == KafkaError._PARTITION_EOF
                                                        or err.code() == KafkaError._AUTO_OFFSET_RESET
                                                        or err.code() == KafkaError.OFFSET_OUT_OF_RANGE):
                            self._settle(partition, wanted[partition], seen[partition], verdicts, True)
                            open_parts.discard(partition)
                        continue
                    if partition not in open_parts:
                        continue
                    seen[partition][msg.offset()] = msg.key()
                    if msg.offset() >= last[partition]:
                        self._settle(partition, wanted[partition], seen[partition], verdicts, True)
                        open_parts.discard(partition)
        finally:
            consumer.unassign()
        for partition in open_parts:  # not read to the end in time: only what was read decides
            self._settle(partition, wanted[partition], seen[partition], verdicts, False)

    @staticmethod
    def _settle(partition: int, wanted: dict[int, str], seen: dict[int, bytes | None], verdicts: Verdicts,
                complete: bool) -> None:
        reached = max(seen, default=-1)
        for offset, key in wanted.items():
            if verdicts.get((partition, offset)) is False:
                continue
            if offset in seen:
                verdicts[(partition, offset)] = seen[offset] == key.encode()
            elif complete or offset < reached:
                verdicts[(partition, offset)] = False


class Reconciler:
    """Run by the outbox relay every few seconds (so on PostgreSQL by the replica holding the relay lock): looks at
    the orders not moved for the bound, reads their records back, and publishes again the events the broker lost,
    at most `max_republish` times an order."""

    def __init__(self, store: OrderStore, kafka: dict[str, Any], max_republish: int, batch: int = 500) -> None:
        self.store = store
        self.check = RecordCheck(kafka)
        self.max_republish = max_republish
        self.batch = batch

    async def __call__(self) -> int:
        cutoff = self.store.overdue_cutoff()
        async with self.store.db.transaction() as tx:
            rows = await self.store.overdue(tx, cutoff, self.batch, self.max_republish, unchecked_since=cutoff)
        rows = [r for r in rows if r["kafka_partition"] is not None]  # published before landings were recorded
        if not rows:
            return 0
        by_topic: dict[str, dict[int, dict[int, str]]] = defaultdict(lambda: defaultdict(dict))
        for r in rows:
            by_topic[r["topic"]][int(r["kafka_partition"])][int(r["kafka_offset"])] = r["id"]
        loop = asyncio.get_running_loop()
        verdicts: dict[str, Verdicts] = {}
        for topic, wanted in by_topic.items():
            verdicts[topic] = await loop.run_in_executor(None, self.check.check, topic, wanted)
        held, lost = [], []
        for r in rows:
            verdict = verdicts[r["topic"]].get((int(r["kafka_partition"]), int(r["kafka_offset"])))
            if verdict is True:
                held.append(int(r["outbox_id"]))
            elif verdict is False:
                lost.append(r)
        await self.store.still_held(held)
        if not lost:
            return 0
        where = ", ".join(f"{r['topic']}[{r['kafka_partition']}]@{r['kafka_offset']}" for r in lost[:3])
        ids = await self.store.republish([r["id"] for r in lost], cutoff, reason=(
            f"its record is no longer on the broker (read back at {where}{', …' if len(lost) > 3 else ''})"))
        if ids:
            log.warning("%d order(s) whose event the broker no longer holds (read back where it had landed: %s): "
                        "publishing again, at most %d times each: %s", len(ids), where, self.max_republish,
                        ", ".join(ids[:10]))
        return len(ids)

    def close(self) -> None:
        self.check.close()
