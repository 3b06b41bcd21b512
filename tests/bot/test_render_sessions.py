"""Group sessions' pure parts: custom_ids parsed strictly, and the texts (the card, the panel,
the boards' messages) with anonymity kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.customid import CustomIdError, split
from bot.render import MODLOG_VERBS
from bot.render_sessions import (
    TIE_RULE,
    entry_state_text,
    limits_line,
    render_board_text,
    render_entry_decided,
    render_entry_received,
    render_my_entries,
    render_session_card,
    render_vote,
    timestamp,
)
from bot.session_ids import decode_id, decode_panel, panel_id, submit_id, vote_id
from storage.types import (
    EntryState,
    EntryView,
    HoldState,
    JobStatus,
    ModAction,
    PoolKind,
    PoolStatus,
    QueuePlace,
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


def entry(**changes: object) -> EntryView:
    values: dict[str, object] = {
        "id": EID,
        "seq": 1,
        "session_id": SID,
        "round": 1,
        "member_id": 7,
        "prompt": "a red lighthouse",
        "state": EntryState.APPROVED,
        "job_id": "j1",
        "reason": None,
        "submitted_at": NOW,
        "decided_by": 4,
        "decided_at": NOW,
        "message_id": None,
        "panel_message_id": None,
        "votes": 0,
        "job_status": JobStatus.QUEUED,
    }
    values.update(changes)
    return EntryView(**values)  # type: ignore[arg-type]


def test_an_entrys_state_in_words_for_its_author() -> None:
    def said(guild: int = 1, place: QueuePlace | None = None, /, **changes: object) -> str:
        return entry_state_text(entry(**changes), guild, place)

    assert said(state=EntryState.PENDING, job_id=None, job_status=None) == (
        "waiting for the host's approval"
    )
    assert said(state=EntryState.REJECTED, reason="off *theme* @everyone") == (
        "rejected by the host: off \\*theme\\* @\u200beveryone"
    )
    assert "the round closed before the host decided" in said(state=EntryState.EXPIRED)
    assert said(state=EntryState.REMOVED) == "removed by the host"
    assert said() == "approved: queued"
    assert said(1, QueuePlace("j1", JobStatus.QUEUED, 3, 200.0)) == (
        "approved: queued (position 3, about 3 min)"
    )
    assert said(1, QueuePlace("j1", JobStatus.QUEUED, 0, 5.0)) == (
        "approved: queued (next, about 1 min)"
    )
    assert said(job_status=JobStatus.RUNNING) == "generating"
    assert said(job_status=JobStatus.CANCELLED) == "cancelled"
    assert said(job_status=JobStatus.FAILED, job_error="x" * 500).startswith("failed: xxx")
    assert len(said(job_status=JobStatus.DEAD, job_error="x" * 500)) < 140
    assert said(job_status=JobStatus.FAILED) == "failed: unknown error"
    assert said(job_status=JobStatus.BLOCKED) == "removed by a moderator"
    done = {"job_status": JobStatus.SUCCEEDED}
    assert said(**done) == "generated; being posted"
    assert "held for review" in said(**done, review=HoldState.HELD)
    assert said(**done, review=HoldState.REJECTED) == "removed by a moderator"
    assert said(**done, job_deleted=True) == "deleted"
    assert said(**done, undeliverable="Missing Access").startswith("failed: it could not be posted")
    assert said(9, **done, posted_channel_id=3, posted_message_id=42) == (
        "posted: https://discord.com/channels/9/3/42"
    )


def test_my_entries_newest_round_first_with_votes_and_within_the_limit() -> None:
    mine = [
        entry(id="a" * 12, seq=1, round=1, prompt="first at dawn"),
        entry(id="b" * 12, seq=5, round=2, prompt="second at dusk", state=EntryState.PENDING),
        entry(id="c" * 12, seq=6, round=2, prompt="third at dusk", job_status=JobStatus.RUNNING),
    ]
    voting = session(round=2, phase=SessionPhase.VOTE)
    text = render_my_entries(voting, mine, {}, 1)
    lines = text.splitlines()
    assert lines[0] == "Your entries in the session **lighthouses** (round 2 of 2):"
    assert lines[1] == "You use 1 of your 2 vote(s) this round."
    assert lines[2:] == [
        "**Round 2** (dusk)",
        f"`{'b' * 12}` second at dusk: waiting for the host's approval",
        f"`{'c' * 12}` third at dusk: generating",
        "**Round 1** (dawn)",
        f"`{'a' * 12}` first at dawn: approved: queued",
    ]
    assert "vote(s)" not in render_my_entries(session(), mine, {}, None)
    # No entries: how to enter; an ended session says it is over.
    empty = render_my_entries(session(), [], {}, None)
    assert "no entries yet" in empty and "/submit prompt:" in empty and "<#3>" in empty
    ended = render_my_entries(session(status=SessionStatus.ENDED), [], {}, None)
    assert "(ended)" in ended and "/submit" not in ended
    # Many long entries: cut at whole entries, the rest counted, within Discord's 2000.
    many = [
        entry(
            id=f"{n:012d}",
            seq=n,
            round=1 + n // 10,
            state=EntryState.REJECTED,
            reason="r" * 300,
            prompt="p" * 900,
        )
        for n in range(100)
    ]
    text = render_my_entries(session(rounds=10), many, {}, None)
    assert len(text) <= 2000 and text.endswith("more not shown.")
    shown = sum(f"`{n:012d}`" in text for n in range(100))
    assert 0 < shown < 100 and f"…and {100 - shown} more not shown." in text
    assert "`000000000090`" in text and "`000000000000`" not in text  # newest round first


def test_the_decision_dm_and_the_received_answer_point_to_session_mine() -> None:
    approved = render_entry_decided(entry(), session(theme="boats *now*"))
    assert approved == (
        f"Your entry `{EID}` in the session **boats \\*now\\*** was approved: it is queued and "
        "will be posted in <#3>. `/session mine` there shows its state."
    )
    rejected = render_entry_decided(entry(state=EntryState.REJECTED, reason="off theme"), session())
    assert rejected.endswith("was rejected by the host: off theme")
    for approval in (True, False):
        received = render_entry_received(entry(state=EntryState.PENDING), approval)
        assert "`/session mine`" in received
