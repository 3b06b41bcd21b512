"""What group sessions say on Discord: the session card, the host panel, entries' answers and
the boards' captions. Pure: plain values in, text out.

Anonymity: with ``anonymous`` on, no text here names an entry's author while its round runs.
The panel may (it is seen by hosts and moderators only); the boards do (a round's board is
posted once its round is over).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.render import CONTENT_LIMIT, escape, mention, message_link, shorten
from storage.types import (
    EntryState,
    EntryView,
    HoldState,
    JobStatus,
    PoolStatus,
    QueuePlace,
    RoundResult,
    SessionCounts,
    SessionPhase,
    SessionStatus,
    SessionView,
)

#: The tie rule, as the boards and the card state it.
TIE_RULE = "Ties go to the earlier entry."

_PHASES = {
    SessionPhase.SUBMIT: "submissions open",
    SessionPhase.GENERATE: "entries generating; voting opens when they are all posted",
    SessionPhase.VOTE: "voting",
    SessionPhase.ENDED: "ended",
}


def timestamp(moment: datetime, style: str = "R") -> str:
    """A Discord timestamp: each reader's client shows it (``R``: "in 5 minutes")."""
    return f"<t:{int(moment.timestamp())}:{style}>"


def limits_line(limits: Mapping[str, Any]) -> str:
    """The host's limits on the options, in words ("" when there are none)."""
    parts = []
    modes = limits.get("modes")
    if modes:
        parts.append(f"mode {' or '.join(str(m) for m in modes)}")
    if limits.get("aspect"):
        parts.append(f"aspect {limits['aspect']}")
    return ", ".join(parts)


def render_session_card(
    session: SessionView,
    counts: SessionCounts,
    pool: PoolStatus | None = None,
    eta_seconds: float | None = None,
) -> str:
    """The card in the session's thread: theme, round, phase and time left, the rules and
    the counts. Time left is a relative timestamp, so the card is edited only on a change."""
    theme = escape(shorten(session.round_theme, 200))
    lines = [f"## Group session: {escape(shorten(session.theme, 200))}"]
    if session.status is SessionStatus.ENDED:
        lines.append(f"Ended after round {session.round} of {session.rounds}: see the boards.")
    else:
        phase = _PHASES[session.phase]
        lines.append(f"**Round {session.round} of {session.rounds}**: {theme}")
        if session.status is SessionStatus.PAUSED:
            left = session.paused_remaining_seconds or 0
            lines.append(f"Paused by the host ({phase}; {round(left / 60, 1):g} min left).")
        elif session.phase_ends_at is not None:
            verb = {SessionPhase.SUBMIT: "close", SessionPhase.GENERATE: "open at the latest"}
            ends = verb.get(session.phase, "close")
            what = "Voting" if session.phase is not SessionPhase.SUBMIT else "Submissions"
            lines.append(f"Now: {phase}. {what} {ends} {timestamp(session.phase_ends_at)}.")
    rules = [
        f"{session.entries_per_member} entr{'y' if session.entries_per_member == 1 else 'ies'} "
        f"and {session.votes_per_member} vote(s) per member a round",
        "one image per entry",
        "no votes for your own",
    ]
    if session.approval:
        rules.append("the host approves each entry")
    if session.anonymous:
        rules.append("authors hidden until the round ends")
    if session.lane_seconds:
        rules.append(
            f"entries jump the queue in the round's last {session.lane_seconds / 60:g} min"
        )
    limits = limits_line(session.limits)
    if limits:
        rules.append(limits)
    lines.append("Rules: " + "; ".join(rules) + f". {TIE_RULE}")
    entries = sum(n for state, n in counts.entries.items() if state is not EntryState.REJECTED)
    tail = f"Entries this round: {entries} · Participants: {counts.participants}"
    if counts.outstanding:
        tail += f" · Generating: {counts.outstanding}"
        if eta_seconds is not None:
            tail += f" (about {max(1, round(eta_seconds / 60))} min)"
    lines.append(tail)
    if pool is not None:
        lines.append(
            f"Server pool: {pool.left:.0f} of {pool.pool:.0f} GPU-seconds left "
            f"({pool.spent:.0f} spent, {pool.reserved:.0f} reserved)."
        )
    if session.live:
        lines.append("Enter with `/submit prompt:` here, or the Submit button.")
    return shorten("\n".join(lines))


