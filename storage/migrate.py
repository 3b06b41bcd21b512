"""Applying the schema: ``atelier db upgrade``, and the bot and every worker at start.

Starting several processes at once is safe: the migration runs in one transaction that first
takes a lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock), so the
second process waits and then finds nothing left to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import Database
from storage.errors import DatabaseUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Arbitrary constant naming Atelier's migration lock among PostgreSQL advisory locks.
PG_MIGRATION_LOCK = 0x41_54_45_4C  # "ATEL"


def alembic_config() -> Config:
    """Alembic's configuration for the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest migration shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError("no migrations found")
    return head


async def migrate_on_connection(conn: AsyncConnection, run: Callable[[Connection], None]) -> None:
    """Run ``run`` (alembic work) on ``conn`` once the migration lock is held."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
    await conn.run_sync(run)


async def upgrade(url: str | URL, revision: str = "head") -> str | None:
    """Apply migrations up to ``revision`` and return the revision the database is now at."""

    def _upgrade(sync_conn: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)

    try:
        db = Database(url, pool_size=1)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        # Say why without echoing the URL: one that cannot be parsed cannot be masked either.
        raise DatabaseUnavailable(f"the database URL cannot be used: {_one_line(exc)}") from None
    where = db.url.render_as_string(hide_password=True)
    try:
        _check_sqlite_folder(db, where)
        # The write option makes SQLite's BEGIN IMMEDIATE: concurrent upgrades queue up.
        async with db.engine.execution_options(atelier_write=True).begin() as conn:
            await migrate_on_connection(conn, _upgrade)
        return await current_revision_of(db)
    except (OSError, SQLAlchemyError) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        detail = _one_line(cause)
        if db.url.password:
            detail = detail.replace(db.url.password, "***")
        raise DatabaseUnavailable(f"cannot use the database at {where}: {detail}") from exc
    finally:
        await db.dispose()


async def downgrade(url: str | URL, revision: str) -> str | None:
    """Undo migrations down to ``revision`` (an operator's step back before running older
    code); the revision the database is now at. Same lock as ``upgrade``."""

    def _downgrade(sync_conn: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_conn
        command.downgrade(config, revision)

    db = Database(url, pool_size=1)
    try:
        async with db.engine.execution_options(atelier_write=True).begin() as conn:
            await migrate_on_connection(conn, _downgrade)
        return await current_revision_of(db)
    finally:
        await db.dispose()


def _check_sqlite_folder(db: Database, where: str) -> None:
    """Refuse a SQLite file whose folder is missing before connecting: aiosqlite's failed
    connect leaves its thread posting to the event loop, which ``asyncio.run`` may already have
    closed, and that prints a second traceback after the error."""
    if not db.is_sqlite or not db.url.database or db.url.query.get("uri"):
        return
    folder = Path(db.url.database).parent
    if not folder.is_dir():
        raise DatabaseUnavailable(
            f"cannot use the database at {where}: the folder {folder} does not exist"
        )


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def upgrade_sync(url: str | URL, revision: str = "head") -> str | None:
    """``upgrade`` for synchronous callers (the CLI); must not be called from a running loop."""
    return asyncio.run(upgrade(url, revision))


async def current_revision_of(db: Database) -> str | None:
    async with db.engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )


async def current_revision(url: str | URL) -> str | None:
    """The revision a database is at (None for an empty database)."""
    db = Database(url, pool_size=1)
    try:
        return await current_revision_of(db)
    finally:
        await db.dispose()


async def is_up_to_date(url: str | URL) -> bool:
    """Whether the database is at the newest shipped migration."""
    return await current_revision(url) == head_revision()
