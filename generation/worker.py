"""The worker loop: claim jobs, run them on a generator, store their images, report back.

It depends only on the small protocols below. The job ledger (``storage.JobQueue``) satisfies
``JobSource`` and the image store (``storage.FileImageStore``) ``ImageSink`` structurally; the
``atelier`` command wires them, so this module never imports storage (nor torch: the generator
adapter does). The loop is generic in the request type: jobs come from the source already
decoded (a ``GenerationRequest`` in production) and go to the generator as they are. A worker
host needs the database and the image store, never the Discord token.

One job (or one batch) at a time:

- wait for "new work, or ``poll_seconds``, or stop" (``notify()`` is the in-process nudge);
- claim; while the generator runs, an owned keeper task heartbeats the lease, writes progress at
  most every ``progress_interval_seconds`` and relays a user's cancel to the generator, which
  stops within one step;
- store the images (names carry the attempt number, so a late attempt never overwrites another's
  files) and complete; an error fails the attempt, retryable ones (and unknown ones, so a job
  that keeps crashing ends) until ``max_attempts``, then the job is dead;
- a reclaim task puts jobs of dead workers back in the queue every ``reclaim_interval_seconds``;
- on SIGTERM (``stop()``) the current job gets ``shutdown_grace_seconds`` to finish, else it is
  released at once for another worker. A second SIGTERM releases at once.

The watchdog: a job (or batch) may run ``time_limit(jobs)`` seconds, its reservation times
``job_time_limit_factor`` and never less than ``job_time_limit_floor_seconds``. Past it the
generator is told to stop; the attempt fails as retryable (``JobTimedOutError``, refunded if it
never finishes). A generator that does not stop within ``job_stop_grace_seconds`` is hung: a
thread stuck in a driver call (a hung CUDA kernel) cannot be interrupted. The worker then fails
the job all the same, tells the generator to abandon the stuck call (``Abandonable``: never wait
for that thread again), records ``hang`` and stops claiming. A standalone worker then returns from
``run()`` for its process to exit non-zero (its supervisor restarts it); one in the bot's process
(``in_process``) stops while the bot keeps running, and ``/queue`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from config.settings import QueueSettings
from generation.errors import GenerationError, JobCancelledError, JobTimedOutError
from generation.verdict import Scores

log = logging.getLogger(__name__)

#: The decoded request a job carries (GenerationRequest in production).
RequestT = TypeVar("RequestT")
RequestT_co = TypeVar("RequestT_co", covariant=True)
RequestT_contra = TypeVar("RequestT_contra", contravariant=True)

# -- what the worker needs from the outside ----------------------------------------------------


def public_error(error: BaseException) -> str:
    """What a failed job's public message may say about ``error``.

    A GenerationError's message is written for users. Anything else may name files, hosts or
    internals: the message gets a plain reason and a reference, and the log has the details under
    the same reference."""
    if isinstance(error, GenerationError):
        return str(error)
    ref = secrets.token_hex(4)
    log.error("unexpected error in a job [ref %s]", ref, exc_info=error)
    return f"an internal error stopped this job (ref {ref})"


class ClaimedJobLike(Protocol[RequestT_co]):
    """A job the worker holds a lease on, its request already decoded by the source."""

    @property
    def id(self) -> str: ...
    @property
    def lease_token(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def batch_key(self) -> str: ...
    @property
    def request(self) -> RequestT_co: ...
    @property
    def attempts(self) -> int: ...
    @property
    def reserved(self) -> float:
        """GPU-seconds reserved for the job; its time limit derives from this."""
        ...


class LeaseReply(Protocol):
    """What a heartbeat or a progress write answers."""

    @property
    def cancel_requested(self) -> bool: ...


class JobSource(Protocol[RequestT_co]):
    """The job ledger as the worker sees it. Calls by a worker that lost its lease raise one of
    the exception types given to ``Worker`` as ``lease_lost_errors``. A job whose request
    cannot be decoded is the source's to deal with: it never hands one out."""

    async def claim_next(self, worker_id: str) -> ClaimedJobLike[RequestT_co] | None: ...

    async def claim_batch(
        self, worker_id: str, max_batch: int | None = None
    ) -> Sequence[ClaimedJobLike[RequestT_co]]: ...

    async def heartbeat(self, job_id: str, lease_token: str) -> LeaseReply: ...

    async def update_progress(
        self,
        job_id: str,
        lease_token: str,
        *,
        step: int,
        total: int,
        preview_ref: str | None = None,
    ) -> LeaseReply: ...

    async def complete(
        self,
        job_id: str,
        lease_token: str,
        *,
        result_refs: Sequence[str],
        gpu_seconds: float,
        scores: Sequence[Mapping[str, float]] | None = None,
        flagged: Mapping[str, Any] | None = None,
    ) -> object:
        """``scores``: the output classifier's, per image; ``flagged``: what its verdict
        crossed (the source holds the result for review, or blocks it where nobody can)."""
        ...

    async def fail(
        self,
        job_id: str,
        lease_token: str,
        *,
        error: str,
        retryable: bool,
        gpu_seconds: float = 0.0,
    ) -> object:
        """``gpu_seconds``: what the job used before it stopped, charged only when its owner
        cancelled it (any other failure is refunded)."""
        ...

    async def release(self, job_id: str, lease_token: str) -> object: ...

    async def reclaim_expired(self) -> Sequence[str]: ...


