"""Retention: old images and rows are deleted, nothing held is touched, the ledger stays right."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import RetentionSettings
from storage import FileImageStore, JobKind, JobStatus, audit
from storage.models import DELIVERIES, JOB_COPIES, JOBS, LEDGER
from storage.retention import Retention, RetentionLoop
from storage.types import PruneReport
from tests.storage.dbfixtures import (
    Services,
    make_services,
    new_job,
    owner,
    queue_settings,
    quota_settings,
)

DAY = 86_400.0


@pytest.fixture
async def s(db_url: str) -> AsyncIterator[Services]:
    built = await make_services(
        db_url,
        queue=queue_settings(max_queued_per_user=100, max_running_per_user=10),
        quota=quota_settings(window_seconds=DAY),
    )
    try:
        yield built
    finally:
        await built.db.dispose()


@pytest.fixture
def images(tmp_path: Path) -> FileImageStore:
    return FileImageStore(tmp_path / "images")


def retention(
    s: Services, images: FileImageStore, *, images_days: float = 30, rows_days: float = 180
) -> Retention:
    settings = RetentionSettings(images_days=images_days, rows_days=rows_days)
    return Retention(s.queue, images, settings)


async def finished(
    s: Services,
    images: FileImageStore,
    *,
    parent: str | None = None,
    deliver: bool = True,
    gpu_seconds: float = 2.0,
) -> str:
    """A succeeded job with two images (10 and 20 bytes), posted unless ``deliver`` is off."""
    kind = JobKind.UPSCALE if parent else JobKind.IMAGINE
    view = await s.queue.enqueue(owner(), new_job(kind, parent_id=parent))
    claimed = await s.queue.claim_next("w")
    assert claimed is not None and claimed.id == view.id
    refs = [
        await images.put(view.id, "0.png", b"x" * 10),
        await images.put(view.id, "grid.png", b"y" * 20),
    ]
    await s.queue.complete(view.id, claimed.lease_token, result_refs=refs, gpu_seconds=gpu_seconds)
    if deliver:
        assert await s.deliveries.claim(view.id)
        assert await s.deliveries.mark_posted(view.id, 1)
    return view.id


async def ledger_lines(s: Services, job_id: str | None = None) -> int:
    async def work(session: AsyncSession) -> int:
        stmt = select(LEDGER.c.id)
        if job_id is not None:
            stmt = stmt.where(LEDGER.c.job_id == job_id)
        return len((await session.execute(stmt)).all())

    return await s.db.read(work)


async def test_images_expire_after_images_days_and_the_row_stays(
    s: Services, images: FileImageStore
) -> None:
    job = await finished(s, images)
    keeper = retention(s, images)
    s.clock.advance(30 * DAY - 1)
    assert await keeper.prune() == PruneReport(dry_run=False)
    assert await images.exists(f"{job}/grid.png")

    s.clock.advance(1)
    assert await keeper.prune(dry_run=True) == PruneReport(
        dry_run=True, image_jobs=1, image_files=2, image_bytes=30
    )
    assert await images.exists(f"{job}/grid.png"), "a dry run deletes nothing"
    report = await keeper.prune()
    assert report == PruneReport(dry_run=False, image_jobs=1, image_files=2, image_bytes=30)
    assert not await images.exists(f"{job}/grid.png")
    view = await s.queue.require(job)
    assert view.status is JobStatus.SUCCEEDED
    assert view.result_refs == () and view.preview_ref is None
    assert view.pruned_at == s.clock()
    assert await ledger_lines(s, job) == 3, "reserve, charge, release stay with the row"
    assert await keeper.prune() == PruneReport(dry_run=False), "done once"
    assert (await audit(s.db)).ok


async def test_rows_expire_with_their_ledger_lines_and_usage_is_unchanged(
    s: Services, images: FileImageStore
) -> None:
    parent = await finished(s, images, gpu_seconds=3.0)
    await s.deliveries.add_copy(parent, 9, 99)
    child = await finished(s, images, parent=parent)
    s.clock.advance(180 * DAY - 3600)
    recent = await finished(s, images, gpu_seconds=5.0)  # inside the quota window
    keeper = retention(s, images)
    usage = (await s.quota.readout(1)).used
    assert usage == 5.0

    s.clock.advance(3600)
    planned = await keeper.prune(dry_run=True)
    report = await keeper.prune()
    assert planned == PruneReport(
        dry_run=True, image_jobs=0, image_files=4, image_bytes=60, jobs=2, ledger_lines=6
    )
    assert report == PruneReport(
        dry_run=False, image_jobs=0, image_files=4, image_bytes=60, jobs=2, ledger_lines=6
    )
    assert await s.queue.get(parent) is None and await s.queue.get(child) is None
    assert not await images.exists(f"{parent}/grid.png")
    assert await ledger_lines(s) == 3 and await ledger_lines(s, recent) == 3
    assert await s.deliveries.copies(parent) == []

    async def orphans(session: AsyncSession) -> list[object]:
        deliveries = await session.execute(
            select(DELIVERIES.c.job_id).where(DELIVERIES.c.job_id.in_([parent, child]))
        )
        copies = await session.execute(select(JOB_COPIES.c.id))
        return [*deliveries.all(), *copies.all()]

    assert await s.db.read(orphans) == []
    assert (await s.quota.readout(1)).used == usage
    assert (await audit(s.db)).ok


async def test_a_follow_up_outliving_its_parent_forgets_it(
    s: Services, images: FileImageStore
) -> None:
    parent = await finished(s, images)
    s.clock.advance(100 * DAY)
    child = await finished(s, images, parent=parent)
    s.clock.advance(80 * DAY)
    report = await retention(s, images).prune()
    assert report.jobs == 1 and report.image_jobs == 1  # the parent's row; the child's images
    view = await s.queue.require(child)
    assert view.parent_id is None and view.pruned_at is not None
    assert (await audit(s.db)).ok


async def test_nothing_held_is_touched(s: Services, images: FileImageStore) -> None:
    undelivered = await finished(s, images, deliver=False)
    given_up = await finished(s, images, deliver=False)
    taken_down = await finished(s, images)
    await s.queue.block(taken_down, "gore", keep_images=timedelta(days=400))
    source = await finished(s, images)
    running = (await s.queue.enqueue(owner(), new_job())).id
    assert (await s.queue.claim_next("w")) is not None
    waiting = (await s.queue.enqueue(owner(), new_job(JobKind.UPSCALE, parent_id=source))).id

    async def give_up(session: AsyncSession) -> None:
        await session.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.job_id == given_up)
            .values(given_up_at=s.clock(), give_up_reason="channel gone")
        )

    await s.db.write(give_up)
    s.clock.advance(365 * DAY)
    report = await retention(s, images).prune()
    assert report.jobs == 1  # only the job whose delivery was given up
    assert await s.queue.get(given_up) is None
    for job in (undelivered, taken_down, source, running, waiting):
        view = await s.queue.require(job)
        assert view.pruned_at is None, job
    for job in (undelivered, taken_down, source):
        assert await images.exists(f"{job}/grid.png"), job
    assert (await audit(s.db)).ok


async def test_a_row_waits_until_its_ledger_lines_leave_the_quota_window(
    db_url: str, tmp_path: Path
) -> None:
    s = await make_services(db_url, quota=quota_settings(window_seconds=10 * DAY))
    try:
        images = FileImageStore(tmp_path / "images")
        job = await finished(s, images, gpu_seconds=4.0)
        other = await finished(s, images, gpu_seconds=1.0)
        await s.queue.block(other, "spam")  # credited back: its charge nets to nothing
        assert await s.deliveries.claim(other)  # the message is edited to say it was removed
        assert await s.deliveries.mark_posted(other)
        keeper = retention(s, images, images_days=1, rows_days=2)
        s.clock.advance(3 * DAY)
        used = (await s.quota.readout(1)).used
        assert used == 4.0
        report = await keeper.prune()
        assert report.jobs == 0 and report.image_jobs == 1 and report.blocked == 1
        assert (await s.quota.readout(1)).used == used
        assert (await audit(s.db)).ok

        s.clock.advance(7 * DAY)  # both charges leave the window
        report = await keeper.prune()
        assert (report.jobs, report.ledger_lines) == (2, 7)
        assert await s.queue.get(job) is None and await s.queue.get(other) is None
        assert (await s.quota.readout(1)).used == 0.0
        assert (await audit(s.db)).ok
    finally:
        await s.db.dispose()


async def test_zero_days_keeps_everything(s: Services, images: FileImageStore) -> None:
    job = await finished(s, images)
    s.clock.advance(10_000 * DAY)
    keeper = retention(s, images, images_days=0, rows_days=0)
    assert await keeper.prune(dry_run=True) == PruneReport(dry_run=True)
    assert await keeper.prune() == PruneReport(dry_run=False)
    assert (await s.queue.require(job)).result_refs != ()


async def test_rows_only_still_delete_the_images(s: Services, images: FileImageStore) -> None:
    job = await finished(s, images)
    s.clock.advance(2 * DAY)
    report = await retention(s, images, images_days=0, rows_days=1).prune()
    assert (report.jobs, report.image_jobs, report.image_files) == (1, 0, 2)
    assert not await images.exists(f"{job}/grid.png")


async def test_work_goes_in_bounded_batches(s: Services, images: FileImageStore) -> None:
    jobs = [await finished(s, images) for _ in range(5)]
    s.clock.advance(31 * DAY)
    keeper = Retention(s.queue, images, RetentionSettings(), batch=2)
    first = await keeper.prune(max_batches=1)
    assert (first.image_jobs, first.more) == (2, True)
    rest = await keeper.prune()
    assert (rest.image_jobs, rest.more) == (3, False)

    async def pruned(session: AsyncSession) -> list[str]:
        rows = await session.execute(select(JOBS.c.id).where(JOBS.c.pruned_at.is_not(None)))
        return sorted(rows.scalars())

    assert await s.db.read(pruned) == sorted(jobs)


async def test_the_bots_loop_prunes_in_bounded_passes(
    s: Services, images: FileImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await finished(s, images)
    s.clock.advance(31 * DAY)
    keeper = retention(s, images)
    loop = RetentionLoop(keeper)
    calls: list[tuple[PruneReport, object]] = []
    prune = keeper.prune

    async def one_pass(*, dry_run: bool = False, max_batches: int | None = None) -> PruneReport:
        report = await prune(dry_run=dry_run, max_batches=max_batches)
        calls.append((report, max_batches))
        loop.stop()
        return report

    monkeypatch.setattr(keeper, "prune", one_pass)
    await loop.run()  # one pass, then the stop ends the wait at once
    assert [(report.image_jobs, bound) for report, bound in calls] == [(1, 10)]
