"""Delivery state: message ids, exclusive claims between bot processes, idempotent posted marks."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from storage import DeliveryClaimLost, DeliveryLedger, GuildLeftError, JobNotFound, JobStatus, audit
from tests.storage.dbfixtures import Services, make_services, new_job, owner


async def _finished(s: Services) -> str:
    view = await s.queue.enqueue(owner(), new_job())
    claimed = await s.queue.claim_next("w")
    assert claimed is not None and claimed.id == view.id
    await s.queue.complete(view.id, claimed.lease_token, result_refs=["r"], gpu_seconds=1)
    return view.id


async def test_attach_message_and_list_undelivered(services: Services) -> None:
    s = services
    done = await _finished(s)
    queued = await s.queue.enqueue(owner(), new_job())
    await s.deliveries.attach_message(queued.id, 777, attachment_limit=25_000_000)
    view = await s.queue.require(queued.id)
    assert (view.message_id, view.attachment_limit, view.channel_id) == (777, 25_000_000, 555)
    assert [v.id for v in await s.deliveries.list_undelivered()] == [done, queued.id]
    assert [v.id for v in await s.deliveries.list_undelivered(terminal_only=True)] == [done]
    with pytest.raises(JobNotFound):
        await s.deliveries.attach_message("nosuchjob000", 1)


async def test_only_one_bot_process_may_post_and_posting_is_idempotent(
    services: Services,
) -> None:
    s = services
    other = DeliveryLedger(s.db, claimer_id="bot-b", clock=s.clock)
    job_id = await _finished(s)
    queued = await s.queue.enqueue(owner(), new_job())
    assert not await s.deliveries.claim(queued.id), "an unfinished job has nothing to post"
    wins = await asyncio.gather(s.deliveries.claim(job_id), other.claim(job_id))
    assert sorted(wins) == [False, True]
    winner, loser = (s.deliveries, other) if wins[0] else (other, s.deliveries)
    assert await winner.claim(job_id), "renewing one's own claim is fine"
    with pytest.raises(DeliveryClaimLost):
        await loser.mark_posted(job_id, 888)
    assert await winner.mark_posted(job_id, 888) is True
    assert await winner.mark_posted(job_id, 888) is False  # idempotent
    assert await loser.mark_posted(job_id, 999) is False  # already posted: nothing to do
    assert not await loser.claim(job_id)
    view = await s.queue.require(job_id)
    assert view.message_id == 888 and view.posted_at is not None and view.post_attempts == 2
    assert [v.id for v in await s.deliveries.list_undelivered()] == [queued.id]


async def test_an_expired_claim_passes_to_another_process(services: Services) -> None:
    s = services
    other = DeliveryLedger(s.db, claimer_id="bot-b", clock=s.clock)
    job_id = await _finished(s)
    assert await s.deliveries.claim(job_id)
    assert not await other.claim(job_id)
    assert await other.list_undelivered(terminal_only=True) == []
    s.clock.advance(121)  # the first poster died mid-way
    assert [v.id for v in await other.list_undelivered(terminal_only=True)] == [job_id]
    assert await other.claim(job_id)
    with pytest.raises(DeliveryClaimLost):
        await s.deliveries.mark_posted(job_id)
    assert await other.mark_posted(job_id)


async def test_release_after_a_failed_post_allows_a_retry(services: Services) -> None:
    s = services
    other = DeliveryLedger(s.db, claimer_id="bot-b", clock=s.clock)
    job_id = await _finished(s)
    assert await s.deliveries.claim(job_id)
    await other.release(job_id, "not mine")  # releasing someone else's claim does nothing
    assert not await other.claim(job_id)
    await s.deliveries.release(job_id, "HTTP 503")
    assert await other.claim(job_id)
    assert await other.mark_posted(job_id, 5)


async def test_a_failed_post_backs_off_and_others_go_first(services: Services) -> None:
    s = services
    stuck = await _finished(s)
    fresh = await _finished(s)
    assert await s.deliveries.claim(stuck)
    await s.deliveries.release(stuck, "HTTP 503", retry_after=30)
    due = await s.deliveries.list_undelivered(terminal_only=True)
    assert [v.id for v in due] == [fresh], "a delivery backing off is not listed"
    assert not await s.deliveries.claim(stuck), "nor claimed before its time"
    view = await s.queue.require(stuck)
    assert view.next_attempt_at == s.clock() + timedelta(seconds=30)
    s.clock.advance(30)
    # Never-tried deliveries first, then those whose backoff ended, oldest end first: a
    # delivery that keeps failing never holds the head of the line.
    assert [v.id for v in await s.deliveries.list_undelivered(terminal_only=True)] == [
        fresh,
        stuck,
    ]
    assert await s.deliveries.claim(stuck)
    assert await s.deliveries.mark_posted(stuck, 9)
    assert (await s.queue.require(stuck)).next_attempt_at is None


async def test_the_backoff_is_stored_so_another_process_keeps_it(services: Services) -> None:
    s = services
    job_id = await _finished(s)
    assert await s.deliveries.claim(job_id)
    await s.deliveries.release(job_id, "HTTP 429", retry_after=60)
    restarted = DeliveryLedger(s.db, claimer_id="bot-b", clock=s.clock)
    assert await restarted.list_undelivered(terminal_only=True) == []
    assert not await restarted.claim(job_id)
    s.clock.advance(61)
    assert await restarted.claim(job_id)
    assert (await s.queue.require(job_id)).post_attempts == 2


async def test_a_given_up_delivery_is_never_listed_or_claimed_again(services: Services) -> None:
    s = services
    job_id = await _finished(s)
    other = DeliveryLedger(s.db, claimer_id="bot-b", clock=s.clock)
    assert not await other.give_up(job_id, "not claimed by b"), "only the claim holder gives up"
    assert await s.deliveries.claim(job_id)
    assert await s.deliveries.give_up(job_id, "the channel is gone, and DMs are closed")
    assert not await s.deliveries.give_up(job_id, "again"), "once"
    view = await s.queue.require(job_id)
    assert view.given_up_at == s.clock() and view.posted_at is None
    assert view.give_up_reason == "the channel is gone, and DMs are closed"
    assert view.status is JobStatus.SUCCEEDED and view.charged == 1.0, "billing is unchanged"
    assert await s.deliveries.list_undelivered() == []
    assert await s.deliveries.list_undelivered(terminal_only=True) == []
    s.clock.advance(3600)
    assert not await s.deliveries.claim(job_id)
    assert not await other.claim(job_id)


async def test_active_only_lists_running_and_queued_jobs(services: Services) -> None:
    s = services
    done = await _finished(s)
    queued = await s.queue.enqueue(owner(), new_job())
    assert [v.id for v in await s.deliveries.list_undelivered(active_only=True)] == [queued.id]
    assert [v.id for v in await s.deliveries.list_undelivered()] == [done, queued.id]
    with pytest.raises(ValueError, match="exclude each other"):
        await s.deliveries.list_undelivered(terminal_only=True, active_only=True)


async def test_a_guild_that_removed_the_bot_gets_nothing_more(
    services: Services, db_url: str
) -> None:
    s = services
    gone, stays = 100, 200
    done = await _finished(s)  # guild 100, finished, not posted yet
    posted = await _finished(s)
    assert await s.deliveries.claim(posted) and await s.deliveries.mark_posted(posted, 1)
    running = await s.queue.enqueue(owner(2, gone), new_job())
    claimed = await s.queue.claim_next("w")
    assert claimed is not None and claimed.id == running.id
    queued = await s.queue.enqueue(owner(3, gone), new_job(cost=5.0))
    elsewhere = await s.queue.enqueue(owner(4, stays), new_job())
    assert (await s.queue.quota_readout(3)).reserved == 5.0
    assert await s.queue.guilds_with_work() == [gone, stays]

    assert await s.queue.cancel_for_guild(gone, "the bot was removed from the server") == 2
    assert await s.queue.left_guilds() == [gone]
    assert await s.queue.guilds_with_work() == [stays]
    after = {job_id: await s.queue.require(job_id) for job_id in (queued.id, running.id, done)}
    assert after[queued.id].status is JobStatus.CANCELLED
    assert (await s.queue.quota_readout(3)).reserved == 0.0, "the queued job is refunded"
    assert after[running.id].cancel_requested, "the running one stops within a step"
    for job_id in (queued.id, running.id, done):
        assert after[job_id].given_up_at is not None
        assert after[job_id].give_up_reason == "the bot was removed from the server"
    assert (await s.queue.require(posted)).given_up_at is None, "posted stays posted"
    assert [v.id for v in await s.deliveries.list_undelivered()] == [elsewhere.id]
    assert not await s.deliveries.claim(done)
    with pytest.raises(GuildLeftError):
        await s.queue.enqueue(owner(5, gone), new_job())
    assert await s.queue.enqueue(owner(5, None), new_job()), "DMs are not a guild"

    # The worker reports the cancelled job's end: cancelled, charged what it used.
    await s.queue.complete(running.id, claimed.lease_token, result_refs=["r"], gpu_seconds=2)
    assert (await s.queue.require(running.id)).status is JobStatus.CANCELLED
    assert (await audit(s.db)).ok

    # A restart reads the same state from the database.
    restarted = await make_services(db_url, clock=s.clock)
    try:
        assert await restarted.queue.left_guilds() == [gone]
        ids = [v.id for v in await restarted.deliveries.list_undelivered()]
        assert running.id not in ids and done not in ids
    finally:
        await restarted.db.dispose()

    assert await s.queue.cancel_for_guild(gone, "again") == 0, "a second removal finds nothing"
    assert await s.queue.rejoin_guilds([gone, stays]) == 1
    assert await s.queue.left_guilds() == []
    assert (await s.queue.require(done)).given_up_at is not None, "given up stays given up"
    assert await s.queue.enqueue(owner(5, gone), new_job())


async def test_stuck_deliveries_never_fill_the_head_of_the_line(services: Services) -> None:
    s = services
    stuck = [await _finished(s) for _ in range(3)]
    for job_id in stuck:
        assert await s.deliveries.claim(job_id)
        await s.deliveries.release(job_id, "HTTP 503", retry_after=60)
    fresh = await _finished(s)
    # The oldest three keep failing; with room for one, the newer result is still listed.
    assert [v.id for v in await s.deliveries.list_undelivered(terminal_only=True, limit=1)] == [
        fresh
    ]


async def test_an_interaction_token_is_kept_for_the_bot_only_until_it_is_not_needed(
    services: Services,
) -> None:
    """Issue 10: the interaction a job answers is kept in its delivery record, never on the job
    row workers claim, and only while it can still be used."""
    s = services
    token = "interaction-token-secret"
    expires = s.clock.now + timedelta(minutes=15)
    job = replace(
        new_job(),
        order_key=42,
        interaction_id=42,
        interaction_token=token,
        interaction_expires_at=expires,
    )
    view = await s.queue.enqueue(owner(), job)
    assert token not in repr(job) and token not in repr(view)
    claimed = await s.queue.claim_next("w")
    assert claimed is not None and token not in repr(claimed)
    (open_,) = await s.deliveries.open_interactions()
    assert (open_.job_id, open_.interaction_id, open_.token) == (view.id, 42, token)
    assert token not in repr(open_)
    assert await s.deliveries.forget_tokens() == 0  # not expired yet
    s.clock.advance(15 * 60)
    assert await s.deliveries.open_interactions() == []  # expired: nothing to finish
    assert await s.deliveries.forget_tokens() == 1
    assert await s.deliveries.forget_tokens() == 0


async def test_copies_keep_their_kind_and_the_showcase_post_outlives_the_trim(
    services: Services,
) -> None:
    from storage.delivery_ledger import MAX_COPIES
    from storage.types import CopyKind

    s = services
    done = await _finished(s)
    await s.deliveries.add_copy(done, 7, 70, CopyKind.SHOWCASE)
    for n in range(MAX_COPIES + 3):
        await s.deliveries.add_copy(done, 8, 800 + n)
    records = await s.deliveries.copy_records(done)
    assert records[0] == (7, 70, CopyKind.SHOWCASE)
    shows = [message for _, message, kind in records if kind is CopyKind.SHOW]
    assert shows == [800 + n for n in range(3, MAX_COPIES + 3)]  # the newest /show copies
    assert await s.deliveries.job_of_message(70) == done
    assert [message for _, message in await s.deliveries.copies(done)] == [
        message for _, message, _ in records
    ]
