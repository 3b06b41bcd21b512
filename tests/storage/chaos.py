"""The crash scenario: real worker processes, a stream of jobs, kill -9, freezes and restarts.

``run_chaos`` drives it and returns what its invariant checks found:

- every job reached exactly one terminal state (and none is left queued or running);
- the ledger adds up (``storage.audit``): one CHARGE for each succeeded job and none for the
  others, one REFUND for each job that did not succeed; a job completed twice shows up as two
  charges, because the charge is written in the completing transaction itself;
- total charged equals GPU-seconds per job times succeeded jobs;
- no job stayed running longer than its lease expiry plus the reclaim interval (plus scheduling
  slack on a loaded machine), checked continuously while no worker is deliberately frozen.

Randomness (which worker, when, which job) comes from one seeded RNG; moments are chosen by
progress (after the next few completions), never by sleeping for a condition.

Freezes (SIGSTOP until the frozen worker's job has been reclaimed and taken by another worker,
then SIGCONT) create the stale-lease situations that a lease check exists for: the frozen worker
wakes up believing it still holds its job. Only those can produce a double completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import QueueSettings, QuotaSettings
from storage import Database, IllegalTransition, JobQueue, NewJob, Owner, QuotaService, audit
from storage.models import JOBS, LEDGER
from storage.types import JobKind, JobStatus, LedgerKind

GPU_SECONDS = 0.5


@dataclass(frozen=True)
class ChaosConfig:
    seed: int = 20240611
    workers: int = 3
    #: Jobs in the stream. While the freezes still lack stale leases, the stream goes on past
    #: this (up to ``max_jobs``): a busy machine that ran out of jobs first would otherwise
    #: leave the scenario with fewer stale leases than it exists to make.
    jobs: int = 200
    max_jobs: int = 600
    users: int = 8
    kills: int = 20
    #: Freezes that must end with the frozen worker's job taken by another worker.
    stale_freezes: int = 4
    cancels: int = 8
    crash_jobs: int = 2
    #: One step: a frozen worker wakes with its generator done and goes straight to complete.
    steps: int = 1
    step_seconds: float = 0.06
    lease_seconds: float = 1.0
    heartbeat_seconds: float = 0.15
    reclaim_interval_seconds: float = 0.25
    max_attempts: int = 4
    unsafe: bool = False
    #: Scheduling slack for the stuck-lease check on a loaded two-core machine.
    stuck_slack_seconds: float = 3.0


@dataclass
class ChaosReport:
    violations: list[str] = field(default_factory=list)
    kills: int = 0
    freezes: int = 0
    stale: int = 0
    cancels: int = 0
    restarts: int = 0
    #: Jobs sent: ``jobs``, plus any that kept the stream going for the freezes.
    jobs: int = 0
    by_status: dict[JobStatus, int] = field(default_factory=dict)
    seconds: float = 0.0


def _context() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    # Workers fork from a server that already imported everything: a restart costs milliseconds.
    ctx.set_forkserver_preload(["tests.storage.crash_worker"])
    return ctx


class Fleet:
    """The worker processes, by slot. Slot ``i``'s n-th incarnation is worker ``c{i}-{n}``."""

    def __init__(self, cfg: ChaosConfig, url: str, workdir: Path) -> None:
        self.cfg = cfg
        self.url = url
        self.workdir = workdir
        self.ctx = _context()
        self.procs: dict[int, BaseProcess] = {}
        self.names: dict[int, str] = {}
        self.generation: dict[int, int] = {}
        self.frozen: set[int] = set()
        self.restarts = 0

    def start(self, slot: int) -> None:
        from tests.storage import crash_worker

        n = self.generation.get(slot, 0) + 1
        self.generation[slot] = n
        name = f"c{slot}-{n}"
        config: dict[str, Any] = {
            "url": self.url,
            "worker_id": name,
            "images": str(self.workdir / "images"),
            "log": str(self.workdir / f"{name}.log"),
            "state": str(self.state_file(slot)),
            "steps": self.cfg.steps,
            "unsafe": self.cfg.unsafe,
            "step_seconds": self.cfg.step_seconds,
            "gpu_seconds": GPU_SECONDS,
            "queue": {
                "lease_seconds": self.cfg.lease_seconds,
                "heartbeat_seconds": self.cfg.heartbeat_seconds,
                "progress_interval_seconds": self.cfg.heartbeat_seconds,
                "reclaim_interval_seconds": self.cfg.reclaim_interval_seconds,
                "poll_seconds": 0.05,
                "retry_delay_seconds": 0.0,
                "max_attempts": self.cfg.max_attempts,
                "max_running_per_user": 2,
                "shutdown_grace_seconds": 0.0,
                "new_jobs_per_window": 0,
            },
        }
        proc = self.ctx.Process(target=crash_worker.main, args=(config,), name=name, daemon=True)
        proc.start()
        self.procs[slot] = proc
        self.names[slot] = name

    def state_file(self, slot: int) -> Path:
        return self.workdir / f"slot{slot}.state"

    def generating(self, slot: int) -> str:
        """The job the slot's worker is generating right now ("" when none)."""
        try:
            return self.state_file(slot).read_text()
        except FileNotFoundError:
            return ""

    def slot_of(self, worker_id: str | None) -> int | None:
        for slot, name in self.names.items():
            if name == worker_id and self.procs[slot].is_alive():
                return slot
        return None

    def kill(self, slot: int) -> None:
        proc = self.procs[slot]
        if proc.pid is not None and proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)

    def signal(self, slot: int, sig: signal.Signals) -> None:
        """Signal a worker; one that has exited meanwhile (a frozen worker can still die: its
        lease expired and the kill task chose it, or it was stopped) needs nothing."""
        pid = self.procs[slot].pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def restart_dead(self) -> None:
        for slot, proc in list(self.procs.items()):
            if not proc.is_alive() and slot not in self.frozen:
                proc.join(0)
                self.start(slot)
                self.restarts += 1

    def stop_all(self) -> None:
        for slot in self.frozen:
            self.signal(slot, signal.SIGCONT)
        for proc in self.procs.values():
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


