"""Engine and units of work for SQLite (default) and PostgreSQL.

Every service call is one unit of work: ``await db.write(fn)`` or ``await db.read(fn)`` runs
``fn(session)`` inside one transaction on one pooled connection and returns plain values.

SQLite: WAL (readers never block the writer), a long busy_timeout (writers queue instead of
failing), foreign keys on, and ``BEGIN IMMEDIATE`` for write transactions. A deferred transaction
that reads and then writes can fail with SQLITE_BUSY without waiting when another process wrote in
between; taking the write lock at BEGIN makes each write unit a serial, race-free critical
section across every process sharing the file. Read units use a plain (deferred) BEGIN, so
position and progress lookups never wait behind writers.

PostgreSQL (asyncpg): READ COMMITTED; the services take row locks (``FOR UPDATE``, ``SKIP
LOCKED``) where an order matters. Deadlocks and serialization failures are retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[T]]

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: SQLSTATEs worth retrying as a whole unit of work: serialization failure, deadlock.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
MAX_RETRIES = 5
_WRITE_OPTION = "atelier_write"


def normalize_url(url: str | URL) -> URL:
    """Pick the async driver for plain ``sqlite://`` and ``postgresql://`` URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername == "sqlite+aiosqlite" and parsed.database in (None, "", ":memory:"):
        # Each pooled connection would get its own empty in-memory database.
        raise ValueError("SQLite needs a file path; an in-memory database cannot be shared")
    return parsed


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # Take BEGIN away from the driver so _on_begin decides DEFERRED or IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL never corrupts; a power cut may lose the last commits, which leases
            # and reclaiming tolerate (the job runs again).
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        writing = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def create_engine(url: str | URL, *, pool_size: int = 5, echo: bool = False) -> AsyncEngine:
    """An async engine with Atelier's connection setup (SQLite pragmas and BEGIN handling)."""
    parsed = normalize_url(url)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        # asyncpg prepares every statement, and after five runs PostgreSQL may switch a
        # prepared statement to a generic plan, made without the parameters' values. Atelier's
        # best plans depend on them (how many jobs match a word or prefix, how selective a
        # search filter or a member is): generic plans made filtered searches 5 to 10 times
        # slower (p95 about 120 ms against about 20 ms, ``atelier bench gallery``). Planning
        # each run costs well under a millisecond for these queries. JIT compilation is off:
        # it starts above a plan cost that a search ranking a few thousand matches reaches, and
        # then spends 30 to 40 ms compiling a query that runs in 20.
        connect_args["server_settings"] = {"plan_cache_mode": "force_custom_plan", "jit": "off"}
    engine = create_async_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=10,
        pool_timeout=60,
        connect_args=connect_args,
    )
    if engine.dialect.name == "sqlite":
        _install_sqlite_hooks(engine)
    return engine


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    for name in ("sqlstate", "pgcode"):
        value = getattr(orig, name, None)
        if isinstance(value, str):
            return value
    return None


def _retryable(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    if _sqlstate(exc) in RETRYABLE_SQLSTATES:
        return True
    # SQLite gives up after busy_timeout with "database is locked": retry rather than fail a job.
    return "database is locked" in str(exc.orig)


class Database:
    """One database: an engine, its read and write session factories, and retries.

    ``write`` units take SQLite's write lock at BEGIN; on PostgreSQL they are ordinary READ
    COMMITTED transactions. A unit that fails with a transient conflict is run again from the
    start, so ``fn`` must do all its work through the session it is given.
    """

    def __init__(self, url: str | URL, *, pool_size: int = 5, echo: bool = False) -> None:
        self.engine = create_engine(url, pool_size=pool_size, echo=echo)
        self.dialect = self.engine.dialect.name
        write_engine = self.engine.execution_options(**{_WRITE_OPTION: True})
        self._reads = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writes = async_sessionmaker(write_engine, expire_on_commit=False)
        # SQLite runs one writer at a time anyway. Queueing this process's writers here (FIFO)
        # instead of in SQLite's busy handler, which sleeps with growing backoff, keeps the
        # worst-case wait of a write short when the bot and a worker share a process.
        self._write_turn = asyncio.Lock() if self.is_sqlite else None

    @property
    def url(self) -> URL:
        return self.engine.url

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    async def write(self, fn: Work[T]) -> T:
        """Run ``fn`` in one write transaction, committing on return, retrying on conflicts."""
        if self._write_turn is None:
            return await self._run(self._writes, fn)
        async with self._write_turn:
            return await self._run(self._writes, fn)

    async def read(self, fn: Work[T]) -> T:
        """Run ``fn`` in one read transaction (it must not write)."""
        return await self._run(self._reads, fn)

    async def _run(self, factory: async_sessionmaker[AsyncSession], fn: Work[T]) -> T:
        delay = 0.01
        for attempt in range(1, MAX_RETRIES + 1):
            try:
                async with factory() as session, session.begin():
                    return await fn(session)
            except DBAPIError as exc:
                if attempt == MAX_RETRIES or not _retryable(exc):
                    raise
                log.info("transient database conflict (attempt %d), retrying: %s", attempt, exc)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.dispose()
