"""Group commit: requests that arrive while a commit is in flight share the next transaction.

There is no window to wait out: the first request starts a commit at once; whoever arrives meanwhile goes in a
second transaction beside it, and whoever arrives while both are in flight waits for one of them to finish and goes
in the next, together. One request alone costs what it always did; many at once cost one commit
between them. Each is answered only after its own transaction committed, and `flush` reports a result or an error
per item, so one bad item fails only its own request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[list[T]], Awaitable[Sequence[R | Exception]]]


class GroupCommit(Generic[T, R]):
    def __init__(self, flush: Flush[T, R], max_batch: int = 256, parallel: int = 2) -> None:
        self._flush = flush
        self._max = max_batch
        self._parallel = parallel
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._running = 0  # transactions being built or committed now
        self._drainers: set[asyncio.Task[None]] = set()  # held so that a running one is never collected
        self.batches = 0  # transactions committed (or tried), for the stats
        self.items = 0

    async def submit(self, item: T) -> R:
        """`item` in the next transaction; its result once that committed, or its own error."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._running < self._parallel:
            self._running += 1
            drainer = asyncio.get_running_loop().create_task(self._drain())
            self._drainers.add(drainer)
            drainer.add_done_callback(self._drainers.discard)
        # A request that goes away (its client left) cancels only its wait: its item stays in the transaction it is
        # part of, and the result is the same whether anyone hears it.
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                batch = self._waiting[: self._max]
                del self._waiting[: self._max]
                self.batches += 1
                self.items += len(batch)
                try:
                    results: Sequence[R | Exception] = await self._flush([item for item, _ in batch])
                except Exception as exc:  # the transaction as a whole failed (the database went away): each hears it
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        except BaseException as exc:  # cancelled with the service: nobody waits for ever
            for _, future in batch + self._waiting:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            raise
        finally:
            self._running -= 1  # at once, not in a callback: a request arriving now starts a transaction of its own
