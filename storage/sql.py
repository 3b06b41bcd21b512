"""Small SQL helpers shared by the services: dialect-specific upserts and the account locks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert

from storage.models import GUILD_ACCOUNTS, JOBS, USER_ACCOUNTS


def utc_now() -> datetime:
    return datetime.now(UTC)


def _dialect_insert(session: AsyncSession, table: Table) -> postgresql.Insert | sqlite.Insert:
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_ignore(
    session: AsyncSession, table: Table, values: Mapping[str, Any], keys: Sequence[str]
) -> Insert:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` (same syntax on SQLite and PostgreSQL)."""
    return (
        _dialect_insert(session, table)
        .values(dict(values))
        .on_conflict_do_nothing(index_elements=list(keys))
    )


def upsert(
    session: AsyncSession,
    table: Table,
    values: Mapping[str, Any],
    keys: Sequence[str],
    update: Mapping[str, Any] | None = None,
) -> Insert:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE``; ``update`` may use ``excluded`` columns."""
    stmt = _dialect_insert(session, table).values(dict(values))
    changes = (
        dict(update)
        if update is not None
        else {k: getattr(stmt.excluded, k) for k in values if k not in keys}
    )
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=changes)


async def lock_user(session: AsyncSession, user_id: int, now: datetime) -> None:
    """Create the user's account row if needed and lock it until the transaction ends.

    Every check-then-insert on one user's jobs (caps, quota) happens under this lock, so two
    concurrent enqueues by one user cannot both see room for one more. On SQLite the write
    transaction (BEGIN IMMEDIATE) already serialises everything and FOR UPDATE is omitted.
    """
    await session.execute(
        insert_ignore(session, USER_ACCOUNTS, {"user_id": user_id, "created_at": now}, ["user_id"])
    )
    await session.execute(
        select(USER_ACCOUNTS.c.user_id).where(USER_ACCOUNTS.c.user_id == user_id).with_for_update()
    )


async def lock_guild(session: AsyncSession, guild_id: int, now: datetime) -> None:
    """Like ``lock_user`` for a guild's allowance. Always taken after the user's lock."""
    await session.execute(
        insert_ignore(
            session, GUILD_ACCOUNTS, {"guild_id": guild_id, "created_at": now}, ["guild_id"]
        )
    )
    await session.execute(
        select(GUILD_ACCOUNTS.c.guild_id)
        .where(GUILD_ACCOUNTS.c.guild_id == guild_id)
        .with_for_update()
    )


async def lock_job(session: AsyncSession, job_id: str) -> RowMapping | None:
    """The job's row, locked until the transaction ends (SQLite: the write transaction already
    is), or None when there is no such job."""
    result = await session.execute(select(JOBS).where(JOBS.c.id == job_id).with_for_update())
    return result.mappings().first()
