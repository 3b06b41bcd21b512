"""The per-user new-jobs limit (issue 9, defect 13): imagine-and-cancel loops are not free."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from storage.errors import RateLimitedError
from storage.rate_limit import NewJobRate
from tests.storage.dbfixtures import FakeClock, make_services, new_job, owner, queue_settings

RATE = NewJobRate(per_window=20, window_seconds=600, burst=5)  # one token every 30 s
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(*seconds: float) -> list[datetime]:
    return [T0 + timedelta(seconds=s) for s in seconds]


def test_a_full_bucket_takes_a_burst_then_refills_at_the_rate() -> None:
    assert RATE.wait_seconds([], T0, 5) == 0
    assert RATE.wait_seconds(at(0, 0, 0, 0), T0, 1) == 0
    assert RATE.wait_seconds(at(0, 0, 0, 0, 0), T0, 1) == pytest.approx(30)
    assert RATE.wait_seconds(at(0, 0, 0, 0, 0), T0 + timedelta(seconds=10), 1) == pytest.approx(20)
    assert RATE.wait_seconds(at(0, 0, 0, 0, 0), T0 + timedelta(seconds=30), 1) == 0
    assert RATE.wait_seconds(at(0, 0, 0, 0, 0), T0 + timedelta(seconds=150), 5) == 0
    assert RATE.wait_seconds([], T0, 6) == math.inf  # more than a burst never fits
    assert NewJobRate(0, 600, 5).wait_seconds(at(*[0] * 100), T0, 1) == 0  # off


def test_a_steady_user_gets_the_rate_and_no_more() -> None:
    admitted: list[datetime] = []
    for second in range(0, 1200, 5):  # tries every 5 s for 20 minutes
        now = T0 + timedelta(seconds=second)
        if RATE.wait_seconds(admitted, now, 1) == 0:
            admitted.append(now)
    # 5 at once, then one per 30 s: 5 + 1200 / 30 = 45 at most over 20 minutes.
    assert 44 <= len(admitted) <= 45
    for start in range(0, 1200 - 600, 5):
        window = [a for a in admitted if 0 <= (a - T0).total_seconds() - start < 600]
        assert len(window) <= 20 + 5


async def test_enqueue_refuses_over_the_rate_and_cancelled_jobs_still_count(db_url: str) -> None:
    clock = FakeClock(T0)
    s = await make_services(
        db_url,
        queue=queue_settings(new_jobs_per_window=20, new_jobs_burst=5, max_queued_per_user=50),
        clock=clock,
    )
    try:
        for _ in range(5):
            await s.queue.enqueue(owner(1), new_job())
        assert await s.queue.cancel_for_user(1) == 5  # imagine, then cancel at once
        with pytest.raises(RateLimitedError, match=r"too fast .*20 new jobs per 10 min.*30 s"):
            await s.queue.enqueue(owner(1), new_job())
        await s.queue.enqueue(owner(2), new_job())  # other users are not affected
        clock.advance(31)
        await s.queue.enqueue(owner(1), new_job())
        with pytest.raises(RateLimitedError, match="at most 5 jobs at once"):
            await s.queue.enqueue_many(owner(3), [new_job() for _ in range(6)])
        jobs = await s.queue.list_for_user(1, limit=100)
        assert len(jobs) == 6  # the refused job was never stored
        readout = await s.queue.quota_readout(1)
        assert readout.reserved == 1 and readout.used == 0  # nothing charged for the refusal
    finally:
        await s.db.dispose()
