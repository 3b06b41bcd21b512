"""Delivery state: message ids, exclusive claims between bot processes, idempotent posted marks."""

from __future__ import annotations

import asyncio

import pytest

from storage import DeliveryClaimLost, DeliveryLedger, JobNotFound
from tests.storage.dbfixtures import Services, new_job, owner


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
