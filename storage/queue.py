"""The job queue: the one owner of every job transition.

State machine (anything else raises IllegalTransition, or LeaseLost for lease-holder calls)::

    queued  --claim-->            running
    queued  --cancel/block-->     cancelled / blocked                      (refund)
    running --complete-->         succeeded                                (charge + release)
    succeeded --block-->          blocked (taken down)                     (credit, or kept)
    running --fail(retryable)-->  queued (backoff), or dead at max_attempts (refund when dead)
    running --fail(permanent)-->  failed                                   (refund)
    running --release-->          queued (the attempt is not counted), or dead at
                                  max_releases                             (refund when dead)
    running --lease expired-->    queued, or dead at max_attempts          (refund when dead)
    running --block-->            blocked                       (refund, or charge time run)
    running --cancel-->           running with cancel_requested; the worker's next complete,
                                  fail or release (or a reclaim) makes it cancelled (charge the
                                  GPU time it reports, refund when it reports none)
    queued/running --guild left-->  as cancel, for every job of a guild that removed the bot
                                  (``cancel_for_guild``); its deliveries are given up

Every transition is one write unit of work whose row lookup is guarded by the expected status
(and, for a worker's calls, the lease token), so a late or duplicate call changes nothing.
Lease times come from this process's clock: hosts sharing a PostgreSQL queue need synchronised
clocks (NTP), which the lease lengths (tens of seconds) make an easy requirement.

Requests are stored as JSON through the queue's codec and come back decoded in every view. A
stored request the codec cannot decode (a corrupt row, an older format) never reaches a worker:
claiming it fails the job (not retryable, refunded). ``get``/``require`` raise
``UndecodableRequest`` for it, listings leave it out, and a transition on it commits before its
view is built, then raises ``UndecodableRequest``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, overload

from sqlalchemy import ColumnElement, and_, delete, exists, func, insert, select, true, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import QueueSettings
from storage.db import Database
from storage.errors import (
    GuildLeftError,
    IllegalTransition,
    JobNotFound,
    LeaseLost,
    QueueFullError,
    RateLimitedError,
    UndecodableRequest,
)
from storage.estimates import (
    active_workers,
    jobs_ahead,
    mode_averages,
    record_throughput,
    record_work_rate,
    waiting_groups,
    work_rates,
)
from storage.holds import hold, hold_state, touch_items
from storage.models import ASPECT_LENGTH, DELIVERIES, JOBS, LEFT_GUILDS, MODEL_LENGTH
from storage.modlog import log_row
from storage.quota import QuotaService
from storage.quota_policy import rate_key, reservation_ms
from storage.rate_limit import NewJobRate
from storage.scheduler import claim_one
from storage.sql import lock_user, utc_now
from storage.types import (
    ACTIVE_STATUSES,
    JSON_CODEC,
    ClaimedJob,
    Heartbeat,
    HoldState,
    JobKind,
    JobStatus,
    JobView,
    ModAction,
    NewJob,
    Owner,
    QueuePlace,
    QueueStats,
    QuotaReadout,
    RequestCodec,
    RequestT,
    Visibility,
    new_job_id,
    snowflake_at,
    to_ms,
)
from storage.views import claimed_job, job_view, job_view_select, job_views
from storage.webdir import remember_name

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Retries back off exponentially from ``retry_delay_seconds`` up to this.
MAX_RETRY_DELAY = timedelta(minutes=10)
#: How long place()/eta estimates reuse the per-mode averages and worker count.
ESTIMATE_CACHE_SECONDS = 5.0
MAX_ERROR_CHARS = 2000


def search_fields(job: NewJob[Any], stored: Mapping[str, Any]) -> dict[str, str]:
    """The ``prompt``, ``model`` and ``aspect`` columns of a new job: ``NewJob``'s fields when
    given, else the encoded request's top-level keys of those names when they are strings (the
    same place migration 0007 backfilled existing jobs from), else "". Raises ValueError for a
    model or aspect longer than the columns."""
    values: dict[str, str] = {}
    for name, given, limit in (
        ("prompt", job.prompt, None),
        ("model", job.model, MODEL_LENGTH),
        ("aspect", job.aspect, ASPECT_LENGTH),
    ):
        value = given if given is not None else stored.get(name)
        value = value if isinstance(value, str) else ""
        if limit is not None and len(value) > limit:
            raise ValueError(f"a job's {name} is at most {limit} characters (got {len(value)})")
        values[name] = value
    return values


class JobQueue(Generic[RequestT]):
    """Enqueue, claim, lease, finish and inspect jobs; every method is one unit of work.

    ``codec`` turns the caller's requests into the stored JSON and back (the JSON objects
    themselves when none is given). ``on_new_work`` is called (in this process) after a commit
    makes a job claimable, so an in-process worker wakes at once; other processes find it within
    ``poll_seconds``.

    ``_unsafe_skip_lease_check`` exists only so the crash test can prove it catches a queue that
    accepts completions from workers whose lease is gone. Never set it anywhere else.
    """

    @overload
    def __init__(
        self: JobQueue[dict[str, Any]],
        db: Database,
        settings: QueueSettings,
        quota: QuotaService,
        *,
        clock: Clock = ...,
        on_new_work: Callable[[], None] | None = ...,
        _unsafe_skip_lease_check: bool = ...,
    ) -> None: ...

    @overload
    def __init__(
        self,
        db: Database,
        settings: QueueSettings,
        quota: QuotaService,
        *,
        codec: RequestCodec[RequestT],
        clock: Clock = ...,
        on_new_work: Callable[[], None] | None = ...,
        _unsafe_skip_lease_check: bool = ...,
    ) -> None: ...

    def __init__(
        self,
        db: Database,
        settings: QueueSettings,
        quota: QuotaService,
        *,
        # Any only here: the overloads tie a missing codec to JobQueue[dict[str, Any]].
        codec: RequestCodec[Any] = JSON_CODEC,
        clock: Clock = utc_now,
        on_new_work: Callable[[], None] | None = None,
        _unsafe_skip_lease_check: bool = False,
    ) -> None:
        self.codec: RequestCodec[RequestT] = codec
        self.db = db
        self.settings = settings
        self.quota = quota
        self.clock = clock
        self.on_new_work = on_new_work
        self._unsafe_skip_lease_check = _unsafe_skip_lease_check
        self._estimates: tuple[float, dict[str, float], int] | None = None

    @property
    def _lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    # -- enqueue ----------------------------------------------------------------------------

    async def enqueue(
        self, owner: Owner, job: NewJob[RequestT], *, role_ids: Sequence[int] = ()
    ) -> JobView[RequestT]:
        """Queue one job, reserving its estimated cost; see ``enqueue_many``."""
        return (await self.enqueue_many(owner, [job], role_ids=role_ids))[0]

    async def enqueue_many(
        self, owner: Owner, jobs: Sequence[NewJob[RequestT]], *, role_ids: Sequence[int] = ()
    ) -> list[JobView[RequestT]]:
        """Queue jobs all together or not at all (e.g. the permutations of one prompt).

        Under the owner's account lock, in one transaction: the waiting-jobs cap
        (QueueFullError), the quota (QuotaExceededError, with the reservation written in the
        same transaction as the insert) and the insert itself. On either error nothing is queued
        or charged. ``role_ids`` are the owner's Discord roles, for role quota tiers.
        """
        if not jobs:
            return []
        for job in jobs:
            JobKind(job.kind)  # an untyped caller's bad kind: ValueError naming it
            if not job.mode:
                raise ValueError("a job needs a mode")
        now = self.clock()
        ids = [new_job_id() for _ in jobs]
        stored = {i: self.codec.encode(job.request) for i, job in zip(ids, jobs, strict=True)}
        described = {i: search_fields(job, stored[i]) for i, job in zip(ids, jobs, strict=True)}

        async def work(session: AsyncSession) -> list[JobView[RequestT]]:
            await lock_user(session, owner.user_id, now)
            if owner.guild_id is not None and await self._left(session, owner.guild_id):
                raise GuildLeftError(owner.guild_id)
            specs = list(zip(ids, jobs, await self._reservations(session, jobs), strict=True))
            await self._check_rate(session, owner.user_id, len(jobs), now)
            waiting = await self._count(session, owner.user_id, JobStatus.QUEUED)
            cap = self.settings.max_queued_per_user
            if waiting + len(jobs) > cap:
                raise QueueFullError(cap=cap, waiting=waiting, adding=len(jobs))
            for parent in {job.parent_id for job in jobs if job.parent_id}:
                if not await self._exists(session, parent):
                    raise JobNotFound(parent)
            needed = sum(ms for _, _, ms in specs)
            allowance = await self.quota.check_room(session, owner, needed, role_ids, now)
            await self._insert(session, owner, specs, stored, described, allowance, now)
            result = await session.execute(job_view_select().where(JOBS.c.id.in_(ids)))
            # Decoding what was just encoded: a codec that cannot round-trip queues nothing.
            views = {v.id: v for v in (job_view(r, self.codec) for r in result.mappings())}
            return [views[job_id] for job_id in ids]

        views = await self.db.write(work)
        self._notify()
        return views

    async def _insert(
        self,
        session: AsyncSession,
        owner: Owner,
        specs: Sequence[tuple[str, NewJob[Any], int]],
        stored: Mapping[str, dict[str, Any]],
        described: Mapping[str, dict[str, str]],
        allowance: int | None,
        now: datetime,
        *,
        session_id: str | None = None,
        guild_paid: bool = False,
    ) -> None:
        """Insert checked jobs (id, job, reservation), their delivery records and their
        RESERVE lines, and hold those with a review term."""
        rows = [
            {
                **self._new_row(job_id, owner, job, stored[job_id], ms, allowance, now),
                **described[job_id],
                "session_id": session_id,
                "guild_paid": guild_paid,
            }
            for job_id, job, ms in specs
        ]
        await session.execute(insert(JOBS), rows)
        await session.execute(
            insert(DELIVERIES),
            [
                {
                    "job_id": job_id,
                    "channel_id": owner.channel_id,
                    "interaction_id": job.interaction_id,
                    "interaction_token": job.interaction_token,
                    "interaction_expires_at": job.interaction_expires_at,
                    "post_attempts": 0,
                    "updated_at": now,
                }
                for job_id, job, _ in specs
            ],
        )
        await self.quota.record_reservations(
            session, owner, [(job_id, ms) for job_id, _, ms in specs], now, guild_paid=guild_paid
        )
        if owner.name is not None and owner.guild_id is not None:
            await remember_name(session, owner.guild_id, owner.user_id, owner.name, now)
        for job_id, job, _ in specs:
            if job.hold_reason is not None and owner.guild_id is not None:
                row = await self._row(session, job_id)
                await hold(session, row, job.hold_reason, job.hold_details or {}, now)

    async def reservation_ms(self, session: AsyncSession, job: NewJob[Any]) -> int:
        """What ``job`` would reserve now (inside the caller's unit of work)."""
        return (await self._reservations(session, [job]))[0]

    async def enqueue_entry(
        self,
        session: AsyncSession,
        owner: Owner,
        job: NewJob[Any],
        stored: dict[str, Any],
        now: datetime,
        *,
        session_id: str,
        reserved_ms: int,
        guild_paid: bool,
        role_ids: Sequence[int] = (),
    ) -> str:
        """Queue a group session's entry inside the session store's unit of work (which holds
        the session's lock and decided ``reserved_ms`` with ``reservation_ms``); its id.

        ``stored`` is the request as the codec encoded it when the entry was submitted. The
        session bounds its entries itself, so the waiting-jobs cap and the new-jobs rate do not
        apply. An owner-paid entry must fit the owner's quota (QuotaExceededError); one its
        server pays for was admitted by the session's pool, and its lines name the server.
        Call ``wake`` after the commit."""
        JobKind(job.kind)
        if not job.mode:
            raise ValueError("a job needs a mode")
        job_id = new_job_id()
        await lock_user(session, owner.user_id, now)
        if owner.guild_id is not None and await self._left(session, owner.guild_id):
            raise GuildLeftError(owner.guild_id)
        allowance = None
        if not guild_paid:
            allowance = await self.quota.check_room(session, owner, reserved_ms, role_ids, now)
        described = {job_id: search_fields(job, stored)}
        await self._insert(
            session,
            owner,
            [(job_id, job, reserved_ms)],
            {job_id: stored},
            described,
            allowance,
            now,
            session_id=session_id,
            guild_paid=guild_paid,
        )
        return job_id

    def wake(self) -> None:
        """Tell this process's worker that a job became claimable (after a commit)."""
        self._notify()

    def _new_row(
        self,
        job_id: str,
        owner: Owner,
        job: NewJob[Any],
        request: dict[str, Any],
        ms: int,
        allowance: int | None,
        now: datetime,
    ) -> dict[str, Any]:
        kind = JobKind(job.kind)
        priority = job.priority if job.priority is not None else kind.default_priority
        return {
            "id": job_id,
            "kind": kind.value,
            "parent_id": job.parent_id,
            "owner_id": owner.user_id,
            "guild_id": owner.guild_id,
            "channel_id": owner.channel_id,
            "request": request,
            "mode": job.mode,
            "batch_key": job.batch_key,
            "priority": priority,
            "status": JobStatus.QUEUED.value,
            "attempts": 0,
            "max_attempts": self.settings.max_attempts,
            "available_at": now,
            "cancel_requested": False,
            "created_at": now,
            "estimated_ms": ms,
            "reserved_ms": ms,
            "allowance_ms": allowance,
            "work_units": job.work_units,
            "order_key": job.order_key if job.order_key is not None else snowflake_at(now),
            "result_refs": [],
            "age_restricted": job.age_restricted,
            # A DM has no server whose members could see it: always stealth.
            "visibility": (
                Visibility(job.visibility).value
                if owner.guild_id is not None
                else Visibility.STEALTH.value
            ),
        }

    async def _reservations(
        self, session: AsyncSession, jobs: Sequence[NewJob[RequestT]]
    ) -> list[int]:
        """Each job's reservation: its work at the measured rate of its kind and mode (the
        settings' default rate until one is measured), never less than its floor."""
        rates = await work_rates(session)
        default = self.quota.settings.estimate_seconds_per_unit
        return [
            reservation_ms(
                job.estimated_cost,
                job.work_units,
                rates.get(rate_key(JobKind(job.kind), job.mode)),
                default,
            )
            for job in jobs
        ]

    # -- claiming -----------------------------------------------------------------------------

    async def claim_next(self, worker_id: str) -> ClaimedJob[RequestT] | None:
        """Atomically take the next job by fair order (see ``storage.scheduler``), or None."""
        jobs = await self._claim(worker_id, 1)
        return jobs[0] if jobs else None

    async def claim_batch(
        self, worker_id: str, max_batch: int | None = None
    ) -> list[ClaimedJob[RequestT]]:
        """The next job plus up to ``max_batch - 1`` queued jobs with the same batch key.

        Partners are picked in the same fair order and under the same per-user running cap, all
        in one transaction; each gets its own lease. Jobs with an empty batch key run alone.
        Jobs whose stored request cannot be decoded are failed on the way (see the module).
        """
        return await self._claim(worker_id, max_batch or self.settings.max_batch)

    async def _claim(self, worker_id: str, limit: int) -> list[ClaimedJob[RequestT]]:
        now = self.clock()

        async def work(session: AsyncSession) -> list[ClaimedJob[RequestT]]:
            first = await self._claim_one(session, worker_id, now, batch_key=None)
            if first is None:
                return []
            claimed = [first]
            while first.batch_key and len(claimed) < limit:
                partner = await self._claim_one(session, worker_id, now, batch_key=first.batch_key)
                if partner is None:
                    break
                claimed.append(partner)
            return claimed

        return await self.db.write(work)

    async def _claim_one(
        self, session: AsyncSession, worker_id: str, now: datetime, batch_key: str | None
    ) -> ClaimedJob[RequestT] | None:
        while True:
            row = await claim_one(
                session,
                worker_id=worker_id,
                now=now,
                lease=self._lease,
                max_running=self.settings.max_running_per_user,
                batch_key=batch_key,
            )
            if row is None:
                return None
            try:
                return claimed_job(row, self.codec)
            except UndecodableRequest as exc:
                await self._fail_undecodable(session, row, now, exc)

    async def _fail_undecodable(
        self, session: AsyncSession, job: RowMapping, now: datetime, exc: UndecodableRequest
    ) -> None:
        """A claimed job no worker could run: failed for good and refunded, like a worker's
        non-retryable failure, so it neither blocks the queue nor reaches a worker."""
        log.warning("job %s failed at claim: %s (%s)", job["id"], exc, exc.detail)
        error = f"its stored request cannot be read: {' '.join(exc.detail.split())}"
        await self.quota.refund(session, job, now, JobStatus.FAILED.value)
        await self._finish(session, job, JobStatus.FAILED, now, error=error[:MAX_ERROR_CHARS])

    # -- the lease holder's calls ---------------------------------------------------------------

    async def heartbeat(self, job_id: str, lease_token: str) -> Heartbeat:
        """Extend the lease; the reply says whether the user asked to cancel. Raises LeaseLost."""
        return await self._touch(job_id, lease_token, {})

    async def update_progress(
        self,
        job_id: str,
        lease_token: str,
        *,
        step: int,
        total: int,
        preview_ref: str | None = None,
    ) -> Heartbeat:
        """Record progress (the worker throttles this to every couple of seconds); it also
        extends the lease and relays cancel requests like a heartbeat. Raises LeaseLost."""
        values: dict[str, Any] = {"progress_step": step, "progress_total": total}
        if preview_ref is not None:
            values["preview_ref"] = preview_ref
        return await self._touch(job_id, lease_token, values)

    async def _touch(self, job_id: str, lease_token: str, values: dict[str, Any]) -> Heartbeat:
        now = self.clock()
        if values:
            values["progress_at"] = now

        async def work(session: AsyncSession) -> Heartbeat:
            row = (
                await session.execute(
                    update(JOBS)
                    .where(self._held(job_id, lease_token))
                    .values(lease_expires_at=now + self._lease, **values)
                    .returning(JOBS.c.cancel_requested, JOBS.c.lease_expires_at)
                )
            ).first()
            if row is None:
                raise await self._lease_error(session, job_id, lease_token)
            return Heartbeat(bool(row.cancel_requested), row.lease_expires_at)

        return await self.db.write(work)

    async def complete(
        self,
        job_id: str,
        lease_token: str,
        *,
        result_refs: Sequence[str],
        gpu_seconds: float,
        scores: Sequence[Mapping[str, float]] | None = None,
        flagged: Mapping[str, Any] | None = None,
    ) -> JobView[RequestT]:
        """Finish a job with its images, charging the measured GPU-seconds.

        Accepted only from the holder of the current lease; anyone else gets LeaseLost and
        nothing changes. Repeating the holder's own successful call returns the same job (a
        retry after a lost reply is safe). If a cancel was requested meanwhile the job ends
        cancelled, charged the GPU time it used like any cancelled job. A job with work units
        also folds its measured GPU-seconds per unit into its kind's rate.

        Review (``storage.holds``), in the same unit of work: ``scores`` (the output
        classifier's, per image) are kept for reviewers; ``flagged`` (what the classifier's
        verdict crossed) holds a server's job for review unless a moderator already approved
        it, and blocks a DM job outright (refunded: no server, no moderators). A job rejected
        while it ran is blocked now, its charge credited back. A job already held (a review
        term) has its review item updated, now that its images exist.
        """
        now = self.clock()
        measured = to_ms(gpu_seconds)
        stored_scores = None if scores is None else [dict(s) for s in scores]

        async def work(session: AsyncSession) -> RowMapping:
            guard = JOBS.c.id == job_id
            if not self._unsafe_skip_lease_check:
                guard = self._held(job_id, lease_token)
            job = await self._lock(session, guard)
            if job is None:
                existing = await self._lock(session, JOBS.c.id == job_id)
                if (
                    existing is not None
                    and JobStatus(existing["status"]) is JobStatus.SUCCEEDED
                    and existing["lease_token"] == lease_token
                ):
                    return await self._row(session, job_id)
                raise await self._lease_error(session, job_id, lease_token)
            if job["cancel_requested"]:
                await self._cancel_running(session, job, now, gpu_ms=measured)
            else:
                charged = await self.quota.settle(session, job, measured, now)
                await self._finish(
                    session,
                    job,
                    JobStatus.SUCCEEDED,
                    now,
                    gpu_ms=measured,
                    charged_ms=charged,
                    result_refs=list(result_refs),
                    scores=stored_scores,
                )
                await record_throughput(session, job["mode"], gpu_seconds, now)
                if job["work_units"] > 0 and gpu_seconds > 0:
                    key = rate_key(JobKind(job["kind"]), job["mode"])
                    await record_work_rate(session, key, gpu_seconds / job["work_units"], now)
                await self._review_result(session, job_id, flagged, now)
            return await self._row(session, job_id)

        return self._decoded(await self.db.write(work))

    async def _review_result(
        self,
        session: AsyncSession,
        job_id: str,
        flagged: Mapping[str, Any] | None,
        now: datetime,
    ) -> None:
        """What review makes of a job that just succeeded (see ``complete``)."""
        state = await hold_state(session, job_id)
        row = await self._row(session, job_id)
        if state is HoldState.REJECTED:
            # Rejected while it ran: the decision applies now. Its images are kept for the
            # appeal period the decision set.
            keep = (row["purge_after"] or now) - now
            await self.block_locked(session, row, row["error"] or "rejected", False, keep, now)
            return
        if flagged is not None and state is not HoldState.APPROVED:
            labels = ", ".join(str(label) for label in flagged.get("labels", ()))
            reason = f"the image classifier flagged it ({labels})"
            if row["guild_id"] is None:
                await self.block_locked(session, row, reason, False, timedelta(0), now)
                return
            await log_row(
                session,
                row["guild_id"],
                ModAction.CLASSIFIED,
                now,
                actor_id=None,
                target_user_id=row["owner_id"],
                target_job_id=job_id,
                reason=reason,
                details=flagged,
            )
            await hold(session, row, reason, {"classifier": True, **flagged}, now)
        elif state is HoldState.HELD:
            await touch_items(session, job_id)

    async def fail(
        self,
        job_id: str,
        lease_token: str,
        *,
        error: str,
        retryable: bool,
        gpu_seconds: float = 0.0,
    ) -> JobView[RequestT]:
        """A job's attempt failed. Retryable errors go back to the queue (with backoff) until
        ``max_attempts``, then the job is dead; others fail at once. Failures are ours and
        refunded; a job stopped because its owner cancelled it is charged ``gpu_seconds``, the
        GPU time it used before it stopped."""
        now = self.clock()
        error = error[:MAX_ERROR_CHARS]

        async def work(session: AsyncSession) -> RowMapping:
            job = await self._lock(session, self._held(job_id, lease_token))
            if job is None:
                raise await self._lease_error(session, job_id, lease_token)
            if job["cancel_requested"]:
                gpu_ms = to_ms(max(0.0, gpu_seconds))
                await self._cancel_running(session, job, now, gpu_ms=gpu_ms, error=error)
            elif retryable and job["attempts"] < job["max_attempts"]:
                delay = timedelta(seconds=self.settings.retry_delay_seconds)
                delay = min(delay * 2 ** (job["attempts"] - 1), MAX_RETRY_DELAY)
                await self._requeue(session, job, now + delay, error=error)
            else:
                status = JobStatus.DEAD if retryable else JobStatus.FAILED
                await self.quota.refund(session, job, now, status.value)
                await self._finish(session, job, status, now, error=error)
            return await self._row(session, job_id)

        row = await self.db.write(work)
        if JobStatus(row["status"]) is JobStatus.QUEUED:
            self._notify()
        return self._decoded(row)

    async def release(self, job_id: str, lease_token: str) -> JobView[RequestT]:
        """Give a running job back at once (worker shutdown); the attempt does not count, but
        the release does: at ``max_releases`` the job is dead and refunded, so a job whose
        workers keep being stopped under it (a crash-looping deploy, a job that outlives every
        grace period) ends instead of circulating forever."""
        now = self.clock()

        async def work(session: AsyncSession) -> RowMapping:
            job = await self._lock(session, self._held(job_id, lease_token))
            if job is None:
                raise await self._lease_error(session, job_id, lease_token)
            releases = (job["releases"] or 0) + 1
            if job["cancel_requested"]:
                await self._cancel_running(session, job, now, releases=releases)
            elif releases >= self.settings.max_releases:
                log.warning(
                    "job %s is dead: released %d times, last by worker %s",
                    job_id,
                    releases,
                    job["worker_id"],
                )
                error = f"the worker running it was stopped {releases} times before it finished"
                await self.quota.refund(session, job, now, "dead: released too often")
                await self._finish(
                    session, job, JobStatus.DEAD, now, error=error, releases=releases
                )
            else:
                await self._requeue(
                    session, job, now, attempts=job["attempts"] - 1, releases=releases
                )
            return await self._row(session, job_id)

        row = await self.db.write(work)
        self._notify()
        return self._decoded(row)

    async def reclaim_expired(self) -> list[str]:
        """Put jobs whose lease expired (their worker died or hung) back in the queue, or make
        them dead once they used ``max_attempts`` (a job that keeps killing its worker is
        poison), or cancelled if a cancel was requested. Returns the affected job ids."""
        now = self.clock()

        async def work(session: AsyncSession) -> list[str]:
            expired = (
                (
                    await session.execute(
                        select(JOBS)
                        .where(
                            JOBS.c.status == JobStatus.RUNNING,
                            JOBS.c.lease_expires_at < now,
                        )
                        .order_by(JOBS.c.seq)
                        .limit(500)
                        # A row locked right now belongs to a heartbeat or a completion in
                        # flight: leave it to that call rather than wait for it.
                        .with_for_update(skip_locked=True)
                    )
                )
                .mappings()
                .all()
            )
            for job in expired:
                worker = job["worker_id"]
                if job["cancel_requested"]:
                    await self.quota.refund(session, job, now, "cancelled; worker lost")
                    await self._finish(session, job, JobStatus.CANCELLED, now)
                elif job["attempts"] >= job["max_attempts"]:
                    # The public message says what happened; which host it was goes to the log.
                    ref = secrets.token_hex(4)
                    log.warning(
                        "job %s is dead: worker %s lost it [ref %s]", job["id"], worker, ref
                    )
                    error = (
                        f"the worker running it stopped on all {job['attempts']} attempts "
                        f"(ref {ref})"
                    )
                    await self.quota.refund(session, job, now, "dead")
                    await self._finish(session, job, JobStatus.DEAD, now, error=error)
                else:
                    await self._requeue(session, job, now, error=f"worker {worker} lost its lease")
            return [job["id"] for job in expired]

        ids = await self.db.write(work)
        if ids:
            log.warning("reclaimed %d job(s) with expired leases: %s", len(ids), ", ".join(ids))
            self._notify()
        return ids

    # -- user and admin actions -----------------------------------------------------------------

    async def cancel(self, job_id: str) -> JobView[RequestT]:
        """Cancel a job: a queued one at once (refunded); a running one is flagged and its
        worker stops within a step. Raises IllegalTransition for finished jobs."""
        now = self.clock()

        async def work(session: AsyncSession) -> RowMapping:
            job = await self._lock(session, JOBS.c.id == job_id)
            if job is None:
                raise JobNotFound(job_id)
            await self.cancel_locked(session, job, now)
            return await self._row(session, job_id)

        return self._decoded(await self.db.write(work))

    async def cancel_for_user(self, user_id: int) -> int:
        """Cancel all of a user's queued and running jobs; returns how many."""
        now = self.clock()

        async def work(session: AsyncSession) -> int:
            return await self._cancel_active(session, JOBS.c.owner_id == user_id, now)

        return await self.db.write(work)

    async def _cancel_active(
        self, session: AsyncSession, which: ColumnElement[bool], now: datetime
    ) -> int:
        """Cancel every queued or running job matching ``which``, oldest first, under their row
        locks; how many there were."""
        jobs = (
            (
                await session.execute(
                    select(JOBS)
                    .where(which, JOBS.c.status.in_(ACTIVE_STATUSES))
                    .order_by(JOBS.c.seq)
                    .with_for_update()
                )
            )
            .mappings()
            .all()
        )
        for job in jobs:
            await self.cancel_locked(session, job, now)
        return len(jobs)

    async def cancel_for_guild(self, guild_id: int, reason: str) -> int:
        """The bot was removed from ``guild_id``: record it (``left_guilds``), cancel the
        guild's queued jobs (refunded) and running ones (stopped within a step, charged the GPU
        time they used, as any cancel), and give up the delivery of every result there not yet
        posted, with ``reason``. One unit of work, so a restart finds all of it or none. Returns
        how many queued or running jobs it found."""
        now = self.clock()
        reason = reason[:MAX_ERROR_CHARS]

        async def work(session: AsyncSession) -> int:
            recorded = select(true()).where(LEFT_GUILDS.c.guild_id == guild_id)
            if (await session.execute(recorded)).first() is None:
                await session.execute(insert(LEFT_GUILDS).values(guild_id=guild_id, left_at=now))
            found = await self._cancel_active(session, JOBS.c.guild_id == guild_id, now)
            in_guild = select(JOBS.c.id).where(JOBS.c.guild_id == guild_id).scalar_subquery()
            await session.execute(
                update(DELIVERIES)
                .where(
                    DELIVERIES.c.job_id.in_(in_guild),
                    DELIVERIES.c.posted_at.is_(None),
                    DELIVERIES.c.given_up_at.is_(None),
                )
                .values(
                    given_up_at=now,
                    give_up_reason=reason,
                    last_error=reason,
                    claimed_by=None,
                    claim_expires_at=None,
                    next_attempt_at=None,
                    updated_at=now,
                )
            )
            return found

        return await self.db.write(work)

    async def rejoin_guilds(self, guild_ids: Sequence[int]) -> int:
        """The bot is in these guilds (added back, or found at start): forget that it left
        them. Deliveries given up when it left stay given up. Returns how many were recorded."""
        if not guild_ids:
            return 0

        async def work(session: AsyncSession) -> int:
            result = await session.execute(
                delete(LEFT_GUILDS).where(LEFT_GUILDS.c.guild_id.in_(list(guild_ids)))
            )
            return int(getattr(result, "rowcount", 0) or 0)

        return await self.db.write(work)

    async def guilds_with_work(self) -> list[int]:
        """Guilds (not recorded as left) with queued or running jobs, or results not yet
        posted or given up: where the bot must still be, for the work to reach anyone."""
        delivered = DELIVERIES.c.posted_at.is_not(None) | DELIVERIES.c.given_up_at.is_not(None)
        pending = exists().where(DELIVERIES.c.job_id == JOBS.c.id, ~delivered)
        left = exists().where(LEFT_GUILDS.c.guild_id == JOBS.c.guild_id)

        async def work(session: AsyncSession) -> list[int]:
            stmt = (
                select(JOBS.c.guild_id)
                .where(
                    JOBS.c.guild_id.is_not(None),
                    ~left,
                    JOBS.c.status.in_(ACTIVE_STATUSES) | pending,
                )
                .distinct()
                .order_by(JOBS.c.guild_id)
            )
            return [int(guild_id) for guild_id in (await session.execute(stmt)).scalars()]

        return await self.db.read(work)

    async def left_guilds(self) -> list[int]:
        """The guilds the bot has been removed from (and not added back to)."""

        async def work(session: AsyncSession) -> list[int]:
            rows = await session.execute(
                select(LEFT_GUILDS.c.guild_id).order_by(LEFT_GUILDS.c.guild_id)
            )
            return [int(guild_id) for guild_id in rows.scalars()]

        return await self.db.read(work)

    async def cancel_locked(self, session: AsyncSession, job: RowMapping, now: datetime) -> None:
        """Cancel a locked queued or running job inside the caller's unit of work (see
        ``cancel``)."""
        status = JobStatus(job["status"])
        if status is JobStatus.QUEUED:
            await self.quota.refund(session, job, now, "cancelled")
            await self._finish(session, job, JobStatus.CANCELLED, now)
        elif status is JobStatus.RUNNING:
            await session.execute(
                update(JOBS)
                .where(JOBS.c.id == job["id"], JOBS.c.status == JobStatus.RUNNING)
                .values(cancel_requested=True)
            )
        else:
            raise IllegalTransition(job["id"], "cancelled", status)

    async def block(
        self,
        job_id: str,
        reason: str,
        *,
        keep_charge: bool = False,
        keep_images: timedelta = timedelta(0),
    ) -> JobView[RequestT]:
        """Stop or remove a job for moderation reasons.

        A queued job is refunded (it used nothing). A running one loses its lease (its worker
        stops at its next heartbeat); it is refunded, or with ``keep_charge`` charged the time
        it has run. A succeeded job is taken down: its charge is credited back unless
        ``keep_charge``, and its posted message is due for one more edit (to say it was
        removed). Its images are never served again and are kept ``keep_images`` (the appeal
        period) before ``expired_blocked`` hands them over for deletion. Anything else raises
        IllegalTransition.
        """
        now = self.clock()
        reason = reason[:MAX_ERROR_CHARS]

        async def work(session: AsyncSession) -> RowMapping:
            job = await self._lock(session, JOBS.c.id == job_id)
            if job is None:
                raise JobNotFound(job_id)
            await self.block_locked(session, job, reason, keep_charge, keep_images, now)
            return await self._row(session, job_id)

        return self._decoded(await self.db.write(work))

    async def block_locked(
        self,
        session: AsyncSession,
        job: RowMapping,
        reason: str,
        keep_charge: bool,
        keep_images: timedelta,
        now: datetime,
    ) -> None:
        """``block`` inside the caller's unit of work, on a locked row (the review queue's
        rejections use it too)."""
        job_id = job["id"]
        reason = reason[:MAX_ERROR_CHARS]
        status = JobStatus(job["status"])
        purge = {"purge_after": now + keep_images}
        if status is JobStatus.SUCCEEDED:
            charged = job["charged_ms"]
            if not keep_charge:
                charged -= await self.quota.credit(session, job, now, "blocked; refunded")
            await session.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.SUCCEEDED)
                .values(status=JobStatus.BLOCKED, error=reason, charged_ms=charged, **purge)
            )
            await session.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.job_id == job_id)
                .values(posted_at=None, claimed_by=None, claim_expires_at=None, updated_at=now)
            )
        elif status is JobStatus.RUNNING and keep_charge:
            ran = to_ms(max(0.0, (now - job["started_at"]).total_seconds()))
            charged = await self.quota.settle(session, job, ran, now, "blocked; charge kept")
            await self._finish(
                session,
                job,
                JobStatus.BLOCKED,
                now,
                error=reason,
                gpu_ms=ran,
                charged_ms=charged,
                **purge,
            )
        elif status in ACTIVE_STATUSES:
            await self.quota.refund(session, job, now, "blocked")
            await self._finish(session, job, JobStatus.BLOCKED, now, error=reason, **purge)
        else:
            raise IllegalTransition(job_id, "blocked", status)

    async def expired_blocked(self, limit: int = 100) -> list[str]:
        """Blocked jobs whose appeal period is over and whose images are still kept."""

        async def work(session: AsyncSession) -> list[str]:
            stmt = (
                select(JOBS.c.id)
                .where(JOBS.c.status == JobStatus.BLOCKED, JOBS.c.purge_after <= self.clock())
                .order_by(JOBS.c.purge_after)
                .limit(limit)
            )
            return list((await session.execute(stmt)).scalars())

        return await self.db.read(work)

    async def forget_images(self, job_id: str) -> None:
        """Record that a blocked job's images are deleted: no refs, no preview, no purge due."""

        async def work(session: AsyncSession) -> None:
            await session.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.BLOCKED)
                .values(result_refs=[], preview_ref=None, purge_after=None)
            )

        await self.db.write(work)

    async def followups(self, job_id: str, limit: int = 50) -> list[JobView[RequestT]]:
        """Every job made from ``job_id``, directly or through other follow-ups (upscales,
        variations, re-rolls), oldest first; at most ``limit``."""

        async def work(session: AsyncSession) -> list[JobView[RequestT]]:
            found: list[RowMapping] = []
            frontier = [job_id]
            while frontier and len(found) < limit:
                rows = (
                    (
                        await session.execute(
                            job_view_select()
                            .where(JOBS.c.parent_id.in_(frontier))
                            .order_by(JOBS.c.seq)
                            .limit(limit - len(found))
                        )
                    )
                    .mappings()
                    .all()
                )
                found.extend(rows)
                frontier = [row["id"] for row in rows]
            return job_views(sorted(found, key=lambda row: row["seq"]), self.codec)

        return await self.db.read(work)

    # -- reading ---------------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobView[RequestT] | None:
        """The job, or None if there is no such job. Raises UndecodableRequest."""

        async def work(session: AsyncSession) -> RowMapping | None:
            row = (await session.execute(job_view_select().where(JOBS.c.id == job_id))).mappings()
            return row.first()

        row = await self.db.read(work)
        return None if row is None else self._decoded(row)

    async def require(self, job_id: str) -> JobView[RequestT]:
        """The job; raises JobNotFound (or UndecodableRequest)."""
        view = await self.get(job_id)
        if view is None:
            raise JobNotFound(job_id)
        return view

    async def list_for_user(
        self, user_id: int, *, active_only: bool = False, limit: int = 25
    ) -> list[JobView[RequestT]]:
        """The user's jobs, newest first (leaving out any whose request cannot be decoded)."""

        async def work(session: AsyncSession) -> list[JobView[RequestT]]:
            stmt = (
                job_view_select()
                .where(JOBS.c.owner_id == user_id)
                .order_by(JOBS.c.seq.desc())
                .limit(limit)
            )
            if active_only:
                stmt = stmt.where(JOBS.c.status.in_(ACTIVE_STATUSES))
            return job_views((await session.execute(stmt)).mappings(), self.codec)

        return await self.db.read(work)

    async def place(self, job_id: str) -> QueuePlace:
        """The job's position (1 = starts next, 0 = started or finished) and an ETA in seconds.

        Cheap enough for every progress update: one indexed lookup and one grouped count over
        the waiting jobs (see ``storage.estimates``); per-mode throughput and the worker count
        are cached for a few seconds.
        """

        async def work(session: AsyncSession) -> QueuePlace:
            job = (
                (
                    await session.execute(
                        select(
                            JOBS.c.status,
                            JOBS.c.owner_id,
                            JOBS.c.priority,
                            JOBS.c.seq,
                            JOBS.c.order_key,
                            JOBS.c.mode,
                            JOBS.c.started_at,
                            JOBS.c.estimated_ms,
                        ).where(JOBS.c.id == job_id)
                    )
                )
                .mappings()
                .first()
            )
            if job is None:
                raise JobNotFound(job_id)
            averages, workers = await self._estimates_cached(session)
            per_job = averages.get(job["mode"], job["estimated_ms"] / 1000)
            status = JobStatus(job["status"])
            if status is JobStatus.RUNNING:
                elapsed = (self.clock() - job["started_at"]).total_seconds()
                return QueuePlace(job_id, status, 0, max(0.0, per_job - elapsed))
            if status is not JobStatus.QUEUED:
                return QueuePlace(job_id, status, 0, 0.0)
            groups = await waiting_groups(session, job["priority"], job["order_key"], job["seq"])
            ahead = jobs_ahead(
                groups, job["owner_id"], job["priority"], job["order_key"], job["seq"]
            )
            eta = (ahead + 1) * per_job / max(1, workers)
            return QueuePlace(job_id, status, ahead + 1, eta)

        return await self.db.read(work)

    async def position(self, job_id: str) -> int:
        """See ``place``: 1 for the next job to start, 0 once started or finished."""
        return (await self.place(job_id)).position

    async def eta_seconds(self, job_id: str) -> float:
        """See ``place``: seconds until the job should be done, from measured throughput."""
        return (await self.place(job_id)).eta_seconds

    async def _estimates_cached(self, session: AsyncSession) -> tuple[dict[str, float], int]:
        now = self.clock().timestamp()
        if self._estimates is not None and now - self._estimates[0] < ESTIMATE_CACHE_SECONDS:
            return self._estimates[1], self._estimates[2]
        averages = await mode_averages(session)
        workers = await active_workers(session)
        self._estimates = (now, averages, workers)
        return averages, workers

    async def stats(self) -> QueueStats:
        """Counts per status, workers holding leases now, and GPU-seconds per job per mode."""

        async def work(session: AsyncSession) -> QueueStats:
            counts = {
                JobStatus(status): int(n)
                for status, n in (
                    await session.execute(
                        select(JOBS.c.status, func.count()).group_by(JOBS.c.status)
                    )
                ).all()
            }
            oldest = (
                await session.execute(
                    select(func.min(JOBS.c.created_at)).where(JOBS.c.status == JobStatus.QUEUED)
                )
            ).scalar()
            return QueueStats(
                counts=counts,
                active_workers=await active_workers(session),
                avg_gpu_seconds=await mode_averages(session),
                oldest_queued_at=oldest,
            )

        return await self.db.read(work)

    async def quota_readout(
        self, user_id: int, guild_id: int | None = None, role_ids: Sequence[int] = ()
    ) -> QuotaReadout:
        """The owner's quota standing (see ``QuotaService.readout``)."""
        return await self.quota.readout(user_id, guild_id, role_ids)

    # -- helpers ---------------------------------------------------------------------------------

    def _held(self, job_id: str, lease_token: str) -> ColumnElement[bool]:
        return and_(
            JOBS.c.id == job_id,
            JOBS.c.status == JobStatus.RUNNING,
            JOBS.c.lease_token == lease_token,
        )

    async def _lock(self, session: AsyncSession, guard: ColumnElement[bool]) -> RowMapping | None:
        """The one row matching ``guard``, locked until commit (SQLite: already exclusive)."""
        result = await session.execute(select(JOBS).where(guard).with_for_update())
        return result.mappings().first()

    async def _lease_error(
        self, session: AsyncSession, job_id: str, lease_token: str
    ) -> JobNotFound | LeaseLost:
        row = (
            await session.execute(
                select(JOBS.c.status, JOBS.c.lease_token, JOBS.c.worker_id).where(
                    JOBS.c.id == job_id
                )
            )
        ).first()
        if row is None:
            return JobNotFound(job_id)
        status = JobStatus(row.status)
        if status is not JobStatus.RUNNING:
            return LeaseLost(job_id, f"the job is {status}")
        return LeaseLost(job_id, f"the lease now belongs to worker {row.worker_id}")

    async def _cancel_running(
        self,
        session: AsyncSession,
        job: RowMapping,
        now: datetime,
        *,
        gpu_ms: int = 0,
        **finish: object,
    ) -> None:
        """A running job whose owner cancelled it ends cancelled, whatever its worker reports.
        It is charged the GPU time it used (``gpu_ms``, as its worker measured it); with none
        measured (a release, a lost worker) it is refunded."""
        if gpu_ms > 0:
            charged = await self.quota.settle(session, job, gpu_ms, now, "cancelled by the owner")
            await self._finish(
                session, job, JobStatus.CANCELLED, now, gpu_ms=gpu_ms, charged_ms=charged, **finish
            )
            return
        await self.quota.refund(session, job, now, "cancelled while running")
        await self._finish(session, job, JobStatus.CANCELLED, now, **finish)

    async def _finish(
        self,
        session: AsyncSession,
        job: RowMapping,
        status: JobStatus,
        now: datetime,
        **values: object,
    ) -> None:
        """Move a locked job to a terminal status. The lease token stays for idempotent
        retries of ``complete``; the expiry goes so nothing treats it as a live lease."""
        guard = JOBS.c.id == job["id"]
        if not self._unsafe_skip_lease_check:
            guard = and_(guard, JOBS.c.status == job["status"])
        result = await session.execute(
            update(JOBS)
            .where(guard)
            .values(status=status, finished_at=now, lease_expires_at=None, **values)
        )
        if getattr(result, "rowcount", 1) != 1:  # pragma: no cover - the row is locked
            raise IllegalTransition(job["id"], status.value, job["status"])

    async def _requeue(
        self,
        session: AsyncSession,
        job: RowMapping,
        available_at: datetime,
        *,
        attempts: int | None = None,
        releases: int | None = None,
        error: str | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "status": JobStatus.QUEUED,
            "lease_token": None,
            "lease_expires_at": None,
            "worker_id": None,
            "available_at": available_at,
            "cancel_requested": False,
        }
        if attempts is not None:
            values["attempts"] = attempts
        if releases is not None:
            values["releases"] = releases
        if error is not None:
            values["error"] = error
        await session.execute(
            update(JOBS)
            .where(JOBS.c.id == job["id"], JOBS.c.status == JobStatus.RUNNING)
            .values(**values)
        )

    async def _row(self, session: AsyncSession, job_id: str) -> RowMapping:
        """The job's row for its view. Transitions decode it after their commit, so a request
        that cannot be decoded never rolls a transition back."""
        row = (await session.execute(job_view_select().where(JOBS.c.id == job_id))).mappings()
        return row.one()

    def _decoded(self, row: RowMapping) -> JobView[RequestT]:
        return job_view(row, self.codec)

    async def _check_rate(
        self, session: AsyncSession, user_id: int, adding: int, now: datetime
    ) -> None:
        """RateLimitedError when ``adding`` new jobs would go over the new-jobs limit."""
        rate = self.rate
        if not rate.enabled:
            return
        since = now - timedelta(seconds=rate.lookback_seconds)
        stmt = select(JOBS.c.created_at).where(
            JOBS.c.owner_id == user_id, JOBS.c.created_at >= since
        )
        recent = list((await session.execute(stmt)).scalars())
        wait = rate.wait_seconds(recent, now, adding)
        if wait > 0:
            raise RateLimitedError(
                per_window=rate.per_window,
                window_seconds=rate.window_seconds,
                burst=rate.burst,
                wait=wait,
            )

    @property
    def rate(self) -> NewJobRate:
        s = self.settings
        return NewJobRate(s.new_jobs_per_window, s.new_jobs_window_seconds, s.new_jobs_burst)

    async def _count(self, session: AsyncSession, user_id: int, status: JobStatus) -> int:
        stmt = select(func.count()).where(JOBS.c.owner_id == user_id, JOBS.c.status == status)
        return int((await session.execute(stmt)).scalar_one())

    async def _left(self, session: AsyncSession, guild_id: int) -> bool:
        stmt = select(true()).where(LEFT_GUILDS.c.guild_id == guild_id)
        return (await session.execute(stmt)).first() is not None

    async def _exists(self, session: AsyncSession, job_id: str) -> bool:
        stmt = select(true()).where(JOBS.c.id == job_id)
        return (await session.execute(stmt)).first() is not None

    def _notify(self) -> None:
        if self.on_new_work is not None:
            self.on_new_work()
