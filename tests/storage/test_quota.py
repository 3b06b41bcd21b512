"""Quotas: reservation at enqueue, settlement, refunds, the rolling window, tiers, caps, races."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from storage import (
    JobKind,
    JobStatus,
    LedgerKind,
    QueueFullError,
    QuotaExceededError,
    audit,
)
from storage.estimates import EMA_ALPHA
from tests.storage.dbfixtures import (
    Services,
    make_services,
    new_job,
    owner,
    queue_settings,
    quota_settings,
)


@pytest.fixture
async def small(db_url: str) -> AsyncIterator[Services]:
    """A user allowance of 50 GPU-seconds per hour, generous caps, a 40 s guild allowance off."""
    built = await make_services(
        db_url,
        queue=queue_settings(max_queued_per_user=100, max_running_per_user=10),
        quota=quota_settings(
            user_daily_gpu_seconds=50.0,
            window_seconds=3600.0,
            role_multipliers={"900": 2.0, "901": 3.0},
        ),
        pool_size=10,
    )
    try:
        yield built
    finally:
        await built.db.dispose()


async def _run(s: Services, cost: float, gpu_seconds: float, user: int = 1) -> str:
    view = await s.queue.enqueue(owner(user), new_job(cost=cost))
    claimed = await s.queue.claim_next("w")
    assert claimed is not None and claimed.id == view.id
    await s.queue.complete(view.id, claimed.lease_token, result_refs=[], gpu_seconds=gpu_seconds)
    return view.id


async def test_concurrent_enqueues_never_overdraw(small: Services) -> None:
    s = small

    async def attempt() -> bool:
        try:
            await s.queue.enqueue(owner(), new_job(cost=10.0))
        except QuotaExceededError as exc:
            assert exc.remaining >= 0
            return False
        return True

    outcomes = await asyncio.gather(*(attempt() for _ in range(50)))
    assert sum(outcomes) == 5
    readout = await s.quota.readout(1)
    assert (readout.used, readout.reserved, readout.remaining) == (0.0, 50.0, 0.0)
    assert (await s.queue.stats()).queued == 5
    reserves = [e for e in await s.quota.ledger(user_id=1) if e.kind == LedgerKind.RESERVE]
    assert len(reserves) == 5 and sum(e.amount for e in reserves) == 50.0
    assert (await audit(s.db)).ok


async def test_reserve_settle_and_refund(small: Services) -> None:
    s = small
    await _run(s, cost=10.0, gpu_seconds=4.0)  # cheaper than estimated: charge what ran
    readout = await s.quota.readout(1)
    assert (readout.used, readout.reserved, readout.remaining) == (4.0, 0.0, 46.0)
    view = await s.queue.enqueue(owner(), new_job(cost=10.0))
    assert (await s.quota.readout(1)).remaining == 36.0
    await s.queue.cancel(view.id)
    assert (await s.quota.readout(1)).remaining == 46.0
    await _run(s, cost=10.0, gpu_seconds=12.5)  # dearer than estimated, room left: all charged
    assert (await s.quota.readout(1)).used == 16.5
    assert (await audit(s.db)).ok


async def test_overrun_is_charged_up_to_one_estimate_beyond_the_allowance(
    small: Services,
) -> None:
    s = small
    await _run(s, cost=40.0, gpu_seconds=40.0)
    job_id = await _run(s, cost=10.0, gpu_seconds=25.0)  # 15 s more than the allowance has
    view = await s.queue.require(job_id)
    # The 10 s of room plus an overdraft of the job's own 10 s estimate; 5 s are written off.
    assert view.charged == 20.0 and view.gpu_seconds == 25.0
    readout = await s.quota.readout(1)
    assert (readout.used, readout.remaining) == (60.0, 0.0)
    waived = [e for e in await s.quota.ledger(job_id=job_id) if e.kind == LedgerKind.WAIVE]
    assert [e.amount for e in waived] == [5.0]
    with pytest.raises(QuotaExceededError):
        await s.queue.enqueue(owner(), new_job(cost=0.5))
    assert (await audit(s.db)).ok


async def test_underestimated_queued_jobs_overdraw_by_at_most_their_estimates(
    small: Services,
) -> None:
    """The issue's repro, at the storage level: 10 s of room, then jobs whose estimates (1 s)
    are far below what they use (25 s). Each is charged what it used while there is room, and
    at most its own estimate beyond the allowance; once over, nothing more is admitted."""
    s = small
    await _run(s, cost=40.0, gpu_seconds=40.0)
    views = [await s.queue.enqueue(owner(), new_job(cost=1.0)) for _ in range(10)]
    for _ in views:
        claimed = await s.queue.claim_next("w")
        assert claimed is not None
        await s.queue.complete(claimed.id, claimed.lease_token, result_refs=[], gpu_seconds=25.0)
    charged = [(await s.queue.require(v.id)).charged for v in views]
    # The first had room 10 - 9 reserved by the others = 1 s, plus its 1 s estimate; each
    # later one starts over the allowance, so it is charged its estimate.
    assert charged == [2.0] + [1.0] * 9
    readout = await s.quota.readout(1)
    assert readout.used == 40.0 + 11.0 and readout.used <= 50.0 + sum(v.reserved for v in views)
    with pytest.raises(QuotaExceededError):
        await s.queue.enqueue(owner(), new_job(cost=0.5))
    assert (await audit(s.db)).ok


async def test_reservations_scale_with_work_at_the_measured_rate(small: Services) -> None:
    """Until a kind of work is measured it is priced at the settings' default rate; each
    completion then teaches its kind's rate (upscales apart from grids), never below the floor."""
    s = small
    default = s.quota.settings.estimate_seconds_per_unit
    grid = await s.queue.enqueue(owner(), new_job(cost=1.0, work_units=100.0))
    assert grid.reserved == round(100 * default, 3)
    claimed = await s.queue.claim_next("w")
    assert claimed is not None
    await s.queue.complete(grid.id, claimed.lease_token, result_refs=[], gpu_seconds=6.0)
    # 0.06 s per unit now: twice the work reserves twice the measured cost.
    bigger = await s.queue.enqueue(owner(), new_job(cost=1.0, work_units=200.0))
    assert bigger.reserved == 12.0
    small_job = await s.queue.enqueue(owner(), new_job(cost=1.0, work_units=1.0))
    assert small_job.reserved == 1.0  # the floor
    # A second measurement folds into the moving average rather than replacing it.
    claimed = await s.queue.claim_next("w")
    assert claimed is not None and claimed.id == bigger.id
    await s.queue.complete(bigger.id, claimed.lease_token, result_refs=[], gpu_seconds=24.0)
    rate = 0.06 * (1 - EMA_ALPHA) + 0.12 * EMA_ALPHA
    again = await s.queue.enqueue(owner(), new_job(cost=1.0, work_units=100.0))
    assert again.reserved == pytest.approx(100 * rate, abs=0.001)
    # Upscales have a rate of their own, still the default.
    upscale = await s.queue.enqueue(
        owner(), new_job(JobKind.UPSCALE, cost=0.5, work_units=100.0, parent_id=grid.id)
    )
    assert upscale.reserved == round(100 * default, 3)
    # Work bigger than the whole allowance is refused up front, naming the estimate.
    with pytest.raises(QuotaExceededError) as caught:
        await s.queue.enqueue(owner(), new_job(cost=1.0, work_units=10_000.0))
    assert caught.value.needed == pytest.approx(10_000 * rate) and caught.value.resets_at is None
    assert (await audit(s.db)).ok


