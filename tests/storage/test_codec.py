"""The request codec: jobs come back decoded in the caller's type, and a stored request that
cannot be decoded never reaches a worker, never rolls a transition back and never hides the
other jobs of a listing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from storage import (
    DeliveryLedger,
    JobKind,
    JobQueue,
    JobStatus,
    LedgerKind,
    NewJob,
    RequestCodec,
    UndecodableRequest,
    audit,
)
from tests.storage.dbfixtures import Services, make_services, new_job, owner


@dataclass(frozen=True)
class Prompt:
    """A caller's request model."""

    text: str


class PromptCodec:
    """Reads only requests with a non-empty ``text``, as a stricter, newer format would."""

    def encode(self, request: Prompt, /) -> dict[str, Any]:
        return {"text": request.text}

    def decode(self, data: Mapping[str, Any], /) -> Prompt:
        text = data.get("text")
        if not isinstance(text, str) or not text:
            raise ValueError(f"no text in {dict(data)!r}")
        return Prompt(text)


CODEC: RequestCodec[Prompt] = PromptCodec()


@dataclass
class Typed:
    """The JSON services (to write rows the codec cannot read) and typed views of the same db."""

    raw: Services
    queue: JobQueue[Prompt]
    deliveries: DeliveryLedger[Prompt]


@pytest.fixture
async def typed(db_url: str) -> AsyncIterator[Typed]:
    raw = await make_services(db_url)
    queue = JobQueue(raw.db, raw.queue.settings, raw.quota, codec=CODEC, clock=raw.clock)
    deliveries = DeliveryLedger(raw.db, codec=CODEC, claimer_id="bot-a", clock=raw.clock)
    try:
        yield Typed(raw, queue, deliveries)
    finally:
        await raw.db.dispose()


def prompt_job(text: str, batch_key: str = "") -> NewJob[Prompt]:
    return NewJob(
        kind=JobKind.IMAGINE,
        request=Prompt(text),
        mode="fast",
        estimated_cost=1.0,
        batch_key=batch_key,
    )


async def test_requests_are_encoded_and_come_back_decoded(typed: Typed) -> None:
    view = await typed.queue.enqueue(owner(), prompt_job("a cat"))
    assert view.request == Prompt("a cat")
    assert view.kind is JobKind.IMAGINE and view.status is JobStatus.QUEUED
    assert (await typed.raw.queue.require(view.id)).request == {"text": "a cat"}
    assert (await typed.queue.require(view.id)).request == Prompt("a cat")
    claimed = await typed.queue.claim_next("w1")
    assert claimed is not None and claimed.request == Prompt("a cat")
    assert claimed.kind is JobKind.IMAGINE
    [listed] = await typed.queue.list_for_user(owner().user_id)
    assert listed.request == Prompt("a cat") and listed.status is JobStatus.RUNNING


async def test_an_undecodable_job_is_failed_at_claim_and_refunded(typed: Typed) -> None:
    bad = await typed.raw.queue.enqueue(owner(1), new_job(prompt="stored by an old version"))
    good = await typed.queue.enqueue(owner(2), prompt_job("a dog"))
    claimed = await typed.queue.claim_next("w1")
    assert claimed is not None and claimed.id == good.id
    failed = await typed.raw.queue.require(bad.id)
    assert failed.status is JobStatus.FAILED
    assert LedgerKind.REFUND in {e.kind for e in await typed.raw.quota.ledger(job_id=bad.id)}
    assert failed.error is not None and "cannot be read" in failed.error
    assert "no text" in failed.error and "\n" not in failed.error
    assert (await typed.queue.quota_readout(1)).reserved == 0
    assert await typed.queue.claim_next("w1") is None
    assert (await audit(typed.raw.db)).ok


async def test_an_undecodable_batch_partner_is_failed_and_passed_over(typed: Typed) -> None:
    first = await typed.queue.enqueue(owner(1), prompt_job("a", batch_key="k"))
    bad = await typed.raw.queue.enqueue(owner(2), new_job(batch_key="k", prompt="old"))
    good = await typed.queue.enqueue(owner(3), prompt_job("b", batch_key="k"))
    claimed = await typed.queue.claim_batch("w1", 4)
    assert [job.id for job in claimed] == [first.id, good.id]
    assert (await typed.raw.queue.require(bad.id)).status is JobStatus.FAILED
    assert (await audit(typed.raw.db)).ok


async def test_reads_raise_and_listings_leave_undecodable_jobs_out(typed: Typed) -> None:
    bad = await typed.raw.queue.enqueue(owner(), new_job(prompt="old"))
    good = await typed.queue.enqueue(owner(), prompt_job("new"))
    with pytest.raises(UndecodableRequest) as raised:
        await typed.queue.require(bad.id)
    assert raised.value.job_id == bad.id and "no text" in raised.value.detail
    with pytest.raises(UndecodableRequest):
        await typed.queue.get(bad.id)
    assert [job.id for job in await typed.queue.list_for_user(owner().user_id)] == [good.id]
    assert [job.id for job in await typed.deliveries.list_undelivered()] == [good.id]


async def test_a_transition_on_an_undecodable_job_commits_then_raises(typed: Typed) -> None:
    bad = await typed.raw.queue.enqueue(owner(), new_job(prompt="old"))
    with pytest.raises(UndecodableRequest):
        await typed.queue.cancel(bad.id)
    view = await typed.raw.queue.require(bad.id)
    assert view.status is JobStatus.CANCELLED
    assert (await typed.queue.quota_readout(owner().user_id)).reserved == 0
    assert (await audit(typed.raw.db)).ok
