"""Group sessions on both backends: whole sessions on an injected clock, timers that fire once
under racing claimers and after a restart, host controls, removals, the server pool's money,
and retention; the quota ledger is audited after each story."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from config.settings import RetentionSettings
from storage import FileImageStore, audit
from storage.errors import QuotaExceededError, SessionRefused
from storage.modlog import ModerationLog
from storage.retention import Retention
from storage.sessions import SessionStore
from storage.types import (
    PRIORITY_SESSION_LANE,
    EntryState,
    JobStatus,
    LedgerKind,
    ModAction,
    NewJob,
    Owner,
    PoolKind,
    SessionPhase,
    SessionSpec,
    SessionStatus,
    SessionTimer,
)
from tests.storage.dbfixtures import (
    Services,
    make_services,
    new_job,
    queue_settings,
    quota_settings,
)

GUILD, CHANNEL, THREAD, HOST = 100, 555, 556, 9001
A, B, C = 1, 2, 3


@pytest.fixture
async def s(db_url: str) -> AsyncIterator[Services]:
    built = await make_services(
        db_url, queue=queue_settings(max_queued_per_user=100, max_running_per_user=10)
    )
    try:
        yield built
    finally:
        await built.db.dispose()


def store(s: Services, claimer: str = "bot-a") -> SessionStore:
    return SessionStore(s.db, s.queue, clock=s.clock, claimer_id=claimer)


def spec(**overrides: Any) -> SessionSpec:
    base: dict[str, Any] = {
        "guild_id": GUILD,
        "channel_id": CHANNEL,
        "host_id": HOST,
        "theme": "lighthouses",
        "round_seconds": 600,
        "voting_seconds": 300,
        "voting_wait_seconds": 120,
    }
    return SessionSpec(**{**base, **overrides})


def entry(prompt: str, cost: float = 1.0) -> NewJob[dict[str, Any]]:
    return new_job(prompt=prompt, cost=cost)


async def generate(s: Services, gpu_seconds: float = 1.0, *, post: bool = True) -> list[str]:
    """Run every queued job to success (and post its result): the worker and the publisher."""
    done = []
    while (claimed := await s.queue.claim_next("w1")) is not None:
        await s.queue.complete(
            claimed.id, claimed.lease_token, result_refs=["x/a.png"], gpu_seconds=gpu_seconds
        )
        if post:
            assert await s.deliveries.claim(claimed.id)
            await s.deliveries.mark_posted(claimed.id, 1)
        done.append(claimed.id)
    return done


async def tick(s: Services, st: SessionStore, seconds: float) -> list[str]:
    """Move the clock and fire what is due, as the bot's loop does; the kinds fired."""
    s.clock.advance(seconds)
    fired = []
    for timer in await st.claim_due():
        outcome = await st.fire(timer)
        assert outcome.fired
        fired.append(timer.kind)
    return fired


async def _actions(s: Services) -> list[ModAction]:
    page = await ModerationLog(s.db).page(GUILD, limit=50)
    return [e.action for e in reversed(page.entries)]


