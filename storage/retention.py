"""Deleting what is no longer kept: old jobs' images and rows, and blocked jobs' images.

Four rules, applied by ``Retention.prune`` (the bot runs it in the background through
``RetentionLoop``; the operator runs it with ``atelier db prune``):

- **Images.** A finished job older than ``retention.images_days`` loses its images: the files
  are deleted, ``result_refs`` and ``preview_ref`` are emptied and ``pruned_at`` is set. The row
  stays, so ``/show`` can say the images expired and the quota ledger still adds up.
- **Rows.** A finished job older than ``retention.rows_days`` is deleted with any images left.
  Its delivery record and ``/show`` copies go with it (ON DELETE CASCADE), its follow-ups forget
  their parent (SET NULL), and its quota ledger lines are deleted in the same transaction. A
  row is deleted only once every one of its ledger lines is older than the quota window: usage
  counts the window's CHARGE lines net of their job's CREDIT lines, so anything older changes
  nobody's usage, and deleting a job's lines with the job keeps the audit's rule (every job's
  lines add up, no line without a job) true.
- **Blocked jobs** keep their images ``bot.appeal_days`` for an appeal (``purge_after``), then
  ``purge_blocked`` deletes them.
- **The moderation audit log.** A row older than ``retention.modlog_days`` is deleted. It names
  jobs by id only, so it neither holds jobs nor is held by them.
- **Saved searches** (``search_queries``) are deleted once expired, whatever the settings:
  they only answer a search's page buttons for a day.
- **Group sessions.** A session ended more than ``retention.sessions_days`` ago is deleted with
  its rounds, entries, votes, participants, boards and timers. Its entries' jobs stay, as any
  job; while a session is live its entries' jobs are kept (see :func:`kept`).

What is never touched, whatever its age, is decided in one place, :func:`kept`. Work goes in
bounded batches, each one write transaction that selects what is due under the ``kept`` rule,
deletes the files, then records it. The files are deleted inside the transaction so that a
moderator's block or a new follow-up cannot slip in between the check and the delete (both lock
or reference the same row); if the commit then fails, the next pass finds the job again and
deletes nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import RetentionSettings
from storage.images import FileImageStore
from storage.models import DELIVERIES, GROUP_SESSIONS, JOBS, LEDGER
from storage.modlog import ModerationLog
from storage.queue import JobQueue
from storage.sessions import count_old_sessions, prune_sessions
from storage.sharing import count_expired_queries, prune_saved_queries
from storage.types import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    JobStatus,
    PruneReport,
    SessionStatus,
)

log = logging.getLogger(__name__)

#: How often the bot looks for images and rows that are due.
PURGE_INTERVAL_SECONDS = 600.0
#: The most jobs one batch (one transaction) handles.
PURGE_BATCH = 100
#: The most batches of each kind one background pass runs; the rest waits for the next pass.
PASS_BATCHES = 10
#: The pause between passes while a backlog remains (other writers get their turn).
BACKLOG_PAUSE_SECONDS = 5.0
DAY = timedelta(days=1)


def kept() -> ColumnElement[bool]:
    """The one rule for what retention never touches, whatever its age: a job that is

    - waiting or running;
    - not yet delivered: its result is not on Discord and delivery was not given up;
    - under moderation: blocked and within its appeal period (``purge_after`` set; the appeal
      purge handles it);
    - the source of a waiting or running follow-up, which will read its images;
    - shared: a succeeded job its owner has not deleted that members liked (``like_count`` >
      0) or that was posted to the showcase channel (``published_at`` set). A deleted job
      loses its likes, so it is pruned as usual;
    - an entry of a live (running or paused) group session: its round's vote and boards show
      it.

    Later features that hold a job add their reason here, and every kind of pruning honours it.
    """
    followup = JOBS.alias("followup")
    undelivered = (
        exists()
        .where(
            DELIVERIES.c.job_id == JOBS.c.id,
            DELIVERIES.c.posted_at.is_(None),
            DELIVERIES.c.given_up_at.is_(None),
        )
        .correlate(JOBS)
    )
    source_of_active = (
        exists()
        .where(followup.c.parent_id == JOBS.c.id, followup.c.status.in_(ACTIVE_STATUSES))
        .correlate(JOBS)
    )
    shared = and_(
        JOBS.c.status == JobStatus.SUCCEEDED.value,
        JOBS.c.deleted_at.is_(None),
        or_(JOBS.c.like_count > 0, JOBS.c.published_at.is_not(None)),
    )
    in_live_session = (
        exists()
        .where(
            GROUP_SESSIONS.c.id == JOBS.c.session_id,
            GROUP_SESSIONS.c.status != SessionStatus.ENDED.value,
        )
        .correlate(JOBS)
    )
    return or_(
        JOBS.c.status.in_(ACTIVE_STATUSES),
        undelivered,
        JOBS.c.purge_after.is_not(None),
        source_of_active,
        shared,
        in_live_session,
    )


@dataclass(frozen=True)
class _Batch:
    jobs: int = 0
    files: int = 0
    size: int = 0
    ledger_lines: int = 0
    modlog_rows: int = 0
    saved_queries: int = 0
    sessions: int = 0


class Retention:
    """Prunes old images and rows under ``settings`` (see the module's docstring).

    It works on the queue's database with the queue's clock and quota window, so tests move
    time with the queue's fake clock.
    """

    def __init__(
        self,
        queue: JobQueue[Any],
        images: FileImageStore,
        settings: RetentionSettings,
        *,
        batch: int = PURGE_BATCH,
        modlog: ModerationLog | None = None,
    ) -> None:
        self.queue = queue
        self.images = images
        self.settings = settings
        self.batch = batch
        # The ledger's own audit log when given; otherwise one over the queue's database.
        self.modlog = modlog or ModerationLog(queue.db, clock=queue.clock)

    async def prune(self, *, dry_run: bool = False, max_batches: int | None = None) -> PruneReport:
        """Delete what is due: rows first (with their images), then the images of the jobs
        that stay, then the images of blocked jobs whose appeal period is over. With
        ``dry_run`` nothing changes and the report says what would go. ``max_batches`` bounds
        the batches of each kind (None: until nothing is due). Audit log rows go last."""
        if dry_run:
            return await self._survey()
        rows, more_rows = await self._repeat(self._prune_rows, max_batches)
        images, more_images = await self._repeat(self._prune_images, max_batches)
        blocked, more_blocked = await self._repeat(self._purge_blocked, max_batches)
        modlog, more_modlog = await self._repeat(self._prune_modlog, max_batches)
        queries, more_queries = await self._repeat(self._prune_queries, max_batches)
        sessions, more_sessions = await self._repeat(self._prune_sessions, max_batches)
        report = PruneReport(
            dry_run=False,
            image_jobs=images.jobs,
            image_files=rows.files + images.files + blocked.files,
            image_bytes=rows.size + images.size + blocked.size,
            jobs=rows.jobs,
            ledger_lines=rows.ledger_lines,
            blocked=blocked.jobs,
            modlog_rows=modlog.modlog_rows,
            saved_queries=queries.saved_queries,
            sessions=sessions.sessions,
            more=more_rows
            or more_images
            or more_blocked
            or more_modlog
            or more_queries
            or more_sessions,
        )
        if report.modlog_rows:
            log.info("retention: deleted %d moderation log row(s)", report.modlog_rows)
        if report.jobs or report.image_jobs or report.blocked:
            log.info(
                "retention: deleted %d job row(s) and %d ledger line(s), the images of %d "
                "job(s) and of %d blocked job(s): %d file(s), %d bytes",
                report.jobs,
                report.ledger_lines,
                report.image_jobs,
                report.blocked,
                report.image_files,
                report.image_bytes,
            )
        return report

    # -- what is due ------------------------------------------------------------------------

    def _modlog_cutoff(self, now: datetime) -> datetime | None:
        days = self.settings.modlog_days
        return now - days * DAY if days else None

    def _older_than(self, days: float, now: datetime) -> ColumnElement[bool]:
        return func.coalesce(JOBS.c.finished_at, JOBS.c.created_at) <= now - days * DAY

    def _rows_due(self, now: datetime) -> ColumnElement[bool] | None:
        if not self.settings.rows_days:
            return None
        in_window = (
            exists()
            .where(
                LEDGER.c.job_id == JOBS.c.id,
                LEDGER.c.created_at > now - self.queue.quota.window,
            )
            .correlate(JOBS)
        )
        return and_(
            JOBS.c.status.in_(TERMINAL_STATUSES),
            self._older_than(self.settings.rows_days, now),
            not_(kept()),
            not_(in_window),
        )

    def _images_due(self, now: datetime) -> ColumnElement[bool] | None:
        if not self.settings.images_days:
            return None
        return and_(
            JOBS.c.status.in_(TERMINAL_STATUSES),
            JOBS.c.pruned_at.is_(None),
            self._older_than(self.settings.images_days, now),
            not_(kept()),
        )

    async def _due(self, session: AsyncSession, due: ColumnElement[bool]) -> list[str]:
        """One batch of due job ids, oldest first, locked (other pruners skip them)."""
        stmt = (
            select(JOBS.c.id)
            .where(due)
            .order_by(JOBS.c.seq)
            .limit(self.batch)
            .with_for_update(skip_locked=True)
        )
        return list((await session.execute(stmt)).scalars())

    # -- the batches ------------------------------------------------------------------------

    async def _prune_rows(self) -> _Batch:
        async def delete_rows(session: AsyncSession, ids: list[str], now: datetime) -> int:
            lines = await session.execute(delete(LEDGER).where(LEDGER.c.job_id.in_(ids)))
            await session.execute(delete(JOBS).where(JOBS.c.id.in_(ids)))
            return int(getattr(lines, "rowcount", 0) or 0)

        return await self._prune_batch(self._rows_due, delete_rows)

    async def _prune_images(self) -> _Batch:
        async def forget_images(session: AsyncSession, ids: list[str], now: datetime) -> int:
            await session.execute(
                update(JOBS)
                .where(JOBS.c.id.in_(ids))
                .values(result_refs=[], preview_ref=None, pruned_at=now)
            )
            return 0

        return await self._prune_batch(self._images_due, forget_images)

    async def _prune_batch(
        self,
        due_at: Callable[[datetime], ColumnElement[bool] | None],
        then: Callable[[AsyncSession, list[str], datetime], Awaitable[int]],
    ) -> _Batch:
        """One batch: lock the jobs ``due_at`` now selects, delete their image files, then
        ``then`` updates or deletes their rows (returning the ledger lines it deleted), all in
        one unit of work."""
        now = self.queue.clock()
        due = due_at(now)
        if due is None:
            return _Batch()

        async def work(session: AsyncSession) -> _Batch:
            ids = await self._due(session, due)
            if not ids:
                return _Batch()
            files, size = await self._delete_images(ids)
            lines = await then(session, ids, now)
            return _Batch(len(ids), files, size, lines)

        return await self.queue.db.write(work)

    async def _prune_modlog(self) -> _Batch:
        cutoff = self._modlog_cutoff(self.queue.clock())
        if cutoff is None:
            return _Batch()
        return _Batch(modlog_rows=await self.modlog.prune(cutoff, limit=self.batch))

    async def _prune_queries(self) -> _Batch:
        now = self.queue.clock()
        return _Batch(saved_queries=await prune_saved_queries(self.queue.db, now, limit=self.batch))

    def _sessions_cutoff(self, now: datetime) -> datetime | None:
        days = self.settings.sessions_days
        return now - days * DAY if days else None

    async def _prune_sessions(self) -> _Batch:
        cutoff = self._sessions_cutoff(self.queue.clock())
        if cutoff is None:
            return _Batch()
        return _Batch(sessions=await prune_sessions(self.queue.db, cutoff, limit=self.batch))

    async def _delete_images(self, ids: Sequence[str]) -> tuple[int, int]:
        files = size = 0
        for job_id in ids:
            count, nbytes = await self.images.job_usage(job_id)
            await self.images.delete_job(job_id)
            files, size = files + count, size + nbytes
        return files, size

    @staticmethod
    async def _repeat(
        step: Callable[[], Awaitable[_Batch]], max_batches: int | None
    ) -> tuple[_Batch, bool]:
        """Run ``step`` until a batch comes back short or ``max_batches`` ran; the sum, and
        whether work may remain."""
        total = _Batch()
        ran = 0
        while max_batches is None or ran < max_batches:
            batch = await step()
            ran += 1
            total = _Batch(
                total.jobs + batch.jobs,
                total.files + batch.files,
                total.size + batch.size,
                total.ledger_lines + batch.ledger_lines,
                total.modlog_rows + batch.modlog_rows,
                total.saved_queries + batch.saved_queries,
                total.sessions + batch.sessions,
            )
            if not (batch.jobs or batch.modlog_rows or batch.saved_queries or batch.sessions):
                return total, False
        return total, True

    async def _purge_blocked(self) -> _Batch:
        ids = await self.queue.expired_blocked(limit=self.batch)
        files, size = await _purge(self.queue, self.images, ids)
        return _Batch(len(ids), files, size)

    # -- the dry run ------------------------------------------------------------------------

    async def _survey(self) -> PruneReport:
        now = self.queue.clock()
        rows_due, images_due = self._rows_due(now), self._images_due(now)

        async def work(
            session: AsyncSession,
        ) -> tuple[list[str], list[str], int, list[str]]:
            rows: list[str] = []
            lines = 0
            if rows_due is not None:
                rows = list((await session.execute(select(JOBS.c.id).where(rows_due))).scalars())
                lines = int(
                    (
                        await session.execute(
                            select(func.count()).where(
                                LEDGER.c.job_id.in_(select(JOBS.c.id).where(rows_due))
                            )
                        )
                    ).scalar_one()
                )
            images: list[str] = []
            if images_due is not None:
                stmt = select(JOBS.c.id).where(images_due)
                if rows_due is not None:
                    stmt = stmt.where(not_(rows_due))
                images = list((await session.execute(stmt)).scalars())
            blocked = list(
                (
                    await session.execute(
                        select(JOBS.c.id).where(
                            JOBS.c.status == JobStatus.BLOCKED, JOBS.c.purge_after <= now
                        )
                    )
                ).scalars()
            )
            return rows, images, lines, blocked

        rows, images, lines, blocked = await self.queue.db.read(work)
        cutoff = self._modlog_cutoff(now)
        modlog_rows = await self.modlog.count_older(cutoff) if cutoff is not None else 0
        saved_queries = await count_expired_queries(self.queue.db, now)
        sessions_cutoff = self._sessions_cutoff(now)
        sessions = (
            await count_old_sessions(self.queue.db, sessions_cutoff)
            if sessions_cutoff is not None
            else 0
        )
        files = size = 0
        for job_id in [*rows, *images, *blocked]:
            count, nbytes = await self.images.job_usage(job_id)
            files, size = files + count, size + nbytes
        return PruneReport(
            dry_run=True,
            image_jobs=len(images),
            image_files=files,
            image_bytes=size,
            jobs=len(rows),
            ledger_lines=lines,
            blocked=len(blocked),
            modlog_rows=modlog_rows,
            saved_queries=saved_queries,
            sessions=sessions,
        )


async def purge_blocked(queue: JobQueue[Any], images: FileImageStore) -> list[str]:
    """Delete the images of one batch of blocked jobs whose appeal period is over; their ids."""
    ids = await queue.expired_blocked(limit=PURGE_BATCH)
    await _purge(queue, images, ids)
    return ids


async def _purge(
    queue: JobQueue[Any], images: FileImageStore, ids: Sequence[str]
) -> tuple[int, int]:
    """Delete blocked jobs' images: the files first and then the record, so a crash in between
    only repeats a harmless delete. The files and bytes deleted."""
    files = size = 0
    for job_id in ids:
        count, nbytes = await images.job_usage(job_id)
        await images.delete_job(job_id)
        await queue.forget_images(job_id)
        log.info("deleted %d image(s) of blocked job %s: its appeal period is over", count, job_id)
        files, size = files + count, size + nbytes
    return files, size


class RetentionLoop:
    """``retention.prune`` now and then every ``interval`` seconds, until ``stop``; sooner
    while a backlog remains."""

    def __init__(self, retention: Retention, interval: float = PURGE_INTERVAL_SECONDS) -> None:
        self.retention = retention
        self.interval = interval
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            wait = self.interval
            try:
                report = await self.retention.prune(max_batches=PASS_BATCHES)
                if report.more:
                    wait = min(self.interval, BACKLOG_PAUSE_SECONDS)
            except Exception:
                log.exception("retention failed; will try again")
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancel (see the publisher).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()
