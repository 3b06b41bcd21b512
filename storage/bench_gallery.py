"""``atelier bench gallery``, the database half: search and gallery pages on a seeded dataset,
each against the naive way, sampled side by side in one run.

- **Search** (``SharingStore.search``, the full-text index) against ``LIKE '%word%'`` on
  the prompt column, one ``LIKE`` per word, phrase or prefix, under the same visibility rule
  and filters, ordered by likes then newest (no relevance: the naive way cannot rank). The
  query mix: one word, two or three words, a quoted phrase, a prefix (``lig*``), and each of
  those with a filter (member, model, aspect, since).
- **Gallery pages** (``SharingStore.gallery``: the page and its two "is there more" probes):
  recent, top of all time, top of the week, a member's jobs, the viewer's liked jobs, and a
  deep page (``DEEP_ROWS`` rows in) by keyset cursor against the same page by ``OFFSET``.

Each sample times one whole unit of work (session, query, rows into frozen values). Ours and
the naive way alternate, so both meet the same load.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_
from sqlalchemy.ext.asyncio import AsyncSession

from storage.bench import Latency
from storage.bench_seed import (
    ASPECTS,
    MEMBER_BASE,
    MODELS,
    QUOTED,
    SeedReport,
    clear_gallery,
    seed_gallery,
)
from storage.db import Database
from storage.gallery import cursor_after, gallery_list, item_select
from storage.migrate import upgrade
from storage.models import DELIVERIES, JOBS
from storage.search import filters_clause
from storage.search_syntax import parse_query
from storage.sharing import SharingStore
from storage.types import GalleryView, SearchFilters
from storage.visibility import visible_clause

#: The issue's targets, as p95 in milliseconds.
SEARCH_TARGET_MS = 50.0
GALLERY_TARGET_MS = 100.0
#: How deep the "deep page" is, in rows (OFFSET 5000 for the naive way).
DEEP_ROWS = 5_000
PAGE = 9

#: Search texts by kind; filters are added to each kind in a second row.
SEARCHES: dict[str, tuple[str, ...]] = {
    "1 word": ("castle", "watercolor", "dragon", "cyberpunk", "lantern", "fog", "owl", "ruins"),
    "2-3 words": (
        "misty forest",
        "cat watercolor",
        "neon city rain",
        "ancient temple",
        "robot portrait cinematic",
        "lighthouse sunset",
    ),
    "phrase": tuple(f'"{p}"' for p in QUOTED[:6]),
    "prefix": ("lig*", "cast*", "neo*", "wat*", "dra*", "moon*"),
}


@dataclass(frozen=True)
class OpRow:
    """One measured operation: ours, and the naive way's when it has one."""

    group: str  # "search" or "gallery"
    operation: str
    ours: Latency
    samples: int
    naive: Latency | None = None
    naive_samples: int = 0
    naive_label: str = ""
    target_ms: float | None = None

    @property
    def ratio(self) -> float | None:
        """The naive way's p50 over ours: how many times faster ours is."""
        if self.naive is None or not self.ours.p50:
            return None
        return self.naive.p50 / self.ours.p50

    @property
    def meets_target(self) -> bool | None:
        return None if self.target_ms is None else self.ours.p95 < self.target_ms


@dataclass(frozen=True)
class GalleryBenchReport:
    backend: str
    url: str
    seeded: SeedReport
    rows: tuple[OpRow, ...]
    #: Results a few seeded words found through the index (a sanity check for the tests).
    found: dict[str, int]


