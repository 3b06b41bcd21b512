"""Delivery state: which job messages exist and whether a final result has been posted.

Kept apart from generation state: a job is generated once (the queue) and posted once (here).
Posting a final result is claim -> post -> ``mark_posted``. The claim is a lease held by one bot
process (``claimer_id``), so two bot processes never post the same result; if the poster dies
mid-way, the claim expires and another process (or the same one after a restart, found through
``list_undelivered``) tries again. ``mark_posted`` is idempotent and refuses a stale claim.

A failed post is released with a time before which it is not tried again (``next_attempt_at``,
stored, so a restart keeps the backoff), or given up for good (``given_up_at`` and the reason the
owner sees). Deliveries for a guild the bot has left (``left_guilds``) are neither listed nor
claimed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Generic, overload

from sqlalchemy import ColumnElement, and_, delete, exists, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.errors import DeliveryClaimLost, JobNotFound
from storage.models import DELIVERIES, JOB_COPIES, JOBS, LEFT_GUILDS
from storage.sql import utc_now
from storage.types import (
    ACTIVE_STATUSES,
    JSON_CODEC,
    TERMINAL_STATUSES,
    CopyKind,
    JobView,
    OpenInteraction,
    RequestCodec,
    RequestT,
)
from storage.views import job_view_select, job_views
from storage.visibility import hidden_authors

Clock = Callable[[], datetime]
MAX_ERROR_CHARS = 1000
#: The most copies (``/show`` messages) recorded per job; older records are dropped first.
MAX_COPIES = 50


class DeliveryLedger(Generic[RequestT]):
    """The bot's side of the ledger: message ids, delivery claims and posted marks.

    One instance per bot process; ``claimer_id`` identifies the process in claims (random by
    default). ``claim_seconds`` bounds how long a crashed poster blocks a delivery. ``codec``
    decodes the requests of the jobs it lists, as ``JobQueue``'s does.
    """

    @overload
    def __init__(
        self: DeliveryLedger[dict[str, Any]],
        db: Database,
        *,
        claimer_id: str | None = ...,
        claim_seconds: float = ...,
        clock: Clock = ...,
    ) -> None: ...

    @overload
    def __init__(
        self,
        db: Database,
        *,
        codec: RequestCodec[RequestT],
        claimer_id: str | None = ...,
        claim_seconds: float = ...,
        clock: Clock = ...,
    ) -> None: ...

    def __init__(
        self,
        db: Database,
        *,
        # Any only here: the overloads tie a missing codec to DeliveryLedger[dict[str, Any]].
        codec: RequestCodec[Any] = JSON_CODEC,
        claimer_id: str | None = None,
        claim_seconds: float = 120.0,
        clock: Clock = utc_now,
    ) -> None:
        self.codec: RequestCodec[RequestT] = codec
        self.db = db
        self.claimer_id = claimer_id or f"bot-{secrets.token_hex(6)}"
        self.claim_length = timedelta(seconds=claim_seconds)
        self.clock = clock

    def _claimable(self, now: datetime) -> ColumnElement[bool]:
        """Unclaimed, claimed by this process, or claimed by one whose claim has lapsed."""
        return or_(
            DELIVERIES.c.claimed_by.is_(None),
            DELIVERIES.c.claimed_by == self.claimer_id,
            DELIVERIES.c.claim_expires_at < now,
        )

    async def attach_message(
        self,
        job_id: str,
        message_id: int,
        *,
        attachment_limit: int | None = None,
        interaction_expires_at: datetime | None = None,
    ) -> None:
        """Record the Discord message that shows the job (and how big its attachments may be)."""
        now = self.clock()
        values: dict[str, object] = {"message_id": message_id, "updated_at": now}
        if attachment_limit is not None:
            values["attachment_limit"] = attachment_limit
        if interaction_expires_at is not None:
            values["interaction_expires_at"] = interaction_expires_at

        async def work(session: AsyncSession) -> None:
            result = await session.execute(
                update(DELIVERIES).where(DELIVERIES.c.job_id == job_id).values(**values)
            )
            if not getattr(result, "rowcount", 0):
                raise JobNotFound(job_id)

        await self.db.write(work)

    def _deliverable(self) -> ColumnElement[bool]:
        """Not posted, not given up, and not for a guild the bot has left."""
        left = exists().where(LEFT_GUILDS.c.guild_id == JOBS.c.guild_id)
        return and_(
            DELIVERIES.c.posted_at.is_(None),
            DELIVERIES.c.given_up_at.is_(None),
            ~left,
        )

    def _due(self, now: datetime) -> ColumnElement[bool]:
        """Not backing off after a transient failure."""
        return or_(DELIVERIES.c.next_attempt_at.is_(None), DELIVERIES.c.next_attempt_at <= now)

    async def list_undelivered(
        self, *, terminal_only: bool = False, active_only: bool = False, limit: int = 200
    ) -> list[JobView[RequestT]]:
        """Jobs whose final result is not posted yet: running ones (for progress edits) and
        finished ones (to post). Used after a restart to pick up where it stopped.

        Deliveries given up for good, and those of guilds the bot has left, are never listed.
        With ``terminal_only``: finished ones not claimed by another process and not backing
        off, those never tried first, then by when their backoff ended, then oldest first, so a
        delivery that keeps failing moves behind the others instead of holding the head of the
        line. With ``active_only``: queued and running ones, oldest first.
        Jobs whose request the codec cannot decode are left out (and logged): nothing could
        render them."""
        if terminal_only and active_only:
            raise ValueError("terminal_only and active_only exclude each other")
        now = self.clock()

        async def work(session: AsyncSession) -> list[JobView[RequestT]]:
            stmt = job_view_select().where(self._deliverable())
            if terminal_only:
                stmt = stmt.where(
                    JOBS.c.status.in_(TERMINAL_STATUSES),
                    self._claimable(now),
                    self._due(now),
                ).order_by(DELIVERIES.c.next_attempt_at.asc().nulls_first(), JOBS.c.seq)
            elif active_only:
                stmt = stmt.where(JOBS.c.status.in_(ACTIVE_STATUSES)).order_by(JOBS.c.seq)
            else:
                stmt = stmt.order_by(JOBS.c.seq)
            return job_views((await session.execute(stmt.limit(limit))).mappings(), self.codec)

        return await self.db.read(work)

    async def claim(self, job_id: str) -> bool:
        """Claim the posting of a finished job's result. False when it is already posted, given
        up, backing off, not finished, or claimed by another live process. Re-claiming one's own
        claim renews it. Each claim counts one attempt (``post_attempts``)."""
        now = self.clock()
        finished = exists().where(JOBS.c.id == job_id, JOBS.c.status.in_(TERMINAL_STATUSES))
        left = exists().where(JOBS.c.id == job_id, LEFT_GUILDS.c.guild_id == JOBS.c.guild_id)

        async def work(session: AsyncSession) -> bool:
            result = await session.execute(
                update(DELIVERIES)
                .where(
                    DELIVERIES.c.job_id == job_id,
                    DELIVERIES.c.posted_at.is_(None),
                    DELIVERIES.c.given_up_at.is_(None),
                    self._claimable(now),
                    self._due(now),
                    finished,
                    ~left,
                )
                .values(
                    claimed_by=self.claimer_id,
                    claim_expires_at=now + self.claim_length,
                    post_attempts=DELIVERIES.c.post_attempts + 1,
                    updated_at=now,
                )
            )
            return bool(getattr(result, "rowcount", 0))

        return await self.db.write(work)

    async def mark_posted(self, job_id: str, message_id: int | None = None) -> bool:
        """Record that the result is on Discord. True when this call recorded it; False when it
        was already recorded (idempotent). Raises DeliveryClaimLost when another process holds
        the claim now (ours expired and was taken): that process will post it."""
        now = self.clock()
        values: dict[str, object] = {
            "posted_at": now,
            "claimed_by": None,
            "claim_expires_at": None,
            "next_attempt_at": None,
            "updated_at": now,
        }
        if message_id is not None:
            values["message_id"] = message_id

        async def work(session: AsyncSession) -> bool:
            result = await session.execute(
                update(DELIVERIES)
                .where(
                    DELIVERIES.c.job_id == job_id,
                    DELIVERIES.c.posted_at.is_(None),
                    # An expired claim of ours still counts if nobody took it over.
                    DELIVERIES.c.claimed_by == self.claimer_id,
                )
                .values(**values)
            )
            if getattr(result, "rowcount", 0):
                return True
            row = (
                await session.execute(
                    select(DELIVERIES.c.posted_at).where(DELIVERIES.c.job_id == job_id)
                )
            ).first()
            if row is None:
                raise JobNotFound(job_id)
            if row.posted_at is not None:
                return False
            raise DeliveryClaimLost(job_id)

        return await self.db.write(work)

    async def release(self, job_id: str, error: str, *, retry_after: float | None = None) -> None:
        """Give up our claim after a failed post, noting why; a later pass retries, not before
        ``retry_after`` seconds from now (stored: a backoff that survives a restart)."""
        now = self.clock()
        retry_at = None if retry_after is None else now + timedelta(seconds=retry_after)

        async def work(session: AsyncSession) -> None:
            await session.execute(
                update(DELIVERIES)
                .where(self._ours(job_id))
                .values(
                    claimed_by=None,
                    claim_expires_at=None,
                    last_error=error[:MAX_ERROR_CHARS],
                    next_attempt_at=retry_at,
                    updated_at=now,
                )
            )

        await self.db.write(work)

    async def give_up(self, job_id: str, reason: str) -> bool:
        """Stop trying to deliver a result we hold the claim of, for good (every way to post it
        failed with a permanent error, or transient errors went on too long). ``reason`` is for
        the owner (/info, /show). False when the claim is no longer ours."""
        now = self.clock()

        async def work(session: AsyncSession) -> bool:
            result = await session.execute(
                update(DELIVERIES)
                .where(self._ours(job_id))
                .values(
                    claimed_by=None,
                    claim_expires_at=None,
                    next_attempt_at=None,
                    given_up_at=now,
                    give_up_reason=reason[:MAX_ERROR_CHARS],
                    last_error=reason[:MAX_ERROR_CHARS],
                    updated_at=now,
                )
            )
            return bool(getattr(result, "rowcount", 0))

        return await self.db.write(work)

    def _ours(self, job_id: str) -> ColumnElement[bool]:
        return and_(
            DELIVERIES.c.job_id == job_id,
            DELIVERIES.c.posted_at.is_(None),
            DELIVERIES.c.given_up_at.is_(None),
            DELIVERIES.c.claimed_by == self.claimer_id,
        )

    # -- copies: messages that show a job again ------------------------------------------------

    async def add_copy(
        self, job_id: str, channel_id: int, message_id: int, kind: CopyKind = CopyKind.SHOW
    ) -> None:
        """Record a message that shows ``job_id`` again (``/show``, or its showcase post), so a
        moderator's block and like counts reach it too. At most ``MAX_COPIES`` ``/show``
        copies per job are kept, the newest; a job has at most one showcase post (it is
        published once), which is always kept."""
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            await session.execute(
                insert(JOB_COPIES).values(
                    job_id=job_id,
                    channel_id=channel_id,
                    message_id=message_id,
                    created_at=now,
                    kind=CopyKind(kind).value,
                )
            )
            shows = and_(JOB_COPIES.c.job_id == job_id, JOB_COPIES.c.kind == CopyKind.SHOW.value)
            keep = (
                select(JOB_COPIES.c.id)
                .where(shows)
                .order_by(JOB_COPIES.c.id.desc())
                .limit(MAX_COPIES)
            )
            await session.execute(
                delete(JOB_COPIES).where(shows, JOB_COPIES.c.id.not_in(keep.scalar_subquery()))
            )

        await self.db.write(work)

    async def hidden_authors(self, job_ids: Iterable[str]) -> set[str]:
        """Those of ``job_ids`` whose author a message may not name now: anonymous session
        entries whose round is on (``storage.visibility.author_hidden``)."""
        wanted = list(job_ids)

        async def work(session: AsyncSession) -> set[str]:
            return await hidden_authors(session, wanted)

        return await self.db.read(work)

    async def copies(self, job_id: str) -> list[tuple[int, int]]:
        """The (channel id, message id) of each recorded copy of ``job_id``, oldest first."""

        async def work(session: AsyncSession) -> list[tuple[int, int]]:
            rows = await session.execute(
                select(JOB_COPIES.c.channel_id, JOB_COPIES.c.message_id)
                .where(JOB_COPIES.c.job_id == job_id)
                .order_by(JOB_COPIES.c.id)
            )
            return [(channel, message) for channel, message in rows.all()]

        return await self.db.read(work)

    async def copy_records(self, job_id: str) -> list[tuple[int, int, CopyKind]]:
        """``copies`` with each copy's kind: (channel id, message id, kind), oldest first."""

        async def work(session: AsyncSession) -> list[tuple[int, int, CopyKind]]:
            rows = await session.execute(
                select(JOB_COPIES.c.channel_id, JOB_COPIES.c.message_id, JOB_COPIES.c.kind)
                .where(JOB_COPIES.c.job_id == job_id)
                .order_by(JOB_COPIES.c.id)
            )
            return [(channel, message, CopyKind(kind)) for channel, message, kind in rows.all()]

        return await self.db.read(work)

    async def job_of_message(self, message_id: int) -> str | None:
        """The job a message of ours shows: its own message, or a recorded ``/show`` copy."""

        async def work(session: AsyncSession) -> str | None:
            own = await session.execute(
                select(DELIVERIES.c.job_id).where(DELIVERIES.c.message_id == message_id).limit(1)
            )
            found = own.scalar_one_or_none()
            if found is not None:
                return str(found)
            copy = await session.execute(
                select(JOB_COPIES.c.job_id).where(JOB_COPIES.c.message_id == message_id).limit(1)
            )
            value = copy.scalar_one_or_none()
            return None if value is None else str(value)

        return await self.db.read(work)

    async def forget_copies(self, job_id: str) -> None:
        """Drop the records of ``job_id``'s copies (they were taken down)."""

        async def work(session: AsyncSession) -> None:
            await session.execute(delete(JOB_COPIES).where(JOB_COPIES.c.job_id == job_id))

        await self.db.write(work)

    # -- interactions: finishing responses after a restart ------------------------------------

    async def open_interactions(self, limit: int = 500) -> list[OpenInteraction]:
        """Jobs not posted yet whose interaction token still lives (oldest first)."""
        now = self.clock()

        async def work(session: AsyncSession) -> list[OpenInteraction]:
            rows = await session.execute(
                select(
                    DELIVERIES.c.job_id,
                    DELIVERIES.c.interaction_id,
                    DELIVERIES.c.interaction_token,
                    DELIVERIES.c.interaction_expires_at,
                    DELIVERIES.c.channel_id,
                    DELIVERIES.c.message_id,
                )
                .select_from(DELIVERIES.join(JOBS, JOBS.c.id == DELIVERIES.c.job_id))
                .where(
                    DELIVERIES.c.interaction_token.is_not(None),
                    DELIVERIES.c.interaction_expires_at > now,
                    DELIVERIES.c.posted_at.is_(None),
                )
                .order_by(JOBS.c.seq)
                .limit(limit)
            )
            return [OpenInteraction(*row) for row in rows.all()]

        return await self.db.read(work)

    async def forget_tokens(self, job_ids: list[str] | None = None) -> int:
        """Clear interaction tokens: the expired ones, or those of ``job_ids`` (answered for
        good). Returns how many were cleared."""
        now = self.clock()
        guard = (
            DELIVERIES.c.job_id.in_(job_ids)
            if job_ids is not None
            else DELIVERIES.c.interaction_expires_at <= now
        )

        async def work(session: AsyncSession) -> int:
            result = await session.execute(
                update(DELIVERIES)
                .where(guard, DELIVERIES.c.interaction_token.is_not(None))
                .values(interaction_token=None, updated_at=now)
            )
            return int(getattr(result, "rowcount", 0) or 0)

        return await self.db.write(work)