async def test_rolling_window_and_reset_time(small: Services) -> None:
    s = small
    first_at = s.clock.now
    await _run(s, cost=30.0, gpu_seconds=30.0)
    s.clock.advance(600)
    await _run(s, cost=20.0, gpu_seconds=20.0)
    readout = await s.quota.readout(1)
    assert readout.remaining == 0.0 and readout.resets_at == first_at + s.quota.window
    with pytest.raises(QuotaExceededError) as caught:
        await s.queue.enqueue(owner(), new_job(cost=10.0))
    error = caught.value
    assert (error.scope, error.used, error.reserved, error.remaining) == ("user", 50.0, 0.0, 0.0)
    assert error.resets_at == first_at + s.quota.window
    assert "10.0 GPU-seconds" in str(error) and "Nothing was queued or charged" in str(error)
    # A request bigger than the whole allowance never fits: no reset time to promise.
    with pytest.raises(QuotaExceededError) as too_big:
        await s.queue.enqueue(owner(), new_job(cost=60.0))
    assert too_big.value.resets_at is None
    s.clock.advance(3000.001)  # the first charge has aged out
    assert (await s.quota.readout(1)).remaining == 30.0
    await s.queue.enqueue(owner(), new_job(cost=10.0))


async def test_role_tiers_and_admin_overrides(small: Services) -> None:
    s = small
    assert (await s.quota.readout(1, role_ids=[900])).allowance == 100.0
    assert (await s.quota.readout(1, role_ids=[900, 901, 5])).allowance == 150.0
    await s.queue.enqueue(owner(), new_job(cost=90.0), role_ids=[900])
    with pytest.raises(QuotaExceededError):
        await s.queue.enqueue(owner(), new_job(cost=20.0), role_ids=[900])
    override = await s.quota.set_override(1, 500.0, set_by=42, reason="patron")
    assert override.allowance == 500.0 and (await s.quota.get_override(1)) == override
    await s.queue.enqueue(owner(), new_job(cost=20.0), role_ids=[900])
    assert (await s.quota.readout(1, role_ids=[901])).allowance == 500.0  # override wins
    assert await s.quota.clear_override(1)
    assert not await s.quota.clear_override(1)
    assert await s.quota.get_override(1) is None
    assert (await s.quota.readout(1)).allowance == 50.0


