"""Every transition of the job state machine, legal and illegal, on each backend."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from storage import (
    IllegalTransition,
    JobKind,
    JobNotFound,
    JobStatus,
    LeaseLost,
    LedgerKind,
    audit,
)
from tests.storage.dbfixtures import Services, new_job, owner


async def _ledger_kinds(s: Services, job_id: str) -> list[str]:
    return sorted(e.kind for e in await s.quota.ledger(job_id=job_id))


async def _running(s: Services, worker: str = "w1") -> tuple[str, str]:
    view = await s.queue.enqueue(owner(), new_job())
    claimed = await s.queue.claim_next(worker)
    assert claimed is not None and claimed.id == view.id
    return claimed.id, claimed.lease_token


async def _in_status(s: Services, status: JobStatus) -> tuple[str, str | None]:
    """A job brought to ``status`` through the public API, and its last lease token."""
    if status is JobStatus.QUEUED:
        return (await s.queue.enqueue(owner(), new_job())).id, None
    if status is JobStatus.DEAD:  # max_attempts is fixed on the job when it is queued
        s.queue.settings = s.queue.settings.model_copy(update={"max_attempts": 1})
    job_id, token = await _running(s)
    match status:
        case JobStatus.RUNNING:
            pass
        case JobStatus.SUCCEEDED:
            await s.queue.complete(job_id, token, result_refs=["x/a.png"], gpu_seconds=0.5)
        case JobStatus.FAILED:
            await s.queue.fail(job_id, token, error="bad prompt", retryable=False)
        case JobStatus.CANCELLED:
            await s.queue.cancel(job_id)
            await s.queue.fail(job_id, token, error="cancelled", retryable=False)
        case JobStatus.BLOCKED:
            await s.queue.block(job_id, "moderation")
        case JobStatus.DEAD:
            s.queue.settings = s.queue.settings.model_copy(update={"max_attempts": 1})
            await s.queue.fail(job_id, token, error="oom", retryable=True)
    assert (await s.queue.require(job_id)).status == status
    return job_id, token


async def test_enqueue_records_job_delivery_and_reservation(services: Services) -> None:
    s = services
    view = await s.queue.enqueue(owner(7, 70), new_job(cost=2.5, batch_key="k"))
    assert len(view.id) == 12 and view.id.isalnum() and view.id.islower()
    assert view.status == "queued" and view.attempts == 0 and view.owner_id == 7
    assert view.guild_id == 70 and view.channel_id == 555 and view.batch_key == "k"
    assert view.reserved == 2.5 and view.estimated_cost == 2.5 and view.posted_at is None
    assert view.request == {"prompt": "a cat", "mode": "fast"}
    assert await _ledger_kinds(s, view.id) == [LedgerKind.RESERVE]
    assert s.woken, "enqueue must wake an in-process worker"
    assert (await s.queue.get(view.id)) == view
    assert await s.queue.get("nosuchjob000") is None
    with pytest.raises(JobNotFound):
        await s.queue.require("nosuchjob000")


async def test_happy_path_claim_heartbeat_progress_complete(services: Services) -> None:
    s = services
    job_id, token = await _running(s)
    assert await s.queue.claim_next("w2") is None
    view = await s.queue.require(job_id)
    assert view.status == "running" and view.attempts == 1 and view.worker_id == "w1"
    first_expiry = view.lease_expires_at
    s.clock.advance(10)
    beat = await s.queue.heartbeat(job_id, token)
    assert not beat.cancel_requested
    assert beat.lease_expires_at is not None and first_expiry is not None
    assert beat.lease_expires_at > first_expiry
    await s.queue.update_progress(job_id, token, step=3, total=8, preview_ref=f"{job_id}/p.png")
    view = await s.queue.require(job_id)
    assert (view.progress_step, view.progress_total, view.preview_ref) == (3, 8, f"{job_id}/p.png")
    done = await s.queue.complete(job_id, token, result_refs=["a", "b"], gpu_seconds=0.75)
    assert done.status == "succeeded" and done.result_refs == ("a", "b")
    assert done.gpu_seconds == 0.75 and done.charged == 0.75 and done.finished_at is not None
    # The holder repeating its call (a lost reply) gets the same answer and no second charge.
    again = await s.queue.complete(job_id, token, result_refs=["a", "b"], gpu_seconds=0.75)
    assert again.status == "succeeded"
    kinds = await _ledger_kinds(s, job_id)
    assert kinds == sorted([LedgerKind.RESERVE, LedgerKind.CHARGE, LedgerKind.RELEASE])
    assert (await s.queue.stats()).avg_gpu_seconds == {"fast": 0.75}
    assert (await audit(s.db)).ok


async def test_retryable_failures_requeue_then_die_with_refund(services: Services) -> None:
    s = services
    job_id, token = await _running(s)
    for attempt in range(1, 3):
        view = await s.queue.fail(job_id, token, error=f"oom {attempt}", retryable=True)
        assert (
            view.status == "queued" and view.attempts == attempt and view.error == f"oom {attempt}"
        )
        claimed = await s.queue.claim_next("w1")
        assert claimed is not None and claimed.attempts == attempt + 1
        token = claimed.lease_token
    view = await s.queue.fail(job_id, token, error="oom 3", retryable=True)
    assert view.status == "dead" and view.attempts == 3
    assert await _ledger_kinds(s, job_id) == [LedgerKind.REFUND, LedgerKind.RESERVE]
    assert (await audit(s.db)).ok


async def test_retry_waits_for_backoff(services: Services) -> None:
    s = services
    s.queue.settings = s.queue.settings.model_copy(update={"retry_delay_seconds": 5.0})
    job_id, token = await _running(s)
    await s.queue.fail(job_id, token, error="oom", retryable=True)
    assert await s.queue.claim_next("w1") is None
    s.clock.advance(5)
    claimed = await s.queue.claim_next("w1")
    assert claimed is not None and claimed.id == job_id


async def test_permanent_failure_fails_at_once(services: Services) -> None:
    s = services
    job_id, token = await _running(s)
    view = await s.queue.fail(job_id, token, error="prompt too long", retryable=False)
    assert view.status == "failed" and view.error == "prompt too long"
    assert await _ledger_kinds(s, job_id) == [LedgerKind.REFUND, LedgerKind.RESERVE]


async def test_release_gives_the_job_back_without_counting_the_attempt(services: Services) -> None:
    s = services
    job_id, token = await _running(s)
    view = await s.queue.release(job_id, token)
    assert view.status == "queued" and view.attempts == 0 and view.worker_id is None
    with pytest.raises(LeaseLost):
        await s.queue.complete(job_id, token, result_refs=[], gpu_seconds=0)
    claimed = await s.queue.claim_next("w2")
    assert claimed is not None and claimed.id == job_id and claimed.attempts == 1


async def test_releases_are_bounded_the_last_one_makes_the_job_dead_and_refunded(
    services: Services,
) -> None:
    s = services
    s.queue.settings = s.queue.settings.model_copy(update={"max_releases": 3})
    job_id, token = await _running(s)
    for n in (1, 2):
        view = await s.queue.release(job_id, token)
        assert view.status == "queued" and view.releases == n and view.attempts == 0
        claimed = await s.queue.claim_next(f"w{n + 1}")
        assert claimed is not None and claimed.id == job_id and claimed.attempts == 1
        token = claimed.lease_token
    view = await s.queue.release(job_id, token)
    assert view.status == "dead" and view.releases == 3 and view.finished_at is not None
    assert view.error == "the worker running it was stopped 3 times before it finished"
    assert view.lease_expires_at is None
    assert await _ledger_kinds(s, job_id) == [LedgerKind.REFUND, LedgerKind.RESERVE]
    assert await s.queue.claim_next("w9") is None
    with pytest.raises(LeaseLost):
        await s.queue.release(job_id, token)
    assert (await audit(s.db)).ok


async def test_a_failed_attempt_after_releases_keeps_both_counts(services: Services) -> None:
    s = services
    job_id, token = await _running(s)
    await s.queue.release(job_id, token)
    claimed = await s.queue.claim_next("w2")
    assert claimed is not None
    view = await s.queue.fail(job_id, claimed.lease_token, error="oom", retryable=True)
    assert view.status == "queued" and view.attempts == 1 and view.releases == 1


async def test_cancel_queued_is_immediate_and_refunded(services: Services) -> None:
    s = services
    view = await s.queue.enqueue(owner(), new_job())
    cancelled = await s.queue.cancel(view.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert await s.queue.claim_next("w1") is None
    assert await _ledger_kinds(s, view.id) == [LedgerKind.REFUND, LedgerKind.RESERVE]


@pytest.mark.parametrize("ending", ["complete", "fail", "fail-after-running", "release", "reclaim"])
async def test_cancel_running_is_relayed_and_ends_cancelled(
    services: Services, ending: str
) -> None:
    s = services
    job_id, token = await _running(s)
    view = await s.queue.cancel(job_id)
    assert view.status == "running" and view.cancel_requested
    assert (await s.queue.cancel(job_id)).cancel_requested  # asking twice is harmless
    assert (await s.queue.heartbeat(job_id, token)).cancel_requested
    progress = await s.queue.update_progress(job_id, token, step=1, total=4)
    assert progress.cancel_requested
    if ending == "complete":
        await s.queue.complete(job_id, token, result_refs=["r"], gpu_seconds=1.0)
    elif ending == "fail":
        await s.queue.fail(job_id, token, error="stopped", retryable=False)
    elif ending == "fail-after-running":
        await s.queue.fail(job_id, token, error="stopped", retryable=False, gpu_seconds=0.7)
    elif ending == "release":
        await s.queue.release(job_id, token)
    else:
        s.clock.advance(s.queue.settings.lease_seconds + 1)
        assert await s.queue.reclaim_expired() == [job_id]
    view = await s.queue.require(job_id)
    assert view.status == "cancelled" and view.result_refs == ()
    # The GPU time a cancelled job used is charged; with none reported (released, lost) it
    # is refunded, as released and dead jobs are.
    used = {"complete": 1.0, "fail-after-running": 0.7}.get(ending)
    if used is None:
        assert await _ledger_kinds(s, job_id) == [LedgerKind.REFUND, LedgerKind.RESERVE]
        assert view.charged is None
    else:
        kinds = [LedgerKind.CHARGE, LedgerKind.RELEASE, LedgerKind.RESERVE]
        assert await _ledger_kinds(s, job_id) == kinds
        assert view.charged == view.gpu_seconds == used
    assert (await audit(s.db)).ok


async def test_cancel_for_user_cancels_every_active_job(services: Services) -> None:
    s = services
    running_id, _ = await _running(s)
    queued = [(await s.queue.enqueue(owner(), new_job())).id for _ in range(3)]
    other = await s.queue.enqueue(owner(2), new_job())
    assert await s.queue.cancel_for_user(1) == 4
    assert (await s.queue.require(running_id)).cancel_requested
    assert [(await s.queue.require(j)).status for j in queued] == ["cancelled"] * 3
    assert (await s.queue.require(other.id)).status == "queued"


@pytest.mark.parametrize("start", ["queued", "running"])
async def test_block_refunds_and_takes_the_lease(services: Services, start: str) -> None:
    s = services
    job_id, token = await _in_status(s, JobStatus(start))
    view = await s.queue.block(job_id, "moderation: disallowed content")
    assert view.status == "blocked" and view.error == "moderation: disallowed content"
    if token is not None:
        with pytest.raises(LeaseLost):
            await s.queue.heartbeat(job_id, token)
    assert await _ledger_kinds(s, job_id) == [LedgerKind.REFUND, LedgerKind.RESERVE]
    assert view.purge_after == s.clock.now  # no appeal period asked for: due at once
    assert (await audit(s.db)).ok


async def test_block_of_a_running_job_can_keep_the_charge_for_the_time_it_ran(
    services: Services,
) -> None:
    s = services
    job_id, _ = await _running(s)
    s.clock.advance(3.25)
    view = await s.queue.block(job_id, "abuse", keep_charge=True)
    assert view.status == "blocked" and view.gpu_seconds == view.charged == 3.25
    kinds = [LedgerKind.CHARGE, LedgerKind.RELEASE, LedgerKind.RESERVE]
    assert await _ledger_kinds(s, job_id) == kinds
    assert (await audit(s.db)).ok


@pytest.mark.parametrize("keep_charge", [False, True])
async def test_block_of_a_finished_job_takes_it_down(services: Services, keep_charge: bool) -> None:
    """A succeeded job can be blocked after it was posted: refunded by default (a CREDIT that
    gives the charge back), its message due for one more edit, its images kept for the appeal
    period and then handed over for deletion."""
    s = services
    job_id, _ = await _in_status(s, JobStatus.SUCCEEDED)
    await s.deliveries.claim(job_id)
    assert await s.deliveries.mark_posted(job_id, 123)
    charged = (await s.queue.require(job_id)).charged
    assert charged == 0.5 and (await s.quota.readout(1)).used == 0.5
    view = await s.queue.block(
        job_id, "took it down", keep_charge=keep_charge, keep_images=timedelta(days=14)
    )
    assert view.status == "blocked" and view.error == "took it down"
    assert view.posted_at is None and view.message_id == 123  # to be edited once more
    assert view.result_refs == ("x/a.png",)  # kept, never served, until the appeal ends
    assert [j.id for j in await s.deliveries.list_undelivered(terminal_only=True)] == [job_id]
    kinds = await _ledger_kinds(s, job_id)
    if keep_charge:
        assert view.charged == 0.5 and (await s.quota.readout(1)).used == 0.5
        assert LedgerKind.CREDIT not in kinds
    else:
        assert view.charged == 0.0 and (await s.quota.readout(1)).used == 0.0
        assert LedgerKind.CREDIT in kinds
    assert (await audit(s.db)).ok
    # Blocking twice is refused, and changes nothing.
    with pytest.raises(IllegalTransition):
        await s.queue.block(job_id, "again")
    assert await s.queue.expired_blocked() == []
    s.clock.advance(14 * 86_400)
    assert await s.queue.expired_blocked() == [job_id]
    await s.queue.forget_images(job_id)
    after = await s.queue.require(job_id)
    assert after.result_refs == () and after.purge_after is None
    assert await s.queue.expired_blocked() == []


async def test_expired_lease_is_reclaimed_and_the_stale_holder_is_refused(
    services: Services,
) -> None:
    s = services
    job_id, stale = await _running(s, "w1")
    s.clock.advance(s.queue.settings.lease_seconds - 1)
    assert await s.queue.reclaim_expired() == []
    s.clock.advance(2)
    assert await s.queue.reclaim_expired() == [job_id]
    view = await s.queue.require(job_id)
    assert view.status == "queued" and view.attempts == 1 and "w1" in (view.error or "")
    claimed = await s.queue.claim_next("w2")
    assert claimed is not None and claimed.id == job_id and claimed.attempts == 2
    for call in _holder_calls(job_id, stale):
        with pytest.raises(LeaseLost, match="worker w2"):
            await call(s)
    await s.queue.complete(job_id, claimed.lease_token, result_refs=["ok"], gpu_seconds=1)
    assert (await s.queue.require(job_id)).result_refs == ("ok",)
    assert (await audit(s.db)).ok


async def test_reclaim_after_max_attempts_makes_the_job_dead(services: Services) -> None:
    s = services
    job_id, _ = await _running(s)
    for _ in range(2):
        s.clock.advance(s.queue.settings.lease_seconds + 1)
        assert await s.queue.reclaim_expired() == [job_id]
        assert await s.queue.claim_next("host-7:4242") is not None
    s.clock.advance(s.queue.settings.lease_seconds + 1)
    await s.queue.reclaim_expired()
    view = await s.queue.require(job_id)
    assert view.status == "dead" and "3 attempts" in (view.error or "")
    assert "host-7" not in (view.error or "") and "ref " in (view.error or "")  # no internals
    assert (await audit(s.db)).ok


def _holder_calls(job_id: str, token: str) -> list[Callable[[Services], Awaitable[object]]]:
    return [
        lambda s: s.queue.heartbeat(job_id, token),
        lambda s: s.queue.update_progress(job_id, token, step=1, total=2),
        lambda s: s.queue.complete(job_id, token, result_refs=["r"], gpu_seconds=1),
        lambda s: s.queue.fail(job_id, token, error="e", retryable=True),
        lambda s: s.queue.release(job_id, token),
    ]


@pytest.mark.parametrize("status", list(JobStatus))
async def test_illegal_transitions_change_nothing(services: Services, status: JobStatus) -> None:
    s = services
    job_id, token = await _in_status(s, status)
    before = await s.queue.require(job_id)
    ledger_before = await s.quota.ledger(job_id=job_id)
    # A worker call with a token that is not the current lease: always refused.
    for call in _holder_calls(job_id, "not-the-token"):
        with pytest.raises(LeaseLost):
            await call(s)
    if status.terminal:
        for call in _holder_calls(job_id, token or "none"):
            try:
                await call(s)
            except LeaseLost:
                continue
            # Only the succeeded job's own holder may repeat ``complete`` (idempotent).
            assert status is JobStatus.SUCCEEDED
        with pytest.raises(IllegalTransition, match=status.value):
            await s.queue.cancel(job_id)
        if status is not JobStatus.SUCCEEDED:  # a moderator may take a result down
            with pytest.raises(IllegalTransition, match=status.value):
                await s.queue.block(job_id, "late")
    after = await s.queue.require(job_id)
    assert after == before
    assert await s.quota.ledger(job_id=job_id) == ledger_before
    assert (await audit(s.db)).ok


async def test_unknown_jobs(services: Services) -> None:
    s = services
    for call in _holder_calls("nosuchjob000", "t"):
        with pytest.raises(JobNotFound):
            await call(s)
    with pytest.raises(JobNotFound):
        await s.queue.cancel("nosuchjob000")
    with pytest.raises(JobNotFound):
        await s.queue.block("nosuchjob000", "x")
    with pytest.raises(JobNotFound):
        await s.queue.place("nosuchjob000")
    with pytest.raises(JobNotFound):
        await s.queue.enqueue(owner(), new_job(JobKind.UPSCALE, parent_id="nosuchjob000"))
    assert await s.queue.list_for_user(1) == []


async def test_lineage_and_follow_up_priority(services: Services) -> None:
    s = services
    parent_id, token = await _running(s)
    await s.queue.complete(parent_id, token, result_refs=["g"], gpu_seconds=1)
    grids = [await s.queue.enqueue(owner(2), new_job()) for _ in range(2)]
    upscale = await s.queue.enqueue(owner(), new_job(JobKind.UPSCALE, parent_id=parent_id))
    assert upscale.parent_id == parent_id and upscale.priority > grids[0].priority
    assert await s.queue.position(upscale.id) == 1
    claimed = await s.queue.claim_next("w")
    assert claimed is not None and claimed.id == upscale.id and claimed.parent_id == parent_id


async def test_position_eta_listing_and_stats(services: Services) -> None:
    s = services
    ids = [(await s.queue.enqueue(owner(), new_job(cost=4.0))).id for _ in range(3)]
    other = (await s.queue.enqueue(owner(2), new_job(cost=4.0))).id
    # Round robin: user 2's only job goes right after user 1's first.
    assert [await s.queue.position(j) for j in ids] == [1, 3, 4]
    assert await s.queue.position(other) == 2
    place = await s.queue.place(ids[2])
    assert place.position == 4 and place.eta_seconds == pytest.approx(16.0)
    claimed = await s.queue.claim_next("w")
    assert claimed is not None and claimed.id == ids[0]
    assert (await s.queue.place(ids[0])).position == 0
    assert await s.queue.position(other) == 1
    listed = await s.queue.list_for_user(1)
    assert [v.id for v in listed] == ids[::-1]
    assert [v.id for v in await s.queue.list_for_user(1, active_only=True, limit=1)] == [ids[2]]
    stats = await s.queue.stats()
    assert stats.queued == 3 and stats.running == 1 and stats.active_workers == 1
    assert stats.oldest_queued_at is not None