async def test_a_two_round_session_runs_on_its_clock(s: Services) -> None:
    st = store(s)
    session = await st.start(
        spec(
            rounds=2,
            themes=("dawn", "dusk"),
            approval=True,
            entries_per_member=2,
            votes_per_member=1,
        )
    )
    assert (session.round, session.phase, session.round_theme) == (1, SessionPhase.SUBMIT, "dawn")
    await st.attach_thread(session.id, THREAD)
    assert (await st.running_in(THREAD)) is not None
    assert (await st.running_in(CHANNEL)) is not None

    a1 = await st.submit(session.id, A, entry("a lighthouse at dawn"))
    a2 = await st.submit(session.id, A, entry("another"))
    assert a1.state is EntryState.PENDING and a1.job_id is None
    with pytest.raises(SessionRefused, match="the most allowed"):
        await st.submit(session.id, A, entry("a third"))
    b1 = await st.submit(session.id, B, entry("b"))
    c1 = await st.submit(session.id, C, entry("c"))
    for e in (a1, b1, c1):
        decision = await st.decide(e.id, HOST, approve=True)
        assert decision.decided and decision.entry.state is EntryState.APPROVED
        assert decision.entry.job_id is not None
    rejected = await st.decide(a2.id, HOST, approve=False, reason="off theme")
    assert rejected.entry.state is EntryState.REJECTED and rejected.entry.reason == "off theme"
    again = await st.decide(a2.id, 9002, approve=True)
    assert not again.decided and again.entry.decided_by == HOST
    a3 = await st.submit(session.id, A, entry("rejected ones do not count"))
    with pytest.raises(SessionRefused, match="voting is not open"):
        await st.vote(b1.id, A)

    job = await s.queue.require((await st.entry(a1.id)).job_id or "")
    assert job.session_id == session.id and job.channel_id == THREAD and not job.guild_paid

    assert await tick(s, st, 599) == []
    assert await tick(s, st, 1) == [SessionTimer.ROUND_END]
    session = await st.get(session.id)
    assert session.phase is SessionPhase.GENERATE
    assert (await st.entry(a3.id)).state is EntryState.EXPIRED
    with pytest.raises(SessionRefused, match="expired"):
        await st.decide(a3.id, HOST, approve=True)
    with pytest.raises(SessionRefused, match="closed"):
        await st.submit(session.id, B, entry("late"))
    assert (await st.counts(session.id)).outstanding == 3

    await generate(s)
    session = await st.generated(session.id)
    assert session.phase is SessionPhase.VOTE
    assert session.phase_ends_at == s.clock() + timedelta(seconds=300)

    with pytest.raises(SessionRefused, match="your own"):
        await st.vote(a1.id, A)
    assert await st.vote(b1.id, A) == (True, 1, 1)
    with pytest.raises(SessionRefused, match="used your 1 vote"):
        await st.vote(c1.id, A)
    assert await st.vote(b1.id, A) == (False, 0, 0)  # taken back
    assert await st.vote(c1.id, A) == (True, 1, 1)  # changed
    assert (await st.vote(c1.id, B)).votes == 2
    assert (await st.vote(a1.id, C)).votes == 1
    assert await st.votes_of(session.id, A) == [c1.id]

    assert await tick(s, st, 300) == [SessionTimer.VOTING_END]
    session = await st.get(session.id)
    assert (session.round, session.phase, session.round_theme) == (2, SessionPhase.SUBMIT, "dusk")
    (first,) = (await st.results(session.id)).rounds
    assert [(r.entry_id, r.votes) for r in first.entries] == [(c1.id, 2), (a1.id, 1), (b1.id, 0)]
    assert first.winner is not None and first.winner.member_id == C

    # Round 2: a tie goes to the earlier entry.
    a4 = await st.submit(session.id, A, entry("a at dusk"))
    b2 = await st.submit(session.id, B, entry("b at dusk"))
    for e in (a4, b2):
        await st.decide(e.id, HOST, approve=True)
    await tick(s, st, 600)
    await generate(s)
    await st.generated(session.id)
    await st.vote(b2.id, A)
    await st.vote(a4.id, B)
    with pytest.raises(SessionRefused, match="round 1"):
        await st.vote(c1.id, B)
    assert await tick(s, st, 300) == [SessionTimer.VOTING_END]

    session = await st.get(session.id)
    assert session.status is SessionStatus.ENDED and session.phase is SessionPhase.ENDED
    assert await st.running_in(CHANNEL) is None
    results = await st.results(session.id)
    assert [(r.entry_id, r.votes) for r in results.rounds[1].entries] == [(a4.id, 1), (b2.id, 1)]
    assert [(n, w.entry_id) for n, w in results.best_of] == [(1, c1.id), (2, a4.id)]
    boards = await st.posts.pending_boards()
    assert [(b.round, b.channel_id) for b in boards] == [(1, THREAD), (2, THREAD), (0, THREAD)]
    assert await st.next_due() is None
    assert await _actions(s) == [ModAction.SESSION_STARTED]
    assert (await audit(s.db)).ok


async def test_bounds_and_one_live_session_per_channel(s: Services) -> None:
    st = store(s)
    with pytest.raises(ValueError, match=r"rounds must be 1\.\.10"):
        await st.start(spec(rounds=11))
    with pytest.raises(ValueError, match="one theme per round"):
        await st.start(spec(rounds=3, themes=("a", "b")))
    with pytest.raises(ValueError, match=r"round_minutes must be 1\.\.1440 minutes"):
        await st.start(spec(round_seconds=30))
    with pytest.raises(ValueError, match="votes_per_member"):
        await st.start(spec(votes_per_member=0))
    with pytest.raises(ValueError, match="pool_gpu_seconds"):
        await st.start(spec(pool=PoolKind.SERVER, pool_seconds=0))
    first = await st.start(spec())
    with pytest.raises(SessionRefused, match="already running"):
        await st.start(spec(host_id=HOST + 1))
    await st.start(spec(channel_id=CHANNEL + 10))  # another channel
    await st.end(first.id, HOST)
    await st.start(spec())  # the channel is free again


