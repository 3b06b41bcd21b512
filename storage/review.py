"""The review queue: holds, reports and appeals, each decided once, and bans.

Every item belongs to one server and one job. A decision is one unit of work: the item's guarded
move from open to decided, what it does to the job (post it, remove it, restore it), the audit
log row, the owner's direct message and, for "reject and ban", the ban, all commit together or
not at all. Two moderators deciding the same item at once get one decision: the second finds it
decided, and by whom.

Moderators claim an item while they write a reason (the Reject modal), so two never decide one
item; a claim lapses after ``claim_seconds``. An appeal may not be decided by the moderator who
made the rejection it contests, unless the caller allows it (a server with one moderator).

Decisions follow the billing table. Approving a hold keeps its charge (it was settled when the
job finished). Rejecting refunds it (a CREDIT line) unless the charge is kept; a job rejected
while it still runs is refunded when it finishes, since the decision applies then. A granted
appeal restores the job (posted again) and the refund stands: the mistake was not the owner's.

Items, reports and notices are bounded: one open item per job and kind, one report per member
and job plus a per-member rate, one appeal per rejection. Their rows go with their job's row
(retention); the audit log keeps the story.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.errors import ItemNotFound, JobNotFound, ReviewRefused
from storage.holds import add_notice, hold_state, open_item
from storage.models import (
    BANS,
    DELIVERIES,
    JOBS,
    MODERATION_LOG,
    NOTICES,
    REPORTS,
    REVIEW_ITEMS,
    REVIEW_TEXT_LENGTH,
)
from storage.modlog import log_row
from storage.queue import JobQueue
from storage.sql import lock_job, lock_user, upsert, utc_now
from storage.types import (
    Ban,
    Decision,
    DecisionOutcome,
    HoldState,
    JobStatus,
    ModAction,
    Notice,
    ReviewItem,
    ReviewKind,
    ReviewState,
)

Clock = Callable[[], datetime]

#: What each decision may answer.
DECISIONS = {
    ReviewKind.HOLD: (Decision.APPROVE, Decision.REJECT, Decision.EXPIRE),
    ReviewKind.REPORT: (Decision.APPROVE, Decision.REJECT),
    ReviewKind.APPEAL: (Decision.GRANT, Decision.DENY),
}
#: The most report reasons an item lists (the count goes on).
MAX_REPORT_REASONS = 10
#: Notices tried this many times (transient failures) before they are given up.
MAX_NOTICE_ATTEMPTS = 5
#: Actions that count as strikes towards an automatic ban.
STRIKES = (ModAction.REJECTED, ModAction.REFUSED, ModAction.EXPIRED)


@dataclass(frozen=True)
class AutoBan:
    """A server's automatic ban: ``strikes`` rejections or refusals within ``window`` ban the
    member for ``duration``. ``strikes`` 0: off."""

    strikes: int
    window: timedelta
    duration: timedelta


class ReviewDesk:
    """Holds, reports, appeals, decisions and bans, per server."""

    def __init__(
        self,
        db: Database,
        queue: JobQueue[Any],
        *,
        clock: Clock = utc_now,
        claimer_id: str | None = None,
        claim_seconds: float = 300.0,
        post_claim_seconds: float = 60.0,
    ) -> None:
        self.db = db
        self.queue = queue
        self.clock = clock
        self.claimer_id = claimer_id or f"review-{secrets.token_hex(6)}"
        self.claim_length = timedelta(seconds=claim_seconds)
        self.post_claim_length = timedelta(seconds=post_claim_seconds)

    # -- reports --------------------------------------------------------------------------

    async def report(
        self,
        guild_id: int,
        job_id: str,
        reporter_id: int,
        reason: str,
        *,
        per_hour: int,
    ) -> ReviewItem:
        """``reporter_id`` reports a posted result of this server: it joins the job's open
        report item (one per job). Refused (ReviewRefused) for a job that is not shown in
        public, one's own job, a second report of one job, or more than ``per_hour`` reports
        in an hour."""
        now = self.clock()

        async def work(session: AsyncSession) -> int:
            await lock_user(session, reporter_id, now)
            job = await lock_job(session, job_id)
            if job is None or job["guild_id"] != guild_id:
                raise JobNotFound(job_id)
            hold = await hold_state(session, job_id)
            if JobStatus(job["status"]) is not JobStatus.SUCCEEDED or hold in (
                HoldState.HELD,
                HoldState.REJECTED,
            ):
                raise ReviewRefused(
                    f"job `{job_id}` is not shown in public; there is nothing to report"
                )
            if job["owner_id"] == reporter_id:
                raise ReviewRefused("this is your own job; /block or delete it instead")
            already = await session.execute(
                select(REPORTS.c.id).where(
                    REPORTS.c.job_id == job_id, REPORTS.c.reporter_id == reporter_id
                )
            )
            if already.first() is not None:
                raise ReviewRefused(f"you already reported job `{job_id}`; moderators have it")
            recent = (
                await session.execute(
                    select(func.count()).where(
                        REPORTS.c.reporter_id == reporter_id,
                        REPORTS.c.created_at > now - timedelta(hours=1),
                    )
                )
            ).scalar_one()
            if recent >= per_hour:
                raise ReviewRefused(
                    f"you have sent {recent} reports in the last hour, the most allowed "
                    f"({per_hour}); try again later"
                )
            await session.execute(
                REPORTS.insert().values(
                    guild_id=guild_id,
                    job_id=job_id,
                    reporter_id=reporter_id,
                    reason=reason[:REVIEW_TEXT_LENGTH],
                    created_at=now,
                )
            )
            reasons = list(await _report_reasons(session, job_id))
            item_id = await open_item(
                session,
                job,
                ReviewKind.REPORT,
                "reported by members",
                {"reasons": reasons[-MAX_REPORT_REASONS:]},
                now,
                reports=1,
            )
            await log_row(
                session,
                guild_id,
                ModAction.REPORTED,
                now,
                actor_id=reporter_id,
                target_user_id=job["owner_id"],
                target_job_id=job_id,
                reason=reason,
                details={"item": item_id},
            )
            return item_id

        return await self.get(await self.db.write(work), guild_id)

    # -- appeals --------------------------------------------------------------------------

    async def appeal(self, job_id: str, owner_id: int, text: str) -> ReviewItem:
        """The owner appeals the rejection of ``job_id``, once: a new item that links the
        rejection. Refused (ReviewRefused) when the job was not rejected through review, was
        appealed already, or its appeal period is over (its images are gone)."""
        now = self.clock()

        async def work(session: AsyncSession) -> tuple[int, int]:
            job = await lock_job(session, job_id)
            if job is None or job["owner_id"] != owner_id:
                raise JobNotFound(job_id)
            rejected = (
                (
                    await session.execute(
                        select(REVIEW_ITEMS)
                        .where(
                            REVIEW_ITEMS.c.job_id == job_id,
                            REVIEW_ITEMS.c.decision.in_(
                                [Decision.REJECT.value, Decision.EXPIRE.value]
                            ),
                        )
                        .order_by(REVIEW_ITEMS.c.id.desc())
                        .limit(1)
                    )
                )
                .mappings()
                .first()
            )
            if rejected is None:
                raise ReviewRefused(
                    f"job `{job_id}` was not rejected by a moderator; there is nothing to appeal"
                )
            appealed = await session.execute(
                select(REVIEW_ITEMS.c.id).where(REVIEW_ITEMS.c.appeal_of == rejected["id"])
            )
            if appealed.first() is not None:
                raise ReviewRefused(
                    f"job `{job_id}` was appealed already; each rejection allows one"
                )
            if job["status"] != JobStatus.BLOCKED.value or job["purge_after"] is None:
                raise ReviewRefused(f"the appeal period of job `{job_id}` is over")
            item_id = await open_item(
                session,
                job,
                ReviewKind.APPEAL,
                text,
                {"rejected_by": rejected["decided_by"], "rejection": rejected["decision_reason"]},
                now,
                appeal_of=rejected["id"],
            )
            await log_row(
                session,
                job["guild_id"],
                ModAction.APPEALED,
                now,
                actor_id=owner_id,
                target_user_id=owner_id,
                target_job_id=job_id,
                reason=text,
                details={"item": item_id, "appeal_of": rejected["id"]},
            )
            return item_id, job["guild_id"]

        item_id, guild_id = await self.db.write(work)
        return await self.get(item_id, guild_id)

    # -- claims and decisions -------------------------------------------------------------

    async def claim(self, item_id: int, guild_id: int, moderator_id: int) -> ReviewItem:
        """``moderator_id`` takes ``item_id`` for ``claim_seconds`` (writing a reason); another
        moderator's live claim, or a decided item, refuses (ReviewRefused)."""
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            item = await _lock_item(session, item_id, guild_id)
            _check_open(item, moderator_id, now)
            await session.execute(
                update(REVIEW_ITEMS)
                .where(REVIEW_ITEMS.c.id == item_id)
                .values(claimed_by=moderator_id, claim_expires_at=now + self.claim_length)
            )

        await self.db.write(work)
        return await self.get(item_id, guild_id)

    async def decide(
        self,
        item_id: int,
        guild_id: int,
        moderator_id: int | None,
        decision: Decision,
        reason: str,
        *,
        keep_images: timedelta,
        keep_charge: bool = False,
        ban_for: timedelta | None = None,
        ban: bool = False,
        allow_same_moderator: bool = False,
    ) -> DecisionOutcome:
        """Decide ``item_id`` once (see the module's docstring). ``moderator_id`` None: the
        bot (an expired hold). ``ban`` also bans the owner (for ``ban_for``; None: until
        unbanned). Returns whether this call decided it; a decided item is returned as it is."""
        now = self.clock()

        async def work(session: AsyncSession) -> tuple[bool, datetime | None]:
            item = await _lock_item(session, item_id, guild_id)
            if item["state"] == ReviewState.DECIDED.value:
                return False, None
            kind = ReviewKind(item["kind"])
            if decision not in DECISIONS[kind]:
                allowed = ", ".join(d.value for d in DECISIONS[kind])
                raise ReviewRefused(f"a {kind} item is decided with {allowed}, not {decision}")
            if moderator_id is not None:
                _check_open(item, moderator_id, now)
            if kind is ReviewKind.APPEAL and not allow_same_moderator:
                rejected_by = (item["details"] or {}).get("rejected_by")
                if moderator_id is not None and rejected_by == moderator_id:
                    raise ReviewRefused(
                        "you made the rejection this appeal contests; another moderator "
                        "decides it (an admin can allow this with /settings server appeals, "
                        "for a server with one moderator)"
                    )
            job = await lock_job(session, item["job_id"])
            if job is None:  # pragma: no cover - items go with their job
                raise JobNotFound(item["job_id"])
            await self._apply(session, item, job, decision, reason, keep_images, keep_charge, now)
            await session.execute(
                update(REVIEW_ITEMS)
                .where(REVIEW_ITEMS.c.id == item_id, REVIEW_ITEMS.c.state == ReviewState.OPEN)
                .values(
                    state=ReviewState.DECIDED.value,
                    decision=decision.value,
                    decision_reason=reason[:REVIEW_TEXT_LENGTH],
                    decided_by=moderator_id,
                    decided_at=now,
                    claimed_by=None,
                    claim_expires_at=None,
                    version=REVIEW_ITEMS.c.version + 1,
                )
            )
            await log_row(
                session,
                guild_id,
                _ACTIONS[decision],
                now,
                actor_id=moderator_id,
                target_user_id=job["owner_id"],
                target_job_id=job["id"],
                reason=reason,
                details={"item": item_id, "kind": kind.value, "keep_charge": keep_charge},
            )
            notice = _NOTICES.get((kind, decision))
            if notice is not None:
                await add_notice(session, job, notice, reason, now, item_id=item_id)
            banned_until = None
            if ban:
                banned_until = await _ban(
                    session, guild_id, job["owner_id"], ban_for, reason, moderator_id, False, now
                )
            return True, banned_until

        decided, banned_until = await self.db.write(work)
        return DecisionOutcome(await self.get(item_id, guild_id), decided, banned_until)

    async def _apply(
        self,
        session: AsyncSession,
        item: RowMapping,
        job: RowMapping,
        decision: Decision,
        reason: str,
        keep_images: timedelta,
        keep_charge: bool,
        now: datetime,
    ) -> None:
        """What ``decision`` does to the item's job."""
        job_id = job["id"]
        status = JobStatus(job["status"])
        kind = ReviewKind(item["kind"])
        if decision is Decision.APPROVE:
            if kind is ReviewKind.HOLD:
                await _set_hold(session, job_id, HoldState.APPROVED, now, repost=True)
            return
        if decision in (Decision.REJECT, Decision.EXPIRE):
            await _set_hold(session, job_id, HoldState.REJECTED, now)
            if status is JobStatus.RUNNING:
                # Applies when it finishes (``JobQueue.complete``): its images are then kept
                # for the appeal period from now.
                await session.execute(
                    update(JOBS)
                    .where(JOBS.c.id == job_id)
                    .values(error=reason[:2000], purge_after=now + keep_images)
                )
            elif status in (JobStatus.QUEUED, JobStatus.SUCCEEDED):
                await self.queue.block_locked(session, job, reason, keep_charge, keep_images, now)
            await _supersede(session, job_id, item["id"], now)
            return
        if decision is Decision.GRANT:
            if status is JobStatus.BLOCKED and job["purge_after"] is not None:
                await session.execute(
                    update(JOBS)
                    .where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.BLOCKED)
                    .values(status=JobStatus.SUCCEEDED.value, purge_after=None, error=None)
                )
                await _set_hold(session, job_id, HoldState.APPROVED, now, repost=True)
            return
        # DENY: the rejection stands.

    async def expire_holds(
        self, older_than: datetime, *, keep_images: timedelta, limit: int = 100
    ) -> int:
        """Decide every open hold made before ``older_than`` as expired (rejected by the bot,
        refunded, logged); how many."""

        async def work(session: AsyncSession) -> list[tuple[int, int]]:
            rows = await session.execute(
                select(REVIEW_ITEMS.c.id, REVIEW_ITEMS.c.guild_id)
                .where(
                    REVIEW_ITEMS.c.kind == ReviewKind.HOLD.value,
                    REVIEW_ITEMS.c.state == ReviewState.OPEN.value,
                    REVIEW_ITEMS.c.created_at < older_than,
                )
                .order_by(REVIEW_ITEMS.c.id)
                .limit(limit)
            )
            return [(int(r.id), int(r.guild_id)) for r in rows]

        expired = 0
        for item_id, guild_id in await self.db.read(work):
            outcome = await self.decide(
                item_id,
                guild_id,
                None,
                Decision.EXPIRE,
                "no moderator decided in time",
                keep_images=keep_images,
            )
            expired += outcome.decided
        return expired

    # -- reading --------------------------------------------------------------------------

    async def get(self, item_id: int, guild_id: int) -> ReviewItem:
        """The item, if it belongs to ``guild_id``; else ItemNotFound."""

        async def work(session: AsyncSession) -> RowMapping | None:
            stmt = _item_select().where(
                REVIEW_ITEMS.c.id == item_id, REVIEW_ITEMS.c.guild_id == guild_id
            )
            return (await session.execute(stmt)).mappings().first()

        row = await self.db.read(work)
        if row is None:
            raise ItemNotFound(item_id)
        return _item(row)

    async def open_items(self, guild_id: int, *, limit: int = 10) -> list[ReviewItem]:
        """The server's open items, oldest first."""

        async def work(session: AsyncSession) -> list[ReviewItem]:
            stmt = (
                _item_select()
                .where(
                    REVIEW_ITEMS.c.guild_id == guild_id,
                    REVIEW_ITEMS.c.state == ReviewState.OPEN.value,
                )
                .order_by(REVIEW_ITEMS.c.id)
                .limit(limit)
            )
            return [_item(r) for r in (await session.execute(stmt)).mappings()]

        return await self.db.read(work)

    async def count_open(self, guild_id: int) -> int:
        async def work(session: AsyncSession) -> int:
            stmt = select(func.count()).where(
                REVIEW_ITEMS.c.guild_id == guild_id,
                REVIEW_ITEMS.c.state == ReviewState.OPEN.value,
            )
            return int((await session.execute(stmt)).scalar_one())

        return await self.db.read(work)

    async def items_of_job(self, job_id: str) -> list[ReviewItem]:
        async def work(session: AsyncSession) -> list[ReviewItem]:
            stmt = _item_select().where(REVIEW_ITEMS.c.job_id == job_id).order_by(REVIEW_ITEMS.c.id)
            return [_item(r) for r in (await session.execute(stmt)).mappings()]

        return await self.db.read(work)

    # -- the items' messages in the moderators' channel -------------------------------------

    async def repost_open(self, guild_id: int) -> int:
        """The server's moderators' channel changed: every open item gets a new message
        there (its old one, if any, stays where it was). How many."""

        async def work(session: AsyncSession) -> int:
            result = await session.execute(
                update(REVIEW_ITEMS)
                .where(
                    REVIEW_ITEMS.c.guild_id == guild_id,
                    REVIEW_ITEMS.c.state == ReviewState.OPEN.value,
                )
                .values(message_id=None, channel_id=None, version=REVIEW_ITEMS.c.version + 1)
            )
            return int(getattr(result, "rowcount", 0) or 0)

        return await self.db.write(work)

    async def stale_items(self, limit: int = 20) -> list[ReviewItem]:
        """Items whose message is missing or behind (``version`` > ``shown_version``) and
        not being posted by another live process, oldest first."""
        now = self.clock()

        async def work(session: AsyncSession) -> list[ReviewItem]:
            stmt = (
                _item_select()
                .where(REVIEW_ITEMS.c.version > REVIEW_ITEMS.c.shown_version, self._postable(now))
                .order_by(REVIEW_ITEMS.c.id)
                .limit(limit)
            )
            return [_item(r) for r in (await session.execute(stmt)).mappings()]

        return await self.db.read(work)

    def _postable(self, now: datetime) -> ColumnElement[bool]:
        return or_(
            REVIEW_ITEMS.c.post_claimed_by.is_(None),
            REVIEW_ITEMS.c.post_claimed_by == self.claimer_id,
            REVIEW_ITEMS.c.post_claim_expires_at < now,
        )

    async def claim_post(self, item_id: int) -> bool:
        """Claim the posting (or edit) of an item's message; False when another live process
        has it or it is up to date."""
        now = self.clock()

        async def work(session: AsyncSession) -> bool:
            result = await session.execute(
                update(REVIEW_ITEMS)
                .where(
                    REVIEW_ITEMS.c.id == item_id,
                    REVIEW_ITEMS.c.version > REVIEW_ITEMS.c.shown_version,
                    self._postable(now),
                )
                .values(
                    post_claimed_by=self.claimer_id,
                    post_claim_expires_at=now + self.post_claim_length,
                )
            )
            return bool(getattr(result, "rowcount", 0))

        return await self.db.write(work)

    async def shown(
        self, item_id: int, version: int, channel_id: int | None, message_id: int | None
    ) -> None:
        """Record that the item's message (``message_id``) shows ``version``; without a
        message (the server has no moderators' channel), that there is nothing to show it in
        until one is set (``repost_open``)."""
        where: dict[str, Any] = {}
        if message_id is not None:
            where = {"channel_id": channel_id, "message_id": message_id}

        async def work(session: AsyncSession) -> None:
            await session.execute(
                update(REVIEW_ITEMS)
                .where(REVIEW_ITEMS.c.id == item_id)
                .values(
                    **where,
                    shown_version=func.max(REVIEW_ITEMS.c.shown_version, version)
                    if self.db.is_sqlite
                    else func.greatest(REVIEW_ITEMS.c.shown_version, version),
                    post_claimed_by=None,
                    post_claim_expires_at=None,
                )
            )

        await self.db.write(work)

    async def release_post(self, item_id: int) -> None:
        """Let the posting claim go after a failure (a later pass tries again)."""

        async def work(session: AsyncSession) -> None:
            await session.execute(
                update(REVIEW_ITEMS)
                .where(
                    REVIEW_ITEMS.c.id == item_id,
                    REVIEW_ITEMS.c.post_claimed_by == self.claimer_id,
                )
                .values(post_claimed_by=None, post_claim_expires_at=None)
            )

        await self.db.write(work)

    # -- notices: direct messages owed to owners ------------------------------------------

    async def due_notices(self, limit: int = 20) -> list[Notice]:
        now = self.clock()

        async def work(session: AsyncSession) -> list[Notice]:
            stmt = (
                select(NOTICES)
                .where(
                    NOTICES.c.sent_at.is_(None),
                    NOTICES.c.failed_at.is_(None),
                    or_(NOTICES.c.next_attempt_at.is_(None), NOTICES.c.next_attempt_at <= now),
                    or_(
                        NOTICES.c.claimed_by.is_(None),
                        NOTICES.c.claimed_by == self.claimer_id,
                        NOTICES.c.claim_expires_at < now,
                    ),
                )
                .order_by(NOTICES.c.id)
                .limit(limit)
            )
            return [_notice(r) for r in (await session.execute(stmt)).mappings()]

        return await self.db.read(work)

    async def claim_notice(self, notice_id: int) -> bool:
        now = self.clock()

        async def work(session: AsyncSession) -> bool:
            result = await session.execute(
                update(NOTICES)
                .where(
                    NOTICES.c.id == notice_id,
                    NOTICES.c.sent_at.is_(None),
                    NOTICES.c.failed_at.is_(None),
                    or_(
                        NOTICES.c.claimed_by.is_(None),
                        NOTICES.c.claimed_by == self.claimer_id,
                        NOTICES.c.claim_expires_at < now,
                    ),
                )
                .values(
                    claimed_by=self.claimer_id,
                    claim_expires_at=now + self.post_claim_length,
                    attempts=NOTICES.c.attempts + 1,
                )
            )
            return bool(getattr(result, "rowcount", 0))

        return await self.db.write(work)

    async def notice_sent(self, notice_id: int, message_id: int) -> None:
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            await session.execute(
                update(NOTICES)
                .where(NOTICES.c.id == notice_id)
                .values(sent_at=now, message_id=message_id, claimed_by=None, error=None)
            )

        await self.db.write(work)

    async def notice_failed(
        self, notice_id: int, error: str, *, permanent: bool, retry_after: float = 30.0
    ) -> None:
        """A DM failed: given up when the member takes none (``permanent``) or after
        ``MAX_NOTICE_ATTEMPTS``; else tried again after ``retry_after`` seconds."""
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            attempts = (
                await session.execute(select(NOTICES.c.attempts).where(NOTICES.c.id == notice_id))
            ).scalar_one()
            give_up = permanent or attempts >= MAX_NOTICE_ATTEMPTS
            await session.execute(
                update(NOTICES)
                .where(NOTICES.c.id == notice_id)
                .values(
                    claimed_by=None,
                    error=error[:500],
                    failed_at=now if give_up else None,
                    next_attempt_at=None if give_up else now + timedelta(seconds=retry_after),
                )
            )

        await self.db.write(work)

    async def notices_of(self, user_id: int, limit: int = 10) -> list[Notice]:
        """The member's newest notices (for /info), sent or not."""

        async def work(session: AsyncSession) -> list[Notice]:
            stmt = (
                select(NOTICES)
                .where(NOTICES.c.user_id == user_id)
                .order_by(NOTICES.c.id.desc())
                .limit(limit)
            )
            return [_notice(r) for r in (await session.execute(stmt)).mappings()]

        return await self.db.read(work)

    # -- bans -----------------------------------------------------------------------------

    async def ban(
        self,
        guild_id: int,
        user_id: int,
        *,
        duration: timedelta | None,
        reason: str,
        moderator_id: int | None,
    ) -> Ban:
        """Ban ``user_id`` from Atelier in this server for ``duration`` (None: until
        unbanned), replacing any ban they had; logged."""
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            await _ban(session, guild_id, user_id, duration, reason, moderator_id, False, now)

        await self.db.write(work)
        found = await self.active_ban(guild_id, user_id)
        assert found is not None
        return found

    async def unban(self, guild_id: int, user_id: int, moderator_id: int, reason: str) -> bool:
        """End ``user_id``'s ban here; False when they had none in force."""
        now = self.clock()

        async def work(session: AsyncSession) -> bool:
            result = await session.execute(
                delete(BANS).where(BANS.c.guild_id == guild_id, BANS.c.user_id == user_id)
            )
            if not getattr(result, "rowcount", 0):
                return False
            await log_row(
                session,
                guild_id,
                ModAction.UNBANNED,
                now,
                actor_id=moderator_id,
                target_user_id=user_id,
                reason=reason,
            )
            return True

        return await self.db.write(work)

    async def active_ban(self, guild_id: int, user_id: int) -> Ban | None:
        """The member's ban in this server if it is in force now."""
        now = self.clock()

        async def work(session: AsyncSession) -> RowMapping | None:
            stmt = select(BANS).where(
                BANS.c.guild_id == guild_id,
                BANS.c.user_id == user_id,
                or_(BANS.c.until.is_(None), BANS.c.until > now),
            )
            return (await session.execute(stmt)).mappings().first()

        row = await self.db.read(work)
        return None if row is None else _ban_view(row)

    async def forget_expired_bans(self, limit: int = 1000) -> int:
        """Delete bans whose end has passed (the audit log keeps their story); how many. Reads
        first and writes only when there is something to delete (a housekeeping pass must not
        take SQLite's write lock for nothing)."""
        now = self.clock()

        async def due(session: AsyncSession) -> list[tuple[int, int]]:
            stmt = select(BANS.c.guild_id, BANS.c.user_id).where(BANS.c.until <= now).limit(limit)
            return [(int(g), int(u)) for g, u in (await session.execute(stmt)).all()]

        expired = await self.db.read(due)
        if not expired:
            return 0

        async def work(session: AsyncSession) -> int:
            for guild_id, user_id in expired:
                await session.execute(
                    delete(BANS).where(
                        BANS.c.guild_id == guild_id,
                        BANS.c.user_id == user_id,
                        BANS.c.until <= now,
                    )
                )
            return len(expired)

        return await self.db.write(work)

    async def strike(self, guild_id: int, user_id: int, rule: AutoBan) -> Ban | None:
        """After a rejection or refusal: ban the member automatically when they reached
        ``rule.strikes`` within ``rule.window`` and are not banned already. The new ban, or
        None."""
        if rule.strikes <= 0:
            return None
        now = self.clock()

        async def work(session: AsyncSession) -> bool:
            await lock_user(session, user_id, now)
            current = await session.execute(
                select(BANS.c.user_id).where(
                    BANS.c.guild_id == guild_id,
                    BANS.c.user_id == user_id,
                    or_(BANS.c.until.is_(None), BANS.c.until > now),
                )
            )
            if current.first() is not None:
                return False
            since = now - rule.window
            last_ban = (
                await session.execute(
                    select(func.max(MODERATION_LOG.c.created_at)).where(
                        MODERATION_LOG.c.guild_id == guild_id,
                        MODERATION_LOG.c.target_user_id == user_id,
                        MODERATION_LOG.c.action == ModAction.BANNED.value,
                    )
                )
            ).scalar_one_or_none()
            if last_ban is not None:
                since = max(since, last_ban)  # strikes before a ban do not count twice
            count = (
                await session.execute(
                    select(func.count()).where(
                        MODERATION_LOG.c.guild_id == guild_id,
                        MODERATION_LOG.c.target_user_id == user_id,
                        MODERATION_LOG.c.action.in_([a.value for a in STRIKES]),
                        MODERATION_LOG.c.created_at > since,
                    )
                )
            ).scalar_one()
            if count < rule.strikes:
                return False
            reason = f"{count} rejected or refused prompts within {_hours(rule.window)}"
            await _ban(session, guild_id, user_id, rule.duration, reason, None, True, now)
            return True

        if not await self.db.write(work):
            return None
        return await self.active_ban(guild_id, user_id)


