"""Queue positions and ETAs: where a waiting job stands in the fair order, and how long it takes.

The position follows ``storage.scheduler``'s order without simulating it: all waiting jobs of a
higher priority go first; within the job's priority, users take turns, so a job that is ``r``-th
among its owner's waiting jobs waits for those ``r``, and for up to ``r`` jobs of every other
waiting user, one more for users whose turn comes before its owner's. Throughput is a moving
average of measured GPU-seconds per job, per mode, updated by every completion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Table, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import JOBS, MODE_STATS, USER_ACCOUNTS, WORK_RATES
from storage.sql import upsert
from storage.types import JobStatus

#: Weight of the newest sample in the per-mode moving average of GPU-seconds.
EMA_ALPHA = 0.2

TurnKey = tuple[bool, datetime, int, int]


def turn_key(last_started_at: datetime | None, head_key: int, head_seq: int = 0) -> TurnKey:
    """A user's place in the rotation: never-started first, then oldest last start, then the
    order key of their first waiting job, then insertion (the scheduler's tiebreaks)."""
    return (
        last_started_at is not None,
        last_started_at or datetime.min.replace(tzinfo=UTC),
        head_key,
        head_seq,
    )


@dataclass(frozen=True, slots=True)
class WaitingGroup:
    """One user's waiting jobs of one priority, as seen from the job being placed."""

    owner_id: int
    priority: int
    count: int
    #: How many of them were queued before the job being placed (used for its own owner).
    before: int
    turn: TurnKey


def jobs_ahead(
    groups: Sequence[WaitingGroup], owner_id: int, priority: int, order_key: int, seq: int = 0
) -> int:
    """How many waiting jobs should start before the job (``owner_id``, ``priority``,
    ``order_key``, ``seq``)."""
    mine = [g for g in groups if g.owner_id == owner_id and g.priority == priority]
    rank, my_turn = (mine[0].before, mine[0].turn) if mine else (0, turn_key(None, order_key, seq))
    ahead = rank
    for group in groups:
        if group.priority > priority:
            ahead += group.count
        elif group.owner_id != owner_id:
            ahead += min(group.count, rank + 1 if group.turn < my_turn else rank)
    return ahead


async def waiting_groups(
    session: AsyncSession, priority: int, order_key: int, seq: int
) -> list[WaitingGroup]:
    """One grouped count over the waiting jobs of ``priority`` and above (indexed by status,
    priority). A job is before (``order_key``, ``seq``) in the scheduler's order within a user:
    by order key, then insertion."""
    earlier = or_(
        JOBS.c.order_key < order_key, and_(JOBS.c.order_key == order_key, JOBS.c.seq < seq)
    )
    before = func.sum(case((and_(JOBS.c.priority == priority, earlier), 1), else_=0))
    rows = await session.execute(
        select(
            JOBS.c.owner_id,
            JOBS.c.priority,
            func.count(),
            before,
            func.min(JOBS.c.order_key),
            func.min(JOBS.c.seq),
            USER_ACCOUNTS.c.last_started_at,
        )
        .select_from(JOBS.join(USER_ACCOUNTS, USER_ACCOUNTS.c.user_id == JOBS.c.owner_id))
        .where(JOBS.c.status == JobStatus.QUEUED, JOBS.c.priority >= priority)
        .group_by(JOBS.c.owner_id, JOBS.c.priority, USER_ACCOUNTS.c.last_started_at)
    )
    return [
        WaitingGroup(owner, prio, int(n), int(earlier or 0), turn_key(last, head, head_seq))
        for owner, prio, n, earlier, head, head_seq, last in rows
    ]


async def mode_averages(session: AsyncSession) -> dict[str, float]:
    """Moving average of GPU-seconds per job, per mode."""
    rows = await session.execute(select(MODE_STATS.c.mode, MODE_STATS.c.avg_gpu_seconds))
    return {mode: float(avg) for mode, avg in rows.all()}


async def active_workers(session: AsyncSession) -> int:
    """Workers holding a lease right now."""
    stmt = select(func.count(JOBS.c.worker_id.distinct())).where(JOBS.c.status == JobStatus.RUNNING)
    return int((await session.execute(stmt)).scalar_one())


async def record_throughput(
    session: AsyncSession, mode: str, gpu_seconds: float, now: datetime
) -> None:
    """Fold one measured job into its mode's moving average (one upsert, no read first)."""
    await _fold(session, MODE_STATS, "mode", mode, "avg_gpu_seconds", gpu_seconds, now)


async def work_rates(session: AsyncSession) -> dict[str, float]:
    """Measured GPU-seconds per unit of work, per kind of work (see ``quota_policy.rate_key``)."""
    rows = await session.execute(select(WORK_RATES.c.key, WORK_RATES.c.seconds_per_unit))
    return {key: float(rate) for key, rate in rows.all()}


async def record_work_rate(
    session: AsyncSession, key: str, seconds_per_unit: float, now: datetime
) -> None:
    """Fold one job's measured GPU-seconds per unit into its kind's moving average."""
    await _fold(session, WORK_RATES, "key", key, "seconds_per_unit", seconds_per_unit, now)


async def _fold(
    session: AsyncSession,
    table: Table,
    key_column: str,
    key: str,
    value_column: str,
    value: float,
    now: datetime,
) -> None:
    """Fold ``value`` into the row's exponential moving average (``EMA_ALPHA``), creating the
    row at ``value``: one upsert, no read first."""
    average = table.c[value_column]
    stmt = upsert(
        session,
        table,
        {key_column: key, value_column: value, "samples": 1, "updated_at": now},
        [key_column],
        {
            value_column: average * (1 - EMA_ALPHA) + value * EMA_ALPHA,
            "samples": table.c.samples + 1,
            "updated_at": now,
        },
    )
    await session.execute(stmt)
