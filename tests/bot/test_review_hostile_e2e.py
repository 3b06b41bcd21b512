"""The review queue against hostile and edge use, through the emulator: forged and foreign
buttons and forms, DMs, missing permissions, other servers' items, double reports and appeals;
and the channel policy (Discord's NSFW flag, an admin's mark, DMs)."""

from __future__ import annotations

from typing import Any

from bot.devtools.emulator import DiscordEmulator
from bot.devtools.emulator.models import EmuUser, StoredMessage
from config.settings import ModerationSettings
from storage.types import HoldState, JobStatus, ReviewState
from tests.bot.conftest import CHANNEL_ID, GUILD_ID, OTHER_CHANNEL_ID, Atelier, job_id_of
from tests.bot.test_moderation_e2e import (
    MANAGE_MESSAGES,
    MANAGE_SERVER,
    button,
    imagine,
    item_message,
    job_message,
    say,
    with_reason,
)

OTHER_GUILD = 800_000_000_000_000_009
OTHER_GUILD_CHANNEL = 700_000_000_000_000_009
#: Strict 0.5 everywhere; 0.9 in age-restricted channels. The keyword classifier scores 0.75.
POLICY = {
    "moderation": ModerationSettings(
        classifier_model="keyword:kraken", classifier_loose_thresholds={"nsfw": 0.9}
    )
}


def forged(emu: DiscordEmulator, channel_id: int, custom_id: str) -> StoredMessage:
    """A message with one button, as a hostile client could make the bot appear to have."""
    return emu.post_message(
        channel_id,
        content="forged",
        author=emu.bot_user,
        components=[
            {
                "type": 1,
                "components": [{"type": 2, "style": 2, "label": "X", "custom_id": custom_id}],
            }
        ],
    )


async def answer_to_click(emu: DiscordEmulator, message: StoredMessage, user: EmuUser) -> str:
    custom_id = str(next(c["custom_id"] for c in message.walk_components() if c.get("custom_id")))
    handle = await emu.click_button(message.id, custom_id, user=user)
    reply = await handle.wait_for_original(lambda m: not m.loading)
    return reply.content


