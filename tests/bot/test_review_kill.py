"""Once only, across kills: the bot dies between any two steps of posting a review item or an
owner's notice (claimed but not sent; sent but not recorded), and between committing a decision
and answering it. Each message is still posted once and each decision applied once.

A "kill" stops the review poster's task (or the click's handler) dead at that step, as a killed
process would, then the bot restarts over the same database and Discord: the dead process's
claim lapses (ATELIER_BOT_DELIVERY_CLAIM_SECONDS, 1 s here) and the new one finishes the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.devtools.emulator import DiscordEmulator
from bot.services.review import ReviewService
from config.settings import BotSettings
from storage.review import ReviewDesk
from tests.bot.conftest import CHANNEL_ID, GUILD_ID, OTHER_CHANNEL_ID, Atelier
from tests.bot.test_moderation_e2e import (
    MANAGE_MESSAGES,
    MANAGE_SERVER,
    button,
    imagine,
    item_message,
    job_message,
    say,
)

FAST_CLAIMS = {"bot": BotSettings(progress_interval_seconds=0.2, delivery_claim_seconds=1)}
#: Where the poster dies: after claiming (nothing sent), or after sending (nothing recorded).
STEPS = {
    "claimed, not sent": ("claim_post", "claim_notice"),
    "sent, not recorded": ("shown", "notice_sent"),
}


class Kill:
    """Make ``method`` of ``cls`` die once, at the step, in whichever process calls it first;
    ``died`` is set when it has."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type, method: str, before: bool):
        self.died = asyncio.Event()
        original: Callable[..., Awaitable[Any]] = getattr(cls, method)
        kill = self

        async def dying(self: Any, *args: Any, **kwargs: Any) -> Any:
            if kill.died.is_set():
                return await original(self, *args, **kwargs)
            kill.died.set()
            if not before:
                await original(self, *args, **kwargs)
            raise asyncio.CancelledError  # the process is gone: nothing after this step runs

        monkeypatch.setattr(cls, method, dying)


@pytest.mark.parametrize("step", list(STEPS))
async def test_review_messages_and_notices_are_posted_once_across_kills(
    atelier: Atelier, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    item_step, notice_step = STEPS[step]
    # claim_* die after claiming; shown/notice_sent die before recording.
    after_claim = step == "claimed, not sent"
    kill_item = Kill(monkeypatch, ReviewDesk, item_step, before=not after_claim)
    kill_notice = Kill(monkeypatch, ReviewDesk, notice_step, before=not after_claim)
    runtime = await atelier.start(**FAST_CLAIMS)
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=MANAGE_SERVER)])
    mod = emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=MANAGE_MESSAGES)])
    owner = emu.make_user(name="owner")
    await say(
        emu, "settings server", {"review_channel": emu.guild().channels[OTHER_CHANNEL_ID]}, admin
    )
    await say(emu, "filter add", {"term": "dragon", "action": "review"}, mod)
    job_id = await imagine(emu, "a dragon asleep", owner)
    await job_message(emu, job_id, "held for review")

    await kill_item.died.wait()  # the first process died posting the item
    runtime = await atelier.restart(**FAST_CLAIMS)
    await kill_notice.died.wait()  # the second posted the item, then died on the notice
    runtime = await atelier.restart(**FAST_CLAIMS)
    dm_channel = emu.dm_channel(owner).id
    await emu.wait_for_message(
        lambda m: m.channel_id == dm_channel and f"`{job_id}`" in m.content, timeout=30
    )
    await item_message(emu, job_id, "Open:")
    poster = runtime.bot.review_poster
    assert poster is not None
    await poster.wait_passes(2)

    desk = runtime.ledger.review
    (item,) = await desk.open_items(GUILD_ID)
    assert item.message_id is not None and item.shown_version == item.version
    assert await desk.due_notices() == []
    items = [
        m
        for m in emu.messages(include_ephemeral=False)
        if m.channel_id == OTHER_CHANNEL_ID and f"job `{job_id}`" in m.content
    ]
    assert [m.id for m in items] == [item.message_id]
    notices = [m for m in emu.dm_messages(owner) if f"`{job_id}`" in m.content]
    assert len(notices) == 1, [m.content for m in notices]


async def test_a_decision_is_applied_once_when_the_bot_dies_before_answering(
    atelier: Atelier, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    kill = Kill(monkeypatch, ReviewService, "decide", before=False)
    runtime = await atelier.start(**FAST_CLAIMS)
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=MANAGE_SERVER)])
    mod = emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=MANAGE_MESSAGES)])
    owner = emu.make_user(name="owner")
    await say(
        emu, "settings server", {"review_channel": emu.guild().channels[OTHER_CHANNEL_ID]}, admin
    )
    await say(emu, "filter add", {"term": "dragon", "action": "review"}, mod)
    job_id = await imagine(emu, "a dragon awake", owner)
    item = await item_message(emu, job_id, "Open:")

    handle = await emu.click_button(item.id, button(item, "Approve"), user=mod)
    await kill.died.wait()  # committed; the answer never came (the moderator saw a failure)
    runtime = await atelier.restart(**FAST_CLAIMS)
    # The moderator clicks again on the same, still-open-looking message.
    again = await emu.click_button(item.id, button(item, "Approve"), user=mod)
    reply = await again.wait_for_original(lambda m: not m.loading)
    assert "already decided (approve)" in reply.content
    assert handle.acknowledged  # "thinking..." was sent before the kill
    posted = await emu.wait_for_message(
        lambda m: (
            m.channel_id == CHANNEL_ID
            and f"job `{job_id}`" in m.content
            and m.content.endswith(" - done")
        )
    )
    assert len(posted.attachments) == 1
    page = await runtime.ledger.modlog.page(GUILD_ID, job=job_id, limit=50)
    assert [e.action.value for e in reversed(page.entries)] == ["held", "approved"]
