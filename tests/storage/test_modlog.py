"""The moderation audit log: rows are bounded, paged newest first per server (by member or job),
exported oldest first, and pruned by retention after ``retention.modlog_days``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config.settings import RetentionSettings
from storage import FileImageStore, ModAction, ModerationLog
from storage.models import MODLOG_REASON_LENGTH
from storage.modlog import MAX_DETAIL_STRING
from storage.retention import Retention
from tests.storage.dbfixtures import Services, make_services

GUILD, OTHER = 800, 801
DAY = 86_400.0


@pytest.fixture
async def s(db_url: str) -> AsyncIterator[Services]:
    built = await make_services(db_url)
    try:
        yield built
    finally:
        await built.db.dispose()


@pytest.fixture
def log(s: Services) -> ModerationLog:
    return ModerationLog(s.db, clock=s.clock)


async def test_a_row_keeps_who_what_and_why_within_bounds(s: Services, log: ModerationLog) -> None:
    entry = await log.record(
        GUILD,
        ModAction.REFUSED,
        actor_id=None,
        target_user_id=7,
        reason="x" * 2000,
        details={"prompt": "p" * 1000, "terms": ["a", "b"], "n": 3, "ok": True},
    )
    page = await log.page(GUILD)
    assert page.entries == (entry,) and not page.older and not page.newer
    stored = page.entries[0]
    assert stored.actor_id is None and stored.action is ModAction.REFUSED
    assert stored.created_at == s.clock.now and stored.target_user_id == 7
    assert len(stored.reason) == MODLOG_REASON_LENGTH
    assert len(stored.details["prompt"]) == MAX_DETAIL_STRING
    assert stored.details["terms"] == ["a", "b"] and stored.details["n"] == 3
    huge = await log.record(
        GUILD, ModAction.BLOCKED, actor_id=1, details={f"k{i}": "v" * 150 for i in range(40)}
    )
    assert huge.details == {"truncated": True}


async def test_pages_go_newest_first_both_ways_within_one_server(log: ModerationLog) -> None:
    ids = []
    for n in range(25):
        entry = await log.record(
            GUILD,
            ModAction.BLOCKED,
            actor_id=50,
            target_user_id=n % 2,
            target_job_id=f"job{n % 3}",
            reason=f"r{n}",
        )
        ids.append(entry.id)
        await log.record(OTHER, ModAction.BLOCKED, actor_id=51, target_user_id=n % 2)
    first = await log.page(GUILD)
    assert [e.id for e in first.entries] == ids[::-1][:10]
    assert first.older and not first.newer
    second = await log.page(GUILD, before_id=first.entries[-1].id)
    assert [e.id for e in second.entries] == ids[::-1][10:20]
    assert second.older and second.newer
    last = await log.page(GUILD, before_id=second.entries[-1].id)
    assert [e.id for e in last.entries] == ids[::-1][20:] and not last.older and last.newer
    back = await log.page(GUILD, after_id=last.entries[0].id)
    assert back == second
    assert await log.page(GUILD, after_id=second.entries[0].id) == first
    assert all(e.guild_id == GUILD for p in (first, second, last) for e in p.entries)
    by_member = await log.page(GUILD, member=1, limit=50)
    assert [e.id for e in by_member.entries] == [i for n, i in enumerate(ids) if n % 2][::-1]
    by_both = await log.page(GUILD, member=0, job="job0", limit=50)
    assert [e.id for e in by_both.entries] == [i for n, i in enumerate(ids) if n % 6 == 0][::-1]
    assert (await log.page(GUILD, job="nosuchjob")).entries == ()
    assert (await log.page(802)).entries == ()
    with pytest.raises(ValueError, match="limit"):
        await log.page(GUILD, limit=0)


async def test_export_streams_one_server_oldest_first(log: ModerationLog) -> None:
    ids = [(await log.record(GUILD, ModAction.FILTER_ADDED, actor_id=5, reason="t")).id]
    for _ in range(6):
        await log.record(OTHER, ModAction.FILTER_ADDED, actor_id=6)
        ids.append((await log.record(GUILD, ModAction.FILTER_REMOVED, actor_id=5)).id)
    exported = [e async for e in log.export(GUILD, batch=2)]
    assert [e.id for e in exported] == ids
    assert {e.guild_id for e in exported} == {GUILD}
    assert [e async for e in log.export(999)] == []


async def test_retention_prunes_rows_older_than_the_setting(
    s: Services, log: ModerationLog, tmp_path: Path
) -> None:
    old = await log.record(GUILD, ModAction.BLOCKED, actor_id=1)
    s.clock.advance(10 * DAY)
    recent = await log.record(GUILD, ModAction.BLOCKED, actor_id=1)
    s.clock.advance(5 * DAY)
    images = FileImageStore(tmp_path / "images")
    forever = Retention(s.queue, images, RetentionSettings(modlog_days=0))
    assert (await forever.prune()).modlog_rows == 0
    keep = Retention(s.queue, images, RetentionSettings(modlog_days=12))
    assert (await keep.prune(dry_run=True)).modlog_rows == 1
    assert len((await log.page(GUILD)).entries) == 2
    assert (await keep.prune()).modlog_rows == 1
    assert [e.id for e in (await log.page(GUILD)).entries] == [recent.id]
    assert old.id != recent.id
    # In bounded batches, oldest first.
    for _ in range(5):
        await log.record(GUILD, ModAction.BLOCKED, actor_id=1)
    s.clock.advance(20 * DAY)
    batched = Retention(s.queue, images, RetentionSettings(modlog_days=12), batch=2)
    report = await batched.prune(max_batches=2)
    assert report.modlog_rows == 4 and report.more
    assert (await batched.prune()).modlog_rows == 2