async def test_an_entry_without_approval_is_queued_at_once_and_an_empty_round_finishes(
    s: Services,
) -> None:
    st = store(s)
    session = await st.start(spec(rounds=2))
    e = await st.submit(session.id, A, entry("now"))
    assert e.state is EntryState.APPROVED and e.job_id is not None
    assert s.woken  # the worker was told
    assert (await st.counts(session.id)).participants == 1
    await tick(s, st, 600)
    # Its job never finished: voting starts after the wait, and nothing is votable yet.
    assert (await st.get(session.id)).phase is SessionPhase.GENERATE
    await tick(s, st, 120)
    session = await st.get(session.id)
    assert (session.round, session.phase) == (2, SessionPhase.SUBMIT)  # round 1 finished empty
    assert (await st.results(session.id)).rounds[0].entries == ()
    assert await tick(s, st, 600) == [SessionTimer.ROUND_END]  # nobody entered round 2
    session = await st.get(session.id)
    assert session.status is SessionStatus.ENDED
    assert (await st.results(session.id)).best_of == ()
    await generate(s)
    assert (await audit(s.db)).ok


async def test_two_claimers_fire_each_timer_once(db_url: str) -> None:
    """Two bot processes (separate engines) race to claim and fire the same due timers."""
    one = await make_services(db_url, pool_size=10)
    two = await make_services(db_url, clock=one.clock, pool_size=10)
    try:
        st_one, st_two = store(one, "bot-a"), store(two, "bot-b")
        ids = [(await st_one.start(spec(channel_id=CHANNEL + i))).id for i in range(6)]
        one.clock.advance(600)

        async def loop(st: SessionStore) -> list[tuple[str, bool, bool]]:
            outcomes = []
            for _ in range(3):
                for timer in await st.claim_due(limit=2):
                    outcome = await st.fire(timer)
                    outcomes.append((timer.subject, outcome.fired, outcome.changed))
            return outcomes

        results = await asyncio.gather(loop(st_one), loop(st_two))
        fired = sorted(subject for outcomes in results for subject, ok, _ in outcomes if ok)
        assert fired == sorted(ids)
        for session_id in ids:
            (timer,) = await st_one.timers.of_subject(session_id)
            assert timer.fired_at is not None
            session = await st_two.get(session_id)
            assert session.round == 1 and session.status is SessionStatus.ENDED  # no entries

        # The same timer fired again by both, at once: neither changes anything.
        again = await asyncio.gather(
            st_one.fire(timer, claimer="bot-a"), st_two.fire(timer, claimer="bot-b")
        )
        assert [o.fired for o in again] == [False, False]
        assert (await audit(one.db)).ok
    finally:
        await one.db.dispose()
        await two.db.dispose()


async def test_a_claim_lost_with_its_process_is_reclaimed_and_fires_once(s: Services) -> None:
    st_a, st_b = store(s, "bot-a"), store(s, "bot-b")
    session = await st_a.start(spec())
    await st_a.submit(session.id, A, entry("x"))
    s.clock.advance(600)
    (claimed,) = await st_a.claim_due(lease_seconds=30)
    # bot-a dies here, before firing. Its claim holds until the lease ends.
    assert await st_b.claim_due(lease_seconds=30) == []
    # bot-b's loop sleeps until the claim can be taken over.
    assert await st_b.next_due() == claimed.claim_until
    s.clock.advance(31)
    (reclaimed,) = await st_b.claim_due(lease_seconds=30)
    assert reclaimed.id == claimed.id and reclaimed.claimed_by == "bot-b"
    assert (await st_b.fire(reclaimed)).changed
    late = await st_a.fire(claimed)  # bot-a comes back with its old claim
    assert not late.fired and not late.changed
    assert (await st_b.get(session.id)).phase is SessionPhase.GENERATE
    assert await st_a.claim_due() == [] and await st_b.claim_due() == []
    s.clock.advance(120)
    (wait,) = await st_b.claim_due()
    assert wait.kind == SessionTimer.VOTING_WAIT  # nothing skipped: the next timer is there


