"""Which queued job runs next: the fair-scheduling query behind ``JobQueue.claim_next``.

Order, most important first:

1. priority, higher first: cheap follow-ups (select, upscale) jump the grids, and so do a group
   session round's entries in its priority lane (``storage.session_flow.open_lane``);
2. the owner's running jobs, fewest first, and owners at ``max_running_per_user`` are skipped;
3. the owner's last start, oldest (or never) first: users take turns instead of plain FIFO, so
   one user's hundred jobs do not starve five other users;
4. the job's order key, then its insertion order: FIFO within a user, in the order Discord
   received the commands (their interactions' snowflakes), whatever order their handlers
   committed in.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import Select, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import JOBS, USER_ACCOUNTS
from storage.types import JobStatus


def candidate_query(
    now: datetime,
    max_running: int,
    *,
    batch_key: str | None = None,
    exclude_users: Collection[int] = (),
) -> Select[str, int, str]:
    """The best claimable job (its id, owner and batch key), with its row locked.

    On PostgreSQL ``FOR UPDATE ... SKIP LOCKED`` makes concurrent claimers pass over each other's
    candidates instead of queueing on them. On SQLite FOR UPDATE is not rendered: the write
    transaction already holds the database's write lock.
    """
    running = (
        select(JOBS.c.owner_id, func.count().label("n"))
        .where(JOBS.c.status == JobStatus.RUNNING)
        .group_by(JOBS.c.owner_id)
        .subquery("running")
    )
    n_running = func.coalesce(running.c.n, 0)
    stmt = (
        select(JOBS.c.id, JOBS.c.owner_id, JOBS.c.batch_key)
        .select_from(
            JOBS.join(USER_ACCOUNTS, USER_ACCOUNTS.c.user_id == JOBS.c.owner_id).outerjoin(
                running, running.c.owner_id == JOBS.c.owner_id
            )
        )
        .where(
            JOBS.c.status == JobStatus.QUEUED,
            JOBS.c.available_at <= now,
            n_running < max_running,
        )
        .order_by(
            JOBS.c.priority.desc(),
            n_running,
            USER_ACCOUNTS.c.last_started_at.asc().nulls_first(),
            JOBS.c.order_key,
            JOBS.c.seq,
        )
        .limit(1)
        .with_for_update(of=JOBS, skip_locked=True)
    )
    if batch_key is not None:
        stmt = stmt.where(JOBS.c.batch_key == batch_key)
    if exclude_users:
        stmt = stmt.where(JOBS.c.owner_id.not_in(list(exclude_users)))
    return stmt


async def lock_owner_and_count_running(session: AsyncSession, user_id: int) -> int:
    """Lock the owner's account row, then count their running jobs afresh.

    The candidate query's counts come from its statement snapshot: on PostgreSQL two claimers
    can both see a user one below the cap. Claims of one user's jobs serialise on this (blocking)
    lock, and the count, a new statement taken under it, sees every committed start, so the
    per-user cap holds exactly. Waiting here rather than skipping the row keeps a claimer from
    returning empty-handed while claimable work exists. (No deadlock: whoever holds an account
    lock never waits for a queued job's row.)
    """
    await session.execute(
        select(USER_ACCOUNTS.c.user_id).where(USER_ACCOUNTS.c.user_id == user_id).with_for_update()
    )
    stmt = select(func.count()).where(
        JOBS.c.owner_id == user_id, JOBS.c.status == JobStatus.RUNNING
    )
    return int((await session.execute(stmt)).scalar_one())


async def claim_one(
    session: AsyncSession,
    *,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    max_running: int,
    batch_key: str | None = None,
) -> RowMapping | None:
    """Move the next claimable job to running under a new lease; its row, or None."""
    stale: set[int] = set()
    # Each pass either claims, or excludes one owner whose count turned out stale; more than one
    # pass only happens under PostgreSQL contention.
    for _ in range(8):
        query = candidate_query(now, max_running, batch_key=batch_key, exclude_users=stale)
        candidate = (await session.execute(query)).mappings().first()
        if candidate is None:
            return None
        owner_id = candidate["owner_id"]
        if await lock_owner_and_count_running(session, owner_id) >= max_running:
            stale.add(owner_id)
            continue
        claimed = await session.execute(
            update(JOBS)
            .where(JOBS.c.id == candidate["id"], JOBS.c.status == JobStatus.QUEUED)
            .values(
                status=JobStatus.RUNNING,
                lease_token=secrets.token_hex(16),
                lease_expires_at=now + lease,
                worker_id=worker_id,
                attempts=JOBS.c.attempts + 1,
                started_at=now,
                progress_step=None,
                progress_total=None,
                preview_ref=None,
                progress_at=None,
            )
            .returning(*JOBS.c)
        )
        row = claimed.mappings().first()
        if row is None:  # cancelled between the lookup and the update; look again
            continue
        await session.execute(
            update(USER_ACCOUNTS)
            .where(USER_ACCOUNTS.c.user_id == owner_id)
            .values(last_started_at=now)
        )
        return row
    return None
