"""The GPU-seconds pools of group sessions: what each has committed, and what the live ones
hold back from their server's allowance. Plain sums inside the caller's unit of work.

A server-pool session's entries are jobs billed to the server (``jobs.guild_paid``). Each
commits against the pool its reservation while it waits or runs, and once finished what it was
charged, at most its estimate (a refunded job commits nothing). A measured cost above the
estimate is charged to the server's allowance like any charge, but never to the pool, so
``pool - committed`` cannot go below zero: an entry is admitted only when its estimate fits
(``storage.sessions``). While a session is live (running or paused) the uncommitted rest of its
pool counts as reserved in its server's quota scope; once it ends, it is free again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import GROUP_SESSIONS, JOBS
from storage.types import ACTIVE_STATUSES, PoolKind, SessionStatus

LIVE = (SessionStatus.RUNNING.value, SessionStatus.PAUSED.value)


def _committed_expr() -> ColumnElement[Any]:
    charged = func.coalesce(JOBS.c.charged_ms, 0)
    return case(
        (JOBS.c.status.in_(ACTIVE_STATUSES), JOBS.c.reserved_ms),
        (charged < JOBS.c.estimated_ms, charged),
        else_=JOBS.c.estimated_ms,
    )


async def pool_usage(session: AsyncSession, session_id: str) -> tuple[int, int]:
    """(spent, reserved) of a session's pool, in ms: finished entries' charges (each at most
    its estimate), and waiting or running entries' reservations."""
    charged = func.coalesce(JOBS.c.charged_ms, 0)
    spent = case((charged < JOBS.c.estimated_ms, charged), else_=JOBS.c.estimated_ms)
    active = JOBS.c.status.in_(ACTIVE_STATUSES)
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(case((active, 0), else_=spent)), 0),
                func.coalesce(func.sum(case((active, JOBS.c.reserved_ms), else_=0)), 0),
            ).where(JOBS.c.session_id == session_id, JOBS.c.guild_paid.is_(True))
        )
    ).one()
    return int(row[0]), int(row[1])


async def committed_ms(session: AsyncSession, session_ids: Sequence[str]) -> dict[str, int]:
    """What each session's pool has committed (spent plus reserved), in ms."""
    if not session_ids:
        return {}
    rows = await session.execute(
        select(JOBS.c.session_id, func.sum(_committed_expr()))
        .where(JOBS.c.session_id.in_(list(session_ids)), JOBS.c.guild_paid.is_(True))
        .group_by(JOBS.c.session_id)
    )
    found = {str(sid): int(total or 0) for sid, total in rows.all()}
    return {sid: found.get(sid, 0) for sid in session_ids}


async def unspent_pools_ms(session: AsyncSession, guild_id: int) -> int:
    """The uncommitted rest of every live server-pool session of ``guild_id``: held back from
    the server's allowance like a reservation."""
    pools = dict(
        (
            await session.execute(
                select(GROUP_SESSIONS.c.id, GROUP_SESSIONS.c.pool_ms).where(
                    GROUP_SESSIONS.c.guild_id == guild_id,
                    GROUP_SESSIONS.c.status.in_(LIVE),
                    GROUP_SESSIONS.c.pool == PoolKind.SERVER.value,
                )
            )
        ).all()
    )
    if not pools:
        return 0
    committed = await committed_ms(session, list(pools))
    return sum(max(0, int(pool) - committed[sid]) for sid, pool in pools.items())