async def test_pause_resume_extend_skip_and_end(s: Services) -> None:
    st = store(s)
    session = await st.start(spec(rounds=2))
    await st.submit(session.id, A, entry("a"))
    await st.submit(session.id, B, entry("b"))
    s.clock.advance(200)
    session = await st.pause(session.id)
    assert session.status is SessionStatus.PAUSED and session.paused_remaining_seconds == 400
    with pytest.raises(SessionRefused, match="paused"):
        await st.submit(session.id, C, entry("c"))
    assert await tick(s, st, 10_000) == []  # no timer while paused
    session = await st.extend(session.id, 60)
    assert session.paused_remaining_seconds == 460
    session = await st.resume(session.id)
    assert session.phase_ends_at == s.clock() + timedelta(seconds=460)
    session = await st.extend(session.id, 40)
    assert await tick(s, st, 499) == []
    assert await tick(s, st, 1) == [SessionTimer.ROUND_END]
    with pytest.raises(SessionRefused, match="extended"):
        await st.extend(session.id, 60)
    await generate(s)
    session = await st.generated(session.id)
    assert session.phase is SessionPhase.VOTE
    version = session.version
    session = await st.extend(session.id, 100)
    assert session.version > version
    assert await tick(s, st, 300) == []
    assert await tick(s, st, 100) == [SessionTimer.VOTING_END]

    # Round 2: skip straight to voting, then end while voting.
    session = await st.get(session.id)
    e = await st.submit(session.id, A, entry("a2"))
    session = await st.skip_to_voting(session.id)
    assert session.phase is SessionPhase.GENERATE
    assert await tick(s, st, 0) == []  # its ROUND_END fired with the skip
    await generate(s)
    await st.generated(session.id)
    await st.vote(e.id, B)
    session = await st.end(session.id, HOST, "out of time")
    assert session.status is SessionStatus.ENDED
    results = await st.results(session.id)
    assert [len(r.entries) for r in results.rounds] == [2, 1]
    assert results.rounds[1].winner is not None and results.rounds[1].winner.entry_id == e.id
    assert await st.next_due() is None
    assert await st.end(session.id, HOST) == session  # once
    with pytest.raises(SessionRefused, match="ended"):
        await st.vote(e.id, C)
    assert await _actions(s) == [ModAction.SESSION_STARTED, ModAction.SESSION_ENDED]
    assert (await audit(s.db)).ok


async def test_removing_an_entry_and_a_participant(s: Services) -> None:
    st = store(s)
    session = await st.start(spec(approval=True, entries_per_member=2, votes_per_member=2))
    a1 = await st.submit(session.id, A, entry("a1"))
    b1 = await st.submit(session.id, B, entry("b1"))
    c1 = await st.submit(session.id, C, entry("c1"))
    c2 = await st.submit(session.id, C, entry("c2"))
    for e in (a1, b1, c1):
        await st.decide(e.id, HOST, approve=True)
    await tick(s, st, 600)
    ran = await generate(s)
    assert len(ran) == 3
    await st.generated(session.id)
    await st.vote(b1.id, A)
    await st.vote(c1.id, A)
    await st.vote(a1.id, C)

    removed = await st.remove_entry(b1.id, HOST, "copied from the web")
    assert removed.state is EntryState.REMOVED and removed.votes == 0
    with pytest.raises(SessionRefused, match="not in the vote"):
        await st.vote(b1.id, C)
    session = await st.remove_participant(session.id, C, HOST, "spamming")
    assert (await st.entry(c2.id)).state is EntryState.EXPIRED  # not generated: it expired
    assert (await st.entry(c1.id)).state is EntryState.APPROVED  # generated: it stays
    assert (await st.entry(a1.id)).votes == 0  # C's votes went
    with pytest.raises(SessionRefused, match="removed you"):
        await st.vote(a1.id, C)
    counts = await st.counts(session.id)
    assert counts.participants == 2 and counts.entries[EntryState.REMOVED] == 1
    await tick(s, st, 300)
    (round_,) = (await st.results(session.id)).rounds
    assert [r.entry_id for r in round_.entries] == [c1.id, a1.id]
    with pytest.raises(SessionRefused, match="results stand"):
        await st.remove_entry(a1.id, HOST, "late")
    assert await _actions(s) == [
        ModAction.SESSION_STARTED,
        ModAction.ENTRY_REMOVED,
        ModAction.PARTICIPANT_REMOVED,
    ]
    assert (await audit(s.db)).ok


async def test_a_members_own_entries_and_the_session_of_a_channel(s: Services) -> None:
    """What ``/session mine`` reads: one member's entries with their job's state and post,
    and a channel's session (the live one, else the latest that ended)."""
    st = store(s)
    assert await st.latest_in(CHANNEL) is None
    first = await st.attach_thread((await st.start(spec(approval=True))).id, THREAD)
    a1 = await st.submit(first.id, A, entry("a1"))
    b1 = await st.submit(first.id, B, entry("b1"))
    await st.decide(b1.id, HOST, approve=False, reason="off theme")
    (pending,) = await st.entries(first.id, member_id=A)
    assert pending.id == a1.id and pending.posted_message_id is None
    await st.decide(a1.id, HOST, approve=True)
    (job_id,) = await generate(s)
    (posted,) = await st.entries(first.id, member_id=A)
    job = await s.queue.get(job_id)
    assert job is not None and posted.job_status is JobStatus.SUCCEEDED
    assert (posted.posted_channel_id, posted.posted_message_id) == (job.channel_id, 1)
    assert posted.job_error is None and posted.undeliverable is None and not posted.job_deleted
    (rejected,) = await st.entries(first.id, member_id=B)
    assert rejected.reason == "off theme" and rejected.job_id is None
    for where in (CHANNEL, THREAD):
        found = await st.latest_in(where)
        assert found is not None and found.id == first.id
    await st.end(first.id, HOST)
    ended = await st.latest_in(THREAD)
    assert ended is not None and ended.id == first.id and not ended.live
    second = await st.start(spec(theme="boats"))
    live = await st.latest_in(CHANNEL)
    assert live is not None and live.id == second.id  # the live one, not the ended one
    in_thread = await st.latest_in(THREAD)
    assert in_thread is not None and in_thread.id == first.id  # the thread is the first's
    assert await st.latest_in(CHANNEL + 10) is None
    assert (await audit(s.db)).ok


