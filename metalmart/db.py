"""One small async interface over PostgreSQL (the cluster) and SQLite (the `local` target).

SQL is written once with `?` placeholders; the PostgreSQL backend turns them into `%s`. Both backends give a
transaction as an async context manager; the pool (PostgreSQL) is bounded so load never exhausts the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol

Row = dict[str, Any]


class Tx(Protocol):
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...


class Database(Protocol):
    dialect: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...
    async def ping(self) -> None: ...
    def exclusive(self, key: int) -> contextlib.AbstractAsyncContextManager[None]: ...


# Column types that differ between the two dialects.
_TYPES = {
    "postgresql": {"AUTOID": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "JSON": "TEXT", "BIG": "BIGINT"},
    "sqlite": {"AUTOID": "INTEGER PRIMARY KEY AUTOINCREMENT", "JSON": "TEXT", "BIG": "INTEGER"},
}


def ddl(dialect: str, statements: Sequence[str]) -> list[str]:
    """Fill the dialect's column types into schema statements written with {AUTOID}, {JSON}, {BIG}."""
    return [s.format(**_TYPES[dialect]) for s in statements]


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = await self._conn.execute(sql.replace("?", "%s"), params)
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
        await self._pool.open(wait=True, timeout=15.0)

    async def close(self) -> None:
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._pool.connection() as conn, conn.transaction():
            yield _PgTx(conn)

    async def ping(self) -> None:
        async with self.transaction() as tx:
            await tx.fetchone("SELECT 1 AS ok")


    @contextlib.asynccontextmanager
    async def exclusive(self, key: int) -> AsyncIterator[None]:
        """Held while the body runs, across replicas: a session advisory lock on a connection of its own."""
        import psycopg

        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        try:
            await conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            yield
        finally:
            await conn.close()


class _SqliteTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = await self._conn.execute(sql, params)
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

    async def ping(self) -> None:
        async with self.transaction() as tx:
            await tx.fetchone("SELECT 1 AS ok")


    @contextlib.asynccontextmanager
    async def exclusive(self, key: int) -> AsyncIterator[None]:
        """One process owns an SQLite file (the `local` target), so there is no one to exclude."""
        yield


def connect(url: str, pool_size: int = 16) -> Database:
    """`postgresql://user:pass@host/db` or `sqlite:///relative/path.db` / `sqlite:////absolute/path.db`."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url, pool_size)
    if url.startswith("sqlite:///"):
        return SqliteDatabase(url.removeprefix("sqlite:///"))
    raise ValueError(f"DATABASE_URL {url!r} is neither postgresql://… nor sqlite:///…")


async def migrate(db: Database, statements: Sequence[str]) -> None:
    """Create what is missing; every statement is written to be safe to run again."""
    async with db.transaction() as tx:
        if db.dialect == "postgresql":
            # Two services may start at once against one database; CREATE ... IF NOT EXISTS is not race-free.
            await tx.execute("SELECT pg_advisory_xact_lock(4242)")
        for stmt in ddl(db.dialect, statements):
            await tx.execute(stmt)