# -- helpers ---------------------------------------------------------------------------------

_ACTIONS = {
    Decision.APPROVE: ModAction.APPROVED,
    Decision.REJECT: ModAction.REJECTED,
    Decision.EXPIRE: ModAction.EXPIRED,
    Decision.GRANT: ModAction.APPEAL_GRANTED,
    Decision.DENY: ModAction.APPEAL_DENIED,
    Decision.SUPERSEDED: ModAction.REJECTED,
}
#: The direct message each decision owes the owner (reports the owner never heard of: none).
_NOTICES = {
    (ReviewKind.HOLD, Decision.APPROVE): "approved",
    (ReviewKind.HOLD, Decision.REJECT): "rejected",
    (ReviewKind.HOLD, Decision.EXPIRE): "expired",
    (ReviewKind.REPORT, Decision.REJECT): "rejected",
    (ReviewKind.APPEAL, Decision.GRANT): "granted",
    (ReviewKind.APPEAL, Decision.DENY): "denied",
}


def _hours(window: timedelta) -> str:
    return f"{window.total_seconds() / 3600:g} h"


async def _ban(
    session: AsyncSession,
    guild_id: int,
    user_id: int,
    duration: timedelta | None,
    reason: str,
    moderator_id: int | None,
    auto: bool,
    now: datetime,
) -> datetime | None:
    until = None if duration is None else now + duration
    await session.execute(
        upsert(
            session,
            BANS,
            {
                "guild_id": guild_id,
                "user_id": user_id,
                "until": until,
                "reason": reason[:REVIEW_TEXT_LENGTH],
                "banned_by": moderator_id,
                "auto": auto,
                "created_at": now,
            },
            ["guild_id", "user_id"],
        )
    )
    await log_row(
        session,
        guild_id,
        ModAction.BANNED,
        now,
        actor_id=moderator_id,
        target_user_id=user_id,
        reason=reason,
        details={"until": None if until is None else until.isoformat(), "auto": auto},
    )
    return until