async def test_a_removed_participants_waiting_job_is_cancelled_and_voting_starts(
    s: Services,
) -> None:
    st = store(s)
    session = await st.start(spec())
    a = await st.submit(session.id, A, entry("a"))
    b = await st.submit(session.id, B, entry("b"))
    await tick(s, st, 600)
    claimed = await s.queue.claim_next("w1")
    assert claimed is not None and claimed.id == a.job_id
    await s.queue.complete(claimed.id, claimed.lease_token, result_refs=["x"], gpu_seconds=1.0)
    await s.deliveries.claim(claimed.id)
    await s.deliveries.mark_posted(claimed.id, 1)
    assert (await st.generated(session.id)).phase is SessionPhase.GENERATE  # b outstanding
    session = await st.remove_participant(session.id, B, HOST)
    assert session.phase is SessionPhase.VOTE  # nothing outstanding any more
    assert (await s.queue.require(b.job_id or "")).status is JobStatus.CANCELLED
    assert (await audit(s.db)).ok


@pytest.fixture
async def pooled(db_url: str) -> AsyncIterator[Services]:
    """Members with 5 GPU-seconds each and a server with 20."""
    built = await make_services(
        db_url,
        queue=queue_settings(max_queued_per_user=100, max_running_per_user=10),
        quota=quota_settings(user_daily_gpu_seconds=5.0, guild_daily_gpu_seconds=20.0),
    )
    try:
        yield built
    finally:
        await built.db.dispose()


async def test_the_server_pool_admits_what_fits_and_returns_the_rest(pooled: Services) -> None:
    s, st = pooled, store(pooled)
    pool = spec(pool=PoolKind.SERVER, pool_seconds=10.0, entries_per_member=3, rounds=2)
    session = await st.start(pool)
    guild = (await s.quota.readout(A, GUILD)).guild
    assert guild is not None and guild.reserved == 10.0  # the pool is set aside
    with pytest.raises(QuotaExceededError) as caught:
        await st.start(spec(channel_id=CHANNEL + 1, pool=PoolKind.SERVER, pool_seconds=15.0))
    assert caught.value.scope == "guild"

    # Entries the members could not afford themselves: the server pays.
    e1 = await st.submit(session.id, A, entry("a1", cost=4.0))
    e2 = await st.submit(session.id, A, entry("a2", cost=4.0))
    assert (await s.quota.readout(A, GUILD)).reserved == 0.0
    with pytest.raises(SessionRefused, match=r"pool has 2\.0 GPU-seconds left"):
        await st.submit(session.id, B, entry("b1", cost=3.0))
    assert await st.entries(session.id, member_id=B) == []  # nothing stored
    status = await st.pool(session.id)
    assert status is not None and (status.reserved, status.left) == (8.0, 2.0)
    guild = (await s.quota.readout(A, GUILD)).guild
    assert guild is not None and guild.reserved == 10.0  # 8 in jobs, 2 still set aside

    # e1 costs less than its estimate (the pool gets the rest back), e2 more: the excess is
    # the server's, not the pool's.
    first = await s.queue.claim_next("w1")
    assert first is not None and first.id == e1.job_id
    await s.queue.complete(first.id, first.lease_token, result_refs=["x"], gpu_seconds=1.0)
    second = await s.queue.claim_next("w1")
    assert second is not None and second.id == e2.job_id
    await s.queue.complete(second.id, second.lease_token, result_refs=["x"], gpu_seconds=6.0)
    status = await st.pool(session.id)
    assert status is not None and (status.spent, status.reserved, status.left) == (5.0, 0.0, 5.0)
    member = await s.quota.readout(A, GUILD)
    assert member.used == 0.0 and member.guild is not None
    assert member.guild.used == 7.0 and member.guild.reserved == 5.0
    lines = await s.quota.ledger(job_id=e2.job_id)
    assert {line.user_id for line in lines} == {0}
    kinds = {line.kind for line in lines}
    assert kinds == {LedgerKind.RESERVE, LedgerKind.CHARGE, LedgerKind.RELEASE}
    assert (await s.quota.ledger(user_id=A)) == []

    b1 = await st.submit(session.id, B, entry("b1", cost=3.0))  # fits now
    assert b1.state is EntryState.APPROVED
    job = await s.queue.require(b1.job_id or "")
    assert job.guild_paid and job.session_id == session.id
    assert (await audit(s.db)).ok

    await st.end(session.id, HOST)
    guild = (await s.quota.readout(A, GUILD)).guild
    assert guild is not None and guild.reserved == 3.0  # only b1's job; the rest returned
    await st.start(spec(channel_id=CHANNEL + 1, pool=PoolKind.SERVER, pool_seconds=10.0))
    await generate(s, gpu_seconds=3.0)
    assert (await audit(s.db)).ok