class ImageSink(Protocol):
    """Where the worker puts encoded images; returns refs the ledger records."""

    async def put(self, job_id: str, name: str, data: bytes) -> str: ...

    async def get(self, ref: str) -> bytes: ...


@dataclass(frozen=True)
class OutputImage:
    """One encoded image of a result, e.g. ``0.png``..``3.png`` and ``grid.png``."""

    name: str
    data: bytes


@dataclass(frozen=True)
class WorkResult:
    """What a generator returns for one job: its encoded images and the GPU-seconds it used.

    By convention the image to post comes last (the grid, or the single image)."""

    images: tuple[OutputImage, ...]
    gpu_seconds: float
    #: The output classifier's scores (label -> probability) of each generated image, in the
    #: order of ``images``' individual images (the grid is not scored apart); None when no
    #: classifier is configured. The worker's judge turns them into a verdict (``Judge``).
    scores: tuple[Scores, ...] | None = None


#: What a finished job's classifier scores mean where it was asked: the verdict's details
#: (labels crossed, highest score, flagged images) when it is flagged, else None. The
#: composition root builds it from the settings' thresholds (``generation.verdict``).
Judge = Callable[["ClaimedJobLike[Any]", WorkResult], Mapping[str, Any] | None]


class JobControl:
    """The generator's handle on one running job: cancellation and progress.

    Thread-safe for the generator: it may run in its own thread and call ``report_progress``
    and read ``cancelled`` there; the worker only reads progress and cancels from the loop.
    """

    def __init__(self, job: ClaimedJobLike[object]) -> None:
        self.job = job
        self._cancelled = threading.Event()
        self._cancelled_async = asyncio.Event()
        self._lock = threading.Lock()
        self._progress: tuple[int, int, bytes | None] | None = None
        self._progress_seq = 0
        self.reason: str | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise JobCancelledError if the job should stop (call once per step)."""
        if self._cancelled.is_set():
            raise JobCancelledError(f"job {self.job.id} stopped: {self.reason}")

    async def wait_cancelled(self) -> None:
        """For generators running on the event loop: returns when the job should stop."""
        await self._cancelled_async.wait()

    def report_progress(self, step: int, total: int, preview: bytes | None = None) -> None:
        """Record the latest step (and an encoded preview image); cheap, call every step."""
        with self._lock:
            keep = preview if preview is not None else (self._progress or (0, 0, None))[2]
            self._progress = (step, total, keep)
            self._progress_seq += 1

    def cancel(self, reason: str) -> None:
        """Ask the generator to stop (called on the worker's loop)."""
        if not self._cancelled.is_set():
            self.reason = reason
            self._cancelled.set()
            self._cancelled_async.set()

    def take_progress(self, seen: int) -> tuple[int, tuple[int, int, bytes | None] | None]:
        with self._lock:
            if self._progress_seq == seen:
                return seen, None
            return self._progress_seq, self._progress


class Generator(Protocol[RequestT_contra]):
    """Runs one job. Raise ``JobCancelledError`` when ``control`` says stop; a
    ``GenerationError`` says by its ``retryable`` whether another attempt may succeed."""

    async def run(
        self, job: ClaimedJobLike[RequestT_contra], control: JobControl
    ) -> WorkResult: ...


@runtime_checkable
class BatchGenerator(Protocol[RequestT_contra]):
    """A generator that can run compatible jobs (equal batch keys) in one call."""

    async def run(
        self, job: ClaimedJobLike[RequestT_contra], control: JobControl
    ) -> WorkResult: ...

    async def run_batch(
        self, jobs: Sequence[ClaimedJobLike[RequestT_contra]], controls: Sequence[JobControl]
    ) -> Sequence[WorkResult]: ...


@runtime_checkable
class Abandonable(Protocol):
    """A generator that can give up a call stuck where it cannot be interrupted."""

    def abandon(self) -> None:
        """The current call is hung: never wait for the thread it runs on again (shutdown
        included), and take no more work on it."""
        ...


# -- the loop -------------------------------------------------------------------------------------

SHUTDOWN = "worker shutting down"
LEASE_LOST = "lease lost"
CANCEL_REQUESTED = "cancel requested"
TIMED_OUT = "time limit reached"


class _Ending(enum.Enum):
    """How supervising a running job ended."""

    FINISHED = "finished"
    RELEASE = "release"  # stopping, and the grace period is over
    TIMED_OUT = "timed out"


@dataclass(frozen=True)
class Hang:
    """A job whose generator did not stop after its time limit: the worker stopped for good."""

    job_ids: tuple[str, ...]
    limit_seconds: float
    #: Wall-clock time (``time.time()``) when the worker gave up on it.
    at: float


def default_worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(2)}"


