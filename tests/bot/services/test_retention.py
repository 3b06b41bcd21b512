"""What members see of retention: /show and the buttons of a job whose images expired."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.actions import Action
from bot.customid import ButtonRef
from bot.errors import UserFacingError
from bot.services.intake import ImagineInput
from storage import audit
from storage.retention import Retention
from storage.sql import utc_now
from storage.types import JobKind
from tests.bot.services.conftest import Bench, member


async def _expired_grid(bench: Bench) -> str:
    """A posted grid whose images retention deleted (the clock moved 31 days for the pass)."""
    (ticket,) = await bench.intake.imagine(member(), ImagineInput("a heron"))
    await bench.ledger.images.put(ticket.job_id, "grid.png", b"\x89PNG")
    await bench.finish(ticket.job_id)
    assert await bench.ledger.delivery.claim(ticket.job_id)
    assert await bench.ledger.delivery.mark_posted(ticket.job_id, 1)
    queue = bench.ledger.queue
    later = utc_now() + timedelta(days=31)
    queue.clock = lambda: later
    try:
        retention = Retention(queue, bench.ledger.images, bench.settings.retention)
        assert (await retention.prune()).image_jobs == 1
    finally:
        queue.clock = utc_now
    assert not await bench.ledger.images.exists(f"{ticket.job_id}/grid.png")
    return ticket.job_id


async def test_show_says_the_images_expired(bench: Bench) -> None:
    job_id = await _expired_grid(bench)
    with pytest.raises(UserFacingError) as refused:
        await bench.account.show(member(5), job_id)
    assert str(refused.value) == (
        f"the images of job `{job_id}` expired after 30 days and were deleted"
    )
    assert (await audit(bench.ledger.db)).ok


@pytest.mark.parametrize("action", [Action.SELECT, Action.VARY, Action.UPSCALE_SUBTLE])
async def test_buttons_that_need_the_images_say_they_expired(bench: Bench, action: Action) -> None:
    job_id = await _expired_grid(bench)
    await bench.ledger.prefs.update_user_settings(1, {"remix": True})
    index = 2 if action in (Action.SELECT, Action.VARY) else 1
    ref = ButtonRef(action, job_id, index)
    assert await bench.intake.remix_prompt(member(), ref) is None, "no editor for a dead end"
    with pytest.raises(UserFacingError, match=f"images of job `{job_id}` expired after 30 days"):
        await bench.intake.click(member(), ref)
    assert (await bench.ledger.queue.quota_readout(1)).reserved == 0, "nothing was queued"


async def test_a_re_roll_still_works_from_the_prompt(bench: Bench) -> None:
    job_id = await _expired_grid(bench)
    ticket = await bench.intake.click(member(), ButtonRef(Action.REROLL, job_id, 0))
    view = await bench.ledger.queue.require(ticket.job_id)
    assert view.kind is JobKind.REROLL and view.parent_id == job_id
    assert view.request.prompt == "a heron"
