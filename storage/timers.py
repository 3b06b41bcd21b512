"""Durable timers: a row per timer, with a due time, fired at most once.

A timer is one ``timers`` row per kind, subject and round (e.g. a session's round end). A loop
``claim_due``s the due ones under a lease and then fires each through its owner (for sessions,
``SessionStore.fire``), whose unit of work marks it fired with ``mark_fired`` (a guarded update:
still unfired, still due, still claimed by this caller) in the same transaction as what it
causes. So a timer fires once: a second process, a retry after a lost reply, or a restarted bot
finds it fired and changes nothing. A claim whose holder died expires after its lease and
another process takes it: nothing is skipped.

Scheduling and cancelling happen inside the owner's units of work (``schedule``, ``cancel``),
under the owner's own lock (the session's row), so they never race a fire of the same timer:
a moved timer is no longer due, a cancelled one is gone, and the fire's guard finds neither.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, delete, func, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.models import TIMERS
from storage.sql import insert_ignore, utc_now
from storage.types import Timer

Clock = Callable[[], datetime]


def timer_view(row: RowMapping) -> Timer:
    return Timer(
        id=int(row["id"]),
        kind=row["kind"],
        subject=row["subject"],
        round=int(row["round"]),
        due_at=row["due_at"],
        fired_at=row["fired_at"],
        claimed_by=row["claimed_by"],
        claim_until=row["claim_until"],
    )


def _claimable(now: datetime) -> ColumnElement[bool]:
    return and_(
        TIMERS.c.fired_at.is_(None),
        TIMERS.c.due_at <= now,
        or_(TIMERS.c.claimed_by.is_(None), TIMERS.c.claim_until < now),
    )


class TimerStore:
    """Claim due timers and find the next one; firing is their owner's unit of work."""

    def __init__(self, db: Database, *, clock: Clock = utc_now) -> None:
        self.db = db
        self.clock = clock

    async def claim_due(
        self,
        claimer: str,
        *,
        lease_seconds: float = 60.0,
        limit: int = 20,
        kinds: Sequence[str] | None = None,
    ) -> list[Timer]:
        """Claim up to ``limit`` due, unfired timers (oldest due first) for ``lease_seconds``:
        those unclaimed or whose claim expired. PostgreSQL skips rows another claimer holds
        locked; SQLite's write transaction serialises claimers."""
        now = self.clock()

        async def work(session: AsyncSession) -> list[Timer]:
            due = (
                select(TIMERS.c.id)
                .where(_claimable(now))
                .order_by(TIMERS.c.due_at, TIMERS.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            if kinds is not None:
                due = due.where(TIMERS.c.kind.in_(list(kinds)))
            ids = list((await session.execute(due)).scalars())
            if not ids:
                return []
            rows = await session.execute(
                update(TIMERS)
                .where(TIMERS.c.id.in_(ids), _claimable(now))
                .values(claimed_by=claimer, claim_until=now + timedelta(seconds=lease_seconds))
                .returning(*TIMERS.c)
            )
            timers = [timer_view(row) for row in rows.mappings()]
            return sorted(timers, key=lambda t: (t.due_at, t.id))

        return await self.db.write(work)

    async def next_due(self, kinds: Sequence[str] | None = None) -> datetime | None:
        """When the earliest unfired timer can next be claimed (perhaps already): its due time,
        or the end of another process's claim on it. None when there is none. The loop sleeps
        until then (or until it is told of a new timer)."""
        claimable_at = case(
            (
                and_(TIMERS.c.claim_until.is_not(None), TIMERS.c.claim_until > TIMERS.c.due_at),
                TIMERS.c.claim_until,
            ),
            else_=TIMERS.c.due_at,
        )

        async def work(session: AsyncSession) -> datetime | None:
            stmt = select(func.min(claimable_at)).where(TIMERS.c.fired_at.is_(None))
            if kinds is not None:
                stmt = stmt.where(TIMERS.c.kind.in_(list(kinds)))
            due: datetime | None = (await session.execute(stmt)).scalar()
            return due

        return await self.db.read(work)

    async def of_subject(self, subject: str) -> list[Timer]:
        """Every timer of ``subject`` (fired ones too), by due time."""

        async def work(session: AsyncSession) -> list[Timer]:
            rows = await session.execute(
                select(TIMERS)
                .where(TIMERS.c.subject == subject)
                .order_by(TIMERS.c.due_at, TIMERS.c.id)
            )
            return [timer_view(row) for row in rows.mappings()]

        return await self.db.read(work)


# -- inside the owner's unit of work ----------------------------------------------------------


async def schedule(
    session: AsyncSession, kind: str, subject: str, round_: int, due_at: datetime
) -> None:
    """Make the timer due at ``due_at``: a new one, or an unfired one moved (and its claim
    dropped, so whoever claimed it earlier cannot fire it early). A fired timer stays fired."""
    key = and_(TIMERS.c.kind == kind, TIMERS.c.subject == subject, TIMERS.c.round == round_)
    moved = await session.execute(
        update(TIMERS)
        .where(key, TIMERS.c.fired_at.is_(None))
        .values(due_at=due_at, claimed_by=None, claim_until=None)
    )
    if getattr(moved, "rowcount", 0):
        return
    await session.execute(
        insert_ignore(
            session,
            TIMERS,
            {"kind": kind, "subject": subject, "round": round_, "due_at": due_at},
            ["kind", "subject", "round"],
        )
    )


async def cancel(
    session: AsyncSession, subject: str, kind: str | None = None, round_: int | None = None
) -> int:
    """Delete the subject's unfired timers (of one kind and round when given); how many."""
    stmt = delete(TIMERS).where(TIMERS.c.subject == subject, TIMERS.c.fired_at.is_(None))
    if kind is not None:
        stmt = stmt.where(TIMERS.c.kind == kind)
    if round_ is not None:
        stmt = stmt.where(TIMERS.c.round == round_)
    result = await session.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)


async def mark_fired(
    session: AsyncSession, timer_id: int, claimer: str | None, now: datetime
) -> bool:
    """Mark a due timer fired, once: False when it already fired, was cancelled, was moved
    later, or (with a ``claimer``) is claimed by someone else now."""
    stmt = update(TIMERS).where(
        TIMERS.c.id == timer_id, TIMERS.c.fired_at.is_(None), TIMERS.c.due_at <= now
    )
    if claimer is not None:
        stmt = stmt.where(TIMERS.c.claimed_by == claimer)
    result = await session.execute(stmt.values(fired_at=now))
    return bool(getattr(result, "rowcount", 0))


async def fire_now(
    session: AsyncSession, kind: str, subject: str, round_: int, now: datetime
) -> bool:
    """Fire an unfired timer ahead of time (a host skipping a phase): due and fired now, so
    a claimer's later fire finds it fired. False when there was none unfired."""
    result = await session.execute(
        update(TIMERS)
        .where(
            TIMERS.c.kind == kind,
            TIMERS.c.subject == subject,
            TIMERS.c.round == round_,
            TIMERS.c.fired_at.is_(None),
        )
        .values(due_at=now, fired_at=now)
    )
    return bool(getattr(result, "rowcount", 0))
