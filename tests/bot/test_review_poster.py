"""The review poster's housekeeping, without Discord: undecided holds expire on its pass."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from bot.review_poster import ReviewPoster, item_buttons
from bot.router import ButtonRouter
from bot.services.review import ReviewService
from config.settings import ModerationSettings, Settings
from storage.images import FileImageStore
from storage.review import ReviewDesk
from storage.types import Decision, JobStatus, ReviewKind
from tests.storage.dbfixtures import Services, new_job, owner


async def test_a_pass_expires_undecided_holds(services: Services, tmp_path: Path) -> None:
    s = services
    desk = ReviewDesk(s.db, s.queue, clock=s.clock)
    settings = Settings(data_dir=tmp_path, moderation=ModerationSettings(hold_days=2))
    review = ReviewService(
        settings, desk, s.queue, s.deliveries, s.prefs, FileImageStore(tmp_path / "images")
    )
    poster = ReviewPoster(review, desk, ButtonRouter(), clock=s.clock)
    view = await s.queue.enqueue(owner(), dataclasses.replace(new_job(), hold_reason="term"))
    await poster._expire()
    (item,) = await desk.open_items(100)
    s.clock.advance(timedelta(days=2, seconds=1).total_seconds())
    poster._expired_at = 0.0  # the next pass checks again
    await poster._expire()
    (expired,) = await desk.items_of_job(view.id)
    assert expired.decision is Decision.EXPIRE and expired.decided_by is None
    assert (await s.queue.require(view.id)).status is JobStatus.BLOCKED
    # A decided item keeps only its lineage button; an open appeal offers grant and deny.
    assert [label for label, _ in item_buttons(expired)[0]] == ["Show lineage"]
    appeal = dataclasses.replace(item, kind=ReviewKind.APPEAL)
    assert [label for label, _ in item_buttons(appeal)[0]] == [
        "Grant appeal",
        "Deny appeal",
        "Show lineage",
    ]