#: How a member checks on their entries (named in the answers and notices they get).
MINE_HINT = "See its state any time with `/session mine` here."


def render_entry_received(entry: EntryView, approval: bool) -> str:
    """The member's private answer to a submission."""
    if entry.state is EntryState.PENDING and approval:
        return (
            f"Entry `{entry.id}` received for round {entry.round}: the host approves entries "
            "first, and you will see it here in the thread once it is generated. "
            f"{MINE_HINT}"
        )
    return (
        f"Entry `{entry.id}` received for round {entry.round}: it is queued and will be posted "
        f"here in the thread. {MINE_HINT}"
    )


def render_entry_decided(entry: EntryView, session: SessionView) -> str:
    """The direct message that tells a member what the host decided about their entry."""
    head = f"Your entry `{entry.id}` in the session **{escape(shorten(session.theme, 100))}** was"
    if entry.state is EntryState.APPROVED:
        where = f"<#{session.thread_id}>" if session.thread_id else "the session's thread"
        return (
            f"{head} approved: it is queued and will be posted in {where}. "
            "`/session mine` there shows its state."
        )
    reason = escape(shorten(entry.reason or "no reason given", 300))
    return f"{head} rejected by the host: {reason}"


def _minutes(seconds: float) -> str:
    return f"about {max(1, round(seconds / 60))} min"


def entry_state_text(entry: EntryView, guild_id: int, place: QueuePlace | None = None) -> str:
    """An entry's state in words for its own author (``/session mine``): the host's decision,
    then its job's state, then whether it is on Discord (with the link to its message)."""
    if entry.state is EntryState.PENDING:
        return "waiting for the host's approval"
    if entry.state is EntryState.REJECTED:
        return f"rejected by the host: {escape(shorten(entry.reason or 'no reason given', 200))}"
    if entry.state is EntryState.EXPIRED:
        return "expired (the round closed before the host decided)"
    if entry.state is EntryState.REMOVED:
        return "removed by the host"
    status = entry.job_status
    if status is None or status is JobStatus.QUEUED:
        if place is None or place.status is not JobStatus.QUEUED:
            return "approved: queued"
        where = f"position {place.position}" if place.position else "next"
        return f"approved: queued ({where}, {_minutes(place.eta_seconds)})"
    if status is JobStatus.RUNNING:
        return "generating"
    if status is JobStatus.CANCELLED:
        return "cancelled"
    if status is JobStatus.BLOCKED:
        return "removed by a moderator"
    if status is not JobStatus.SUCCEEDED:
        return f"failed: {escape(shorten(entry.job_error or 'unknown error', 120))}"
    if entry.job_deleted:
        return "deleted"
    if entry.review is HoldState.HELD:
        return "generated; held for review by the server's moderators"
    if entry.review is HoldState.REJECTED:
        return "removed by a moderator"
    if entry.posted_message_id is not None:
        link = message_link(guild_id, entry.posted_channel_id, entry.posted_message_id)
        return f"posted: {link}"
    if entry.undeliverable is not None:
        return f"failed: it could not be posted ({escape(shorten(entry.undeliverable, 120))})"
    return "generated; being posted"