@dataclass
class WorkerStats:
    """What one worker did since it started (for logs and tests)."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    released: int = 0
    lost: int = 0
    reclaimed: int = 0
    idle_waits: int = 0
    timed_out: int = 0
    batches: list[int] = field(default_factory=list)


class Worker(Generic[RequestT]):
    """Claims and runs jobs until stopped. See the module docstring for the life of a job.

    ``in_process``: the worker runs inside the bot (``atelier run``), so a hang stops only the
    worker, never the process; otherwise the process is expected to exit after a hang."""

    def __init__(
        self,
        source: JobSource[RequestT],
        images: ImageSink,
        generator: Generator[RequestT],
        settings: QueueSettings,
        *,
        worker_id: str | None = None,
        lease_lost_errors: tuple[type[BaseException], ...] = (),
        in_process: bool = False,
        judge: Judge | None = None,
    ) -> None:
        self.source = source
        self.judge = judge
        self.images = images
        self.generator = generator
        self.settings = settings
        self.worker_id = worker_id or default_worker_id()
        self.lease_lost_errors = lease_lost_errors
        self.in_process = in_process
        self.stats = WorkerStats()
        #: Set when a job hung: the worker has stopped and will claim nothing more.
        self.hang: Hang | None = None
        # Generator tasks that ignored cancellation after a hang: kept, never awaited.
        self._stuck: list[asyncio.Task[Sequence[WorkResult]]] = []
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()

    # -- control from outside -----------------------------------------------------------------

    def notify(self) -> None:
        """New work may be claimable (called by an enqueue in this process)."""
        self._wake.set()

    def stop(self) -> None:
        """Finish (within the grace period) or release the current job, then return from run().
        Called twice, releases the current job at once."""
        if self._stopping.is_set():
            self._force.set()
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def time_limit(self, jobs: Sequence[ClaimedJobLike[object]]) -> float:
        """Seconds ``jobs`` (one call) may run: their reservations times
        ``job_time_limit_factor``, never less than ``job_time_limit_floor_seconds``."""
        reserved = sum(job.reserved for job in jobs)
        return max(
            self.settings.job_time_limit_floor_seconds,
            self.settings.job_time_limit_factor * reserved,
        )

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the worker gracefully (Unix event loops)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and run jobs until ``stop()``; reclaims expired leases alongside."""
        log.info("worker %s started", self.worker_id)
        reclaimer = asyncio.create_task(self._reclaim_loop(), name=f"reclaim:{self.worker_id}")
        try:
            while not self._stopping.is_set():
                if not await self.run_once():
                    await self._wait_for_work()
        finally:
            await _cancel_and_wait(reclaimer)
            log.info("worker %s stopped: %s", self.worker_id, self.stats)

    async def run_once(self) -> bool:
        """Claim one job (or batch) and see it through. False when there was nothing to claim."""
        try:
            if self.settings.batching and isinstance(self.generator, BatchGenerator):
                jobs = list(await self.source.claim_batch(self.worker_id, self.settings.max_batch))
            else:
                job = await self.source.claim_next(self.worker_id)
                jobs = [job] if job is not None else []
        except Exception:
            log.exception("worker %s could not claim; will retry", self.worker_id)
            return False
        if not jobs:
            return False
        self.stats.claimed += len(jobs)
        self.stats.batches.append(len(jobs))
        await self._process(jobs)
        return True

    async def _wait_for_work(self) -> None:
        self.stats.idle_waits += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.poll_seconds):
                await self._wake.wait()
        self._wake.clear()

    async def _reclaim_loop(self) -> None:
        while True:
            try:
                reclaimed = await self.source.reclaim_expired()
                self.stats.reclaimed += len(reclaimed)
                if reclaimed:
                    self._wake.set()
            except Exception:
                log.exception("worker %s: reclaiming expired leases failed", self.worker_id)
            await asyncio.sleep(self.settings.reclaim_interval_seconds)

    # -- one job or batch ---------------------------------------------------------------------

    async def _process(self, jobs: list[ClaimedJobLike[RequestT]]) -> None:
        controls = [JobControl(job) for job in jobs]
        started = time.monotonic()
        limit = self.time_limit(jobs)
        run = asyncio.create_task(self._generate(jobs, controls), name=f"generate:{jobs[0].id}")
        keeper = asyncio.create_task(self._keep_leases(jobs, controls), name=f"lease:{jobs[0].id}")
        try:
            ending = await self._supervise(run, started + limit)
            if ending is _Ending.TIMED_OUT:
                # The lease keeper still runs: the generator gets its chance to stop.
                for control in controls:
                    control.cancel(TIMED_OUT)
                await asyncio.wait({run}, timeout=self.settings.job_stop_grace_seconds)
        except asyncio.CancelledError:
            # Hard cancellation of the worker itself: hand the jobs back before going.
            await self._abandon(jobs, controls, run)
            raise
        finally:
            await _cancel_and_wait(keeper)
        if ending is _Ending.RELEASE:
            await self._abandon(jobs, controls, run)
            return
        if ending is _Ending.TIMED_OUT and not _succeeded(run):
            await self._timed_out(jobs, controls, run, limit)
            return
        error = run.exception()
        if error is None:
            await self._finish(jobs, controls, run.result())
        else:
            # A batch shares its GPU time evenly.
            ran = (time.monotonic() - started) / len(jobs)
            await self._record_failure(jobs, controls, error, ran_seconds=ran)

    async def _generate(
        self, jobs: list[ClaimedJobLike[RequestT]], controls: list[JobControl]
    ) -> Sequence[WorkResult]:
        if len(jobs) == 1:
            return [await self.generator.run(jobs[0], controls[0])]
        assert isinstance(self.generator, BatchGenerator)
        results = await self.generator.run_batch(jobs, controls)
        if len(results) != len(jobs):
            raise GenerationError(f"generator returned {len(results)} results for {len(jobs)} jobs")
        return results

    async def _supervise(self, run: asyncio.Task[Sequence[WorkResult]], deadline: float) -> _Ending:
        """Wait for the generator until it ends, or the time limit (``deadline``, monotonic)
        passes, or a stop's grace period runs out."""
        await _wait_for(run, self._stopping, deadline - time.monotonic())
        if run.done():
            return _Ending.FINISHED
        if not self._stopping.is_set():
            return _Ending.TIMED_OUT
        log.info(
            "worker %s stopping: giving job %s up to %.0f s to finish",
            self.worker_id,
            run.get_name(),
            self.settings.shutdown_grace_seconds,
        )
        grace_end = time.monotonic() + self.settings.shutdown_grace_seconds
        await _wait_for(run, self._force, min(grace_end, deadline) - time.monotonic())
        if run.done():
            return _Ending.FINISHED
        if self._force.is_set() or time.monotonic() >= grace_end:
            return _Ending.RELEASE
        return _Ending.TIMED_OUT

    async def _timed_out(
        self,
        jobs: list[ClaimedJobLike[RequestT]],
        controls: list[JobControl],
        run: asyncio.Task[Sequence[WorkResult]],
        limit: float,
    ) -> None:
        """Fail the attempt (retryable: refunded if the job never finishes). A generator that
        did not stop when told is hung: abandon it and stop claiming (see the module)."""
        self.stats.timed_out += len(jobs)
        ids = ", ".join(job.id for job in jobs)
        hung = not run.done()
        if not hung:
            log.warning("job(s) %s stopped at their time limit of %.0f s", ids, limit)
            if not run.cancelled():
                run.exception()  # the generator's own stop; the time limit is what is reported
        await self._record_failure(jobs, controls, JobTimedOutError(limit))
        if not hung:
            return
        self.hang = Hang(tuple(job.id for job in jobs), limit, time.time())
        if self.in_process:
            then = (
                "the worker inside the bot stops claiming jobs; the bot keeps running. "
                "Restart `atelier run` to get a worker back"
            )
        else:
            then = "the worker stops and its process exits with status 3 to be restarted"
        log.error(
            "worker %s: job(s) %s ran past their time limit of %.0f s and did not stop within "
            "%.0f s when told: the generator is hung and its thread cannot be interrupted. The "
            "job(s) failed (retryable, refunded if they never finish); %s",
            self.worker_id,
            ids,
            limit,
            self.settings.job_stop_grace_seconds,
            then,
        )
        if isinstance(self.generator, Abandonable):
            self.generator.abandon()
        self._stopping.set()
        self._wake.set()
        run.cancel()
        await asyncio.wait({run}, timeout=self.settings.job_stop_grace_seconds)
        if run.done():
            if not run.cancelled():
                run.exception()  # already reported as the time-out
        else:
            self._stuck.append(run)

    async def _abandon(
        self,
        jobs: list[ClaimedJobLike[RequestT]],
        controls: list[JobControl],
        run: asyncio.Task[Sequence[WorkResult]],
    ) -> None:
        """Release the jobs at once (another worker may take them), then stop the generator."""
        for control in controls:
            control.cancel(SHUTDOWN)
        for job, control in zip(jobs, controls, strict=True):
            if control.reason == LEASE_LOST:
                continue
            await self._report(job, "release", self.source.release(job.id, job.lease_token))
            self.stats.released += 1
        await _cancel_and_wait(run, errors_expected=True)

    async def _finish(
        self,
        jobs: list[ClaimedJobLike[RequestT]],
        controls: list[JobControl],
        results: Sequence[WorkResult],
    ) -> None:
        for job, control, result in zip(jobs, controls, results, strict=True):
            if control.reason == LEASE_LOST:
                self.stats.lost += 1
                log.warning("job %s finished after its lease was lost; result dropped", job.id)
                continue
            try:
                refs = [
                    await self.images.put(job.id, f"a{job.attempts}-{image.name}", image.data)
                    for image in result.images
                ]
            except Exception as exc:
                log.exception("job %s: storing its images failed", job.id)
                await self._record_failure([job], [control], exc)
                continue
            flagged = None
            if self.judge is not None and result.scores is not None:
                flagged = self.judge(job, result)
            done = await self._report(
                job,
                "complete",
                self.source.complete(
                    job.id,
                    job.lease_token,
                    result_refs=refs,
                    gpu_seconds=result.gpu_seconds,
                    scores=result.scores,
                    flagged=flagged,
                ),
            )
            if done:
                self.stats.succeeded += 1

    async def _record_failure(
        self,
        jobs: list[ClaimedJobLike[RequestT]],
        controls: list[JobControl],
        error: BaseException,
        *,
        ran_seconds: float = 0.0,
    ) -> None:
        """Tell the ledger how each job's attempt ended. A job its owner cancelled reports the
        time it ran (``ran_seconds``, its share of the batch's), which is what it is charged."""
        cancelled = isinstance(error, JobCancelledError)
        for job, control in zip(jobs, controls, strict=True):
            if control.reason == LEASE_LOST:
                self.stats.lost += 1
                continue
            if cancelled and control.reason != CANCEL_REQUESTED:
                # Stopped because a batch partner was cancelled: not this job's fault.
                await self._report(job, "release", self.source.release(job.id, job.lease_token))
                self.stats.released += 1
                continue
            if cancelled:
                text, retryable = "cancelled by request", False
                self.stats.cancelled += 1
            else:
                # Unknown errors count as retryable: max_attempts then ends a poison job.
                retryable = error.retryable if isinstance(error, GenerationError) else True
                text = public_error(error)
                self.stats.failed += 1
                log.warning(
                    "job %s attempt %d failed (shown as %r)",
                    job.id,
                    job.attempts,
                    text,
                    exc_info=error,
                )
            await self._report(
                job,
                "fail",
                self.source.fail(
                    job.id,
                    job.lease_token,
                    error=text,
                    retryable=retryable,
                    gpu_seconds=ran_seconds if cancelled else 0.0,
                ),
            )

    async def _report(
        self, job: ClaimedJobLike[object], what: str, call: Awaitable[object]
    ) -> bool:
        """Tell the ledger; a lost lease is expected after a stall, anything else is logged."""
        try:
            await call
        except self.lease_lost_errors as exc:
            self.stats.lost += 1
            log.warning("job %s: %s refused, lease lost: %s", job.id, what, exc)
            return False
        except Exception:
            log.exception(
                "job %s: %s failed; its lease will expire and it will be retried", job.id, what
            )
            return False
        return True

    # -- the lease keeper -------------------------------------------------------------------------

    async def _keep_leases(
        self, jobs: list[ClaimedJobLike[RequestT]], controls: list[JobControl]
    ) -> None:
        """Heartbeat every ``heartbeat_seconds``, write progress at most every
        ``progress_interval_seconds`` (a progress write also extends the lease), relay cancels."""
        heartbeat = self.settings.heartbeat_seconds
        interval = self.settings.progress_interval_seconds
        tick = min(heartbeat, interval)
        started = time.monotonic()
        last_ok = [started] * len(jobs)
        last_write = [started - interval] * len(jobs)
        seen = [0] * len(jobs)
        while True:
            await asyncio.sleep(tick)
            for i, (job, control) in enumerate(zip(jobs, controls, strict=True)):
                if control.reason == LEASE_LOST:
                    continue
                now = time.monotonic()
                seq, progress = (
                    control.take_progress(seen[i])
                    if now - last_write[i] >= interval
                    else (seen[i], None)
                )
                if progress is None and now - last_ok[i] < heartbeat:
                    continue
                try:
                    if progress is not None:
                        seen[i] = seq
                        reply = await self._write_progress(job, progress)
                        last_write[i] = now
                    else:
                        reply = await self.source.heartbeat(job.id, job.lease_token)
                except self.lease_lost_errors as exc:
                    log.warning("job %s: lease lost while running: %s", job.id, exc)
                    control.cancel(LEASE_LOST)
                    continue
                except Exception:
                    log.exception("job %s: heartbeat failed", job.id)
                    # Past the lease, someone else may already hold the job: stop wasting GPU.
                    if time.monotonic() - last_ok[i] > self.settings.lease_seconds:
                        control.cancel(LEASE_LOST)
                    continue
                last_ok[i] = now
                if reply.cancel_requested:
                    control.cancel(CANCEL_REQUESTED)

    async def _write_progress(
        self, job: ClaimedJobLike[object], progress: tuple[int, int, bytes | None]
    ) -> LeaseReply:
        step, total, preview = progress
        ref = None
        if preview is not None:
            ref = await self.images.put(job.id, f"a{job.attempts}-preview.png", preview)
        return await self.source.update_progress(
            job.id, job.lease_token, step=step, total=total, preview_ref=ref
        )


def _succeeded(task: asyncio.Task[Sequence[WorkResult]]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


async def _wait_for(task: asyncio.Task[object], event: asyncio.Event, seconds: float) -> None:
    """Until ``task`` ends, ``event`` is set or ``seconds`` pass, whichever is first."""
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait(
            {task, waiter}, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        await _cancel_and_wait(waiter)


async def _cancel_and_wait(task: asyncio.Task[object], *, errors_expected: bool = False) -> None:
    """Cancel an owned task and wait for it, re-raising only our own cancellation."""
    if not task.done():
        task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        level = logging.DEBUG if errors_expected else logging.ERROR
        log.log(level, "task %s ended with an error", task.get_name(), exc_info=True)