async def test_approval_admits_against_the_pool_and_a_refused_approval_stays_pending(
    pooled: Services,
) -> None:
    s, st = pooled, store(pooled)
    session = await st.start(spec(pool=PoolKind.SERVER, pool_seconds=5.0, approval=True))
    a = await st.submit(session.id, A, entry("a", cost=3.0))
    b = await st.submit(session.id, B, entry("b", cost=3.0))
    assert (await st.pool(session.id)) is not None
    assert (await st.decide(a.id, HOST, approve=True)).decided
    with pytest.raises(SessionRefused, match=r"pool has 2\.0"):
        await st.decide(b.id, HOST, approve=True)
    assert (await st.entry(b.id)).state is EntryState.PENDING
    assert (await st.decide(b.id, HOST, approve=False, reason="no room")).decided
    assert (await audit(s.db)).ok


async def test_members_pay_their_own_entries(pooled: Services) -> None:
    s, st = pooled, store(pooled)
    session = await st.start(spec(entries_per_member=2))
    e = await st.submit(session.id, A, entry("a", cost=4.0))
    job = await s.queue.require(e.job_id or "")
    assert not job.guild_paid and (await s.quota.readout(A, GUILD)).reserved == 4.0
    with pytest.raises(QuotaExceededError) as caught:
        await st.submit(session.id, A, entry("a2", cost=4.0))
    assert caught.value.scope == "user"
    assert len(await st.entries(session.id)) == 1  # the refused entry was not stored
    assert await st.pool(session.id) is None
    assert (await audit(s.db)).ok


async def test_boards_are_claimed_and_posted_once(s: Services) -> None:
    st_a, st_b = store(s, "bot-a"), store(s, "bot-b")
    session = await st_a.start(spec())
    await st_a.end(session.id, HOST)
    (board,) = await st_a.posts.pending_boards()
    assert board.round == 0 and board.nonce.startswith("sb") and len(board.nonce) <= 25
    assert await st_a.posts.claim_board(session.id, 0)
    assert not await st_b.posts.claim_board(session.id, 0)
    assert await st_b.posts.pending_boards() == []
    s.clock.advance(61)  # bot-a lost it: bot-b may post (the nonce drops a duplicate)
    assert await st_b.posts.claim_board(session.id, 0)
    assert await st_b.posts.mark_board_posted(session.id, 0, 777)
    assert not await st_a.posts.mark_board_posted(session.id, 0, 778)
    assert await st_a.posts.pending_boards() == []


async def test_a_posted_boards_reveal_stays_owed_until_recorded(s: Services) -> None:
    """The entries a board ends anonymity for are re-rendered after the post: owed until
    ``mark_revealed``, so a crash in between only delays the edits. The best-of reveals the
    rounds that got no board of their own (a round the host's end cut short)."""
    st = store(s)
    session = await st.start(spec(rounds=2))
    e = await st.submit(session.id, A, entry("one"))
    await tick(s, st, 600)
    await generate(s)
    await st.generated(session.id)
    await st.vote(e.id, B)
    await tick(s, st, 300)  # round 1's board is owed; round 2 opens
    assert await st.posts.pending_reveals() == []  # nothing posted yet
    assert await st.posts.claim_board(session.id, 1)
    assert await st.posts.mark_board_posted(session.id, 1, 701)
    # "Crash" here: the reveal is still owed, to this process or another.
    assert await store(s, "bot-b").posts.pending_reveals() == [(session.id, 1)]
    assert await st.posts.reveal_rounds(session.id, 1) == [1]
    assert await st.posts.mark_revealed(session.id, 1)
    assert not await st.posts.mark_revealed(session.id, 1)  # once
    assert await st.posts.pending_reveals() == []
    await st.submit(session.id, B, entry("two"))
    await st.end(session.id, HOST)  # round 2 never finished: no board of its own
    (best_of,) = await st.posts.pending_boards()
    assert best_of.round == 0
    assert await st.posts.claim_board(session.id, 0)
    assert await st.posts.mark_board_posted(session.id, 0, 702)
    assert await st.posts.pending_reveals() == [(session.id, 0)]
    assert await st.posts.reveal_rounds(session.id, 0) == [2]
    assert await st.posts.mark_revealed(session.id, 0)
    assert await st.posts.pending_reveals() == []