async def test_review_actions_refuse_forgeries_strangers_and_other_servers(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start(**POLICY)
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=MANAGE_SERVER)])
    mod = emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=MANAGE_MESSAGES)])
    owner = emu.make_user(name="owner")
    member = emu.make_user(name="member")
    mods_channel = emu.guild().channels[OTHER_CHANNEL_ID]
    await say(emu, "settings server", {"review_channel": mods_channel}, admin)

    job_id = await imagine(emu, "a kraken at noon", owner)
    await job_message(emu, job_id, "held for review")
    item = await item_message(emu, job_id, "Open:")
    (stored,) = await runtime.ledger.review.open_items(GUILD_ID)

    # A member: no decisions, no forms, no queue, no bans.
    assert "only moderators" in await answer_to_click(emu, item, member)
    handle = await emu.click_button(item.id, button(item, "Reject"), user=member)
    refusal = await handle.wait_for_original(lambda m: not m.loading)
    assert "only moderators" in refusal.content and handle.modal is None
    form = emu.submit_form(f"atl:1:rvm:r:{stored.id}", {"reason": "x"}, user=member)
    assert "only moderators" in (await form.wait_for_original(lambda m: not m.loading)).content
    assert "only moderators" in await say(emu, "review", {}, member)
    assert "only moderators" in await say(emu, "ban", {"member": owner, "duration": "1h"}, member)
    # Forged buttons: unknown actions, unknown items, malformed ids.
    for custom_id, expected in (
        ("atl:1:rv:z:1", "not made by this version"),
        ("atl:1:rv:a:0", "not made by this version"),
        (f"atl:1:rv:a:{stored.id + 1000}", "no review item"),
        ("atl:1:rv:a:1:2", "not made by this version"),
    ):
        assert expected in await answer_to_click(emu, forged(emu, CHANNEL_ID, custom_id), mod)
    # Another server's moderator, clicking this server's item from their own server.
    emu.add_guild(OTHER_GUILD, [OTHER_GUILD_CHANNEL])
    stranger = emu.make_user(
        name="other-mod",
        roles=[emu.make_role("mods", permissions=MANAGE_MESSAGES, guild_id=OTHER_GUILD)],
        guild_id=OTHER_GUILD,
    )
    foreign = forged(emu, OTHER_GUILD_CHANNEL, f"atl:1:rv:a:{stored.id}")
    assert "no review item" in await answer_to_click(emu, foreign, stranger)
    # In a DM, nobody moderates anything.
    in_dm = forged(emu, emu.dm_channel(mod).id, f"atl:1:rv:a:{stored.id}")
    assert "belongs to a server" in await answer_to_click(emu, in_dm, mod)
    assert (await runtime.ledger.review.get(stored.id, GUILD_ID)).state is ReviewState.OPEN

    # Held: no report (nothing public), no /show, no buttons for anyone.
    held = await job_message(emu, job_id, "held for review")
    handle = await emu.send_message_command("Report to moderators", held.id, user=member)
    await handle.wait_for_ack()
    report = await emu.submit_modal(handle, {"reason": "x"}, user=member)
    assert (
        "not shown in public" in (await report.wait_for_original(lambda m: not m.loading)).content
    )
    assert "held for a moderator" in await say(emu, "show", {"job": job_id}, owner)

    # A rejection: the owner's appeal once, nobody else's, and never a second.
    await with_reason(emu, item, "Reject", mod, "no krakens")
    assert "you have no job" in await say(emu, "appeal", {"job": job_id}, member)
    handle = await emu.send_slash_command("appeal", {"job": job_id}, user=owner)
    await handle.wait_for_ack()
    sent = await emu.submit_modal(handle, {"reason": "please"}, user=owner)
    await sent.wait_for_original(lambda m: not m.loading)
    again = await emu.send_slash_command("appeal", {"job": job_id}, user=owner)
    await again.wait_for_ack()
    second = await emu.submit_modal(again, {"reason": "again"}, user=owner)
    assert "appealed already" in (await second.wait_for_original(lambda m: not m.loading)).content
    # The job stays removed; the appeal waits for a moderator other than the one who rejected.
    assert (await runtime.ledger.queue.require(job_id)).status is JobStatus.BLOCKED
    emu.assert_no_violations(ignore=["unknown_message"])


async def test_age_restricted_channels_use_the_loose_threshold(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    emu.set_nsfw(OTHER_CHANNEL_ID)  # Discord's own flag, before the bot connects
    runtime = await atelier.start(**POLICY)
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=MANAGE_SERVER)])
    owner = emu.make_user(name="owner")
    queue = runtime.ledger.queue

    async def run(channel_id: int, prompt: str) -> Any:
        handle = await emu.send_slash_command(
            "imagine", {"prompt": prompt}, user=owner, channel_id=channel_id
        )
        assert await handle.wait_for_ack() in (4, 5)
        message = await emu.wait_for_message(
            lambda m: (
                m.channel_id == channel_id
                and prompt in m.content
                and " - " in m.content
                and (m.content.endswith(" - done") or "held for review" in m.content)
            )
        )
        return await queue.require(job_id_of(message))

    # Discord's NSFW flag: 0.75 is under the loose 0.9; posted.
    nsfw = await run(OTHER_CHANNEL_ID, "a kraken by night")
    assert nsfw.age_restricted and nsfw.showable
    # A channel without it: the strict 0.5 holds it.
    strict = await run(CHANNEL_ID, "a kraken by day")
    assert not strict.age_restricted and strict.hold is HoldState.HELD
    # An admin marks the channel age-restricted: the loose threshold applies there too.
    assert "now age-restricted" in await say(
        emu, "settings server", {"age_restricted": True}, admin
    )
    marked = await run(CHANNEL_ID, "a kraken at dawn")
    assert marked.age_restricted and marked.showable
    assert "only server admins" in await say(
        emu, "settings server", {"age_restricted": False}, owner
    )


