"""How much the ledger itself costs per job: ``atelier bench queue``.

For each worker count, enqueue ``jobs`` jobs (spread over ``users`` owners, timing each enqueue),
then let that many workers claim and complete them with a zero-cost generator (nothing runs
between claim and complete), timing each claim and completion and the whole drain. Workers are
asyncio tasks in this process, each with its own pooled connection, so the numbers show the
database's concurrency (SQLite: one writer at a time; PostgreSQL: row locks and SKIP LOCKED)
plus this process's overhead, not GPU throughput.

The bench needs a scratch database: it refuses one that already has jobs, and deletes what it
created when it is done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import QueueSettings, QuotaSettings
from storage.db import Database
from storage.migrate import upgrade
from storage.models import DELIVERIES, GUILD_ACCOUNTS, JOBS, LEDGER, MODE_STATS, USER_ACCOUNTS
from storage.queue import JobQueue
from storage.quota import QuotaService
from storage.types import JobKind, NewJob, Owner

#: Owner ids far from any real Discord snowflake, so bench rows are easy to recognise.
BENCH_USER_BASE = 1_000


@dataclass(frozen=True)
class Latency:
    """Milliseconds: median, 95th percentile and maximum."""

    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        if not seconds:
            return cls(0.0, 0.0, 0.0)
        ordered = sorted(seconds)

        def at(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

        return cls(at(0.5), at(0.95), ordered[-1] * 1000)

    def __str__(self) -> str:
        return f"{self.p50:6.2f} {self.p95:6.2f} {self.max:7.2f}"


@dataclass(frozen=True)
class BenchRow:
    workers: int
    jobs: int
    drain_seconds: float
    enqueue: Latency
    claim: Latency
    complete: Latency

    @property
    def jobs_per_second(self) -> float:
        return self.jobs / self.drain_seconds if self.drain_seconds else 0.0


@dataclass(frozen=True)
class BenchReport:
    """The bench's results; ``table()`` renders them as text."""

    backend: str
    url: str
    rows: tuple[BenchRow, ...]

    def table(self) -> str:
        lines = [
            f"queue overhead on {self.backend} ({self.url}), zero-cost generator",
            "latencies in ms as p50 / p95 / max",
            f"{'workers':>7} {'jobs':>5} {'jobs/s':>8}  {'enqueue':^22}  {'claim':^22}  "
            f"{'complete':^22}",
        ]
        for row in self.rows:
            lines.append(
                f"{row.workers:>7} {row.jobs:>5} {row.jobs_per_second:>8.1f}  {row.enqueue}  "
                f"{row.claim}  {row.complete}"
            )
        return "\n".join(lines)


async def bench_queue(
    url: str | URL, jobs: int = 500, workers: Sequence[int] = (1, 4), *, users: int = 20
) -> BenchReport:
    """Measure enqueue/claim/complete latency and drain throughput for each worker count."""
    await upgrade(url)
    db = Database(url, pool_size=max(workers) + 2)
    try:
        if await _count_jobs(db):
            raise ValueError("the queue bench needs an empty scratch database (it has jobs)")
        rows = []
        for count in workers:
            try:
                rows.append(await _run(db, jobs, count, users))
            finally:
                await _clean(db)
        return BenchReport(
            backend=db.dialect, url=db.url.render_as_string(hide_password=True), rows=tuple(rows)
        )
    finally:
        await db.dispose()


async def _run(db: Database, jobs: int, workers: int, users: int) -> BenchRow:
    settings = QueueSettings(
        max_queued_per_user=jobs,
        max_running_per_user=max(workers, 1),
        lease_seconds=300,
        new_jobs_per_window=0,  # the bench enqueues as fast as it can, on purpose
    )
    queue = JobQueue(db, settings, QuotaService(db, QuotaSettings(user_daily_gpu_seconds=1e9)))
    enqueue_times: list[float] = []
    for n in range(jobs):
        owner = Owner(BENCH_USER_BASE + n % users, None, None)
        job = NewJob(
            kind=JobKind.IMAGINE, request={"prompt": f"bench {n}"}, mode="fast", estimated_cost=1
        )
        started = time.perf_counter()
        await queue.enqueue(owner, job)
        enqueue_times.append(time.perf_counter() - started)

    claim_times: list[float] = []
    complete_times: list[float] = []

    async def worker(name: str) -> None:
        while True:
            started = time.perf_counter()
            claimed = await queue.claim_next(name)
            claim_times.append(time.perf_counter() - started)
            if claimed is None:
                return
            started = time.perf_counter()
            await queue.complete(claimed.id, claimed.lease_token, result_refs=[], gpu_seconds=0)
            complete_times.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(f"bench-{i}") for i in range(workers)))
    drain = time.perf_counter() - started
    if len(complete_times) != jobs:  # pragma: no cover - would be a queue bug
        raise RuntimeError(f"bench completed {len(complete_times)} of {jobs} jobs")
    return BenchRow(
        workers=workers,
        jobs=jobs,
        drain_seconds=drain,
        enqueue=Latency.of(enqueue_times),
        claim=Latency.of(claim_times),
        complete=Latency.of(complete_times),
    )


async def _count_jobs(db: Database) -> int:
    async def work(session: AsyncSession) -> int:
        return int((await session.execute(select(func.count()).select_from(JOBS))).scalar_one())

    return await db.read(work)


async def _clean(db: Database) -> None:
    async def work(session: AsyncSession) -> None:
        # The database was empty when the bench started: everything in it is the bench's.
        for table in (LEDGER, DELIVERIES, JOBS, USER_ACCOUNTS, GUILD_ACCOUNTS, MODE_STATS):
            await session.execute(delete(table))

    await db.write(work)
