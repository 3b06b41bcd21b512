"""Moderation without Discord: /block of unfinished and finished jobs, refunds, follow-ups."""

from __future__ import annotations

import pytest

from bot.actions import Action
from bot.customid import ButtonRef
from bot.errors import UserFacingError
from bot.render import render_card
from bot.requester import Requester
from bot.services.intake import ImagineInput
from storage import audit
from storage.types import JobStatus
from tests.bot.services.conftest import GUILD, OTHER_GUILD, Bench, member


def moderator(guild_id: int | None = GUILD) -> Requester:
    return Requester(user_id=50, guild_id=guild_id, channel_id=700, is_moderator=True)


async def _finished(bench: Bench, prompt: str = "a lighthouse") -> str:
    (ticket,) = await bench.intake.imagine(member(), ImagineInput(prompt))
    await bench.finish(ticket.job_id)
    return ticket.job_id


async def test_a_finished_job_is_taken_down_and_refunded_by_default(bench: Bench) -> None:
    job_id = await _finished(bench)
    assert (await bench.ledger.queue.quota_readout(1)).used == 1.0
    text = await bench.moderation.block(moderator(), job_id, "off-topic")
    assert f"Removed job `{job_id}`" in text and "14 days" in text and "not charged" in text
    job = await bench.ledger.queue.require(job_id)
    assert job.status is JobStatus.BLOCKED and job.charged == 0.0
    assert (await bench.ledger.queue.quota_readout(1)).used == 0.0
    # Its message is due for one more edit, with no image and no buttons to serve.
    message = await bench.cards.message_for(job)
    assert message.image_refs == () and await bench.cards.result_files(message) == []
    assert "removed by a moderator: off\\-topic" in render_card(await bench.cards.card(job))
    # /show, every button and the remix editor refuse it.
    with pytest.raises(UserFacingError, match="removed by a moderator"):
        await bench.account.show(member(), job_id)
    with pytest.raises(UserFacingError, match="removed by a moderator"):
        await bench.intake.click(member(), ButtonRef(Action.SELECT, job_id, 1))
    await bench.ledger.prefs.update_user_settings(1, {"remix": True})
    assert await bench.intake.remix_prompt(member(), ButtonRef(Action.VARY, job_id, 1)) is None
    # Blocking twice says so.
    with pytest.raises(UserFacingError, match="already removed"):
        await bench.moderation.block(moderator(), job_id, "again")
    assert (await audit(bench.ledger.db)).ok


async def test_the_moderator_can_keep_the_charge_for_abuse(bench: Bench) -> None:
    job_id = await _finished(bench)
    text = await bench.moderation.block(moderator(), job_id, "spam", keep_charge=True)
    assert "keeps the charge of 1.0 GPU-seconds" in text
    assert (await bench.ledger.queue.quota_readout(1)).used == 1.0
    assert (await audit(bench.ledger.db)).ok


async def test_follow_ups_are_listed_and_removed_on_request(bench: Bench) -> None:
    grid = await _finished(bench)
    other = await _finished(bench, "a harbour")
    upscale = await bench.intake.click(member(), ButtonRef(Action.SELECT, grid, 2))
    await bench.finish(upscale.job_id)
    variation = await bench.intake.click(member(), ButtonRef(Action.VARY, grid, 3))
    # Listed, not touched, by default.
    text = await bench.moderation.block(moderator(), grid, "gore")
    assert upscale.job_id in text and variation.job_id in text and "followups:True" in text
    assert (await bench.ledger.queue.require(variation.job_id)).status is JobStatus.QUEUED
    # The follow-ups can then be removed one by one, or all at once from another grid.
    child = await bench.intake.click(member(), ButtonRef(Action.VARY, other, 1))
    text = await bench.moderation.block(moderator(), other, "gore", followups=True)
    assert "Also blocked 1 job(s)" in text
    assert (await bench.ledger.queue.require(child.job_id)).status is JobStatus.BLOCKED
    assert (await audit(bench.ledger.db)).ok


@pytest.mark.parametrize(
    ("who", "fragment"),
    [
        (member(), "only moderators"),
        (moderator(OTHER_GUILD), "no job"),
        (moderator(None), "no job"),
    ],
    ids=["member", "other-server-moderator", "dm"],
)
async def test_only_this_servers_moderators_may_block(
    bench: Bench, who: Requester, fragment: str
) -> None:
    job_id = await _finished(bench)
    with pytest.raises(UserFacingError, match=fragment):
        await bench.moderation.block(who, job_id, "x")
    assert (await bench.ledger.queue.require(job_id)).status is JobStatus.SUCCEEDED
