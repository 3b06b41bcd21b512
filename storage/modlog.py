"""The moderation audit log: one row per moderator action or automated decision in a server.

Rows are appended by the bot's services (``record``), paged newest first by ``/modlog``
(``page``), streamed oldest first by ``atelier modlog export`` (``export``) and deleted by
retention once older than ``retention.modlog_days`` (``prune``). Every read is scoped to one
server; the caller decides who may read it.

Rows are bounded: the reason is shortened to ``MODLOG_REASON_LENGTH`` characters, and the
details (a small JSON object) keep short strings and at most ``MAX_DETAILS_CHARS`` of JSON, since
both may carry user text (a prompt, a reason typed by a moderator).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.models import MODERATION_LOG, MODLOG_REASON_LENGTH
from storage.sql import utc_now
from storage.types import ModAction, ModLogEntry, ModLogPage

Clock = Callable[[], datetime]

#: The most rows one page holds.
MAX_PAGE = 50
#: Rows read per transaction by ``export``.
EXPORT_BATCH = 500
#: Rows deleted per transaction by ``prune``.
PRUNE_BATCH = 1000
#: The longest string value kept in ``details``.
MAX_DETAIL_STRING = 200
#: The most JSON characters ``details`` may take; larger details are replaced by a marker.
MAX_DETAILS_CHARS = 2000


class ModerationLog:
    """Append, page, export and prune a server's moderation audit log."""

    def __init__(self, db: Database, *, clock: Clock = utc_now) -> None:
        self.db = db
        self.clock = clock

    async def record(
        self,
        guild_id: int,
        action: ModAction,
        *,
        actor_id: int | None,
        target_user_id: int | None = None,
        target_job_id: str | None = None,
        reason: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> ModLogEntry:
        """Append one row; ``actor_id`` None means the bot decided. Returns the stored row."""
        now = self.clock()

        async def work(session: AsyncSession) -> ModLogEntry:
            return await log_row(
                session,
                guild_id,
                action,
                now,
                actor_id=actor_id,
                target_user_id=target_user_id,
                target_job_id=target_job_id,
                reason=reason,
                details=details,
            )

        return await self.db.write(work)

    async def page(
        self,
        guild_id: int,
        *,
        member: int | None = None,
        job: str | None = None,
        before_id: int | None = None,
        after_id: int | None = None,
        limit: int = 10,
    ) -> ModLogPage:
        """Up to ``limit`` rows of ``guild_id``, newest first, optionally only those about
        ``member`` or ``job``: the newest, or those just older than ``before_id``, or just newer
        than ``after_id`` (keyset paging, stable while rows are added)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}, not {limit}")
        if before_id is not None and after_id is not None:
            raise ValueError("give before_id or after_id, not both")
        scope = _scope(guild_id, member, job)
        id_ = MODERATION_LOG.c.id

        async def work(session: AsyncSession) -> ModLogPage:
            stmt = select(MODERATION_LOG).where(*scope)
            if after_id is not None:
                stmt = stmt.where(id_ > after_id).order_by(id_.asc())
            else:
                if before_id is not None:
                    stmt = stmt.where(id_ < before_id)
                stmt = stmt.order_by(id_.desc())
            rows = list((await session.execute(stmt.limit(limit + 1))).mappings())
            more = len(rows) > limit
            entries = [_entry(r) for r in rows[:limit]]
            if after_id is not None:
                entries.reverse()
            if not entries:
                return ModLogPage((), older=False, newer=False)
            newest, oldest = entries[0].id, entries[-1].id
            older = more if after_id is None else await _exists(session, scope, id_ < oldest)
            newer = more if after_id is not None else await _exists(session, scope, id_ > newest)
            return ModLogPage(tuple(entries), older=older, newer=newer)

        return await self.db.read(work)

    async def export(
        self, guild_id: int, *, batch: int = EXPORT_BATCH
    ) -> AsyncIterator[ModLogEntry]:
        """Every row of ``guild_id``, oldest first, read in batches (one short read each)."""
        last = 0
        while True:

            async def work(session: AsyncSession, after: int = last) -> list[ModLogEntry]:
                stmt = (
                    select(MODERATION_LOG)
                    .where(MODERATION_LOG.c.guild_id == guild_id, MODERATION_LOG.c.id > after)
                    .order_by(MODERATION_LOG.c.id)
                    .limit(batch)
                )
                return [_entry(r) for r in (await session.execute(stmt)).mappings()]

            entries = await self.db.read(work)
            for entry in entries:
                yield entry
            if len(entries) < batch:
                return
            last = entries[-1].id

    async def count_older(self, older_than: datetime) -> int:
        """How many rows ``prune(older_than)`` would delete."""

        async def work(session: AsyncSession) -> int:
            stmt = select(func.count()).where(MODERATION_LOG.c.created_at < older_than)
            return int((await session.execute(stmt)).scalar_one())

        return await self.db.read(work)

    async def prune(self, older_than: datetime, *, limit: int = PRUNE_BATCH) -> int:
        """Delete up to ``limit`` rows made before ``older_than``, oldest first; how many."""

        async def work(session: AsyncSession) -> int:
            ids = select(MODERATION_LOG.c.id).where(MODERATION_LOG.c.created_at < older_than)
            due = list(
                (await session.execute(ids.order_by(MODERATION_LOG.c.id).limit(limit))).scalars()
            )
            if due:
                await session.execute(delete(MODERATION_LOG).where(MODERATION_LOG.c.id.in_(due)))
            return len(due)

        return await self.db.write(work)


async def log_row(
    session: AsyncSession,
    guild_id: int,
    action: ModAction,
    now: datetime,
    *,
    actor_id: int | None,
    target_user_id: int | None = None,
    target_job_id: str | None = None,
    reason: str = "",
    details: Mapping[str, Any] | None = None,
) -> ModLogEntry:
    """Append one row inside the caller's unit of work, so a decision and its log row commit
    together (the review queue's decisions, holds and bans)."""
    row = {
        "guild_id": guild_id,
        "created_at": now,
        "actor_id": actor_id,
        "action": ModAction(action).value,
        "target_user_id": target_user_id,
        "target_job_id": target_job_id,
        "reason": _shorten(reason, MODLOG_REASON_LENGTH),
        "details": bounded_details(details or {}),
    }
    result = await session.execute(
        insert(MODERATION_LOG).values(row).returning(MODERATION_LOG.c.id)
    )
    return _entry({**row, "id": int(result.scalar_one())})


def bounded_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """``details`` with long strings shortened; a marker when its JSON is still too large."""
    kept = {str(k)[:40]: _bounded_value(v) for k, v in details.items()}
    if len(json.dumps(kept, ensure_ascii=False, default=str)) > MAX_DETAILS_CHARS:
        return {"truncated": True}
    return kept


def _bounded_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_bounded_value(v) for v in value[:20]]
    return _shorten(str(value), MAX_DETAIL_STRING)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _scope(guild_id: int, member: int | None, job: str | None) -> list[ColumnElement[bool]]:
    scope = [MODERATION_LOG.c.guild_id == guild_id]
    if member is not None:
        scope.append(MODERATION_LOG.c.target_user_id == member)
    if job is not None:
        scope.append(MODERATION_LOG.c.target_job_id == job)
    return scope


async def _exists(
    session: AsyncSession, scope: list[ColumnElement[bool]], where: ColumnElement[bool]
) -> bool:
    stmt = select(MODERATION_LOG.c.id).where(*scope, where).limit(1)
    return (await session.execute(stmt)).first() is not None


def _entry(row: RowMapping | Mapping[str, Any]) -> ModLogEntry:
    return ModLogEntry(
        id=int(row["id"]),
        guild_id=int(row["guild_id"]),
        created_at=row["created_at"],
        actor_id=row["actor_id"],
        action=ModAction(row["action"]),
        target_user_id=row["target_user_id"],
        target_job_id=row["target_job_id"],
        reason=row["reason"],
        details=dict(row["details"] or {}),
    )
