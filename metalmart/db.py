"""One small async interface over PostgreSQL (the cluster) and SQLite (the `local` target).

SQL is written once with `?` placeholders; the PostgreSQL backend turns them into `%s`. Both backends give a
transaction as an async context manager; the pool (PostgreSQL) is bounded so load never exhausts the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

Row = dict[str, Any]
log = logging.getLogger("metalmart.db")


class Unavailable(Exception):
    """The database did not answer (down, restarting, no connection free in time): worth a retry."""


class UniqueViolation(Exception):
    """A row would duplicate a unique value; `what` names the constraint or column."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class Tx(Protocol):
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    async def insert_many(self, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None: ...
    async def fetch_each(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Row | None]: ...
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...


class Database(Protocol):
    dialect: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...
    def writes(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...
    async def ping(self) -> None: ...
    def exclusive(self, key: int) -> contextlib.AbstractAsyncContextManager[Lock]: ...


class Lock(Protocol):
    async def held(self) -> bool: ...


class _Held:
    """A lock nobody else can take (one process owns an SQLite file)."""

    async def held(self) -> bool:
        return True


class _PgLock:
    """A session advisory lock: held as long as the connection that took it lives."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def held(self) -> bool:
        try:
            await self._conn.execute("SELECT 1")
        except Exception:  # the connection is gone, and the lock with it
            return False
        return True


def values_statements(head: str, rows: Sequence[Sequence[Any]], tail: str = "", most: int = 500
                      ) -> list[tuple[str, list[Any]]]:
    """`INSERT INTO t (a, b)` and rows → statements of one multi-row VALUES each (at most `most` rows), each
    followed by `tail` (an `ON CONFLICT …` clause): many rows in one statement and one round trip, in both
    dialects."""
    statements = []
    for start in range(0, len(rows), most):
        chunk = rows[start : start + most]
        group = "(" + ", ".join("?" for _ in chunk[0]) + ")"
        statements.append((f"{head} VALUES " + ", ".join(group for _ in chunk) + tail,
                           [value for row in chunk for value in row]))
    return statements


class _Statements:
    """What both dialects' transactions do the same way, on top of their own `execute`."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        raise NotImplementedError

    async def insert_many(self, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
        for sql, params in values_statements(head, rows, tail):
            await self.execute(sql, params)


# Column types that differ between the two dialects.
_TYPES = {
    "postgresql": {"AUTOID": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "JSON": "TEXT", "BIG": "BIGINT"},
    "sqlite": {"AUTOID": "INTEGER PRIMARY KEY AUTOINCREMENT", "JSON": "TEXT", "BIG": "INTEGER"},
}


def ddl(dialect: str, statements: Sequence[str]) -> list[str]:
    """Fill the dialect's column types into schema statements written with {AUTOID}, {JSON}, {BIG}."""
    return [s.format(**_TYPES[dialect]) for s in statements]


class _PgTx(_Statements):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch_each(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Row | None]:
        """Each statement's first row (or None), in order: all sent before any answer is read (psycopg's pipeline
        mode), so many statements cost one round trip; each still sees the ones before it."""
        if len(statements) == 1:
            return [await self.fetchone(*statements[0])]
        cursors = []
        async with self._conn.pipeline():
            for sql, params in statements:
                cursors.append(await self._conn.execute(sql.replace("?", "%s"), params))
        return [await cur.fetchone() if cur.description is not None else None for cur in cursors]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        from psycopg import errors

        try:
            cur = await self._conn.execute(sql.replace("?", "%s"), params)
        except errors.UniqueViolation as exc:
            raise UniqueViolation(exc.diag.constraint_name or str(exc)) from exc
        return cur.rowcount

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = await self._conn.execute(sql.replace("?", "%s"), params)
        return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        cur = await self._conn.execute(sql.replace("?", "%s"), params)
        return await cur.fetchone()


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, url: str, pool_size: int = 16) -> None:
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        self._url = url
        self._pool = AsyncConnectionPool(
            url, min_size=min(4, pool_size), max_size=pool_size, open=False, kwargs={"row_factory": dict_row},
            timeout=10.0,
        )

    async def open(self) -> None:
        """Open the pool and ask for one connection: Unavailable when the server does not answer in 10 s (the pool
        keeps trying; a later open() asks again)."""
        await self._pool.open(wait=False)
        await self.ping()

    async def close(self) -> None:
        await self._pool.close()

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        return self._transaction(pipelined=False)

    def writes(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        """A transaction of writes whose answers nobody reads before the commit: BEGIN, every statement and COMMIT
        go to the server at once (psycopg's pipeline mode), one round trip instead of one each. A statement the
        server refuses fails the transaction at its end (a UniqueViolation still names its constraint)."""
        return self._transaction(pipelined=True)

    @contextlib.asynccontextmanager
    async def _transaction(self, pipelined: bool) -> AsyncIterator[Tx]:
        import psycopg
        from psycopg import errors
        from psycopg_pool import PoolTimeout

        try:
            async with self._pool.connection() as conn, contextlib.AsyncExitStack() as stack:
                if pipelined:
                    await stack.enter_async_context(conn.pipeline())
                await stack.enter_async_context(conn.transaction())
                yield _PgTx(conn)
        except errors.UniqueViolation as exc:  # raised at the commit, in pipeline mode
            raise UniqueViolation(exc.diag.constraint_name or str(exc)) from exc
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise Unavailable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc

    async def ping(self) -> None:
        async with self.transaction() as tx:
            await tx.fetchone("SELECT 1 AS ok")


    @contextlib.asynccontextmanager
    async def exclusive(self, key: int) -> AsyncIterator[Lock]:
        """Held while the body runs, across replicas: a session advisory lock on a connection of its own (the body
        asks `held()` to learn whether that connection, and so the lock, is still there)."""
        import psycopg

        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        try:
            await conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            yield _PgLock(conn)
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


class _SqliteTx(_Statements):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch_each(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Row | None]:
        return [await self.fetchone(sql, params) for sql, params in statements]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        import sqlite3

        try:
            cur = await self._conn.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE constraint failed" in str(exc):
                raise UniqueViolation(str(exc).rsplit(":", 1)[-1].strip()) from exc
            raise
        return cur.rowcount

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = await self._conn.execute(sql, params)
        return [dict(r) for r in await cur.fetchall()]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        cur = await self._conn.execute(sql, params)
        row = await cur.fetchone()
        return dict(row) if row is not None else None


class SqliteDatabase:
    """One connection in WAL mode; transactions are serialised by a lock, as SQLite serialises writers anyway."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        import sqlite3

        import aiosqlite

        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = await aiosqlite.connect(self._path, isolation_level=None, timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        await self._conn.execute("PRAGMA journal_mode=WAL")
        await self._conn.execute("PRAGMA synchronous=NORMAL")
        await self._conn.execute("PRAGMA busy_timeout=30000")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self._conn)
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    def writes(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        return self.transaction()

    async def ping(self) -> None:
        async with self.transaction() as tx:
            await tx.fetchone("SELECT 1 AS ok")


    @contextlib.asynccontextmanager
    async def exclusive(self, key: int) -> AsyncIterator[Lock]:
        """One process owns an SQLite file (the `local` target), so there is no one to exclude."""
        yield _Held()


def connect(url: str, pool_size: int = 16) -> Database:
    """`postgresql://user:pass@host/db` or `sqlite:///relative/path.db` / `sqlite:////absolute/path.db`."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url, pool_size)
    if url.startswith("sqlite:///"):
        return SqliteDatabase(url.removeprefix("sqlite:///"))
    raise ValueError(f"DATABASE_URL {url!r} is neither postgresql://… nor sqlite:///…")


class Opener:
    """Opens the database and migrates it, trying again until the database answers: a service started before its
    database, or while it restarts, waits for it (its /ready says why) instead of exiting into a crash loop."""

    def __init__(self, database: Database, schema: Sequence[str],
                 then: Callable[[], Awaitable[None]] | None = None) -> None:
        self.database, self.schema, self.then = database, schema, then
        self.ready = asyncio.Event()
        self.last_error = "not tried yet"
        self.since = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def start(self, settle_s: float = 5.0) -> None:
        """Start trying, and give the first tries up to `settle_s` before the service starts serving: a database that
        is there is ready before the first request, and one that is not is waited for in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._task.add_done_callback(self._fatal)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), settle_s)

    async def _run(self) -> None:
        from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

        async for attempt in AsyncRetrying(retry=retry_if_exception_type(Unavailable),
                                           wait=wait_exponential(multiplier=0.2, max=5.0), reraise=True):
            with attempt:
                try:
                    await self.database.open()
                    await migrate(self.database, self.schema)
                except Unavailable as exc:
                    self.last_error = str(exc)
                    log.warning("waiting for the database (%.0f s so far): %s", time.monotonic() - self.since, exc)
                    raise
        if self.then is not None:
            await self.then()
        self.ready.set()
        log.info("database ready after %.1f s", time.monotonic() - self.since)

    @staticmethod
    def _fatal(task: asyncio.Task[None]) -> None:
        """Anything but an unavailable database (a schema the database refuses, a bug) ends the process, as a failed
        start always did: waiting would not mend it, and a crash loop shows it."""
        if not task.cancelled() and task.exception() is not None:
            log.critical("could not open the database: %r", task.exception())
            os._exit(3)

    async def check(self) -> None:
        """For /ready: the database is migrated and answers now."""
        if not self.ready.is_set():
            raise Unavailable(f"waiting for the database for {time.monotonic() - self.since:.0f} s: {self.last_error}")
        await self.database.ping()

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def migrate(db: Database, statements: Sequence[str]) -> None:
    """Create what is missing; every statement is written to be safe to run again."""
    async with db.transaction() as tx:
        if db.dialect == "postgresql":
            # Two services may start at once against one database; CREATE ... IF NOT EXISTS is not race-free.
            await tx.execute("SELECT pg_advisory_xact_lock(4242)")
        for stmt in ddl(db.dialect, statements):
            await tx.execute(stmt)