async def test_the_card_is_edited_only_when_the_session_changed(s: Services) -> None:
    st = store(s)
    session = await st.start(spec())
    await st.posts.attach_card(session.id, 42)
    (stale,) = await st.posts.stale_cards()
    assert await st.posts.mark_card_shown(session.id, stale.version)
    # A second process finds that version taken: it does not edit the card again.
    assert not await store(s, "bot-b").posts.mark_card_shown(session.id, stale.version)
    assert await st.posts.stale_cards() == []
    await st.submit(session.id, A, entry("a"))
    assert [v.id for v in await st.posts.stale_cards()] == [session.id]


async def test_retention_keeps_live_sessions_jobs_and_prunes_ended_sessions(
    s: Services, tmp_path: Path
) -> None:
    st = store(s)
    live = await st.start(spec())
    ended = await st.start(spec(channel_id=CHANNEL + 1))
    kept = await st.submit(live.id, A, entry("kept"))
    gone = await st.submit(ended.id, A, entry("pruned"))
    await generate(s)
    await st.end(ended.id, HOST)
    s.clock.advance(200 * 86_400)
    settings = RetentionSettings(images_days=30, rows_days=180, sessions_days=90)
    retention = Retention(s.queue, FileImageStore(tmp_path / "images"), settings)
    assert (await retention.prune(dry_run=True)).sessions == 1
    report = await retention.prune()
    assert report.sessions == 1 and report.jobs == 1
    assert await st.find(ended.id) is None
    assert await s.queue.get(gone.job_id or "") is None
    assert (await s.queue.require(kept.job_id or "")).pruned_at is None  # live: kept
    assert await st.timers.of_subject(ended.id) == []
    assert (await audit(s.db)).ok


async def test_racing_entries_and_votes_keep_the_pool_and_the_limits(db_url: str) -> None:
    """Two processes (separate engines) admit entries and votes at once: the pool is never
    overdrawn, and no member goes over an entry or vote limit."""
    one = await make_services(
        db_url,
        queue=queue_settings(max_queued_per_user=100, max_running_per_user=10),
        pool_size=10,
    )
    two = await make_services(
        db_url,
        queue=queue_settings(max_queued_per_user=100, max_running_per_user=10),
        clock=one.clock,
        pool_size=10,
    )
    try:
        st_one, st_two = store(one, "bot-a"), store(two, "bot-b")
        session = await st_one.start(
            spec(pool=PoolKind.SERVER, pool_seconds=5.0, entries_per_member=1)
        )
        members = range(10, 16)
        outcomes = await asyncio.gather(
            *(
                (st_one if m % 2 else st_two).submit(session.id, m, entry(f"e{m}", cost=2.0))
                for m in members
            ),
            *(st_two.submit(session.id, 20, entry(f"twice {i}", cost=0.5)) for i in range(3)),
            return_exceptions=True,
        )
        admitted = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert all(isinstance(o, SessionRefused) for o in refused), refused
        assert sum(1 for e in admitted if e.member_id == 20) == 1
        assert len(admitted) == 3  # two entries of 2.0 and one of 0.5 fill the pool of 5.0
        status = await st_one.pool(session.id)
        assert status is not None and status.reserved == 4.5 and status.left == 0.5

        await st_one.skip_to_voting(session.id)
        await generate(one)
        await st_one.generated(session.id)
        voter = 99
        votes = await asyncio.gather(
            *((st_one if i % 2 else st_two).vote(e.id, voter) for i, e in enumerate(admitted)),
            return_exceptions=True,
        )
        assert sum(1 for v in votes if not isinstance(v, BaseException)) == 1
        assert await st_one.votes_of(session.id, voter) != []
        assert (await audit(one.db)).ok
    finally:
        await one.db.dispose()
        await two.db.dispose()


async def _priority(s: Services, job_id: str | None) -> int:
    assert job_id is not None
    job = await s.queue.get(job_id)
    assert job is not None
    return job.priority


async def _lane_timers(st: SessionStore, session_id: str) -> list[tuple[int, bool]]:
    return [
        (t.round, t.fired_at is not None)
        for t in await st.timers.of_subject(session_id)
        if t.kind == SessionTimer.LANE
    ]


