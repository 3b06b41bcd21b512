"""A group session's transitions and reads inside one unit of work (``storage.sessions``).

Every function takes the caller's session, which holds the group session's row lock
(``lock_session``): all of one session's changes, its timers' fires and its entries' admissions
serialise on that row. Each transition bumps ``version`` (the card shows it).

The round's life::

    submit --ROUND_END / skip-->  generate: pending entries expire; the VOTING_WAIT timer
                                  starts; with no approved entry the round finishes at once
    generate --nothing outstanding (``generated``) or VOTING_WAIT-->  vote: VOTING_END timer;
                                  with nothing votable the round finishes at once
    vote --VOTING_END-->          the round's results (and board); the next round opens, or
                                  the session ends (its best-of board)

An approved entry is *outstanding* while its job waits or runs, or succeeded but its result is
neither posted nor given up: voting waits for what members are about to see, never for a job
that failed, was cancelled or blocked.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from storage import timers
from storage.errors import SessionNotFound
from storage.models import (
    DELIVERIES,
    GROUP_SESSIONS,
    JOBS,
    SESSION_BOARDS,
    SESSION_ENTRIES,
    SESSION_ROUNDS,
    SESSION_VOTES,
)
from storage.session_rules import Tally, rank, results_json
from storage.sql import insert_ignore
from storage.types import (
    ACTIVE_STATUSES,
    BEST_OF_ROUND,
    PRIORITY_SESSION_LANE,
    EntryState,
    EntryView,
    HoldState,
    JobStatus,
    PoolKind,
    SessionPhase,
    SessionStatus,
    SessionTimer,
    SessionView,
    to_seconds,
)

#: Round 0 of ``session_boards``: the best-of board.
BEST_OF = BEST_OF_ROUND


# -- rows and views ---------------------------------------------------------------------------


async def lock_session(session: AsyncSession, session_id: str) -> RowMapping:
    """The session's row, locked until the transaction ends; SessionNotFound."""
    row = (
        (
            await session.execute(
                select(GROUP_SESSIONS).where(GROUP_SESSIONS.c.id == session_id).with_for_update()
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise SessionNotFound(session_id)
    return row


async def session_row(session: AsyncSession, session_id: str) -> RowMapping:
    row = (
        (await session.execute(select(GROUP_SESSIONS).where(GROUP_SESSIONS.c.id == session_id)))
        .mappings()
        .first()
    )
    if row is None:
        raise SessionNotFound(session_id)
    return row


def session_view(row: RowMapping) -> SessionView:
    remaining = row["paused_remaining_ms"]
    return SessionView(
        id=row["id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        thread_id=row["thread_id"],
        host_id=row["host_id"],
        theme=row["theme"],
        themes=tuple(row["themes"] or ()),
        rounds=row["rounds"],
        round_seconds=row["round_seconds"],
        voting_seconds=row["voting_seconds"],
        voting_wait_seconds=row["voting_wait_seconds"],
        entries_per_member=row["entries_per_member"],
        votes_per_member=row["votes_per_member"],
        approval=bool(row["approval"]),
        anonymous=bool(row["anonymous"]),
        pool=PoolKind(row["pool"]),
        pool_seconds=to_seconds(row["pool_ms"]),
        limits=dict(row["limits"] or {}),
        status=SessionStatus(row["status"]),
        round=row["round"],
        phase=SessionPhase(row["phase"]),
        phase_ends_at=row["phase_ends_at"],
        paused_remaining_seconds=None if remaining is None else to_seconds(remaining),
        card_message_id=row["card_message_id"],
        version=row["version"],
        created_at=row["created_at"],
        ended_at=row["ended_at"],
        lane_seconds=row["lane_seconds"],
    )


def entry_select() -> Select[Any]:
    """Entries with their job's state, delivery and votes (counted from the vote rows)."""
    votes = (
        select(func.count())
        .where(SESSION_VOTES.c.entry_id == SESSION_ENTRIES.c.id)
        .correlate(SESSION_ENTRIES)
        .scalar_subquery()
    )
    return select(
        SESSION_ENTRIES,
        JOBS.c.status.label("job_status"),
        JOBS.c.deleted_at.label("job_deleted_at"),
        JOBS.c.channel_id.label("job_channel_id"),
        JOBS.c.error.label("job_error"),
        DELIVERIES.c.message_id.label("job_message_id"),
        DELIVERIES.c.posted_at.label("job_posted_at"),
        DELIVERIES.c.given_up_at.label("job_given_up_at"),
        DELIVERIES.c.give_up_reason.label("job_give_up_reason"),
        DELIVERIES.c.review.label("job_review"),
        votes.label("votes"),
    ).select_from(
        SESSION_ENTRIES.outerjoin(JOBS, JOBS.c.id == SESSION_ENTRIES.c.job_id).outerjoin(
            DELIVERIES, DELIVERIES.c.job_id == SESSION_ENTRIES.c.job_id
        )
    )


def entry_view(row: RowMapping) -> EntryView:
    status = None if row["job_status"] is None else JobStatus(row["job_status"])
    showable = (
        status is JobStatus.SUCCEEDED
        and row["job_review"] in (None, HoldState.APPROVED.value)
        and row["job_deleted_at"] is None
    )
    posted = row["job_posted_at"] is not None and row["job_message_id"] is not None
    return EntryView(
        id=row["id"],
        seq=int(row["seq"]),
        session_id=row["session_id"],
        round=row["round"],
        member_id=row["member_id"],
        prompt=row["prompt"],
        state=EntryState(row["state"]),
        job_id=row["job_id"],
        reason=row["reason"],
        submitted_at=row["submitted_at"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        message_id=row["message_id"],
        panel_message_id=row["panel_message_id"],
        votes=int(row["votes"] or 0),
        job_status=status,
        delivered=row["job_posted_at"] is not None or row["job_given_up_at"] is not None,
        showable=showable,
        posted_channel_id=row["job_channel_id"] if posted else None,
        posted_message_id=row["job_message_id"] if posted else None,
        job_error=row["job_error"],
        undeliverable=row["job_give_up_reason"] if row["job_given_up_at"] is not None else None,
        review=None if row["job_review"] is None else HoldState(row["job_review"]),
        job_deleted=row["job_deleted_at"] is not None,
    )


async def entry_rows(session: AsyncSession, *where: ColumnElement[bool]) -> list[EntryView]:
    stmt = entry_select().where(*where).order_by(SESSION_ENTRIES.c.seq)
    return [entry_view(row) for row in (await session.execute(stmt)).mappings()]


def of_round(session_id: str, round_: int) -> ColumnElement[bool]:
    return and_(SESSION_ENTRIES.c.session_id == session_id, SESSION_ENTRIES.c.round == round_)


def outstanding_clause() -> ColumnElement[bool]:
    """An approved entry whose job waits, runs, or succeeded but is not on Discord yet."""
    return and_(
        SESSION_ENTRIES.c.state == EntryState.APPROVED.value,
        or_(
            JOBS.c.status.in_(ACTIVE_STATUSES),
            and_(
                JOBS.c.status == JobStatus.SUCCEEDED.value,
                DELIVERIES.c.posted_at.is_(None),
                DELIVERIES.c.given_up_at.is_(None),
            ),
        ),
    )


async def count_entries(session: AsyncSession, *where: ColumnElement[bool]) -> int:
    stmt = (
        select(func.count())
        .select_from(
            SESSION_ENTRIES.outerjoin(JOBS, JOBS.c.id == SESSION_ENTRIES.c.job_id).outerjoin(
                DELIVERIES, DELIVERIES.c.job_id == SESSION_ENTRIES.c.job_id
            )
        )
        .where(*where)
    )
    return int((await session.execute(stmt)).scalar_one())


async def outstanding(session: AsyncSession, session_id: str, round_: int) -> int:
    return await count_entries(session, of_round(session_id, round_), outstanding_clause())


async def bump(session: AsyncSession, session_id: str, **values: Any) -> None:
    """Change the session's row and its version (its card is due for an edit)."""
    await session.execute(
        update(GROUP_SESSIONS)
        .where(GROUP_SESSIONS.c.id == session_id)
        .values(version=GROUP_SESSIONS.c.version + 1, **values)
    )


# -- transitions ------------------------------------------------------------------------------


async def open_round(session: AsyncSession, row: RowMapping, round_: int, now: datetime) -> None:
    """Open round ``round_`` (its theme, its submissions, its ROUND_END timer)."""
    themes = list(row["themes"])
    due = now + timedelta(seconds=row["round_seconds"])
    await session.execute(
        SESSION_ROUNDS.insert().values(
            session_id=row["id"], round=round_, theme=themes[round_ - 1], opened_at=now
        )
    )
    await bump(
        session,
        row["id"],
        round=round_,
        phase=SessionPhase.SUBMIT.value,
        phase_ends_at=due,
        paused_remaining_ms=None,
    )
    await timers.schedule(session, SessionTimer.ROUND_END.value, row["id"], round_, due)
    await schedule_lane(session, row, round_, due, now)


# -- the priority lane ------------------------------------------------------------------------


async def schedule_lane(
    session: AsyncSession, row: RowMapping, round_: int, round_ends_at: datetime, now: datetime
) -> None:
    """The round's LANE timer, due ``lane_seconds`` before its submissions close (now, when
    the round is shorter than the lane). No lane, or a lane already open: nothing. Called
    whenever the round's end moves (a new round, an extension, a resume)."""
    if row["lane_seconds"] <= 0 or await lane_open(session, row["id"], round_):
        return
    due = max(now, round_ends_at - timedelta(seconds=row["lane_seconds"]))
    await timers.schedule(session, SessionTimer.LANE.value, row["id"], round_, due)


async def lane_open(session: AsyncSession, session_id: str, round_: int) -> bool:
    """Whether the round's entries have taken the priority lane."""
    opened = await session.execute(
        select(SESSION_ROUNDS.c.lane_opened_at).where(
            SESSION_ROUNDS.c.session_id == session_id, SESSION_ROUNDS.c.round == round_
        )
    )
    return opened.scalar() is not None


async def open_lane(session: AsyncSession, row: RowMapping, now: datetime) -> bool:
    """The current round's entries take the priority lane, once: its queued entries' jobs move
    up to ``PRIORITY_SESSION_LANE`` now, and entries admitted from now on start there
    (``SessionStore``'s admission). Its LANE timer, if it has not fired, is fired now (a
    host's skip closes submissions early). False when the session has no lane or it was open.
    The lane is never closed again within the round (an extension after it opened keeps it)."""
    session_id, round_ = row["id"], row["round"]
    if row["lane_seconds"] <= 0:
        return False
    opened = await session.execute(
        update(SESSION_ROUNDS)
        .where(
            SESSION_ROUNDS.c.session_id == session_id,
            SESSION_ROUNDS.c.round == round_,
            SESSION_ROUNDS.c.lane_opened_at.is_(None),
        )
        .values(lane_opened_at=now)
    )
    if not getattr(opened, "rowcount", 0):
        return False
    await timers.fire_now(session, SessionTimer.LANE.value, session_id, round_, now)
    entry_jobs = select(SESSION_ENTRIES.c.job_id).where(
        of_round(session_id, round_), SESSION_ENTRIES.c.job_id.is_not(None)
    )
    await session.execute(
        update(JOBS)
        .where(
            JOBS.c.id.in_(entry_jobs),
            JOBS.c.status == JobStatus.QUEUED.value,
            JOBS.c.priority < PRIORITY_SESSION_LANE,
        )
        .values(priority=PRIORITY_SESSION_LANE)
    )
    await bump(session, session_id)
    return True


async def close_submissions(session: AsyncSession, row: RowMapping, now: datetime) -> None:
    """Submissions of the current round close: pending entries expire, and the round waits
    for its approved entries to generate (at most the voting wait), or moves on at once."""
    session_id, round_ = row["id"], row["round"]
    # What is still queued is what the round now waits for: it takes the lane (if any).
    await open_lane(session, row, now)
    await session.execute(
        update(SESSION_ENTRIES)
        .where(of_round(session_id, round_), SESSION_ENTRIES.c.state == EntryState.PENDING.value)
        .values(
            state=EntryState.EXPIRED.value,
            reason="the round closed before the host decided",
            decided_at=now,
        )
    )
    await session.execute(
        update(SESSION_ROUNDS)
        .where(SESSION_ROUNDS.c.session_id == session_id, SESSION_ROUNDS.c.round == round_)
        .values(closed_at=now)
    )
    approved = await count_entries(
        session,
        of_round(session_id, round_),
        SESSION_ENTRIES.c.state == EntryState.APPROVED.value,
    )
    if not approved:
        await finish_round(session, row, now)
        return
    due = now + timedelta(seconds=row["voting_wait_seconds"])
    await bump(session, session_id, phase=SessionPhase.GENERATE.value, phase_ends_at=due)
    if await outstanding(session, session_id, round_) == 0:
        await start_voting(session, await session_row(session, session_id), now)
        return
    await timers.schedule(session, SessionTimer.VOTING_WAIT.value, session_id, round_, due)


async def start_voting(session: AsyncSession, row: RowMapping, now: datetime) -> None:
    """Voting opens for the current round (its VOTING_END timer), or, with no entry to vote
    for, the round finishes at once."""
    session_id, round_ = row["id"], row["round"]
    await timers.cancel(session, session_id, SessionTimer.VOTING_WAIT.value, round_)
    entries = await entry_rows(session, of_round(session_id, round_))
    if not any(votable_entry(e) for e in entries):
        await finish_round(session, row, now)
        return
    due = now + timedelta(seconds=row["voting_seconds"])
    await session.execute(
        update(SESSION_ROUNDS)
        .where(SESSION_ROUNDS.c.session_id == session_id, SESSION_ROUNDS.c.round == round_)
        .values(voting_started_at=now, voting_ends_at=due)
    )
    await bump(session, session_id, phase=SessionPhase.VOTE.value, phase_ends_at=due)
    await timers.schedule(session, SessionTimer.VOTING_END.value, session_id, round_, due)


def votable_entry(entry: EntryView) -> bool:
    return entry.state is EntryState.APPROVED and entry.showable


async def advance_if_generated(session: AsyncSession, session_id: str, now: datetime) -> bool:
    """In a running session's generate phase with nothing outstanding: voting starts."""
    row = await session_row(session, session_id)
    if (
        SessionStatus(row["status"]) is SessionStatus.RUNNING
        and SessionPhase(row["phase"]) is SessionPhase.GENERATE
        and await outstanding(session, row["id"], row["round"]) == 0
    ):
        await start_voting(session, row, now)
        return True
    return False


async def finish_round(
    session: AsyncSession, row: RowMapping, now: datetime, *, last: bool = False
) -> None:
    """Tally the current round (votes from the database; its votable entries only), store
    its results and owe its board; then open the next round, or end the session (``last``:
    end it whatever rounds remain)."""
    session_id, round_ = row["id"], row["round"]
    await timers.cancel(session, session_id, round_=round_)
    entries = await entry_rows(session, of_round(session_id, round_))
    ranked = rank(
        Tally(e.id, e.member_id, e.job_id, e.votes, e.seq) for e in entries if votable_entry(e)
    )
    await session.execute(
        update(SESSION_ROUNDS)
        .where(SESSION_ROUNDS.c.session_id == session_id, SESSION_ROUNDS.c.round == round_)
        .values(
            finished_at=now,
            results=results_json(ranked),
            closed_at=func.coalesce(SESSION_ROUNDS.c.closed_at, now),
        )
    )
    await owe_board(session, session_id, round_, now)
    if last or round_ >= row["rounds"]:
        await end_session(session, row, now)
    else:
        await open_round(session, row, round_ + 1, now)


async def end_session(session: AsyncSession, row: RowMapping, now: datetime) -> None:
    """The session ends: no timer left, pending entries expire, the best-of board is owed.
    Its pool (if any) stops being held back from the server from this commit on."""
    session_id = row["id"]
    await timers.cancel(session, session_id)
    await session.execute(
        update(SESSION_ENTRIES)
        .where(
            SESSION_ENTRIES.c.session_id == session_id,
            SESSION_ENTRIES.c.state == EntryState.PENDING.value,
        )
        .values(
            state=EntryState.EXPIRED.value,
            reason="the session ended before the host decided",
            decided_at=now,
        )
    )
    await bump(
        session,
        session_id,
        status=SessionStatus.ENDED.value,
        phase=SessionPhase.ENDED.value,
        phase_ends_at=None,
        paused_remaining_ms=None,
        ended_at=now,
    )
    await owe_board(session, session_id, BEST_OF, now)


async def owe_board(session: AsyncSession, session_id: str, round_: int, now: datetime) -> None:
    await session.execute(
        insert_ignore(
            session,
            SESSION_BOARDS,
            {"session_id": session_id, "round": round_, "created_at": now},
            ["session_id", "round"],
        )
    )