async def _lock_item(session: AsyncSession, item_id: int, guild_id: int) -> RowMapping:
    result = await session.execute(
        select(REVIEW_ITEMS)
        .where(REVIEW_ITEMS.c.id == item_id, REVIEW_ITEMS.c.guild_id == guild_id)
        .with_for_update()
    )
    row = result.mappings().first()
    if row is None:
        raise ItemNotFound(item_id)
    return row


def _check_open(item: RowMapping, moderator_id: int, now: datetime) -> None:
    if item["state"] == ReviewState.DECIDED.value:
        who = "the bot" if item["decided_by"] is None else f"<@{item['decided_by']}>"
        raise ReviewRefused(f"item #{item['id']} was already decided ({item['decision']}) by {who}")
    claimed = item["claimed_by"]
    if (
        claimed is not None
        and claimed != moderator_id
        and item["claim_expires_at"] is not None
        and item["claim_expires_at"] > now
    ):
        raise ReviewRefused(f"<@{claimed}> is reviewing item #{item['id']} right now")


async def _set_hold(
    session: AsyncSession, job_id: str, state: HoldState, now: datetime, *, repost: bool = False
) -> None:
    values: dict[str, Any] = {"review": state.value, "updated_at": now}
    if repost:
        # The message said "held": it is edited once more, now with the images.
        values.update(posted_at=None, claimed_by=None, claim_expires_at=None)
    await session.execute(update(DELIVERIES).where(DELIVERIES.c.job_id == job_id).values(values))


