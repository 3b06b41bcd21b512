"""Group sessions' pure parts: custom_ids parsed strictly, and the texts (the card, the panel,
the boards' messages) with anonymity kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.customid import CustomIdError, split
from bot.render import MODLOG_VERBS
from bot.render_sessions import (
    TIE_RULE,
    limits_line,
    render_board_text,
    render_session_card,
    render_vote,
    timestamp,
)
from bot.session_ids import decode_id, decode_panel, panel_id, submit_id, vote_id
from storage.types import (
    EntryState,
    ModAction,
    PoolKind,
    PoolStatus,
    RankedEntry,
    RoundResult,
    SessionCounts,
    SessionPhase,
    SessionStatus,
    SessionView,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
SID, EID = "0123456789ab", "cdefghjkmnpq"


def session(**changes: object) -> SessionView:
    values: dict[str, object] = {
        "id": SID,
        "guild_id": 1,
        "channel_id": 2,
        "thread_id": 3,
        "host_id": 4,
        "theme": "lighthouses",
        "themes": ("dawn", "dusk"),
        "rounds": 2,
        "round_seconds": 600,
        "voting_seconds": 300,
        "voting_wait_seconds": 600,
        "entries_per_member": 1,
        "votes_per_member": 2,
        "approval": True,
        "anonymous": True,
        "pool": PoolKind.SERVER,
        "pool_seconds": 100.0,
        "limits": {"modes": ["fast"], "aspect": "1:1"},
        "status": SessionStatus.RUNNING,
        "round": 1,
        "phase": SessionPhase.SUBMIT,
        "phase_ends_at": NOW + timedelta(minutes=10),
        "paused_remaining_seconds": None,
        "card_message_id": 5,
        "version": 1,
        "created_at": NOW,
        "ended_at": None,
    }
    values.update(changes)
    return SessionView(**values)  # type: ignore[arg-type]


def counts(**states: int) -> SessionCounts:
    return SessionCounts({s: states.get(s.value, 0) for s in EntryState}, 3, 1)


def test_custom_ids_round_trip_and_refuse_anything_else() -> None:
    assert split(submit_id(SID)) == ("ss", SID)
    assert split(vote_id(EID)) == ("sv", EID)
    assert decode_panel(split(panel_id("a", EID))[1]) == ("a", EID)
    for bad in ("", SID.upper(), SID + "0", SID[:-1], "uuuuuuuuuuuu", f"{SID}\n", "../../x"):
        with pytest.raises(CustomIdError):
            decode_id(bad)
    for bad in (f"x:{EID}", EID, f"a:{EID}:1", f"a:{EID.upper()}"):
        with pytest.raises(CustomIdError):
            decode_panel(bad)


def test_the_card_shows_round_phase_time_rules_counts_and_pool() -> None:
    text = render_session_card(
        session(), counts(pending=1, approved=2, rejected=1), PoolStatus(100, 10, 5, 85)
    )
    assert "Round 1 of 2**: dawn" in text
    assert f"Submissions close {timestamp(NOW + timedelta(minutes=10))}" in text
    assert "<t:" in text and ":R>" in text
    assert "1 entry and 2 vote(s) per member" in text and "mode fast, aspect 1:1" in text
    assert "authors hidden until the round ends" in text and TIE_RULE in text
    assert "Entries this round: 3 · Participants: 3 · Generating: 1" in text
    assert "85 of 100 GPU-seconds left" in text
    with_eta = render_session_card(session(), counts(approved=1), None, 150.0)
    assert "Generating: 1 (about 2 min)" in with_eta
    paused = render_session_card(
        session(status=SessionStatus.PAUSED, paused_remaining_seconds=90.0, phase_ends_at=None),
        counts(),
    )
    assert "Paused by the host" in paused and "1.5 min left" in paused
    ended = render_session_card(
        session(status=SessionStatus.ENDED, phase=SessionPhase.ENDED, round=2), counts()
    )
    assert "Ended after round 2 of 2" in ended and "/submit" not in ended


def test_the_board_text_ranks_names_and_links() -> None:
    result = RoundResult(
        1,
        "dawn",
        (RankedEntry(1, EID, 7, "j1", 2, 1), RankedEntry(2, SID, 8, "j2", 2, 2)),
        NOW,
    )
    text = render_board_text(session(), result, {7: "Ann"}, {EID: "https://x/1"})
    lines = text.splitlines()
    assert lines[1] == "1. Ann: 2 vote(s) https://x/1"
    assert lines[2] == "2. <@8>: 2 vote(s)" and lines[-1] == TIE_RULE
    assert limits_line({}) == ""
    assert render_vote(False, 0, 1) == "Vote taken back. You use 0 of your 1 vote(s) this round."


def test_every_audit_log_action_has_words() -> None:
    assert set(MODLOG_VERBS) == set(ModAction)
