"""The edit budget: sliding per-channel and global windows, plain values, a fake clock."""

from __future__ import annotations

from bot.edit_budget import CHANNEL_WINDOW, WINDOW_MARGIN, EditBudget, most_behind_first


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_channel_gets_its_edits_then_waits_for_the_window() -> None:
    clock = FakeClock()
    budget = EditBudget(per_channel=3, per_second=0, clock=clock)
    for _ in range(3):
        assert budget.allows(1)
        budget.take(1)
    assert not budget.allows(1)
    assert budget.allows(2)  # another channel has its own window
    clock.now += CHANNEL_WINDOW  # Discord's window has passed, the margin has not
    assert not budget.allows(1)
    clock.now += WINDOW_MARGIN + 0.01
    assert budget.allows(1)
    assert budget.counters.granted == 3


def test_results_are_never_refused_but_use_the_budget() -> None:
    clock = FakeClock()
    budget = EditBudget(per_channel=3, per_second=0, clock=clock)
    budget.spend(1)
    budget.spend(1)
    budget.take(1)
    assert not budget.allows(1)
    assert budget.counters.forced == 2


def test_the_global_limit_spans_channels() -> None:
    clock = FakeClock()
    budget = EditBudget(per_channel=0, per_second=2, clock=clock)
    budget.take(1)
    budget.take(2)
    assert not budget.allows(3)
    clock.now += 1.0 + WINDOW_MARGIN + 0.01
    assert budget.allows(3)


def test_no_budget_allows_everything() -> None:
    budget = EditBudget.unlimited()
    for _ in range(1000):
        budget.take(1)
    assert budget.allows(1)


def test_the_most_behind_messages_come_first_ties_in_order() -> None:
    last = {"a": 5.0, "b": 1.0, "c": 0.0, "d": 1.0}
    assert most_behind_first(["a", "b", "c", "d"], last.__getitem__) == ["c", "b", "d", "a"]