async def bench_gallery_db(
    url: str,
    jobs: int = 100_000,
    *,
    samples: int = 200,
    naive_samples: int = 40,
    members: int = 2_000,
    clean: bool = True,
    seed: int = 12,
    after: Callable[[str, SeedReport], Awaitable[None]] | None = None,
) -> GalleryBenchReport:
    """Migrate, seed ``jobs`` jobs, measure (see the module), run ``after`` (more measurements
    of the seeded database, e.g. the web gallery's), and (``clean``) delete the seeded rows
    again. ``samples`` is the number of searches and of pages per gallery view."""
    await upgrade(url)
    db = Database(url, pool_size=4)
    try:
        seeded = await seed_gallery(db, jobs, members=members, seed=seed)
        try:
            store = SharingStore(db)
            rng = random.Random(seed + 1)
            rows = await _search_rows(db, store, seeded, rng, samples, naive_samples)
            rows += await _gallery_rows(db, store, seeded, rng, samples, naive_samples)
            found = {}
            for word in ("castle", '"golden hour"', "lig*"):
                page = await store.search(seeded.guild_id, None, word)
                found[word] = len(page.items)
            if after is not None:
                await after(url, seeded)
        finally:
            if clean:
                await clear_gallery(db)
        return GalleryBenchReport(
            backend=db.dialect,
            url=db.url.render_as_string(hide_password=True),
            seeded=seeded,
            rows=tuple(rows),
            found=found,
        )
    finally:
        await db.dispose()


async def _timed(fn: Callable[[], Awaitable[Any]], into: list[float]) -> None:
    started = time.perf_counter()
    await fn()
    into.append(time.perf_counter() - started)


def _viewer(rng: random.Random, members: int) -> int:
    # Active members browse more: the same skew as the owners of jobs.
    return MEMBER_BASE + min(members - 1, int(rng.paretovariate(1.1)) - 1)


async def _search_rows(
    db: Database,
    store: SharingStore,
    seeded: SeedReport,
    rng: random.Random,
    samples: int,
    naive_samples: int,
) -> list[OpRow]:
    kinds = [(kind, filtered) for filtered in (False, True) for kind in SEARCHES]
    ours: dict[tuple[str, bool], list[float]] = {k: [] for k in kinds}
    naive: dict[tuple[str, bool], list[float]] = {k: [] for k in kinds}
    for n in range(max(samples, len(kinds))):
        key = kinds[n % len(kinds)]
        text = rng.choice(SEARCHES[key[0]])
        filters = _filters(rng, seeded) if key[1] else SearchFilters()
        viewer = _viewer(rng, seeded.members)

        async def run_ours(text: str = text, f: SearchFilters = filters, v: int = viewer) -> Any:
            return await store.search(seeded.guild_id, v, text, f, size=PAGE)

        await _timed(run_ours, ours[key])
        if n < max(naive_samples, len(kinds)):

            async def run_naive(
                text: str = text, f: SearchFilters = filters, v: int = viewer
            ) -> Any:
                return await _naive_search(db, seeded.guild_id, v, text, f)

            await _timed(run_naive, naive[key])
    rows = [
        OpRow(
            "search",
            f"search: {kind}" + (" + filter" if filtered else ""),
            Latency.of(ours[(kind, filtered)]),
            len(ours[(kind, filtered)]),
            Latency.of(naive[(kind, filtered)]),
            len(naive[(kind, filtered)]),
            "LIKE '%word%'",
            SEARCH_TARGET_MS,
        )
        for kind, filtered in kinds
    ]
    every = [t for times in ours.values() for t in times]
    every_naive = [t for times in naive.values() for t in times]
    rows.append(
        OpRow(
            "search",
            "search: all of the above",
            Latency.of(every),
            len(every),
            Latency.of(every_naive),
            len(every_naive),
            "LIKE '%word%'",
            SEARCH_TARGET_MS,
        )
    )
    return rows


def _filters(rng: random.Random, seeded: SeedReport) -> SearchFilters:
    which = rng.randrange(4)
    if which == 0:
        return SearchFilters(member_id=_viewer(rng, seeded.members))
    if which == 1:
        return SearchFilters(model=rng.choice(MODELS))
    if which == 2:
        return SearchFilters(aspect=rng.choice(ASPECTS))
    return SearchFilters(since=seeded.now - timedelta(days=7))


