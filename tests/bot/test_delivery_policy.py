"""What the publisher makes of Discord's answers: classification, backoff and the budget of
invalid requests. Plain values, no Discord."""

from __future__ import annotations

import pytest

from bot.delivery_policy import (
    DISCORD_INVALID_LIMIT,
    Failure,
    InvalidRequestBudget,
    backoff_seconds,
    classify,
    describe,
)
from config.settings import BotSettings


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (403, 50001, Failure.CLOSED),  # Missing Access: removed, or cannot see the channel
        (403, 50013, Failure.CLOSED),  # Missing Permissions
        (403, 50007, Failure.CLOSED),  # the user refuses DMs
        (404, 10003, Failure.CLOSED),  # Unknown Channel: deleted
        (404, 10008, Failure.MESSAGE_GONE),  # Unknown Message: post a new one
        (404, 10015, Failure.MESSAGE_GONE),  # Unknown Webhook (the interaction's message)
        (429, 0, Failure.TRANSIENT),
        (500, 0, Failure.TRANSIENT),
        (502, 0, Failure.TRANSIENT),
        (503, 0, Failure.TRANSIENT),
        (0, 0, Failure.TRANSIENT),  # no answer at all
        (401, 0, Failure.TRANSIENT),  # a bad bot token: never a reason to give a result up
        (400, 50035, Failure.REJECTED),
        (413, 40005, Failure.REJECTED),
    ],
)
def test_discords_answers_are_classified(status: int, code: int, expected: Failure) -> None:
    failure = classify(status, code)
    assert failure is expected
    assert failure.permanent is (expected is not Failure.TRANSIENT)


def test_answers_are_named_for_the_owner() -> None:
    assert describe(403, 50001) == "403 Missing Access"
    assert describe(404, 10003) == "404 Unknown Channel"
    assert describe(503) == "HTTP 503"
    assert describe(400, 50035) == "HTTP 400 (code 50035)"
    assert describe(0) == "no answer from Discord"


def test_backoff_doubles_up_to_the_cap_with_jitter_in_its_upper_half() -> None:
    waits = [backoff_seconds(n, base=5, cap=900, jitter=0.0) for n in range(1, 11)]
    assert waits == [2.5, 5, 10, 20, 40, 80, 160, 320, 450, 450]
    assert backoff_seconds(3, base=5, cap=900, jitter=0.999) == pytest.approx(20, rel=1e-3)
    assert backoff_seconds(10_000, base=5, cap=900, jitter=0.5) == 675  # no overflow
    with pytest.raises(ValueError, match="from 1"):
        backoff_seconds(0, base=5, cap=900, jitter=0.0)
    with pytest.raises(ValueError, match="jitter"):
        backoff_seconds(1, base=5, cap=900, jitter=1.0)


def test_the_budget_counts_invalid_answers_in_a_sliding_window() -> None:
    now = [0.0]
    budget = InvalidRequestBudget(limit=3, window_seconds=600, clock=lambda: now[0])
    for status in (200, 204, 404, 500, 400):
        budget.record(status)  # Discord does not count these
    assert budget.used() == 0 and not budget.exhausted()
    budget.record(403)
    now[0] = 100
    budget.record(429)
    now[0] = 200
    budget.record(401)
    assert budget.used() == 3 and budget.exhausted()
    assert budget.frees_in() == 400  # when the first one leaves the window
    assert budget.totals == {403: 1, 429: 1, 401: 1}
    now[0] = 600  # the 403 at 0 is out: room for one more
    assert budget.used() == 2 and not budget.exhausted() and budget.frees_in() == 0
    budget.record(403)
    assert budget.exhausted()
    now[0] = 1000
    assert budget.used() == 1


def test_the_budget_setting_stays_well_below_discords_limit() -> None:
    default = BotSettings().invalid_request_budget
    assert 0 < default <= DISCORD_INVALID_LIMIT // 5
    with pytest.raises(ValueError, match="invalid_request_budget"):
        BotSettings(invalid_request_budget=DISCORD_INVALID_LIMIT)
    with pytest.raises(ValueError, match="invalid_request_budget"):
        BotSettings(invalid_request_budget=0)