async def _poll(check: Callable[[], Awaitable[bool]], within: float, step: float = 0.02) -> bool:
    """Poll ``check`` until it holds or ``within`` seconds pass; returns whether it held."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


class Scenario:
    def __init__(self, cfg: ChaosConfig, url: str, workdir: Path) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.db = Database(url, pool_size=5)
        settings = QueueSettings(
            max_queued_per_user=10_000, max_attempts=cfg.max_attempts, new_jobs_per_window=0
        )
        self.queue = JobQueue(
            self.db, settings, QuotaService(self.db, QuotaSettings(user_daily_gpu_seconds=1e9))
        )
        self.fleet = Fleet(cfg, url, workdir)
        self.report = ChaosReport()
        self.enqueued = 0
        self.crash_ids: set[str] = set()
        self.thawed_at = 0.0
        self.feeding_done = asyncio.Event()
        self.freezing_done = asyncio.Event()

    # -- database views -------------------------------------------------------------------------

    async def _count(self, stmt: Select[int]) -> int:
        async def work(session: AsyncSession) -> int:
            return (await session.execute(stmt)).scalar_one()

        return await self.db.read(work)

    async def _rows(self, stmt: Select[tuple[object, ...]]) -> list[RowMapping]:
        async def work(session: AsyncSession) -> list[RowMapping]:
            return list((await session.execute(stmt)).mappings().all())

        return await self.db.read(work)

    async def finished(self) -> int:
        return await self._count(
            select(func.count()).where(JOBS.c.status.not_in([JobStatus.QUEUED, JobStatus.RUNNING]))
        )

    async def running_jobs(self) -> list[RowMapping]:
        return await self._rows(
            select(JOBS.c.id, JOBS.c.worker_id, JOBS.c.lease_token, JOBS.c.progress_step).where(
                JOBS.c.status == JobStatus.RUNNING
            )
        )

    async def wait_for_completions(self, count: int) -> None:
        target = await self.finished() + count
        await _poll(lambda: self._at_least(target), within=20)

    async def _at_least(self, target: int) -> bool:
        return await self.finished() >= target or (
            self.feeding_done.is_set() and await self.finished() >= self.enqueued
        )

    # -- the actors -----------------------------------------------------------------------------

    async def feed(self) -> None:
        crash_at = {
            self.cfg.jobs * (i + 1) // (self.cfg.crash_jobs + 2) for i in range(self.cfg.crash_jobs)
        }
        while self.enqueued < (limit := self._feed_limit()):
            # Keep about a screenful waiting: a stream, not one big batch.
            await _poll(self._room_to_feed, within=30)
            batch = min(20, limit - self.enqueued)
            for _ in range(batch):
                n = self.enqueued
                prompt = "crash" if n in crash_at else f"job-{n}"
                user = 1 + self.rng.randrange(self.cfg.users)
                view = await self.queue.enqueue(
                    Owner(user, 1, 1),
                    NewJob(
                        kind=JobKind.IMAGINE,
                        request={"prompt": prompt},
                        mode="fast",
                        estimated_cost=1.0,
                    ),
                )
                if prompt == "crash":
                    self.crash_ids.add(view.id)
                self.enqueued += 1
        self.feeding_done.set()

    def _feed_limit(self) -> int:
        """``jobs``, or more (up to ``max_jobs``) while the freezes are not done."""
        return self.cfg.jobs if self.freezing_done.is_set() else self.cfg.max_jobs

    async def _room_to_feed(self) -> bool:
        queued = await self._count(select(func.count()).where(JOBS.c.status == JobStatus.QUEUED))
        return queued < 30

    async def kill(self) -> None:
        for _ in range(self.cfg.kills):
            await self.wait_for_completions(self.rng.randint(2, 6))
            await asyncio.sleep(self.rng.uniform(0, 0.05))  # a random moment, not a condition
            busy = [self.fleet.slot_of(job["worker_id"]) for job in await self.running_jobs()]
            candidates = [s for s in busy if s is not None and s not in self.fleet.frozen]
            if not candidates or self.rng.random() < 0.3:
                candidates = [s for s in self.fleet.procs if s not in self.fleet.frozen]
            slot = self.rng.choice(sorted(candidates))
            self.fleet.kill(slot)
            self.report.kills += 1

    async def freeze(self) -> None:
        try:
            await self._freeze()
        finally:
            self.freezing_done.set()

    async def _freeze(self) -> None:
        # Up to six freezes for each stale lease wanted; a moment without a candidate is no try.
        tries = 6 * self.cfg.stale_freezes
        while self.report.stale < self.cfg.stale_freezes and self.report.freezes < tries:
            if self.feeding_done.is_set() and await self.finished() >= self.enqueued:
                return  # the stream reached max_jobs and ran dry: nothing left to freeze
            await self.wait_for_completions(self.rng.randint(1, 4))
            # Freeze a worker inside its generator, not in the middle of a transaction (which,
            # on SQLite, would stall every process until the thaw).
            jobs = [
                (job, slot)
                for job in await self.running_jobs()
                if (slot := self.fleet.slot_of(job["worker_id"])) is not None
                and self.fleet.generating(slot) == job["id"]
            ]
            if not jobs:
                continue
            job, slot = self.rng.choice(jobs)
            self.fleet.frozen.add(slot)
            self.fleet.signal(slot, signal.SIGSTOP)
            self.report.freezes += 1

            async def taken_over(job: RowMapping = job) -> bool:
                # Another worker's lease, running or already finished (a finished job keeps
                # its last lease token): on a busy machine the poll can miss a short run.
                rows = await self._rows(select(JOBS.c.lease_token).where(JOBS.c.id == job["id"]))
                token = rows[0]["lease_token"]
                return token is not None and bool(token != job["lease_token"])

            wait = self.cfg.lease_seconds + self.cfg.reclaim_interval_seconds + 3.0
            if await _poll(taken_over, within=wait):
                self.report.stale += 1
            self.fleet.signal(slot, signal.SIGCONT)
            self.fleet.frozen.discard(slot)
            self.thawed_at = time.monotonic()

    async def cancel(self) -> None:
        for _ in range(self.cfg.cancels):
            await self.wait_for_completions(self.rng.randint(5, 20))
            active = await self._rows(
                select(JOBS.c.id).where(
                    JOBS.c.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
                    JOBS.c.id.not_in(self.crash_ids),  # those must die of their own poison
                )
            )
            if not active:
                continue
            try:
                await self.queue.cancel(self.rng.choice(active)["id"])
                self.report.cancels += 1
            except IllegalTransition:
                pass  # it finished meanwhile

    async def watch(self, stop: asyncio.Event) -> None:
        """Restart dead workers; check that no lease stays expired past the reclaim interval."""
        limit = timedelta(seconds=self.cfg.reclaim_interval_seconds + self.cfg.stuck_slack_seconds)
        while not stop.is_set():
            self.fleet.restart_dead()
            # A frozen worker may stall others (a lock it held, on PostgreSQL a row it had
            # locked); leases that ran out meanwhile get the usual allowance after the thaw.
            if not self.fleet.frozen and time.monotonic() - self.thawed_at > limit.total_seconds():
                stuck = await self._rows(
                    select(JOBS.c.id, JOBS.c.lease_expires_at).where(
                        JOBS.c.status == JobStatus.RUNNING,
                        JOBS.c.lease_expires_at < datetime.now(UTC) - limit,
                    )
                )
                if stuck and not self.fleet.frozen:
                    self.report.violations.extend(
                        f"job {row['id']} still running {limit} after its lease expired"
                        for row in stuck
                    )
            await asyncio.sleep(0.02)

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> ChaosReport:
        started = time.monotonic()
        for slot in range(self.cfg.workers):
            self.fleet.start(slot)
        stop = asyncio.Event()
        watcher = asyncio.create_task(self.watch(stop))
        try:
            await asyncio.gather(self.feed(), self.kill(), self.freeze(), self.cancel())
            done = await _poll(lambda: self._at_least(self.enqueued), within=60, step=0.05)
            if not done:
                self.report.violations.append("not every job reached a terminal state in time")
        finally:
            stop.set()
            await watcher
            self.fleet.stop_all()
        self.report.restarts = self.fleet.restarts
        self.report.jobs = self.enqueued
        await self.check()
        self.report.seconds = time.monotonic() - started
        await self.db.dispose()
        return self.report

    async def check(self) -> None:
        result = await audit(self.db)
        self.report.violations.extend(result.violations)
        self.report.by_status = dict(result.by_status)
        if result.jobs != self.enqueued:
            self.report.violations.append(f"{result.jobs} jobs in the ledger, {self.enqueued} sent")
        for status in (JobStatus.QUEUED, JobStatus.RUNNING):
            if result.by_status.get(status):
                self.report.violations.append(f"{result.by_status[status]} job(s) left {status}")
        succeeded = result.by_status.get(JobStatus.SUCCEEDED, 0)
        # The billing table: every succeeded job is charged what it used, and so is a job its
        # owner cancelled while it ran (when its worker reported the time); all others are
        # refunded. The audit above checks each job's lines; these check the totals.
        charged_jobs, charged_ms, succeeded_ms = await self._charged()
        lines = await self._ledger_counts()
        if lines.get(LedgerKind.CHARGE, 0) != charged_jobs:
            self.report.violations.append(
                f"{lines.get(LedgerKind.CHARGE, 0)} charges for {charged_jobs} charged jobs"
            )
        if lines.get(LedgerKind.REFUND, 0) != result.jobs - charged_jobs:
            self.report.violations.append(
                f"{lines.get(LedgerKind.REFUND, 0)} refunds for "
                f"{result.jobs - charged_jobs} jobs that were not charged"
            )
        if abs(result.charged - charged_ms / 1000) > 1e-9:
            self.report.violations.append(
                f"the ledger charged {result.charged} GPU-s, the jobs say {charged_ms / 1000}"
            )
        if abs(succeeded_ms / 1000 - GPU_SECONDS * succeeded) > 1e-9:
            self.report.violations.append(
                f"charged {succeeded_ms / 1000} GPU-s for {succeeded} jobs of {GPU_SECONDS} s"
            )

    async def _charged(self) -> tuple[int, int, int]:
        """(jobs charged, their total charge, the total of the succeeded ones), in ms."""
        succeeded = func.sum(
            case((JOBS.c.status == JobStatus.SUCCEEDED, JOBS.c.charged_ms), else_=0)
        )
        rows = await self._rows(
            select(
                func.count().label("n"),
                func.coalesce(func.sum(JOBS.c.charged_ms), 0).label("total"),
                func.coalesce(succeeded, 0).label("succeeded"),
            ).where(JOBS.c.charged_ms.is_not(None))
        )
        row = rows[0]
        return int(row["n"]), int(row["total"]), int(row["succeeded"])

    async def _ledger_counts(self) -> dict[str, int]:
        rows = await self._rows(
            select(LEDGER.c.kind, func.count().label("n")).group_by(LEDGER.c.kind)
        )
        return {row["kind"]: int(row["n"]) for row in rows}


async def run_chaos(url: str, workdir: Path, cfg: ChaosConfig) -> ChaosReport:
    """Run the crash scenario against a migrated database at ``url``."""
    return await Scenario(cfg, url, workdir).run()
