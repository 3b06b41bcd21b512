"""Holding a job's result for review, inside the unit of work that decided to hold it.

A held job is generated (and charged) like any other, but its delivery is ``held``: the
publisher shows "held for review" in its message and never its images, until a moderator
approves it (posted as usual) or rejects it (removed, refunded). The queue holds a job when it
is queued with a review term in its prompt, or when the output classifier flags its images at
completion; the review queue (``storage.review``) decides. Every hold opens (or adds to) the
job's review item, writes its audit log row, and owes the owner a direct message, all in the
caller's transaction, so a hold is never half-made.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import DELIVERIES, NOTICES, REVIEW_ITEMS, REVIEW_TEXT_LENGTH
from storage.modlog import bounded_details, log_row
from storage.types import HoldState, ModAction, ReviewKind, ReviewState

#: What a notice's text keeps (the reason or decision it carries).
NOTICE_TEXT_LENGTH = 1000


async def hold(
    session: AsyncSession,
    job: RowMapping,
    reason: str,
    details: Mapping[str, Any],
    now: datetime,
) -> int:
    """Hold ``job``'s result for review (a job of a server: ``job["guild_id"]`` is set).
    Returns the id of its HOLD item."""
    guild_id = job["guild_id"]
    assert guild_id is not None, "only a server's jobs are held; DM jobs have no moderators"
    await session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.job_id == job["id"])
        .values(review=HoldState.HELD.value, updated_at=now)
    )
    item_id = await open_item(session, job, ReviewKind.HOLD, reason, details, now)
    await log_row(
        session,
        guild_id,
        ModAction.HELD,
        now,
        actor_id=None,
        target_user_id=job["owner_id"],
        target_job_id=job["id"],
        reason=reason,
        details={**details, "item": item_id},
    )
    await add_notice(session, job, "held", reason, now, item_id=item_id)
    return item_id


async def open_item(
    session: AsyncSession,
    job: RowMapping,
    kind: ReviewKind,
    reason: str,
    details: Mapping[str, Any],
    now: datetime,
    *,
    appeal_of: int | None = None,
    reports: int = 0,
) -> int:
    """Open a review item for ``job``, or add to the open one of the same kind (a second hold
    reason, another report): one open item per job and kind. The caller holds the job's row
    lock, so two reports never race to open two items."""
    found = (
        (
            await session.execute(
                select(REVIEW_ITEMS.c.id, REVIEW_ITEMS.c.reason, REVIEW_ITEMS.c.details).where(
                    REVIEW_ITEMS.c.job_id == job["id"],
                    REVIEW_ITEMS.c.kind == kind.value,
                    REVIEW_ITEMS.c.state == ReviewState.OPEN.value,
                )
            )
        )
        .mappings()
        .first()
    )
    if found is not None:
        merged_reason = found["reason"]
        if reason and reason not in merged_reason.split("; "):
            merged_reason = f"{merged_reason}; {reason}" if merged_reason else reason
        merged = {**(found["details"] or {}), **details}
        await session.execute(
            update(REVIEW_ITEMS)
            .where(REVIEW_ITEMS.c.id == found["id"])
            .values(
                reason=merged_reason[:REVIEW_TEXT_LENGTH],
                details=bounded_details(merged),
                reports=REVIEW_ITEMS.c.reports + reports,
                version=REVIEW_ITEMS.c.version + 1,
            )
        )
        return int(found["id"])
    result = await session.execute(
        insert(REVIEW_ITEMS)
        .values(
            guild_id=job["guild_id"],
            job_id=job["id"],
            kind=kind.value,
            state=ReviewState.OPEN.value,
            reason=reason[:REVIEW_TEXT_LENGTH],
            details=bounded_details(details),
            reports=reports,
            appeal_of=appeal_of,
            created_at=now,
            version=1,
            shown_version=0,
        )
        .returning(REVIEW_ITEMS.c.id)
    )
    return int(result.scalar_one())


async def add_notice(
    session: AsyncSession,
    job: RowMapping,
    kind: str,
    text: str,
    now: datetime,
    *,
    item_id: int | None = None,
) -> None:
    """Owe ``job``'s owner a direct message of ``kind`` (held, approved, rejected, expired,
    granted, denied); ``text`` is the reason it carries."""
    await session.execute(
        insert(NOTICES).values(
            guild_id=job["guild_id"],
            user_id=job["owner_id"],
            job_id=job["id"],
            item_id=item_id,
            kind=kind,
            text=text[:NOTICE_TEXT_LENGTH],
            created_at=now,
            attempts=0,
        )
    )


async def touch_items(session: AsyncSession, job_id: str) -> None:
    """The job changed in a way its open review items show (it finished: a thumbnail now
    exists): their messages are due for an edit."""
    await session.execute(
        update(REVIEW_ITEMS)
        .where(REVIEW_ITEMS.c.job_id == job_id, REVIEW_ITEMS.c.state == ReviewState.OPEN.value)
        .values(version=REVIEW_ITEMS.c.version + 1)
    )


async def hold_state(session: AsyncSession, job_id: str) -> HoldState | None:
    review = (
        await session.execute(select(DELIVERIES.c.review).where(DELIVERIES.c.job_id == job_id))
    ).scalar_one_or_none()
    return None if review is None else HoldState(review)
