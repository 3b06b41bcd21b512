"""Group session rules as plain values: bounds, ranking and its tie rule, the clock's sums."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from storage.session_rules import (
    Tally,
    board_nonce,
    check_extend,
    rank,
    remaining_ms,
    results_from_json,
    results_json,
    validate,
)
from storage.types import PoolKind, RoundResult, SessionSpec

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def spec(**overrides: Any) -> SessionSpec:
    base: dict[str, Any] = {"guild_id": 1, "channel_id": 2, "host_id": 3, "theme": "sea"}
    return SessionSpec(**{**base, **overrides})


def test_themes_default_to_the_theme_and_must_match_the_rounds() -> None:
    assert validate(spec(rounds=3)) == ("sea", "sea", "sea")
    assert validate(spec(rounds=2, themes=(" dawn ", "dusk"))) == ("dawn", "dusk")
    with pytest.raises(ValueError, match="2 round"):
        validate(spec(rounds=2, themes=("a",)))
    with pytest.raises(ValueError, match="empty"):
        validate(spec(rounds=2, themes=("a", " ")))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rounds": 0}, r"rounds must be 1\.\.10 \(got 0\)"),
        ({"round_seconds": 24 * 3600 + 60}, r"round_minutes must be 1\.\.1440 minutes"),
        ({"voting_seconds": 0}, r"voting_minutes must be 1\.\.1440 minutes"),
        ({"entries_per_member": 11}, r"entries_per_member must be 1\.\.10"),
        ({"votes_per_member": 0}, r"votes_per_member must be 1\.\.25"),
        ({"pool": PoolKind.SERVER}, r"pool_gpu_seconds must be 1\.\.1e\+06 GPU-seconds"),
        ({"pool_seconds": 5.0}, "only for pool:server"),
        ({"theme": "x" * 1001}, "at most 1000 characters"),
    ],
)
def test_each_bound_names_the_option_and_its_range(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate(spec(**overrides))


def test_ranking_is_by_votes_then_the_earlier_entry() -> None:
    ranked = rank(
        [
            Tally("late", 1, "j1", 2, seq=9),
            Tally("early", 2, "j2", 2, seq=3),
            Tally("top", 3, None, 5, seq=10),
            Tally("none", 4, "j4", 0, seq=1),
        ]
    )
    assert [(r.rank, r.entry_id) for r in ranked] == [
        (1, "top"),
        (2, "early"),
        (3, "late"),
        (4, "none"),
    ]
    assert results_from_json(results_json(ranked)) == ranked
    assert RoundResult(1, "sea", ranked, NOW).winner == ranked[0]


def test_a_round_nobody_voted_in_has_no_winner() -> None:
    ranked = rank([Tally("a", 1, "j", 0, seq=1)])
    assert RoundResult(1, "sea", ranked, NOW).winner is None
    assert RoundResult(1, "sea", (), NOW).winner is None


def test_clock_sums_and_board_nonces() -> None:
    assert remaining_ms(NOW + timedelta(seconds=1.5), NOW) == 1500
    assert remaining_ms(NOW - timedelta(seconds=1), NOW) == 0
    assert remaining_ms(None, NOW) == 0
    assert board_nonce("0123456789ab", 10) == "sb0123456789abr10"
    with pytest.raises(ValueError, match="extend"):
        check_extend(0)
