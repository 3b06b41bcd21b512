"""The review queue: holds, decisions (once), reports, appeals, expiry, bans and notices, on
both backends, with the quota ledger audited after each story."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from storage.audit import audit
from storage.errors import JobNotFound, ReviewRefused
from storage.modlog import ModerationLog
from storage.review import AutoBan, ReviewDesk
from storage.types import (
    Decision,
    HoldState,
    JobStatus,
    LedgerKind,
    ModAction,
    ReviewKind,
    ReviewState,
)
from tests.storage.dbfixtures import Services, new_job, owner

GUILD = 100
MOD_A, MOD_B = 9001, 9002
APPEAL = timedelta(days=14)


def desk(s: Services) -> ReviewDesk:
    return ReviewDesk(s.db, s.queue, clock=s.clock, claimer_id="bot-a")


async def _finish(s: Services, job_id: str, **extra: Any) -> None:
    claimed = await s.queue.claim_next("w1")
    assert claimed is not None and claimed.id == job_id
    await s.queue.complete(
        job_id, claimed.lease_token, result_refs=["x/grid.png"], gpu_seconds=2.0, **extra
    )


async def _held_by_term(s: Services, user: int = 1) -> str:
    job = dataclasses.replace(new_job(), hold_reason="review term `dragon`")
    view = await s.queue.enqueue(owner(user), job)
    assert view.hold is HoldState.HELD
    return view.id


async def _actions(s: Services) -> list[ModAction]:
    page = await ModerationLog(s.db).page(GUILD, limit=50)
    return [entry.action for entry in reversed(page.entries)]


async def test_a_review_term_holds_the_job_from_the_start_and_approval_posts_it(
    services: Services,
) -> None:
    s, d = services, desk(services)
    job_id = await _held_by_term(s)
    (item,) = await d.open_items(GUILD)
    assert item.kind is ReviewKind.HOLD and item.reason == "review term `dragon`"
    assert item.shown_version == 0 and item.version == 1  # its message is due
    await _finish(s, job_id)
    view = await s.queue.require(job_id)
    assert view.status is JobStatus.SUCCEEDED and view.hold is HoldState.HELD and not view.showable
    assert (await d.get(item.id, GUILD)).version == 2  # the thumbnail now exists: edit due
    # The publisher may post "held" (posted_at set); approval makes it due again.
    assert await s.deliveries.claim(job_id)
    await s.deliveries.mark_posted(job_id, 1)
    outcome = await d.decide(item.id, GUILD, MOD_A, Decision.APPROVE, "fine", keep_images=APPEAL)
    assert outcome.decided and outcome.item.decision is Decision.APPROVE
    view = await s.queue.require(job_id)
    assert view.showable and view.posted_at is None and view.charged == 2.0
    assert [n.kind for n in await d.due_notices()] == ["held", "approved"]
    assert await _actions(s) == [ModAction.HELD, ModAction.APPROVED]
    assert (await audit(s.db)).ok


async def test_the_classifier_holds_at_completion_and_rejection_refunds(
    services: Services,
) -> None:
    s, d = services, desk(services)
    view = await s.queue.enqueue(owner(), new_job())
    flagged = {"labels": ["nsfw"], "max_score": 0.97, "images": [2]}
    await _finish(s, view.id, scores=[{"nsfw": 0.1}, {"nsfw": 0.97}], flagged=flagged)
    view = await s.queue.require(view.id)
    assert view.hold is HoldState.HELD and view.charged == 2.0
    (item,) = await d.open_items(GUILD)
    assert "classifier" in item.reason and item.details["max_score"] == 0.97
    outcome = await d.decide(item.id, GUILD, MOD_A, Decision.REJECT, "gore", keep_images=APPEAL)
    assert outcome.decided
    view = await s.queue.require(view.id)
    assert view.status is JobStatus.BLOCKED and view.charged == 0 and view.error == "gore"
    assert view.purge_after == s.clock() + APPEAL and view.hold is HoldState.REJECTED
    kinds = sorted(e.kind for e in await s.quota.ledger(job_id=view.id))
    assert LedgerKind.CREDIT in kinds
    assert await _actions(s) == [
        ModAction.CLASSIFIED,
        ModAction.HELD,
        ModAction.REJECTED,
    ]
    assert (await audit(s.db)).ok


async def test_a_flagged_dm_job_is_blocked_and_refunded(services: Services) -> None:
    s = services
    view = await s.queue.enqueue(owner(guild_id=None), new_job())
    await _finish(s, view.id, flagged={"labels": ["nsfw"], "max_score": 0.9, "images": [0]})
    view = await s.queue.require(view.id)
    assert view.status is JobStatus.BLOCKED and view.charged == 0
    assert (await audit(s.db)).ok


async def test_a_rejection_while_the_job_runs_applies_when_it_finishes(
    services: Services,
) -> None:
    s, d = services, desk(services)
    job_id = await _held_by_term(s)
    claimed = await s.queue.claim_next("w1")
    assert claimed is not None
    (item,) = await d.open_items(GUILD)
    await d.decide(item.id, GUILD, MOD_A, Decision.REJECT, "no dragons", keep_images=APPEAL)
    assert (await s.queue.require(job_id)).status is JobStatus.RUNNING
    await s.queue.complete(job_id, claimed.lease_token, result_refs=["x/a.png"], gpu_seconds=1)
    view = await s.queue.require(job_id)
    assert view.status is JobStatus.BLOCKED and view.charged == 0
    assert view.error == "no dragons" and view.purge_after is not None
    assert (await audit(s.db)).ok


async def test_a_rejection_of_a_queued_job_blocks_it_at_once(services: Services) -> None:
    s, d = services, desk(services)
    job_id = await _held_by_term(s)
    (item,) = await d.open_items(GUILD)
    await d.decide(item.id, GUILD, MOD_A, Decision.REJECT, "no", keep_images=APPEAL)
    assert (await s.queue.require(job_id)).status is JobStatus.BLOCKED
    assert await s.queue.claim_next("w1") is None
    assert (await audit(s.db)).ok


async def test_two_moderators_deciding_at_once_make_one_decision(services: Services) -> None:
    s, d = services, desk(services)
    job_id = await _held_by_term(s)
    await _finish(s, job_id)
    (item,) = await d.open_items(GUILD)
    other = ReviewDesk(s.db, s.queue, clock=s.clock, claimer_id="bot-b")
    outcomes = await asyncio.gather(
        d.decide(item.id, GUILD, MOD_A, Decision.APPROVE, "ok", keep_images=APPEAL),
        other.decide(item.id, GUILD, MOD_B, Decision.REJECT, "no", keep_images=APPEAL),
    )
    assert sum(o.decided for o in outcomes) == 1
    final = await d.get(item.id, GUILD)
    winner = next(o for o in outcomes if o.decided)
    assert final.decision is winner.item.decision
    assert all(o.item.decision is final.decision for o in outcomes)
    decisions = [a for a in await _actions(s) if a in (ModAction.APPROVED, ModAction.REJECTED)]
    assert len(decisions) == 1
    assert (await audit(s.db)).ok


async def test_a_claim_keeps_other_moderators_out_until_it_lapses(services: Services) -> None:
    s, d = services, desk(services)
    await _held_by_term(s)
    (item,) = await d.open_items(GUILD)
    await d.claim(item.id, GUILD, MOD_A)
    with pytest.raises(ReviewRefused, match="reviewing"):
        await d.decide(item.id, GUILD, MOD_B, Decision.APPROVE, "ok", keep_images=APPEAL)
    s.clock.advance(301)
    assert (
        await d.decide(item.id, GUILD, MOD_B, Decision.APPROVE, "ok", keep_images=APPEAL)
    ).decided
    with pytest.raises(ReviewRefused, match="already decided"):
        await d.claim(item.id, GUILD, MOD_A)


async def test_items_belong_to_their_server(services: Services) -> None:
    s, d = services, desk(services)
    await _held_by_term(s)
    (item,) = await d.open_items(GUILD)
    with pytest.raises(Exception, match="no review item"):
        await d.decide(item.id, GUILD + 1, MOD_A, Decision.APPROVE, "x", keep_images=APPEAL)
    assert await d.open_items(GUILD + 1) == []


async def test_reports_group_once_per_member_and_are_rate_limited(services: Services) -> None:
    s, d = services, desk(services)
    view = await s.queue.enqueue(owner(1), new_job())
    await _finish(s, view.id)
    first = await d.report(GUILD, view.id, 2, "spam", per_hour=3)
    second = await d.report(GUILD, view.id, 3, "gross", per_hour=3)
    assert first.id == second.id and second.reports == 2
    assert second.details["reasons"] == ["spam", "gross"]
    with pytest.raises(ReviewRefused, match="already reported"):
        await d.report(GUILD, view.id, 2, "again", per_hour=3)
    with pytest.raises(ReviewRefused, match="your own job"):
        await d.report(GUILD, view.id, 1, "me", per_hour=3)
    others = []
    for _ in range(3):
        other = await s.queue.enqueue(owner(1), new_job())
        await _finish(s, other.id)
        others.append(other.id)
    await d.report(GUILD, others[0], 2, "x", per_hour=3)
    await d.report(GUILD, others[1], 2, "x", per_hour=3)
    with pytest.raises(ReviewRefused, match="last hour"):
        await d.report(GUILD, others[2], 2, "x", per_hour=3)
    s.clock.advance(3601)
    await d.report(GUILD, others[2], 2, "x", per_hour=3)


async def test_held_jobs_cannot_be_reported(services: Services) -> None:
    s, d = services, desk(services)
    job_id = await _held_by_term(s)
    await _finish(s, job_id)
    with pytest.raises(ReviewRefused, match="not shown in public"):
        await d.report(GUILD, job_id, 2, "x", per_hour=3)


async def test_an_appeal_goes_to_another_moderator_and_a_grant_restores_the_job(
    services: Services,
) -> None:
    s, d = services, desk(services)
    job_id = await _held_by_term(s)
    await _finish(s, job_id)
    (item,) = await d.open_items(GUILD)
    await d.decide(item.id, GUILD, MOD_A, Decision.REJECT, "dragon", keep_images=APPEAL)
    with pytest.raises(JobNotFound):
        await d.appeal(job_id, 2, "not mine")  # someone else's job
    appeal = await d.appeal(job_id, 1, "it is a lizard")
    assert appeal.kind is ReviewKind.APPEAL and appeal.rejected_by == MOD_A
    with pytest.raises(ReviewRefused, match="appealed already"):
        await d.appeal(job_id, 1, "again")
    with pytest.raises(ReviewRefused, match="another moderator"):
        await d.decide(appeal.id, GUILD, MOD_A, Decision.GRANT, "ok", keep_images=APPEAL)
    outcome = await d.decide(appeal.id, GUILD, MOD_B, Decision.GRANT, "lizard", keep_images=APPEAL)
    assert outcome.decided
    view = await s.queue.require(job_id)
    assert view.status is JobStatus.SUCCEEDED and view.showable and view.posted_at is None
    assert view.charged == 0  # the refund stands
    assert [n.kind for n in await d.due_notices()] == ["held", "rejected", "granted"]
    assert (await audit(s.db)).ok
    assert (await _actions(s))[-2:] == [ModAction.APPEALED, ModAction.APPEAL_GRANTED]


async def test_one_moderator_servers_may_decide_their_own_appeals(services: Services) -> None:
    s, d = services, desk(services)
    job_id = await _held_by_term(s)
    await _finish(s, job_id)
    (item,) = await d.open_items(GUILD)
    await d.decide(item.id, GUILD, MOD_A, Decision.REJECT, "x", keep_images=APPEAL)
    appeal = await d.appeal(job_id, 1, "please")
    outcome = await d.decide(
        appeal.id, GUILD, MOD_A, Decision.DENY, "no", keep_images=APPEAL, allow_same_moderator=True
    )
    assert outcome.decided
    assert (await s.queue.require(job_id)).status is JobStatus.BLOCKED


async def test_no_appeal_after_the_images_are_gone(services: Services) -> None:
    s, d = services, desk(services)
    job_id = await _held_by_term(s)
    await _finish(s, job_id)
    (item,) = await d.open_items(GUILD)
    await d.decide(item.id, GUILD, MOD_A, Decision.REJECT, "x", keep_images=APPEAL)
    await s.queue.forget_images(job_id)
    with pytest.raises(ReviewRefused, match="appeal period"):
        await d.appeal(job_id, 1, "late")


async def test_undecided_holds_expire_as_refunded_rejections(services: Services) -> None:
    s, d = services, desk(services)
    job_id = await _held_by_term(s)
    await _finish(s, job_id)
    assert await d.expire_holds(s.clock() - timedelta(days=7), keep_images=APPEAL) == 0
    s.clock.advance(7 * 86400 + 1)
    assert await d.expire_holds(s.clock() - timedelta(days=7), keep_images=APPEAL) == 1
    (item,) = await d.items_of_job(job_id)
    assert item.decision is Decision.EXPIRE and item.decided_by is None
    assert (await s.queue.require(job_id)).status is JobStatus.BLOCKED
    assert (await _actions(s))[-1] is ModAction.EXPIRED
    assert (await audit(s.db)).ok


async def test_rejecting_closes_the_jobs_other_items(services: Services) -> None:
    s, d = services, desk(services)
    view = await s.queue.enqueue(owner(1), new_job())
    await _finish(s, view.id)
    report = await d.report(GUILD, view.id, 2, "bad", per_hour=5)
    outcome = await d.decide(
        report.id,
        GUILD,
        MOD_A,
        Decision.REJECT,
        "bad",
        keep_images=APPEAL,
        ban=True,
        ban_for=timedelta(hours=1),
    )
    assert outcome.banned_until == s.clock() + timedelta(hours=1)
    ban = await d.active_ban(GUILD, 1)
    assert ban is not None and ban.banned_by == MOD_A
    assert await d.open_items(GUILD) == []
    s.clock.advance(3601)
    assert await d.active_ban(GUILD, 1) is None


async def test_bans_and_automatic_bans(services: Services) -> None:
    s, d = services, desk(services)
    ban = await d.ban(GUILD, 5, duration=None, reason="spam", moderator_id=MOD_A)
    assert ban.until is None and await d.active_ban(GUILD, 5) is not None
    assert await d.active_ban(GUILD + 1, 5) is None  # per server
    assert await d.unban(GUILD, 5, MOD_A, "ok")
    assert not await d.unban(GUILD, 5, MOD_A, "ok")
    log = ModerationLog(s.db, clock=s.clock)
    rule = AutoBan(strikes=2, window=timedelta(hours=1), duration=timedelta(hours=24))
    await log.record(GUILD, ModAction.REFUSED, actor_id=None, target_user_id=6, reason="x")
    assert await d.strike(GUILD, 6, rule) is None
    await log.record(GUILD, ModAction.REFUSED, actor_id=None, target_user_id=6, reason="x")
    auto = await d.strike(GUILD, 6, rule)
    assert auto is not None and auto.auto and auto.until == s.clock() + timedelta(hours=24)
    s.clock.advance(86401)
    assert await d.forget_expired_bans() == 1 and await d.forget_expired_bans() == 0
    # The strikes before that ban do not ban again on their own.
    await log.record(GUILD, ModAction.REFUSED, actor_id=None, target_user_id=6, reason="x")
    assert await d.strike(GUILD, 6, rule) is None
    assert await d.strike(GUILD, 6, AutoBan(0, timedelta(hours=1), timedelta(hours=1))) is None


async def test_item_messages_and_notices_are_claimed_and_recorded(services: Services) -> None:
    s, d = services, desk(services)
    await _held_by_term(s)
    (item,) = await d.stale_items()
    other = ReviewDesk(s.db, s.queue, clock=s.clock, claimer_id="bot-b")
    assert await d.claim_post(item.id)
    assert not await other.claim_post(item.id)
    assert await other.stale_items() == []
    await d.shown(item.id, item.version, 42, 4242)
    assert await d.stale_items() == []
    shown = await d.get(item.id, GUILD)
    assert shown.message_id == 4242 and shown.shown_version == shown.version
    (notice,) = await d.due_notices()
    assert await d.claim_notice(notice.id) and not await other.claim_notice(notice.id)
    await d.notice_failed(notice.id, "closed DMs", permanent=True)
    assert await d.due_notices() == []
    assert [n.kind for n in await d.notices_of(1)] == ["held"]
    assert ReviewState.OPEN is shown.state
