"""The gallery bench's database half on both backends: the seeded rows are what the schema and
the sharing rules expect, the index finds them, and every measurement comes back. No timings are
asserted (the README reports them)."""

from __future__ import annotations

import random
import re

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from storage import Database
from storage.bench_gallery import GALLERY_TARGET_MS, SEARCH_TARGET_MS, bench_gallery_db
from storage.bench_seed import GUILD_ID, PromptMaker, SeedReport
from storage.models import DELIVERIES, JOBS, LIKES
from storage.sharing import SharingStore
from storage.types import GalleryView

JOBS_SEEDED = 300


async def test_seeds_measures_and_reports(db_url: str) -> None:
    seen: list[int] = []

    async def after(url: str, seeded: SeedReport) -> None:
        seen.append(1)

    report = await bench_gallery_db(
        db_url, JOBS_SEEDED, samples=8, naive_samples=4, members=50, clean=False, after=after
    )
    assert seen == [1]
    seeded = report.seeded
    assert seeded.jobs == JOBS_SEEDED and seeded.guild_id == GUILD_ID
    assert 0 < seeded.public_jobs < JOBS_SEEDED and seeded.likes > 0
    ops = [row.operation for row in report.rows]
    assert sum(op.startswith("search:") for op in ops) == 9
    assert sum(op.startswith("gallery:") for op in ops) == 6
    for row in report.rows:
        assert row.samples > 0 and 0 < row.ours.p50 <= row.ours.p95 <= row.ours.max
        assert row.target_ms == (SEARCH_TARGET_MS if row.group == "search" else GALLERY_TARGET_MS)
        assert row.meets_target is not None
        if row.group == "search" or "deep" in row.operation:
            assert row.naive is not None and row.naive.p50 > 0 and row.ratio is not None
    # The index found the seeded words, phrases and prefixes.
    assert all(count > 0 for count in report.found.values()), report.found

    db = Database(db_url)
    try:

        async def counts(session: AsyncSession) -> dict[str, int]:
            one = session.execute
            out = {
                "jobs": (await one(select(func.count()).select_from(JOBS))).scalar_one(),
                "likes": (await one(select(func.count()).select_from(LIKES))).scalar_one(),
                "like_sum": (await one(select(func.sum(JOBS.c.like_count)))).scalar_one(),
                "deliveries": (
                    await one(select(func.count()).select_from(DELIVERIES))
                ).scalar_one(),
            }
            per_job = select(LIKES.c.job_id, func.count().label("n")).group_by(LIKES.c.job_id)
            sub = per_job.subquery()
            out["mismatched"] = (
                await one(
                    select(func.count())
                    .select_from(JOBS.outerjoin(sub, sub.c.job_id == JOBS.c.id))
                    .where(JOBS.c.like_count != func.coalesce(sub.c.n, 0))
                )
            ).scalar_one()
            return {k: int(v or 0) for k, v in out.items()}

        got = await db.read(counts)
        assert got["jobs"] == JOBS_SEEDED
        assert got["likes"] == seeded.likes == got["like_sum"]
        assert got["deliveries"] == seeded.deliveries
        assert got["mismatched"] == 0

        async def index_rows(session: AsyncSession) -> int:
            sql = (
                "SELECT count(*) FROM jobs_fts WHERE jobs_fts MATCH 'castle'"
                if db.is_sqlite
                else "SELECT count(*) FROM jobs WHERE search_vector @@ to_tsquery('simple', "
                "'castle')"
            )
            found = await session.execute(text(sql))
            return int(found.scalar_one())

        async def like_rows(session: AsyncSession) -> int:
            found = await session.execute(
                select(func.count()).where(JOBS.c.prompt.like("%castle%"))
            )
            return int(found.scalar_one())

        indexed = await db.read(index_rows)
        assert 0 < indexed <= await db.read(like_rows)

        # What the gallery shows is what the seeder counted as public in the measured server.
        store = SharingStore(db)
        page = await store.gallery(GalleryView.RECENT, GUILD_ID, None)
        assert len(page.items) == 9 and all(item.image_ref for item in page.items)
        assert all(item.message_id is not None for item in page.items)
    finally:
        await db.dispose()


async def test_cleans_up_and_refuses_a_database_with_jobs(db_url: str) -> None:
    await bench_gallery_db(db_url, 40, samples=2, naive_samples=1, members=10)
    db = Database(db_url)
    try:

        async def jobs(session: AsyncSession) -> int:
            found = await session.execute(select(func.count()).select_from(JOBS))
            return int(found.scalar_one())

        assert await db.read(jobs) == 0
    finally:
        await db.dispose()


def test_prompts_are_realistic_and_deterministic() -> None:
    first = [PromptMaker(random.Random(5)).make() for _ in range(1)]
    maker, again = PromptMaker(random.Random(5)), PromptMaker(random.Random(5))
    prompts = [maker.make() for _ in range(500)]
    assert prompts == [again.make() for _ in range(500)] and prompts[0] == first[0]
    words = [len(re.findall(r"[^\W_]+", p)) for p in prompts]
    assert min(words) >= 5 and max(words) <= 30
    assert any('"' in p for p in prompts) and len(set(prompts)) > 490