async def test_the_priority_lane_puts_a_rounds_entries_ahead_near_its_end(s: Services) -> None:
    """With a lane, a round's queued entries jump the other jobs in its last minutes (its LANE
    timer), entries admitted after that start there, and ordinary jobs queued earlier wait."""
    st = store(s)
    private = [
        (await s.queue.enqueue(Owner(C, GUILD, CHANNEL), entry(f"private {n}"))).id
        for n in range(3)
    ]
    session = await st.start(spec(rounds=2, lane_seconds=120))
    assert session.lane_seconds == 120 and await _lane_timers(st, session.id) == [(1, False)]
    early = await st.submit(session.id, A, entry("early"))
    assert await _priority(s, early.job_id) == 0
    assert await tick(s, st, 479) == []
    assert await tick(s, st, 1) == [SessionTimer.LANE]  # 120 s before the round's end
    assert await _priority(s, early.job_id) == PRIORITY_SESSION_LANE
    late = await st.submit(session.id, B, entry("late"))
    assert await _priority(s, late.job_id) == PRIORITY_SESSION_LANE
    assert [await _priority(s, j) for j in private] == [0, 0, 0]
    # An extension once the lane is open keeps it open: no second LANE timer.
    await st.extend(session.id, 60)
    assert await _lane_timers(st, session.id) == [(1, True)]
    # The worker takes the round's entries first, in the fair order among them.
    first, second = await s.queue.claim_next("w1"), await s.queue.claim_next("w1")
    assert first is not None and second is not None
    assert {first.id, second.id} == {early.job_id, late.job_id}
    claimed = await s.queue.claim_next("w1")
    assert claimed is not None and claimed.id == private[0]
    for job in (first, second, claimed):
        await s.queue.complete(job.id, job.lease_token, result_refs=["x/a.png"], gpu_seconds=1)
    # Submissions close on the extended time.
    assert await tick(s, st, 179) == []
    assert await tick(s, st, 1) == [SessionTimer.ROUND_END]
    assert (await audit(s.db)).ok


async def test_the_lane_follows_pause_resume_extend_and_skip(s: Services) -> None:
    st = store(s)
    session = await st.start(spec(lane_seconds=120))  # the lane opens at 480 s
    waiting = await st.submit(session.id, A, entry("waiting"))
    s.clock.advance(100)
    await st.pause(session.id)
    assert await _lane_timers(st, session.id) == []  # paused: no timer at all
    await tick(s, st, 1000)
    await st.resume(session.id)  # 500 s left: the lane opens in 380 s
    await st.extend(session.id, 100)  # 600 s left: in 480 s
    assert await tick(s, st, 479) == []
    assert await tick(s, st, 1) == [SessionTimer.LANE]
    assert await _priority(s, waiting.job_id) == PRIORITY_SESSION_LANE

    # Skipping to voting before the lane's time opens it: what is still queued is what the
    # round waits for. Its LANE timer fires with the skip.
    other = await st.start(spec(channel_id=CHANNEL + 1, lane_seconds=60))
    queued = await st.submit(other.id, B, entry("queued"))
    assert await _priority(s, queued.job_id) == 0
    await st.skip_to_voting(other.id)
    assert await _priority(s, queued.job_id) == PRIORITY_SESSION_LANE
    assert await _lane_timers(st, other.id) == [(1, True)]

    # A session without a lane never has a LANE timer, and its entries keep their priority.
    plain = await st.start(spec(channel_id=CHANNEL + 2))
    kept = await st.submit(plain.id, C, entry("plain"))
    await st.skip_to_voting(plain.id)
    assert await _lane_timers(st, plain.id) == [] and await _priority(s, kept.job_id) == 0
    with pytest.raises(ValueError, match=r"the priority lane must be 0\.\.60 minutes"):
        await st.start(spec(channel_id=CHANNEL + 3, lane_seconds=3601))


async def test_host_panels_are_owed_until_posted_or_decided(s: Services) -> None:
    """The sweep behind the bot's own panel post: a waiting entry without a recorded panel
    message, taken before the grace's start, in a session that has not ended."""
    st = store(s)
    session = await st.start(spec(approval=True))
    first = await st.submit(session.id, A, entry("first"))
    second = await st.submit(session.id, B, entry("second"))
    assert await st.posts.panels_owed(s.clock() - timedelta(seconds=30)) == []  # within grace
    s.clock.advance(30)
    owed = await st.posts.panels_owed(s.clock() - timedelta(seconds=30))
    assert [e.id for e in owed] == [first.id, second.id]
    await st.attach_entry_message(first.id, panel_message_id=501)  # its post was recorded
    await st.decide(second.id, HOST, approve=False, reason="off theme")
    assert await st.posts.panels_owed(s.clock()) == []
    third = await st.submit(session.id, C, entry("third"))
    assert [e.id for e in await st.posts.panels_owed(s.clock())] == [third.id]
    await st.end(session.id, HOST)
    assert await st.posts.panels_owed(s.clock()) == []  # expired with the session
