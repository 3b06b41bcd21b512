"""The worker loop against the real job ledger (SQLite and PostgreSQL) with a fake generator.

Waits poll the database with a deadline; nothing sleeps to wait for a condition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from config.settings import QueueSettings
from generation.errors import OptionError
from generation.worker import Worker
from storage import (
    Database,
    FileImageStore,
    JobQueue,
    JobStatus,
    JobView,
    LeaseLost,
    QuotaService,
    audit,
)
from tests.generation.fake_generator import FakeBatchGenerator, FakeGenerator
from tests.storage import dbfixtures
from tests.storage.dbfixtures import new_job, owner, quota_settings

# The storage tests' database fixtures, one fresh database per test and backend.
sqlite_template = dbfixtures.sqlite_template
pg_template = dbfixtures.pg_template
db_url = dbfixtures.db_url

FAST = {
    "new_jobs_per_window": 0,
    "lease_seconds": 2.0,
    "heartbeat_seconds": 0.05,
    "progress_interval_seconds": 0.05,
    "reclaim_interval_seconds": 0.1,
    "poll_seconds": 0.05,
    "retry_delay_seconds": 0.0,
    "shutdown_grace_seconds": 5.0,
    "max_queued_per_user": 50,
}


@dataclass
class Rig:
    db: Database
    queue: JobQueue
    images: FileImageStore
    generator: FakeGenerator
    settings: QueueSettings

    def worker(
        self, name: str = "w1", *, in_process: bool = False, **overrides: Any
    ) -> Worker[dict[str, Any]]:
        settings = self.settings.model_copy(update=overrides)
        return Worker(
            self.queue,
            self.images,
            self.generator,
            settings,
            worker_id=name,
            lease_lost_errors=(LeaseLost,),
            in_process=in_process,
        )


@asynccontextmanager
async def rig(
    url: str, tmp_path: Path, generator: FakeGenerator | None = None, **settings: Any
) -> AsyncIterator[Rig]:
    queue_settings = QueueSettings(**{**FAST, **settings})
    db = Database(url)
    queue = JobQueue(db, queue_settings, QuotaService(db, quota_settings()))
    try:
        yield Rig(
            db,
            queue,
            FileImageStore(tmp_path / "images"),
            generator or FakeGenerator(),
            queue_settings,
        )
    finally:
        await db.dispose()


@asynccontextmanager
async def running(worker: Worker[dict[str, Any]]) -> AsyncIterator[asyncio.Task[None]]:
    """Run the worker as an owned task; stop it (gracefully) and wait for it on the way out."""
    task = asyncio.create_task(worker.run(), name=worker.worker_id)
    try:
        yield task
    finally:
        worker.stop()
        worker.stop()  # second stop: release at once, do not wait out the grace period
        await asyncio.wait_for(task, timeout=30)


async def until(
    check: Callable[[], Awaitable[bool]], *, within: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds; fail after ``within`` seconds (a deadline, not a delay)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def status_is(queue: JobQueue, job_id: str, *statuses: str) -> bool:
    view = await queue.get(job_id)
    return view is not None and view.status in statuses


async def test_jobs_run_end_to_end(db_url: str, tmp_path: Path) -> None:
    async with rig(db_url, tmp_path, FakeGenerator(gpu_seconds=0.25)) as r:
        ids = [(await r.queue.enqueue(owner(u), new_job(prompt=f"p{u}"))).id for u in (1, 2, 3)]
        worker = r.worker()
        async with running(worker):
            for job_id in ids:
                await until(partial(status_is, r.queue, job_id, "succeeded"), what=job_id)
        view = await r.queue.require(ids[0])
        assert [ref.split("/")[1] for ref in view.result_refs] == [
            "a1-0.png",
            "a1-1.png",
            "a1-2.png",
            "a1-3.png",
            "a1-grid.png",
        ]
        grid = await r.images.get(view.result_refs[-1])
        assert grid.startswith(b"\x89PNG")
        assert view.gpu_seconds == 0.25 and view.charged == 0.25 and view.worker_id == "w1"
        assert worker.stats.succeeded == 3 and worker.stats.failed == 0
        assert (await audit(r.db)).ok


async def test_enqueue_in_process_wakes_an_idle_worker(db_url: str, tmp_path: Path) -> None:
    async with rig(db_url, tmp_path, poll_seconds=60.0) as r:
        worker = r.worker()
        r.queue.on_new_work = worker.notify
        async with running(worker):
            # Let the worker find the queue empty and go to sleep for its (long) poll.

            async def idle() -> bool:
                return worker.stats.idle_waits > 0

            await until(idle, what="an idle worker")
            job = await r.queue.enqueue(owner(), new_job())
            await until(lambda: status_is(r.queue, job.id, "succeeded"), within=20, what="wake")


async def test_progress_is_recorded_with_a_preview(db_url: str, tmp_path: Path) -> None:
    generator = FakeGenerator(hang={"slow"})
    async with rig(db_url, tmp_path, generator) as r:
        job = await r.queue.enqueue(owner(), new_job(prompt="slow"))
        async with running(r.worker()):

            async def has_progress() -> bool:
                view = await r.queue.require(job.id)
                return view.progress_step is not None

            await until(has_progress, what="progress")
            view = await r.queue.require(job.id)
            assert view.progress_total == 3 and view.status == "running"
            generator.gate.set()
            await until(lambda: status_is(r.queue, job.id, "succeeded"), what="finish")
        view = await r.queue.require(job.id)
        assert view.preview_ref == f"{job.id}/a1-preview.png"
        assert (await r.images.get(view.preview_ref)).startswith(b"\x89PNG")


async def test_cancel_of_a_running_job_stops_it(db_url: str, tmp_path: Path) -> None:
    generator = FakeGenerator(hang={"forever"})
    async with rig(db_url, tmp_path, generator) as r:
        job = await r.queue.enqueue(owner(), new_job(prompt="forever"))
        worker = r.worker()
        async with running(worker):
            await until(lambda: _started(generator, job.id), what="start")
            await r.queue.cancel(job.id)
            await until(lambda: status_is(r.queue, job.id, "cancelled"), what="cancel")
        assert worker.stats.cancelled == 1
        view = await r.queue.require(job.id)
        assert view.result_refs == ()
        # Cancelled by its owner after it started: charged the time it ran, as measured.
        assert view.gpu_seconds is not None and view.gpu_seconds > 0
        assert view.charged == view.gpu_seconds
        assert (await audit(r.db)).ok


async def _started(generator: FakeGenerator, job_id: str) -> bool:
    return job_id in generator.started


async def test_poison_job_dies_while_other_users_jobs_flow(db_url: str, tmp_path: Path) -> None:
    generator = FakeGenerator(errors={"poison": RuntimeError("driver crashed")})
    async with rig(db_url, tmp_path, generator, max_attempts=3) as r:
        poison = await r.queue.enqueue(owner(1), new_job(prompt="poison"))
        others = [
            (await r.queue.enqueue(owner(u), new_job(prompt=f"ok{u}-{i}"))).id
            for u in (2, 3)
            for i in range(4)
        ]
        worker = r.worker()
        async with running(worker):
            await until(lambda: status_is(r.queue, poison.id, "dead"), what="poison dead")
            for job_id in others:
                await until(partial(status_is, r.queue, job_id, "succeeded"), what=job_id)
        view = await r.queue.require(poison.id)
        assert view.attempts == 3 and "internal error" in (view.error or "")
        assert "RuntimeError" not in (view.error or "") and "driver" not in (view.error or "")
        assert generator.started.count(poison.id) == 3
        assert (await audit(r.db)).ok


async def test_permanent_generation_error_fails_at_once(db_url: str, tmp_path: Path) -> None:
    generator = FakeGenerator(errors={"bad": OptionError("--ar 9:1 is wider than 4:1")})
    async with rig(db_url, tmp_path, generator) as r:
        job = await r.queue.enqueue(owner(), new_job(prompt="bad"))
        async with running(r.worker()):
            await until(lambda: status_is(r.queue, job.id, "failed"), what="failed")
        view = await r.queue.require(job.id)
        assert view.attempts == 1 and "wider than 4:1" in (view.error or "")


class RejectingCodec:
    """The JSON codec, except that it cannot read requests whose prompt is ``corrupt``."""

    def encode(self, request: dict[str, Any], /) -> dict[str, Any]:
        return dict(request)

    def decode(self, data: Mapping[str, Any], /) -> dict[str, Any]:
        if data.get("prompt") == "corrupt":
            raise ValueError("not a request this version can read")
        return dict(data)


async def test_a_job_whose_request_cannot_be_decoded_never_reaches_the_generator(
    db_url: str, tmp_path: Path
) -> None:
    async with rig(db_url, tmp_path) as r:
        bad = (await r.queue.enqueue(owner(1), new_job(prompt="corrupt"))).id
        good = (await r.queue.enqueue(owner(2), new_job(prompt="fine"))).id
        strict = JobQueue(
            r.db, r.settings, QuotaService(r.db, quota_settings()), codec=RejectingCodec()
        )
        worker = Worker(
            strict,
            r.images,
            r.generator,
            r.settings,
            worker_id="w1",
            lease_lost_errors=(LeaseLost,),
        )
        async with running(worker):
            await until(lambda: status_is(r.queue, good, "succeeded"), what="the readable job")
        view = await r.queue.require(bad)
        assert view.status == "failed" and "cannot be read" in (view.error or "")
        assert r.generator.started == [good]
        assert (await audit(r.db)).ok


async def test_stop_releases_a_job_that_outlives_the_grace_period(
    db_url: str, tmp_path: Path
) -> None:
    generator = FakeGenerator(hang={"long"})
    async with rig(db_url, tmp_path, generator, shutdown_grace_seconds=0.2) as r:
        job = await r.queue.enqueue(owner(), new_job(prompt="long"))
        worker = r.worker()
        task = asyncio.create_task(worker.run())
        await until(lambda: _started(generator, job.id), what="start")
        worker.stop()  # SIGTERM
        await asyncio.wait_for(task, timeout=30)
        view = await r.queue.require(job.id)
        assert view.status == "queued" and view.attempts == 0 and worker.stats.released == 1
        # Another worker takes it at once.
        generator.gate.set()
        async with running(r.worker("w2")):
            await until(lambda: status_is(r.queue, job.id, "succeeded"), what="rerun")
        assert (await r.queue.require(job.id)).worker_id == "w2"


async def test_stop_lets_a_job_finish_within_the_grace_period(db_url: str, tmp_path: Path) -> None:
    generator = FakeGenerator(hang={"short"})
    async with rig(db_url, tmp_path, generator, shutdown_grace_seconds=60) as r:
        job = await r.queue.enqueue(owner(), new_job(prompt="short"))
        worker = r.worker()
        task = asyncio.create_task(worker.run())
        await until(lambda: _started(generator, job.id), what="start")
        worker.stop()
        assert not task.done()
        generator.gate.set()  # the job finishes inside the grace period
        await asyncio.wait_for(task, timeout=30)
        assert (await r.queue.require(job.id)).status == "succeeded"


async def test_a_blocked_job_loses_its_lease_and_its_result_is_dropped(
    db_url: str, tmp_path: Path
) -> None:
    generator = FakeGenerator(hang={"nsfw"})
    async with rig(db_url, tmp_path, generator) as r:
        job = await r.queue.enqueue(owner(), new_job(prompt="nsfw"))
        worker = r.worker()
        async with running(worker):
            await until(lambda: _started(generator, job.id), what="start")
            await r.queue.block(job.id, "moderation")

            async def lost() -> bool:
                return worker.stats.lost == 1

            await until(lost, what="lease loss noticed")
        view = await r.queue.require(job.id)
        assert view.status == "blocked" and view.result_refs == ()


async def test_a_dead_workers_job_is_reclaimed_and_run(db_url: str, tmp_path: Path) -> None:
    async with rig(db_url, tmp_path, lease_seconds=0.3) as r:
        job = await r.queue.enqueue(owner(), new_job())
        ghost = await r.queue.claim_next("ghost")  # a worker that dies right after claiming
        assert ghost is not None and ghost.id == job.id
        worker = r.worker(lease_seconds=0.3)
        async with running(worker):
            await until(lambda: status_is(r.queue, job.id, "succeeded"), what="reclaim")
        view = await r.queue.require(job.id)
        assert view.attempts == 2 and view.worker_id == "w1" and worker.stats.reclaimed >= 1
        with pytest.raises(LeaseLost):
            await r.queue.complete(job.id, ghost.lease_token, result_refs=[], gpu_seconds=0)


async def test_batching_hands_compatible_jobs_over_in_one_call(db_url: str, tmp_path: Path) -> None:
    generator = FakeBatchGenerator()
    async with rig(db_url, tmp_path, generator, batching=True, max_batch=4) as r:
        same = [
            (
                await r.queue.enqueue(owner(u), new_job(batch_key="sdxl|fast|1024", prompt=f"p{u}"))
            ).id
            for u in (1, 2, 3, 4, 5)
        ]
        odd = (await r.queue.enqueue(owner(6), new_job(batch_key="", prompt="alone"))).id
        async with running(r.worker()):
            for job_id in [*same, odd]:
                await until(partial(status_is, r.queue, job_id, "succeeded"), what=job_id)
        assert generator.batches == [same[:4]]  # the fifth and the odd one ran alone
        assert set(generator.started) == {*same, odd}


async def test_many_jobs_across_two_workers_finish_exactly_once(
    db_url: str, tmp_path: Path
) -> None:
    async with rig(db_url, tmp_path, FakeGenerator(gpu_seconds=0.5)) as r:
        views: list[JobView] = []
        for u in range(1, 6):
            views += await r.queue.enqueue_many(owner(u), [new_job() for _ in range(6)])
        workers = [r.worker("w1"), r.worker("w2")]
        async with running(workers[0]), running(workers[1]):

            async def all_done() -> bool:
                stats = await r.queue.stats()
                return stats.counts.get(JobStatus.SUCCEEDED, 0) == len(views)

            await until(all_done, what="all jobs")
        assert sum(w.stats.succeeded for w in workers) == len(views)
        report = await audit(r.db)
        assert report.ok and report.charged == 0.5 * len(views)


# -- the watchdog ---------------------------------------------------------------------------------

#: Time limits for the watchdog tests: a job reserving ``cost`` seconds may run 20 x ``cost``
#: seconds, at least 0.1 s, and gets 0.1 s to stop when told. Jobs that must finish reserve
#: enough (``ROOMY``) that their limit is never what decides a test.
WATCHDOG: dict[str, Any] = {
    "job_time_limit_floor_seconds": 0.1,
    "job_time_limit_factor": 20.0,
    "job_stop_grace_seconds": 0.1,
}
TIGHT, ROOMY = 0.01, 60.0


async def test_a_job_past_its_time_limit_is_stopped_retried_then_dead_and_refunded(
    db_url: str, tmp_path: Path
) -> None:
    generator = FakeGenerator(hang={"slow"})  # stops when told, so the worker stays healthy
    async with rig(db_url, tmp_path, generator, max_attempts=2, **WATCHDOG) as r:
        slow = await r.queue.enqueue(owner(1), new_job(prompt="slow", cost=TIGHT))
        fine = await r.queue.enqueue(owner(2), new_job(prompt="fine", cost=ROOMY))
        worker = r.worker()
        async with running(worker):
            await until(lambda: status_is(r.queue, slow.id, "dead"), what="slow job dead")
            await until(lambda: status_is(r.queue, fine.id, "succeeded"), what="other job")
            assert worker.hang is None and not worker.stopping
        view = await r.queue.require(slow.id)
        assert view.attempts == 2 and view.error == "it ran longer than its time limit of 0.2 s"
        assert view.charged is None and worker.stats.timed_out == 2
        assert generator.started.count(slow.id) == 2 and generator.abandoned == 0
        assert (await audit(r.db)).ok


async def test_the_time_limit_is_the_reservation_times_the_factor_with_a_floor(
    db_url: str, tmp_path: Path
) -> None:
    async with rig(db_url, tmp_path, **{**WATCHDOG, "job_time_limit_floor_seconds": 0.5}) as r:
        small = await r.queue.enqueue(owner(1), new_job(cost=TIGHT))
        large = await r.queue.enqueue(owner(2), new_job(cost=3.0))
        worker = r.worker()
        claimed = [await r.queue.claim_next("w1"), await r.queue.claim_next("w1")]
        by_id = {job.id: job for job in claimed if job is not None}
        assert by_id[small.id].reserved == TIGHT and by_id[large.id].reserved == 3.0
        assert worker.time_limit([by_id[small.id]]) == 0.5  # the floor
        assert worker.time_limit([by_id[large.id]]) == 60.0
        assert worker.time_limit(list(by_id.values())) == pytest.approx(60.2)  # a batch: the sum


async def test_a_hung_standalone_worker_fails_its_job_and_stops(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    generator = FakeGenerator(stuck={"wedge"})
    async with rig(db_url, tmp_path, generator, **WATCHDOG) as r:
        # One owner's jobs run in order: the stuck one first.
        job = await r.queue.enqueue(owner(1), new_job(prompt="wedge", cost=TIGHT))
        later = await r.queue.enqueue(owner(1), new_job(prompt="later", cost=ROOMY))
        worker = r.worker()
        try:
            # run() returns by itself: `atelier worker` then exits with status 3.
            await asyncio.wait_for(worker.run(), timeout=30)
            assert worker.hang is not None and worker.hang.job_ids == (job.id,)
            assert worker.stopping and generator.abandoned == 1
            view = await r.queue.require(job.id)
            assert view.status == "queued" and view.attempts == 1  # retryable, for another worker
            assert view.error == "it ran longer than its time limit of 0.2 s"
            assert (await r.queue.require(later.id)).status == "queued"  # nothing more claimed
            assert "process exits with status 3" in caplog.text
            assert any(rec.levelname == "ERROR" and "hung" in rec.message for rec in caplog.records)
        finally:
            generator.unstick.set()
        # A fresh worker (what the supervisor's restart gives) runs both, with room to finish.
        async with running(r.worker("w2", job_time_limit_floor_seconds=60.0)):
            for job_id in (job.id, later.id):
                await until(partial(status_is, r.queue, job_id, "succeeded"), what=job_id)
        assert (await audit(r.db)).ok


async def test_a_hung_in_process_worker_stops_claiming_and_the_job_ends_refunded(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    generator = FakeGenerator(stuck={"wedge"})
    async with rig(db_url, tmp_path, generator, max_attempts=1, **WATCHDOG) as r:
        job = await r.queue.enqueue(owner(1), new_job(prompt="wedge", cost=TIGHT))
        worker = r.worker(in_process=True)
        try:
            await asyncio.wait_for(worker.run(), timeout=30)
        finally:
            generator.unstick.set()
        assert worker.hang is not None and worker.hang.job_ids == (job.id,)
        assert generator.abandoned == 1
        view = await r.queue.require(job.id)
        assert view.status == "dead" and view.charged is None
        assert "time limit" in (view.error or "")
        assert "Restart `atelier run`" in caplog.text and worker.stopping
        assert (await audit(r.db)).ok
