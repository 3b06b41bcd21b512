"""Pure logic of the ledger: quota arithmetic, queue positions, ids. Plain values, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.settings import QuotaSettings
from storage.estimates import WaitingGroup, jobs_ahead, turn_key
from storage.quota_policy import (
    Balance,
    allowance_ms,
    capped_charge,
    estimate_seconds,
    frees_enough_at,
    rate_key,
    reservation_ms,
)
from storage.types import ALPHABET, JOB_ID_LENGTH, JobKind, new_job_id, to_ms

T0 = datetime(2030, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_allowance_override_then_best_role_multiplier() -> None:
    settings = QuotaSettings(user_daily_gpu_seconds=100, role_multipliers={"1": 2.0, "2": 0.5})
    assert allowance_ms(settings, override_ms=None, role_ids=[]) == 100_000
    assert allowance_ms(settings, override_ms=None, role_ids=[2]) == 100_000  # never below base
    assert allowance_ms(settings, override_ms=None, role_ids=[2, 1, 99]) == 200_000
    assert allowance_ms(settings, override_ms=5, role_ids=[1]) == 5


def test_estimates_by_kind_and_mode() -> None:
    settings = QuotaSettings(
        estimate_fast_seconds=2, estimate_quality_seconds=10, estimate_followup_seconds=1
    )
    assert estimate_seconds(settings, JobKind.IMAGINE, "fast") == 2
    assert estimate_seconds(settings, JobKind.VARIATION, "quality") == 10
    assert estimate_seconds(settings, JobKind.UPSCALE, "quality") == 1
    assert estimate_seconds(settings, JobKind.SELECT, "quality") == 0
    # A single image (a group session's entry) reserves a quarter of its mode's grid floor.
    assert estimate_seconds(settings, JobKind.IMAGINE, "quality", images=1) == 2.5
    assert estimate_seconds(settings, JobKind.UPSCALE, "quality", images=1) == 1


def test_balance_and_capped_charge() -> None:
    balance = Balance(allowance_ms=1000, used_ms=700, reserved_ms=200)
    assert balance.remaining_ms == 100 and balance.fits(100) and not balance.fits(101)
    assert Balance(1000, 1200, 0).remaining_ms == 0
    # Charged in full while it fits, then at most one estimate (the overdraft) beyond it.
    assert capped_charge(300, room_ms=500, overdraft_ms=100) == (300, 0)
    assert capped_charge(300, room_ms=120, overdraft_ms=100) == (220, 80)
    assert capped_charge(300, room_ms=120, overdraft_ms=500) == (300, 0)
    # Already over the allowance (an earlier overdraft): only this job's estimate more.
    assert capped_charge(300, room_ms=-50, overdraft_ms=100) == (100, 200)
    assert capped_charge(300, room_ms=-50, overdraft_ms=0) == (0, 300)


def test_reservations_scale_with_work_and_keep_their_floor() -> None:
    # 100 units at the default 0.035 s/unit: 3.5 s, above a 2 s floor.
    assert reservation_ms(2.0, 100, None, 0.035) == 3500
    # A measured rate replaces the default.
    assert reservation_ms(2.0, 100, 0.25, 0.035) == 25_000
    # Small work keeps the floor; so do nonsense inputs.
    assert reservation_ms(2.0, 10, 0.035, 0.035) == 2000
    assert reservation_ms(2.0, float("nan"), 0.25, 0.035) == 2000
    assert reservation_ms(2.0, 100, float("inf"), 0.035) == 3500
    assert reservation_ms(2.0, 100, -1.0, 0.035) == 3500
    assert rate_key(JobKind.UPSCALE, "quality") == "quality/upscale"
    assert rate_key(JobKind.VARIATION, "fast") == "fast"


def test_frees_enough_at_walks_charges_oldest_first() -> None:
    charges = [(T0 + 2 * HOUR, 300), (T0, 500), (T0 + HOUR, 200)]
    balance = Balance(allowance_ms=1000, used_ms=1000, reserved_ms=0)
    window = timedelta(days=1)
    assert frees_enough_at(balance, charges, window, 400) == T0 + window
    assert frees_enough_at(balance, charges, window, 600) == T0 + HOUR + window
    assert frees_enough_at(balance, charges, window, 1001) is None
    assert frees_enough_at(Balance(1000, 0, 0), [], window, 10) is None  # fits already


@given(st.lists(st.integers(1, 500), max_size=8), st.integers(0, 1000), st.integers(0, 1000))
def test_frees_enough_at_is_the_first_moment_it_fits(
    amounts: list[int], reserved: int, needed: int
) -> None:
    charges = [(T0 + i * HOUR, a) for i, a in enumerate(amounts)]
    window = timedelta(days=1)
    balance = Balance(allowance_ms=1500, used_ms=sum(amounts), reserved_ms=reserved)
    at = frees_enough_at(balance, charges, window, needed)
    if at is None:
        assert balance.fits(needed) or not Balance(1500, 0, reserved).fits(needed)
        return
    still = sum(a for t, a in charges if t + window > at)
    assert Balance(1500, still, reserved).fits(needed)
    before = sum(a for t, a in charges if t + window >= at)  # an instant earlier
    assert not Balance(1500, before, reserved).fits(needed)


def test_new_job_ids_are_short_lowercase_base32() -> None:
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == JOB_ID_LENGTH and set(i) <= set(ALPHABET) for i in ids)


def test_negative_amounts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        to_ms(-0.001)
    assert (to_ms(1.25), to_ms(0.0004), to_ms(2)) == (1250, 0, 2000)


def _simulate(queues: dict[int, int], last: dict[int, int | None]) -> list[tuple[int, int]]:
    """The scheduler's order for one worker and one priority: (owner, rank) in start order."""
    order: list[tuple[int, int]] = []
    taken = dict.fromkeys(queues, 0)
    heads = {owner: owner * 1000 for owner in queues}  # seq of each owner's oldest job
    clock = 10_000
    while any(taken[o] < queues[o] for o in queues):
        waiting = [o for o in queues if taken[o] < queues[o]]
        owner = min(
            waiting,
            key=lambda o: (last[o] is not None, last[o] or 0, heads[o] + taken[o]),
        )
        order.append((owner, taken[owner]))
        taken[owner] += 1
        clock += 1
        last[owner] = clock
    return order


@given(
    st.dictionaries(st.integers(1, 6), st.integers(1, 6), min_size=1, max_size=5),
    st.data(),
)
def test_positions_match_the_fair_order(queues: dict[int, int], data: st.DataObject) -> None:
    last: dict[int, int | None] = {
        owner: data.draw(st.one_of(st.none(), st.integers(0, 100))) for owner in queues
    }
    groups_of = {
        owner: (turn_key(None if t is None else T0 + timedelta(seconds=t), owner * 1000))
        for owner, t in last.items()
    }
    order = _simulate(queues, dict(last))
    for index, (owner, rank) in enumerate(order):
        groups = [
            WaitingGroup(o, 0, n, rank if o == owner else 0, groups_of[o])
            for o, n in queues.items()
        ]
        assert jobs_ahead(groups, owner, 0, owner * 1000 + rank) == index


def test_higher_priority_jobs_all_count() -> None:
    groups = [
        WaitingGroup(1, 0, 5, 2, turn_key(None, 1)),
        WaitingGroup(2, 1, 3, 0, turn_key(None, 2)),
        WaitingGroup(3, 0, 1, 0, turn_key(T0, 3)),
    ]
    # 3 follow-ups of user 2, then user 1's two earlier jobs, and user 3's single job.
    assert jobs_ahead(groups, 1, 0, 10) == 3 + 2 + 1