async def _naive_search(
    db: Database, guild_id: int, viewer_id: int, text: str, filters: SearchFilters
) -> Any:
    """The search without the index: a substring scan per term, ranked by likes then newest."""
    where = [visible_clause(viewer_id, guild_id), *filters_clause(filters)]
    for term in parse_query(text):
        where.append(JOBS.c.prompt.ilike(f"%{' '.join(term.words)}%"))
    stmt = (
        item_select()
        .select_from(JOBS.outerjoin(DELIVERIES, DELIVERIES.c.job_id == JOBS.c.id))
        .where(and_(*where))
        .order_by(JOBS.c.like_count.desc(), JOBS.c.seq.desc())
        .limit(PAGE + 1)
    )

    async def work(session: AsyncSession) -> Sequence[Any]:
        return list((await session.execute(stmt)).mappings().all())

    return await db.read(work)


async def _gallery_rows(
    db: Database,
    store: SharingStore,
    seeded: SeedReport,
    rng: random.Random,
    samples: int,
    naive_samples: int,
) -> list[OpRow]:
    views = (
        ("recent, first page", GalleryView.RECENT),
        ("top all time, first page", GalleryView.TOP_ALL),
        ("top this week, first page", GalleryView.TOP_WEEK),
        ("a member's jobs, first page", GalleryView.MEMBER),
        ("liked by me, first page", GalleryView.LIKED),
    )
    ours: dict[str, list[float]] = {name: [] for name, _ in views}
    for _ in range(samples):
        for name, view in views:
            viewer = _viewer(rng, seeded.members)
            member = _viewer(rng, seeded.members)

            async def run(view: GalleryView = view, v: int = viewer, m: int = member) -> Any:
                return await store.gallery(view, seeded.guild_id, v, member_id=m, size=PAGE)

            await _timed(run, ours[name])
    rows = [
        OpRow(
            "gallery",
            f"gallery: {name}",
            Latency.of(ours[name]),
            samples,
            target_ms=GALLERY_TARGET_MS,
        )
        for name, _ in views
    ]
    rows.append(await _deep_row(db, store, seeded, samples, naive_samples))
    return rows


async def _deep_row(
    db: Database, store: SharingStore, seeded: SeedReport, samples: int, naive_samples: int
) -> OpRow:
    """Page ``DEEP_ROWS`` rows into "recent" (an anonymous viewer): keyset against OFFSET."""
    depth = min(DEEP_ROWS, max(0, seeded.public_jobs - 2 * PAGE))
    listing = gallery_list(
        GalleryView.RECENT,
        seeded.guild_id,
        None,
        is_moderator=False,
        member_id=None,
        now=seeded.now,
    )
    offset_page = (
        listing.stmt.where(listing.where).order_by(JOBS.c.seq.desc()).offset(depth).limit(PAGE + 1)
    )

    async def by_offset() -> Sequence[Any]:
        async def work(session: AsyncSession) -> Sequence[Any]:
            return list((await session.execute(offset_page)).mappings().all())

        return await db.read(work)

    first = await by_offset()
    # The cursor a member holds after paging to that depth: "after the row before it".
    before = (
        listing.stmt.where(listing.where)
        .order_by(JOBS.c.seq.desc())
        .offset(max(0, depth - 1))
        .limit(1)
    )

    async def seq_before(session: AsyncSession) -> Any:
        return (await session.execute(before)).mappings().first()

    row = await db.read(seq_before) if depth else None
    cursor = None if row is None else cursor_after((int(row["seq"]),))
    if first and cursor is not None:
        page = await store.gallery(GalleryView.RECENT, seeded.guild_id, None, cursor=cursor)
        assert page.items[0].job_id == first[0]["id"], "keyset and offset pages disagree"
    ours: list[float] = []
    naive: list[float] = []
    for n in range(samples):

        async def run(cursor: str | None = cursor) -> Any:
            return await store.gallery(GalleryView.RECENT, seeded.guild_id, None, cursor=cursor)

        await _timed(run, ours)
        if n < naive_samples:
            await _timed(by_offset, naive)
    return OpRow(
        "gallery",
        f"gallery: recent, {depth:,} rows deep",
        Latency.of(ours),
        len(ours),
        Latency.of(naive),
        len(naive),
        f"OFFSET {depth}",
        GALLERY_TARGET_MS,
    )