async def test_guild_allowance(db_url: str) -> None:
    s = await make_services(
        db_url, quota=quota_settings(user_daily_gpu_seconds=50.0, guild_daily_gpu_seconds=30.0)
    )
    try:
        await s.queue.enqueue(owner(1, 100), new_job(cost=20.0))
        with pytest.raises(QuotaExceededError) as caught:
            await s.queue.enqueue(owner(2, 100), new_job(cost=20.0))
        assert caught.value.scope == "guild" and "server" in str(caught.value)
        await s.queue.enqueue(owner(2, 200), new_job(cost=20.0))  # another guild
        await s.queue.enqueue(owner(2, None), new_job(cost=20.0))  # a DM has no guild
        readout = await s.quota.readout(2, 100)
        assert readout.guild is not None and readout.guild.reserved == 20.0
        assert readout.guild.remaining == 10.0 and readout.reserved == 40.0
    finally:
        await s.db.dispose()


async def test_waiting_cap_is_a_clear_error_and_charges_nothing(services: Services) -> None:
    s = services  # defaults: 2 running, 10 waiting per user
    for _ in range(10):
        await s.queue.enqueue(owner(), new_job(cost=1.0))
    before = await s.quota.ledger(user_id=1)
    with pytest.raises(QueueFullError) as caught:
        await s.queue.enqueue(owner(), new_job(cost=1.0))
    assert caught.value.cap == 10 and "limit is 10" in str(caught.value)
    assert "Nothing was queued or charged" in str(caught.value)
    with pytest.raises(QueueFullError):
        await s.queue.enqueue_many(owner(), [new_job(), new_job()])
    assert await s.quota.ledger(user_id=1) == before
    assert (await s.queue.stats()).queued == 10
    # Another user is not affected, and a started job makes room.
    await s.queue.enqueue(owner(2), new_job())
    assert await s.queue.claim_next("w") is not None
    await s.queue.enqueue(owner(), new_job())


async def test_enqueue_many_is_all_or_nothing(small: Services) -> None:
    s = small
    with pytest.raises(QuotaExceededError):
        await s.queue.enqueue_many(owner(), [new_job(cost=20.0) for _ in range(3)])
    assert await s.queue.list_for_user(1) == []
    views = await s.queue.enqueue_many(owner(), [new_job(cost=20.0, prompt=p) for p in "ab"])
    assert [v.request["prompt"] for v in views] == ["a", "b"]


async def test_running_cap_holds_a_users_third_job(services: Services) -> None:
    s = services
    mine = [(await s.queue.enqueue(owner(), new_job())).id for _ in range(3)]
    claims = [await s.queue.claim_next(f"w{i}") for i in range(3)]
    assert [c.id if c else None for c in claims] == [mine[0], mine[1], None]
    other = await s.queue.enqueue(owner(2), new_job())
    claimed = await s.queue.claim_next("w3")
    assert claimed is not None and claimed.id == other.id
    first = claims[0]
    assert first is not None
    await s.queue.complete(first.id, first.lease_token, result_refs=[], gpu_seconds=0)
    claimed = await s.queue.claim_next("w4")
    assert claimed is not None and claimed.id == mine[2]
    assert (await s.queue.require(mine[2])).status == JobStatus.RUNNING