async def _supersede(session: AsyncSession, job_id: str, decided_id: int, now: datetime) -> None:
    """The job is removed: its other open items (a hold and a report of one job) close."""
    await session.execute(
        update(REVIEW_ITEMS)
        .where(
            REVIEW_ITEMS.c.job_id == job_id,
            REVIEW_ITEMS.c.id != decided_id,
            REVIEW_ITEMS.c.state == ReviewState.OPEN.value,
            REVIEW_ITEMS.c.kind != ReviewKind.APPEAL.value,
        )
        .values(
            state=ReviewState.DECIDED.value,
            decision=Decision.SUPERSEDED.value,
            decision_reason=f"removed through item #{decided_id}",
            decided_at=now,
            version=REVIEW_ITEMS.c.version + 1,
        )
    )


async def _report_reasons(session: AsyncSession, job_id: str) -> Sequence[str]:
    rows = await session.execute(
        select(REPORTS.c.reason).where(REPORTS.c.job_id == job_id).order_by(REPORTS.c.id)
    )
    return [str(reason) for reason in rows.scalars()]


def _item_select() -> Any:
    appealed = REVIEW_ITEMS.alias("appealed")
    return select(
        REVIEW_ITEMS,
        JOBS.c.owner_id,
        JOBS.c.request,
        JOBS.c.status.label("job_status"),
        JOBS.c.result_refs,
        DELIVERIES.c.review.label("hold"),
        appealed.c.decided_by.label("rejected_by"),
    ).select_from(
        REVIEW_ITEMS.join(JOBS, JOBS.c.id == REVIEW_ITEMS.c.job_id)
        .outerjoin(DELIVERIES, DELIVERIES.c.job_id == JOBS.c.id)
        .outerjoin(appealed, appealed.c.id == REVIEW_ITEMS.c.appeal_of)
    )


