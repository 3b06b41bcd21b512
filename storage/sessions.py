"""Group sessions (issue 13): themed rounds of entries and votes in a thread, on durable timers.

A host starts a session in a channel (``start``); the bot makes its thread and card. In each
round members submit entries (``submit``); with approval on, the host approves or rejects each
once (``decide``). An approved entry is one ordinary public job tagged with its session
(``jobs.session_id``), queued in the same transaction that admits it, so an entry is never
approved without its job nor queued twice. When the round's time is up (a ``timers`` row,
fired once by whichever bot process claims it: ``claim_due`` then ``fire``) submissions close;
voting opens once every approved entry is generated and posted (``generated``), or after the
voting wait at the latest; members vote (``vote``, counted from the database); when voting
closes the round's results are stored and its board is owed (``SessionPosts``), then the next
round opens. The last round ends the session and owes the best-of board. The host may pause,
resume, extend, skip to voting, end, remove an entry or a participant; removals and the start
and end are audit log rows.

Who pays (the README's billing table): with ``pool:members`` each entry is its member's job,
on their quota. With ``pool:server`` the host sets aside GPU-seconds of the server's allowance:
entries are billed to the server (``storage.pools``, ``storage.quota``), an entry is admitted
only when its estimate fits what the pool has not committed, and any cost beyond an entry's
estimate is charged to the server's allowance, never to the pool. While the session is live its
uncommitted pool is reserved in the server's scope; when it ends the rest returns to the server.

Time comes from the injected ``clock``, so tests run a whole session in seconds. Every method is
one unit of work under the session's row lock.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage import session_flow as flow
from storage import timers
from storage.db import Database
from storage.errors import EntryNotFound, SessionNotFound, SessionRefused
from storage.models import (
    GROUP_SESSIONS,
    SESSION_ENTRIES,
    SESSION_MEMBERS,
    SESSION_ROUNDS,
    SESSION_TEXT_LENGTH,
    SESSION_VOTES,
    TIMERS,
)
from storage.modlog import log_row
from storage.pools import committed_ms
from storage.queue import JobQueue
from storage.session_posts import SessionPosts
from storage.session_reads import SessionReads, count
from storage.session_rules import (
    check_extend,
    remaining_ms,
    validate,
)
from storage.sql import insert_ignore, lock_guild, lock_job, utc_now
from storage.timers import TimerStore
from storage.types import (
    ACTIVE_STATUSES,
    PRIORITY_SESSION_LANE,
    EntryDecision,
    EntryState,
    EntryView,
    FireOutcome,
    JobKind,
    ModAction,
    NewJob,
    Owner,
    PoolKind,
    SessionPhase,
    SessionSpec,
    SessionStatus,
    SessionTimer,
    SessionView,
    Timer,
    VoteResult,
    new_job_id,
    to_ms,
    to_seconds,
)

Clock = Callable[[], datetime]

SESSION_TIMERS = tuple(kind.value for kind in SessionTimer)
#: The fields of a ``NewJob`` an entry keeps to queue it later (never an interaction token).
SPEC_FIELDS = (
    "mode",
    "estimated_cost",
    "batch_key",
    "work_units",
    "priority",
    "age_restricted",
    "hold_reason",
    "hold_details",
    "prompt",
    "model",
    "aspect",
)


class SessionStore(SessionReads):
    """Group sessions: start, entries, decisions, votes, timers, host controls and results.

    ``queue`` queues the entries' jobs (its codec encodes their requests; its quota service
    bills them). ``claimer_id`` names this process in timer and board claims. The reads come
    from ``SessionReads``; ``posts`` is the card and the boards (``SessionPosts``), ``timers``
    the durable timers.
    """

    def __init__(
        self,
        db: Database,
        queue: JobQueue[Any],
        *,
        clock: Clock = utc_now,
        claimer_id: str | None = None,
        board_claim_seconds: float = 60.0,
    ) -> None:
        self.db = db
        self.queue = queue
        self.clock = clock
        self.claimer_id = claimer_id or f"sessions-{secrets.token_hex(6)}"
        self.timers = TimerStore(db, clock=clock)
        self.posts = SessionPosts(
            db, clock=clock, claimer_id=self.claimer_id, board_claim_seconds=board_claim_seconds
        )

    # -- starting -------------------------------------------------------------------------

    async def start(self, spec: SessionSpec) -> SessionView:
        """Start a session in ``spec.channel_id``: round 1 opens now. ValueError names an option
        out of its bounds (``storage.session_rules``); SessionRefused when a session is already
        live in the channel; QuotaExceededError (scope guild) when a server pool does not fit
        the server's allowance now (only when servers have one)."""
        themes = validate(spec)
        pool = PoolKind(spec.pool)
        pool_ms = to_ms(spec.pool_seconds) if pool is PoolKind.SERVER else 0
        now = self.clock()
        session_id = new_job_id()

        async def work(session: AsyncSession) -> None:
            await lock_guild(session, spec.guild_id, now)
            if await self._live_in(session, spec.channel_id) is not None:
                raise SessionRefused(_ALREADY_LIVE)
            if pool_ms:
                await self.queue.quota.check_guild_room(session, spec.guild_id, pool_ms, now)
            await session.execute(
                GROUP_SESSIONS.insert().values(
                    id=session_id,
                    guild_id=spec.guild_id,
                    channel_id=spec.channel_id,
                    host_id=spec.host_id,
                    theme=spec.theme.strip(),
                    themes=list(themes),
                    rounds=spec.rounds,
                    round_seconds=spec.round_seconds,
                    voting_seconds=spec.voting_seconds,
                    voting_wait_seconds=spec.voting_wait_seconds,
                    entries_per_member=spec.entries_per_member,
                    votes_per_member=spec.votes_per_member,
                    approval=spec.approval,
                    anonymous=spec.anonymous,
                    pool=pool.value,
                    pool_ms=pool_ms,
                    limits=dict(spec.limits),
                    lane_seconds=spec.lane_seconds,
                    status=SessionStatus.RUNNING.value,
                    round=1,
                    phase=SessionPhase.SUBMIT.value,
                    version=0,
                    card_version=0,
                    created_at=now,
                )
            )
            await flow.open_round(session, await flow.session_row(session, session_id), 1, now)
            await log_row(
                session,
                spec.guild_id,
                ModAction.SESSION_STARTED,
                now,
                actor_id=spec.host_id,
                reason=spec.theme,
                details={
                    "session": session_id,
                    "rounds": spec.rounds,
                    "pool": pool.value,
                    "pool_seconds": to_seconds(pool_ms),
                },
            )

        try:
            await self.db.write(work)
        except IntegrityError as exc:  # the partial unique index: a concurrent start won
            raise SessionRefused(_ALREADY_LIVE) from exc
        return await self.get(session_id)

    async def attach_thread(self, session_id: str, thread_id: int) -> SessionView:
        """Record the session's thread (where entries, results and boards are posted)."""
        return await self._set(session_id, thread_id=thread_id)

    async def _set(self, session_id: str, **values: Any) -> SessionView:
        async def work(session: AsyncSession) -> None:
            await flow.lock_session(session, session_id)
            await session.execute(
                update(GROUP_SESSIONS).where(GROUP_SESSIONS.c.id == session_id).values(**values)
            )

        await self.db.write(work)
        return await self.get(session_id)

    # -- entries --------------------------------------------------------------------------

    async def submit(
        self, session_id: str, member_id: int, job: NewJob[Any], *, role_ids: Sequence[int] = ()
    ) -> EntryView:
        """``member_id`` enters ``job`` (one image) in the current round. With approval on it
        waits for the host; otherwise it is queued now, on the member's quota or the pool.

        Refused (SessionRefused, nothing stored) unless the session runs, the round takes
        submissions, the member was not removed, and they have fewer than
        ``entries_per_member`` entries this round (rejected ones do not count). Queuing may
        also refuse it: QuotaExceededError (the member's quota), or SessionRefused (the pool).
        The entry's job answers no interaction: it is posted in the session's thread."""
        now = self.clock()
        spec = self._job_spec(job)
        prompt = _text(job.prompt if job.prompt is not None else spec["request"].get("prompt"))
        entry_id = new_job_id()

        async def work(session: AsyncSession) -> bool:
            row = await flow.lock_session(session, session_id)
            self._require_running(row, "submit an entry")
            if SessionPhase(row["phase"]) is not SessionPhase.SUBMIT:
                raise SessionRefused(
                    f"submissions for round {row['round']} are closed; wait for the next round"
                )
            await self._require_member(session, session_id, member_id, now)
            taken = await flow.count_entries(
                session,
                flow.of_round(session_id, row["round"]),
                SESSION_ENTRIES.c.member_id == member_id,
                SESSION_ENTRIES.c.state != EntryState.REJECTED.value,
            )
            if taken >= row["entries_per_member"]:
                raise SessionRefused(
                    f"you already have {taken} entr{'y' if taken == 1 else 'ies'} in round "
                    f"{row['round']}, the most allowed ({row['entries_per_member']})"
                )
            await session.execute(
                SESSION_ENTRIES.insert().values(
                    id=entry_id,
                    session_id=session_id,
                    round=row["round"],
                    member_id=member_id,
                    prompt=prompt,
                    job_spec=spec,
                    state=EntryState.PENDING.value,
                    submitted_at=now,
                )
            )
            queued = False
            if not row["approval"]:
                await self._admit(session, row, entry_id, member_id, spec, role_ids, now)
                await session.execute(
                    update(SESSION_ENTRIES)
                    .where(SESSION_ENTRIES.c.id == entry_id)
                    .values(state=EntryState.APPROVED.value, decided_at=now)
                )
                queued = True
            await flow.bump(session, session_id)
            return queued

        if await self.db.write(work):
            self.queue.wake()
        return await self.entry(entry_id)

    async def decide(
        self,
        entry_id: str,
        decided_by: int,
        approve: bool,
        reason: str = "",
        *,
        member_role_ids: Sequence[int] = (),
    ) -> EntryDecision:
        """The host approves (its job is queued now) or rejects a pending entry, once: a second
        decision changes nothing and says who decided (``decided`` False). Refused
        (SessionRefused) for an entry that expired (its round closed first) or was removed.
        Approval may be refused by the entry's queuing (see ``submit``): it stays pending.
        ``member_role_ids`` are the member's roles, for their quota tier."""
        now = self.clock()

        async def work(session: AsyncSession) -> bool:
            found = await self._entry_row(session, entry_id)
            row = await flow.lock_session(session, found["session_id"])
            entry = await self._entry_row(session, entry_id)
            state = EntryState(entry["state"])
            if state in (EntryState.APPROVED, EntryState.REJECTED):
                return False
            if state is EntryState.EXPIRED:
                raise SessionRefused(
                    "this entry expired: its round closed before it was approved or rejected"
                )
            if state is EntryState.REMOVED:
                raise SessionRefused("this entry was removed from the session")
            if approve:
                await self._admit(
                    session,
                    row,
                    entry_id,
                    entry["member_id"],
                    entry["job_spec"],
                    member_role_ids,
                    now,
                )
            await session.execute(
                update(SESSION_ENTRIES)
                .where(
                    SESSION_ENTRIES.c.id == entry_id,
                    SESSION_ENTRIES.c.state == EntryState.PENDING.value,
                )
                .values(
                    state=(EntryState.APPROVED if approve else EntryState.REJECTED).value,
                    reason=None if approve else _text(reason) or None,
                    decided_by=decided_by,
                    decided_at=now,
                )
            )
            await flow.bump(session, row["id"])
            return True

        decided = await self.db.write(work)
        if decided and approve:
            self.queue.wake()
        return EntryDecision(await self.entry(entry_id), decided)

    async def attach_entry_message(
        self, entry_id: str, *, message_id: int | None = None, panel_message_id: int | None = None
    ) -> EntryView:
        """Record the entry's post in the thread and/or its host panel message."""
        values: dict[str, Any] = {}
        if message_id is not None:
            values["message_id"] = message_id
        if panel_message_id is not None:
            values["panel_message_id"] = panel_message_id

        async def work(session: AsyncSession) -> None:
            await self._entry_row(session, entry_id)
            if values:
                await session.execute(
                    update(SESSION_ENTRIES).where(SESSION_ENTRIES.c.id == entry_id).values(**values)
                )

        await self.db.write(work)
        return await self.entry(entry_id)

    async def _admit(
        self,
        session: AsyncSession,
        row: Any,
        entry_id: str,
        member_id: int,
        spec: dict[str, Any],
        role_ids: Sequence[int],
        now: datetime,
    ) -> None:
        """Queue an entry's job, in the caller's unit of work (under the session's lock). A
        server pool admits it only when its reservation fits what the pool has not committed."""
        if SessionStatus(row["status"]) is SessionStatus.ENDED:
            raise SessionRefused("the session has ended")
        job = _new_job(spec)
        if await flow.lane_open(session, row["id"], row["round"]):
            job = replace(job, priority=max(job.priority or 0, PRIORITY_SESSION_LANE))
        reserved = await self.queue.reservation_ms(session, job)
        guild_paid = PoolKind(row["pool"]) is PoolKind.SERVER
        if guild_paid:
            committed = (await committed_ms(session, [row["id"]]))[row["id"]]
            left = row["pool_ms"] - committed
            if reserved > left:
                raise SessionRefused(
                    f"the session's pool has {to_seconds(max(0, left)):.1f} GPU-seconds left "
                    f"and this entry needs {to_seconds(reserved):.1f}; nothing was queued"
                )
        owner = Owner(member_id, row["guild_id"], row["thread_id"] or row["channel_id"])
        # The job is the queue's row, on the queue's clock (its availability, leases and quota
        # windows); the session's own times stay on the session's clock.
        job_id = await self.queue.enqueue_entry(
            session,
            owner,
            job,
            spec["request"],
            self.queue.clock(),
            session_id=row["id"],
            reserved_ms=reserved,
            guild_paid=guild_paid,
            role_ids=role_ids,
        )
        await session.execute(
            update(SESSION_ENTRIES)
            .where(SESSION_ENTRIES.c.id == entry_id, SESSION_ENTRIES.c.job_id.is_(None))
            .values(job_id=job_id)
        )

    def _job_spec(self, job: NewJob[Any]) -> dict[str, Any]:
        if JobKind(job.kind) is not JobKind.IMAGINE or job.parent_id is not None:
            raise ValueError("a session entry is a new image (an imagine job with no parent)")
        if not job.mode:
            raise ValueError("a job needs a mode")
        spec = {name: getattr(job, name) for name in SPEC_FIELDS}
        spec["hold_details"] = None if job.hold_details is None else dict(job.hold_details)
        spec["request"] = self.queue.codec.encode(job.request)
        return spec

    # -- votes ----------------------------------------------------------------------------

    async def vote(self, entry_id: str, voter_id: int) -> VoteResult:
        """Toggle ``voter_id``'s vote for an entry: a second vote takes it back, so changing a
        vote is taking one back and giving another. Refused (SessionRefused) unless the session
        runs, its round is voting, the entry is of that round, in the contest and generated,
        it is not the voter's own, the voter was not removed, and (to add a vote) they have
        fewer than ``votes_per_member`` this round."""
        now = self.clock()

        async def work(session: AsyncSession) -> VoteResult:
            found = await self._entry_row(session, entry_id)
            row = await flow.lock_session(session, found["session_id"])
            self._require_running(row, "vote")
            if SessionPhase(row["phase"]) is not SessionPhase.VOTE:
                raise SessionRefused(f"voting is not open (round {row['round']} is {row['phase']})")
            (entry,) = await flow.entry_rows(session, SESSION_ENTRIES.c.id == entry_id)
            if entry.round != row["round"]:
                raise SessionRefused(f"this entry is from round {entry.round}; its voting closed")
            if not flow.votable_entry(entry):
                raise SessionRefused("this entry is not in the vote")
            if entry.member_id == voter_id:
                raise SessionRefused("you cannot vote for your own entry")
            if await self._removed(session, row["id"], voter_id):
                raise SessionRefused(_REMOVED)
            mine = and_(
                SESSION_VOTES.c.session_id == row["id"],
                SESSION_VOTES.c.round == row["round"],
                SESSION_VOTES.c.voter_id == voter_id,
            )
            taken = await session.execute(
                delete(SESSION_VOTES).where(mine, SESSION_VOTES.c.entry_id == entry_id)
            )
            voted = not getattr(taken, "rowcount", 0)
            if voted:
                used = await count(session, SESSION_VOTES, mine)
                if used >= row["votes_per_member"]:
                    raise SessionRefused(
                        f"you have used your {row['votes_per_member']} vote(s) this round; "
                        "take one back to vote for this entry"
                    )
                await session.execute(
                    SESSION_VOTES.insert().values(
                        entry_id=entry_id,
                        voter_id=voter_id,
                        session_id=row["id"],
                        round=row["round"],
                        created_at=now,
                    )
                )
            votes = await count(session, SESSION_VOTES, SESSION_VOTES.c.entry_id == entry_id)
            return VoteResult(voted, votes, await count(session, SESSION_VOTES, mine))

        return await self.db.write(work)

    # -- timers ---------------------------------------------------------------------------

    async def claim_due(
        self, *, lease_seconds: float = 60.0, limit: int = 20, claimer: str | None = None
    ) -> list[Timer]:
        """Claim this process's share of the sessions' due timers (``storage.timers``)."""
        return await self.timers.claim_due(
            claimer or self.claimer_id,
            lease_seconds=lease_seconds,
            limit=limit,
            kinds=SESSION_TIMERS,
        )

    async def next_due(self) -> datetime | None:
        """When the next session timer is due: the loop sleeps until then (or a change)."""
        return await self.timers.next_due(SESSION_TIMERS)

    async def fire(self, timer: Timer, *, claimer: str | None = None) -> FireOutcome:
        """Fire a claimed timer: mark it fired (once: see ``storage.timers``) and make the
        session's transition in the same transaction. A timer whose session has moved on
        (paused, skipped, ended) fires without changing anything."""
        kind = SessionTimer(timer.kind)
        me = claimer or self.claimer_id
        now = self.clock()

        async def work(session: AsyncSession) -> tuple[bool, bool]:
            try:
                row = await flow.lock_session(session, timer.subject)
            except SessionNotFound:  # deleted by retention: its timers went with it
                return await timers.mark_fired(session, timer.id, me, now), False
            if not await timers.mark_fired(session, timer.id, me, now):
                return False, False
            if (
                SessionStatus(row["status"]) is not SessionStatus.RUNNING
                or row["round"] != timer.round
            ):
                return True, False
            phase = SessionPhase(row["phase"])
            if kind is SessionTimer.ROUND_END and phase is SessionPhase.SUBMIT:
                await flow.close_submissions(session, row, now)
            elif kind is SessionTimer.LANE and phase is SessionPhase.SUBMIT:
                await flow.open_lane(session, row, now)
            elif kind is SessionTimer.VOTING_WAIT and phase is SessionPhase.GENERATE:
                await flow.start_voting(session, row, now)
            elif kind is SessionTimer.VOTING_END and phase is SessionPhase.VOTE:
                await flow.finish_round(session, row, now)
            else:
                return True, False
            return True, True

        fired, changed = await self.db.write(work)
        stored = await self._timer(timer.id)
        return FireOutcome(
            stored or timer, fired, changed, await self.find(timer.subject) if fired else None
        )

    async def _timer(self, timer_id: int) -> Timer | None:
        async def work(session: AsyncSession) -> Timer | None:
            row = (
                (await session.execute(select(TIMERS).where(TIMERS.c.id == timer_id)))
                .mappings()
                .first()
            )
            return None if row is None else timers.timer_view(row)

        return await self.db.read(work)

    async def generated(self, session_id: str) -> SessionView:
        """An entry's job finished and its result was posted (or given up): in the generate
        phase with nothing outstanding left, voting starts now. Safe to call any time."""
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            await flow.lock_session(session, session_id)
            await flow.advance_if_generated(session, session_id, now)

        await self.db.write(work)
        return await self.get(session_id)

    # -- host controls --------------------------------------------------------------------

    async def pause(self, session_id: str) -> SessionView:
        """Stop the clock: what is left of the phase is kept, its timer is cancelled, and no
        entry or vote is taken until ``resume``."""
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            row = await flow.lock_session(session, session_id)
            self._require_running(row, "pause it")
            await timers.cancel(session, session_id)
            await flow.bump(
                session,
                session_id,
                status=SessionStatus.PAUSED.value,
                paused_remaining_ms=remaining_ms(row["phase_ends_at"], now),
                phase_ends_at=None,
            )

        await self.db.write(work)
        return await self.get(session_id)

    async def resume(self, session_id: str) -> SessionView:
        """Restart the clock: the phase's timer is due after what was left when paused."""
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            row = await flow.lock_session(session, session_id)
            if SessionStatus(row["status"]) is not SessionStatus.PAUSED:
                raise SessionRefused("the session is not paused")
            due = now + timedelta(milliseconds=row["paused_remaining_ms"] or 0)
            phase = SessionPhase(row["phase"])
            await flow.bump(
                session,
                session_id,
                status=SessionStatus.RUNNING.value,
                paused_remaining_ms=None,
                phase_ends_at=due,
            )
            await timers.schedule(
                session, SessionTimer.of(phase).value, session_id, row["round"], due
            )
            if phase is SessionPhase.SUBMIT:
                await flow.schedule_lane(session, row, row["round"], due, now)
            await flow.advance_if_generated(session, session_id, now)

        await self.db.write(work)
        return await self.get(session_id)

    async def extend(self, session_id: str, seconds: int) -> SessionView:
        """Give the current submissions or voting ``seconds`` more (paused: more is left)."""
        check_extend(seconds)

        async def work(session: AsyncSession) -> None:
            row = await flow.lock_session(session, session_id)
            phase = SessionPhase(row["phase"])
            if row["status"] == SessionStatus.ENDED or phase not in (
                SessionPhase.SUBMIT,
                SessionPhase.VOTE,
            ):
                raise SessionRefused("only submissions or voting can be extended")
            if SessionStatus(row["status"]) is SessionStatus.PAUSED:
                await flow.bump(
                    session,
                    session_id,
                    paused_remaining_ms=(row["paused_remaining_ms"] or 0) + seconds * 1000,
                )
                return
            due = row["phase_ends_at"] + timedelta(seconds=seconds)
            await flow.bump(session, session_id, phase_ends_at=due)
            await timers.schedule(
                session, SessionTimer.of(phase).value, session_id, row["round"], due
            )
            if phase is SessionPhase.SUBMIT:
                await flow.schedule_lane(session, row, row["round"], due, self.clock())
            if phase is SessionPhase.VOTE:
                await session.execute(
                    update(SESSION_ROUNDS)
                    .where(
                        SESSION_ROUNDS.c.session_id == session_id,
                        SESSION_ROUNDS.c.round == row["round"],
                    )
                    .values(voting_ends_at=due)
                )

        await self.db.write(work)
        return await self.get(session_id)

    async def skip_to_voting(self, session_id: str) -> SessionView:
        """Close the round's submissions now, as its timer would (its ROUND_END timer fires
        now, under the same guard, so a claimer's fire finds it fired)."""
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            row = await flow.lock_session(session, session_id)
            self._require_running(row, "skip to voting")
            if SessionPhase(row["phase"]) is not SessionPhase.SUBMIT:
                raise SessionRefused("submissions are already closed")
            round_end = SessionTimer.ROUND_END.value
            await timers.fire_now(session, round_end, session_id, row["round"], now)
            await flow.close_submissions(session, row, now)

        await self.db.write(work)
        return await self.get(session_id)

    async def end(self, session_id: str, ended_by: int, reason: str = "") -> SessionView:
        """End the session now: a round that was voting is tallied (its results and board),
        the finished rounds' results stay, timers are cancelled and the best-of is owed. Its
        entries' jobs carry on as ordinary jobs. Ending an ended session changes nothing."""
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            row = await flow.lock_session(session, session_id)
            if SessionStatus(row["status"]) is SessionStatus.ENDED:
                return
            if SessionPhase(row["phase"]) is SessionPhase.VOTE:
                await flow.finish_round(session, row, now, last=True)
            else:
                await flow.end_session(session, row, now)
            await log_row(
                session,
                row["guild_id"],
                ModAction.SESSION_ENDED,
                now,
                actor_id=ended_by,
                reason=reason,
                details={"session": session_id, "round": row["round"]},
            )

        await self.db.write(work)
        return await self.get(session_id)

    async def remove_entry(self, entry_id: str, removed_by: int, reason: str) -> EntryView:
        """Take an entry of the current round out of the contest: its votes go, its job is
        cancelled if it still waits or runs (as any cancel), and an audit log row says who and
        why. Refused for an entry of a finished round (its results stand). Removing a removed
        entry changes nothing."""
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            found = await self._entry_row(session, entry_id)
            row = await flow.lock_session(session, found["session_id"])
            entry = await self._entry_row(session, entry_id)
            if EntryState(entry["state"]) is EntryState.REMOVED:
                return
            if entry["round"] != row["round"] or row["status"] == SessionStatus.ENDED:
                raise SessionRefused(f"round {entry['round']} is over; its results stand")
            await self._remove(session, entry, removed_by, reason, now)
            await log_row(
                session,
                row["guild_id"],
                ModAction.ENTRY_REMOVED,
                now,
                actor_id=removed_by,
                target_user_id=entry["member_id"],
                target_job_id=entry["job_id"],
                reason=reason,
                details={"session": row["id"], "entry": entry_id, "round": entry["round"]},
            )
            await flow.bump(session, row["id"])
            await flow.advance_if_generated(session, row["id"], now)

        await self.db.write(work)
        return await self.entry(entry_id)

    async def remove_participant(
        self, session_id: str, member_id: int, removed_by: int, reason: str = ""
    ) -> SessionView:
        """Remove a member from the session: no more entries or votes from them; their
        current round's votes go, and so do its entries not yet generated (pending, or
        approved with a job still waiting or running: cancelled). Audit-logged."""
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            row = await flow.lock_session(session, session_id)
            if SessionStatus(row["status"]) is SessionStatus.ENDED:
                raise SessionRefused("the session has ended")
            await self._require_member(session, session_id, member_id, now, check=False)
            await session.execute(
                update(SESSION_MEMBERS)
                .where(
                    SESSION_MEMBERS.c.session_id == session_id,
                    SESSION_MEMBERS.c.member_id == member_id,
                    SESSION_MEMBERS.c.removed_at.is_(None),
                )
                .values(removed_at=now, removed_by=removed_by)
            )
            await session.execute(
                delete(SESSION_VOTES).where(
                    SESSION_VOTES.c.session_id == session_id,
                    SESSION_VOTES.c.round == row["round"],
                    SESSION_VOTES.c.voter_id == member_id,
                )
            )
            entries = await flow.entry_rows(
                session,
                flow.of_round(session_id, row["round"]),
                SESSION_ENTRIES.c.member_id == member_id,
            )
            for entry in entries:
                waiting = entry.state is EntryState.PENDING or (
                    entry.state is EntryState.APPROVED
                    and entry.job_status is not None
                    and entry.job_status in ACTIVE_STATUSES
                )
                if waiting:
                    raw = await self._entry_row(session, entry.id)
                    await self._remove(session, raw, removed_by, reason, now)
            await log_row(
                session,
                row["guild_id"],
                ModAction.PARTICIPANT_REMOVED,
                now,
                actor_id=removed_by,
                target_user_id=member_id,
                reason=reason,
                details={"session": session_id, "round": row["round"]},
            )
            await flow.bump(session, session_id)
            await flow.advance_if_generated(session, session_id, now)

        await self.db.write(work)
        return await self.get(session_id)

    async def _remove(
        self, session: AsyncSession, entry: Any, removed_by: int, reason: str, now: datetime
    ) -> None:
        await session.execute(delete(SESSION_VOTES).where(SESSION_VOTES.c.entry_id == entry["id"]))
        await session.execute(
            update(SESSION_ENTRIES)
            .where(SESSION_ENTRIES.c.id == entry["id"])
            .values(
                state=EntryState.REMOVED.value,
                reason=_text(reason) or None,
                decided_by=removed_by,
                decided_at=now,
            )
        )
        if entry["job_id"] is not None:
            job = await lock_job(session, entry["job_id"])
            if job is not None and job["status"] in ACTIVE_STATUSES:
                await self.queue.cancel_locked(session, job, self.queue.clock())

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _require_running(row: Any, action: str) -> None:
        status = SessionStatus(row["status"])
        if status is SessionStatus.PAUSED:
            raise SessionRefused(f"the session is paused; you cannot {action} until it resumes")
        if status is SessionStatus.ENDED:
            raise SessionRefused("the session has ended")

    async def _require_member(
        self,
        session: AsyncSession,
        session_id: str,
        member_id: int,
        now: datetime,
        *,
        check: bool = True,
    ) -> None:
        """Record ``member_id`` as a participant; SessionRefused if they were removed."""
        await session.execute(
            insert_ignore(
                session,
                SESSION_MEMBERS,
                {"session_id": session_id, "member_id": member_id, "joined_at": now},
                ["session_id", "member_id"],
            )
        )
        if check and await self._removed(session, session_id, member_id):
            raise SessionRefused(_REMOVED)

    @staticmethod
    async def _removed(session: AsyncSession, session_id: str, member_id: int) -> bool:
        stmt = select(SESSION_MEMBERS.c.removed_at).where(
            SESSION_MEMBERS.c.session_id == session_id,
            SESSION_MEMBERS.c.member_id == member_id,
        )
        return (await session.execute(stmt)).scalar() is not None

    @staticmethod
    async def _entry_row(session: AsyncSession, entry_id: str) -> Any:
        row = (
            (await session.execute(select(SESSION_ENTRIES).where(SESSION_ENTRIES.c.id == entry_id)))
            .mappings()
            .first()
        )
        if row is None:
            raise EntryNotFound(entry_id)
        return row