def render_my_entries(
    session: SessionView,
    entries: Sequence[EntryView],
    places: Mapping[str, QueuePlace],
    votes_used: int | None,
) -> str:
    """``/session mine``: the caller's own entries (``entries`` must be theirs only), newest
    round first, each with its state; their votes when voting is on. Within Discord's limit:
    older entries that do not fit are counted, not listed."""
    theme = escape(shorten(session.theme, 100))
    where = f" in <#{session.thread_id}>" if session.thread_id else ""
    if session.live:
        head = (
            f"Your entries in the session **{theme}** (round {session.round} of {session.rounds})"
        )
    else:
        head = f"Your entries in the session **{theme}** (ended)"
    lines = [head + ":"]
    if votes_used is not None:
        lines.append(f"You use {votes_used} of your {session.votes_per_member} vote(s) this round.")
    if not entries:
        if session.live:
            lines.append(
                f"You have no entries yet. Enter with `/submit prompt:` or the card's Submit "
                f"button{where}."
            )
        else:
            lines.append("You had no entries in it.")
        return shorten("\n".join(lines))
    ordered = sorted(entries, key=lambda e: (-e.round, e.seq))
    used = len("\n".join(lines))
    shown_round: int | None = None
    for index, entry in enumerate(ordered):
        state = entry_state_text(entry, session.guild_id, places.get(entry.id))
        block = [f"`{entry.id}` {escape(shorten(entry.prompt, 60))}: {state}"]
        if entry.round != shown_round:
            theme = escape(shorten(session.theme_of(entry.round), 80))
            block.insert(0, f"**Round {entry.round}** ({theme})")
        left = len(ordered) - index
        size = len("\n" + "\n".join(block))
        reserve = len(f"\n…and {left - 1} more not shown.") if left > 1 else 0
        if used + size + reserve > CONTENT_LIMIT:
            lines.append(f"…and {left} more not shown.")
            break
        lines.extend(block)
        used += size
        shown_round = entry.round
    return shorten("\n".join(lines))


def render_panel(entry: EntryView, session: SessionView) -> str:
    """The host panel's message about one entry (hosts and moderators only see it)."""
    state = {
        EntryState.PENDING: "waiting for a decision",
        EntryState.APPROVED: f"approved by {mention(entry.decided_by or 0)}",
        EntryState.REJECTED: f"rejected by {mention(entry.decided_by or 0)}: "
        f"{escape(shorten(entry.reason or '', 300))}",
        EntryState.EXPIRED: "expired (the round closed first)",
        EntryState.REMOVED: "removed",
    }[entry.state]
    return shorten(
        f"Session **{escape(shorten(session.theme, 100))}**, round {entry.round}: entry "
        f"`{entry.id}` by {mention(entry.member_id)}\n> {escape(shorten(entry.prompt, 900))}\n"
        f"{state}"
    )


def render_vote(voted: bool, votes_used: int, votes_allowed: int) -> str:
    said = "Vote counted." if voted else "Vote taken back."
    return f"{said} You use {votes_used} of your {votes_allowed} vote(s) this round."


def round_title(session: SessionView, result: RoundResult) -> str:
    return f"Round {result.round} of {session.rounds}: {shorten(result.theme, 80)}"


def render_board_text(
    session: SessionView, result: RoundResult, names: Mapping[int, str], links: Mapping[str, str]
) -> str:
    """The message that carries a round's board: the places, authors and votes."""
    lines = [f"**{escape(round_title(session, result))}** is over."]
    for place in result.entries[:10]:
        link = links.get(place.entry_id, "")
        lines.append(
            f"{place.rank}. {names.get(place.member_id) or mention(place.member_id)}: "
            f"{place.votes} vote(s) {link}".rstrip()
        )
    if not result.entries:
        lines.append("No entry was generated this round.")
    lines.append(TIE_RULE)
    return shorten("\n".join(lines))


def render_best_of_text(
    session: SessionView,
    rounds: Sequence[RoundResult],
    names: Mapping[int, str],
    links: Mapping[str, str],
) -> str:
    """The last message: the best-of, and a link to every entry of every round."""
    lines = [f"## Best of {escape(shorten(session.theme, 200))}"]
    for result in rounds:
        winner = result.winner
        who = (
            "no winner (no votes)"
            if winner is None
            else f"{names.get(winner.member_id) or mention(winner.member_id)} "
            f"({winner.votes} vote(s))"
        )
        lines.append(f"Round {result.round} ({escape(shorten(result.theme, 80))}): {who}")
        entries = " ".join(links[p.entry_id] for p in result.entries if p.entry_id in links)
        if entries:
            lines.append(f"Entries: {entries}")
    lines.append(TIE_RULE + " The thread is now closed.")
    return shorten("\n".join(lines))