def _item(row: RowMapping) -> ReviewItem:
    request = row["request"] or {}
    return ReviewItem(
        id=int(row["id"]),
        guild_id=int(row["guild_id"]),
        job_id=row["job_id"],
        kind=ReviewKind(row["kind"]),
        state=ReviewState(row["state"]),
        reason=row["reason"],
        details=dict(row["details"] or {}),
        reports=int(row["reports"] or 0),
        appeal_of=row["appeal_of"],
        created_at=row["created_at"],
        claimed_by=row["claimed_by"],
        claim_expires_at=row["claim_expires_at"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        decision=None if row["decision"] is None else Decision(row["decision"]),
        decision_reason=row["decision_reason"],
        channel_id=row["channel_id"],
        message_id=row["message_id"],
        version=int(row["version"]),
        shown_version=int(row["shown_version"]),
        owner_id=int(row["owner_id"]),
        prompt=str(request.get("prompt", "")),
        job_status=JobStatus(row["job_status"]),
        hold=None if row["hold"] is None else HoldState(row["hold"]),
        result_refs=tuple(row["result_refs"] or ()),
        rejected_by=row["rejected_by"],
    )


def _notice(row: RowMapping) -> Notice:
    return Notice(
        id=int(row["id"]),
        guild_id=row["guild_id"],
        user_id=int(row["user_id"]),
        job_id=row["job_id"],
        item_id=row["item_id"],
        kind=row["kind"],
        text=row["text"],
        attempts=int(row["attempts"]),
    )


def _ban_view(row: RowMapping) -> Ban:
    return Ban(
        guild_id=int(row["guild_id"]),
        user_id=int(row["user_id"]),
        until=row["until"],
        reason=row["reason"],
        banned_by=row["banned_by"],
        auto=bool(row["auto"]),
        created_at=row["created_at"],
    )