_ALREADY_LIVE = "a session is already running in this channel; end it first"
_REMOVED = "the host removed you from this session"


def _text(value: object) -> str:
    return value[:SESSION_TEXT_LENGTH] if isinstance(value, str) else ""


def _new_job(spec: dict[str, Any]) -> NewJob[Any]:
    return NewJob(
        kind=JobKind.IMAGINE,
        request=spec["request"],
        mode=spec["mode"],
        estimated_cost=float(spec["estimated_cost"]),
        batch_key=spec.get("batch_key") or "",
        work_units=float(spec.get("work_units") or 0.0),
        priority=spec.get("priority"),
        age_restricted=bool(spec.get("age_restricted")),
        hold_reason=spec.get("hold_reason"),
        hold_details=spec.get("hold_details"),
        prompt=spec.get("prompt"),
        model=spec.get("model"),
        aspect=spec.get("aspect"),
    )


async def prune_sessions(db: Database, older_than: datetime, *, limit: int = 100) -> int:
    """Delete up to ``limit`` sessions ended before ``older_than`` with their rounds, entries,
    votes, participants, boards and timers; their jobs stay (still tagged). How many."""

    async def work(session: AsyncSession) -> int:
        ids = list(
            (
                await session.execute(
                    select(GROUP_SESSIONS.c.id)
                    .where(
                        GROUP_SESSIONS.c.status == SessionStatus.ENDED.value,
                        GROUP_SESSIONS.c.ended_at < older_than,
                    )
                    .order_by(GROUP_SESSIONS.c.ended_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
        )
        if ids:
            await session.execute(delete(TIMERS).where(TIMERS.c.subject.in_(ids)))
            await session.execute(delete(GROUP_SESSIONS).where(GROUP_SESSIONS.c.id.in_(ids)))
        return len(ids)

    return await db.write(work)


async def count_old_sessions(db: Database, older_than: datetime) -> int:
    """How many sessions ``prune_sessions`` would delete."""

    async def work(session: AsyncSession) -> int:
        stmt = select(func.count()).where(
            GROUP_SESSIONS.c.status == SessionStatus.ENDED.value,
            GROUP_SESSIONS.c.ended_at < older_than,
        )
        return int((await session.execute(stmt)).scalar_one())

    return await db.read(work)
