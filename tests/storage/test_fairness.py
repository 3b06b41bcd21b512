"""Fair scheduling: users take turns, follow-ups jump the line, concurrent claims never collide."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

from storage import ClaimedJob, JobKind, JobStatus, audit
from tests.storage.dbfixtures import make_services, new_job, owner, queue_settings


async def test_a_heavy_user_does_not_starve_the_others(db_url: str) -> None:
    s = await make_services(
        db_url, queue=queue_settings(max_queued_per_user=200, max_running_per_user=2)
    )
    try:
        heavy = await s.queue.enqueue_many(owner(1), [new_job() for _ in range(100)])
        light: dict[str, int] = {}
        for user in (2, 3, 4, 5):
            for view in await s.queue.enqueue_many(owner(user), [new_job() for _ in range(5)]):
                light[view.id] = user
        heavy_ids = {v.id for v in heavy}
        starts: list[str] = []
        while True:  # one worker: claim, finish, repeat
            claimed = await s.queue.claim_next("only-worker")
            if claimed is None:
                break
            starts.append(claimed.id)
            s.clock.advance(0.01)
            await s.queue.complete(claimed.id, claimed.lease_token, result_refs=[], gpu_seconds=0)
        assert len(starts) == 120 and set(starts) == heavy_ids | set(light)
        tenth_heavy = [i for i, job in enumerate(starts) if job in heavy_ids][9]
        last_light = max(starts.index(job) for job in light)
        assert last_light < tenth_heavy, "every B-E job must start before A's 10th"
        # Within a user, FIFO.
        assert [j for j in starts if j in heavy_ids] == [v.id for v in heavy]
        assert (await audit(s.db)).ok
    finally:
        await s.db.dispose()


async def test_follow_ups_jump_ahead_of_grids(db_url: str) -> None:
    s = await make_services(db_url)
    try:
        grids = [(await s.queue.enqueue(owner(u), new_job())).id for u in (1, 2, 3)]
        select = (await s.queue.enqueue(owner(4), new_job(JobKind.SELECT, cost=0))).id
        upscale = (await s.queue.enqueue(owner(1), new_job(JobKind.UPSCALE))).id
        order = []
        for _ in range(5):
            claimed = await s.queue.claim_next("w")
            assert claimed is not None
            order.append(claimed.id)
        assert order[:2] == [select, upscale] and order[2:] == [grids[1], grids[2], grids[0]]
    finally:
        await s.db.dispose()


async def test_concurrent_claims_never_collide_and_respect_the_running_cap(db_url: str) -> None:
    s = await make_services(
        db_url, queue=queue_settings(max_queued_per_user=50, max_running_per_user=2), pool_size=12
    )
    try:
        for user in range(1, 6):
            await s.queue.enqueue_many(owner(user), [new_job() for _ in range(6)])

        async def claimer(n: int) -> list[ClaimedJob]:
            return await s.queue.claim_batch(f"w{n}", 1)

        rounds = await asyncio.gather(*(claimer(n) for n in range(16)))
        claimed = [job for batch in rounds for job in batch]
        assert claimed, "concurrent claimers must make progress"
        # A claimer may come back empty-handed while others hold the rows it wanted (SKIP
        # LOCKED); claiming on until the queue says no more must reach exactly the cap.
        while more := await claimer(99):
            claimed.extend(more)
        assert len(claimed) == len({job.id for job in claimed}) == 10
        assert Counter(job.owner_id for job in claimed) == {u: 2 for u in range(1, 6)}
        stats = await s.queue.stats()
        assert stats.counts[JobStatus.RUNNING] == 10 and stats.active_workers == 10
    finally:
        await s.db.dispose()


async def test_claim_batch_takes_compatible_jobs_fairly(db_url: str) -> None:
    s = await make_services(db_url, queue=queue_settings(max_running_per_user=2))
    try:
        a = [(await s.queue.enqueue(owner(1), new_job(batch_key="k1"))).id for _ in range(3)]
        b = (await s.queue.enqueue(owner(2), new_job(batch_key="k1"))).id
        other_key = (await s.queue.enqueue(owner(3), new_job(batch_key="k2"))).id
        alone = (await s.queue.enqueue(owner(4), new_job(batch_key=""))).id
        batch = await s.queue.claim_batch("w", 4)
        # A's third job waits: A may run only two at once.
        assert [j.id for j in batch] == [a[0], b, a[1]]
        assert len({j.lease_token for j in batch}) == 3
        assert [j.id for j in await s.queue.claim_batch("w", 4)] == [other_key]
        assert [j.id for j in await s.queue.claim_batch("w", 4)] == [alone]
        assert await s.queue.claim_batch("w", 4) == []
    finally:
        await s.db.dispose()


async def test_a_users_jobs_run_in_order_key_order_whatever_order_they_were_stored(
    db_url: str,
) -> None:
    """Issue 10: concurrent handlers commit in any order; the order key (the interaction's
    snowflake) decides. Jobs of one command share a key and keep their insertion order."""
    s = await make_services(
        db_url, queue=queue_settings(max_queued_per_user=100, max_running_per_user=1)
    )
    try:
        keys = [1000 + 7 * ((n * 11) % 20) for n in range(20)]  # a shuffle of 20 distinct keys

        async def send(key: int) -> list[str]:
            jobs = [replace(new_job(), order_key=key) for _ in range(2)]
            return [v.id for v in await s.queue.enqueue_many(owner(1), jobs)]

        stored = dict(zip(keys, await asyncio.gather(*(send(k) for k in keys)), strict=True))
        expected = [job for key in sorted(stored) for job in stored[key]]
        # Positions follow the same order.
        places = [(await s.queue.place(job)).position for job in expected]
        assert places == list(range(1, 41))
        starts = []
        while (claimed := await s.queue.claim_next("w")) is not None:
            starts.append(claimed.id)
            await s.queue.complete(claimed.id, claimed.lease_token, result_refs=[], gpu_seconds=0)
        assert starts == expected
        # Follow-ups keep their priority lane, ahead of any key.
        grid = await s.queue.enqueue(owner(1), replace(new_job(), order_key=5000))
        upscale = await s.queue.enqueue(
            owner(1), replace(new_job(JobKind.UPSCALE, parent_id=starts[0]), order_key=9000)
        )
        first = await s.queue.claim_next("w")
        assert first is not None and first.id == upscale.id != grid.id
        assert (await audit(s.db)).ok
    finally:
        await s.db.dispose()