async def test_a_flagged_dm_job_is_removed_and_refunded(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    discord = atelier.settings().discord.model_copy(update={"guild_id": None})
    runtime = await atelier.start(discord=discord, **POLICY)  # global commands: DMs too
    owner = emu.make_user(name="owner")
    handle = await emu.send_slash_command(
        "imagine", {"prompt": "a kraken alone"}, user=owner, dm=True
    )
    assert await handle.wait_for_ack() in (4, 5)
    channel_id = emu.dm_channel(owner).id
    removed = await emu.wait_for_message(
        lambda m: m.channel_id == channel_id and "removed" in m.content and "kraken" in m.content
    )
    assert not removed.attachments
    job = await runtime.ledger.queue.require(job_id_of(removed))
    assert job.status is JobStatus.BLOCKED and job.charged == 0


async def test_reject_and_ban_and_automatic_bans(atelier: Atelier, emu: DiscordEmulator) -> None:
    await atelier.start(**POLICY)
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=MANAGE_SERVER)])
    mod = emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=MANAGE_MESSAGES)])
    owner = emu.make_user(name="owner")
    reporter = emu.make_user(name="reporter")
    troll = emu.make_user(name="troll")
    text = await say(
        emu,
        "settings server",
        {
            "review_channel": emu.guild().channels[OTHER_CHANNEL_ID],
            "auto_ban_strikes": 2,
            "auto_ban_window_hours": 24,
            "auto_ban_hours": 2,
        },
        admin,
    )
    assert "Automatic ban: 2 rejections or refusals within 24 h ban for 2 h" in text

    # Reject and ban, from a member's report: the owner's buttons and commands now refuse.
    earlier_id = await imagine(emu, "a quiet lake", owner)
    earlier = await wait_done(emu, earlier_id)
    reported_id = await imagine(emu, "a loud lake", owner)
    reported = await wait_done(emu, reported_id)
    handle = await emu.send_message_command("Report to moderators", reported.id, user=reporter)
    await handle.wait_for_ack()
    await (await emu.submit_modal(handle, {"reason": "spam"}, user=reporter)).wait_for_ack()
    item = await item_message(emu, reported_id, "reported by 1 member(s)")
    text = await with_reason(emu, item, "Reject and ban", mod, "spam")
    assert "banned here until <t:" in text
    click = await emu.click_button(earlier.id, button(earlier, "U1"), user=owner)
    refusal = await click.wait_for_original(lambda m: not m.loading)
    assert "banned from Atelier in this server until <t:" in refusal.content
    assert "by a moderator: spam" in refusal.content
    assert "banned from Atelier" in await say(emu, "imagine", {"prompt": "a pond"}, owner)

    # Two refused prompts within the window ban automatically; /unban ends it.
    await say(emu, "filter add", {"term": "gore"}, mod)
    for attempt in range(2):
        refused = await say(emu, "imagine", {"prompt": f"gore {attempt}"}, troll)
        assert "does not allow" in refused
    banned = await say(emu, "imagine", {"prompt": "a cat"}, troll)
    assert "banned from Atelier in this server until" in banned and "automatically" in banned
    assert "may use Atelier here again" in await say(emu, "unban", {"member": troll}, mod)
    assert "is not banned" in await say(emu, "unban", {"member": troll}, mod)
    handle = await emu.send_slash_command("imagine", {"prompt": "a cat"}, user=troll)
    assert await handle.wait_for_ack() in (4, 5)
    assert "Queued" in (await handle.wait_for_original(lambda m: not m.loading)).content


async def wait_done(emu: DiscordEmulator, job_id: str) -> StoredMessage:
    return await emu.wait_for_message(
        lambda m: f"job `{job_id}`" in m.content and m.content.endswith(" - done"), timeout=30
    )
