"""The moderation chain end to end, through the Discord emulator: a review term holds a job,
the classifier holds another, a member reports a third; moderators approve, reject, grant an
appeal (a second moderator), ban; the audit log lists every step, nothing held is ever shown in
public, and the quota ledger adds up."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.devtools.emulator import DiscordEmulator
from bot.devtools.emulator.models import EmuUser, StoredMessage
from config.settings import ModerationSettings
from storage.audit import audit
from storage.types import HoldState, JobStatus, ModAction
from tests.bot.conftest import (
    CHANNEL_ID,
    GUILD_ID,
    OTHER_CHANNEL_ID,
    Atelier,
    job_id_of,
    wait_final,
)

MODS_CHANNEL = OTHER_CHANNEL_ID
CLASSIFIER = {"moderation": ModerationSettings(classifier_model="keyword:kraken")}
MANAGE_SERVER = 1 << 5
MANAGE_MESSAGES = 1 << 13


def button(message: StoredMessage, label: str) -> str:
    for component in message.walk_components():
        if component.get("label") == label:
            return str(component["custom_id"])
    raise AssertionError(f"no button {label!r} on message {message.id}: {message.content}")


async def say(
    emu: DiscordEmulator, command: str, options: dict[str, Any], user: EmuUser | None = None
) -> str:
    handle = await emu.send_slash_command(command, options, user=user)
    reply = await handle.wait_for_original(lambda m: not m.loading)
    assert reply.ephemeral, reply.content
    return reply.content


async def click(emu: DiscordEmulator, message: StoredMessage, label: str, user: EmuUser) -> str:
    """Click a button and return the ephemeral answer."""
    handle = await emu.click_button(message.id, button(message, label), user=user)
    reply = await handle.wait_for_original(lambda m: not m.loading)
    return reply.content


async def with_reason(
    emu: DiscordEmulator, message: StoredMessage, label: str, user: EmuUser, reason: str
) -> str:
    """Click a button that opens a reason form, fill it in, and return the answer."""
    handle = await emu.click_button(message.id, button(message, label), user=user)
    await handle.wait_for_ack()
    assert handle.modal is not None, f"{label} did not open a form"
    submitted = await emu.submit_modal(handle, {"reason": reason}, user=user)
    reply = await submitted.wait_for_original(lambda m: not m.loading)
    return reply.content


async def item_message(emu: DiscordEmulator, job_id: str, *needles: str) -> StoredMessage:
    """The review item message about ``job_id`` in the moderators' channel, once it shows
    every needle."""
    return await emu.wait_for_message(
        lambda m: (
            m.channel_id == MODS_CHANNEL
            and f"job `{job_id}`" in m.content
            and all(n in m.content for n in needles)
        ),
        timeout=30,
    )


async def job_message(emu: DiscordEmulator, job_id: str, needle: str) -> StoredMessage:
    return await emu.wait_for_message(
        lambda m: (
            m.channel_id == CHANNEL_ID
            and not m.ephemeral
            and f"job `{job_id}`" in m.content
            and needle in m.content
        ),
        timeout=30,
    )


async def imagine(emu: DiscordEmulator, prompt: str, user: EmuUser) -> str:
    handle = await emu.send_slash_command("imagine", {"prompt": prompt}, user=user)
    assert await handle.wait_for_ack() in (4, 5)
    message = await emu.wait_for_message(
        lambda m: m.channel_id == CHANNEL_ID and not m.ephemeral and prompt in m.content
    )
    return job_id_of(message)


async def dm(emu: DiscordEmulator, user: EmuUser, *needles: str) -> StoredMessage:
    """The bot's direct message to ``user`` that says every needle."""
    channel_id = emu.dm_channel(user).id
    return await emu.wait_for_message(
        lambda m: m.channel_id == channel_id and all(n in m.content for n in needles),
        timeout=30,
    )


def assert_never_shown_while_held(emu: DiscordEmulator) -> None:
    """Every state of every public message that carried an image was a finished, shown
    result: no held job's image and no preview (the classifier is on) ever reached the
    channel."""
    for message in emu.messages(include_ephemeral=False):
        if message.channel_id != CHANNEL_ID:
            continue
        states = [(v.content, bool(v.attachment_ids)) for v in message.versions]
        states.append((message.content, bool(message.attachments)))
        for content, has_image in states:
            if has_image:
                assert content.endswith(" - done"), f"an image was shown with: {content}"
            if "held for review" in content:
                assert not has_image, content


async def test_the_whole_moderation_chain(atelier: Atelier, emu: DiscordEmulator) -> None:
    runtime = await atelier.start(**CLASSIFIER)
    ledger = runtime.ledger
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=MANAGE_SERVER)])
    mod_role = emu.make_role("mods", permissions=MANAGE_MESSAGES)
    mod_a = emu.make_user(name="mod-a", roles=[mod_role])
    mod_b = emu.make_user(name="mod-b", roles=[mod_role])
    owner = emu.make_user(name="owner")
    reporter = emu.make_user(name="reporter")
    troll = emu.make_user(name="troll")

    # Setup: the admin names the moderators' channel; a moderator adds a review term.
    mods_channel = emu.guild().channels[MODS_CHANNEL]
    text = await say(emu, "settings server", {"review_channel": mods_channel}, admin)
    assert "Review items now go to" in text
    assert "only server admins" in await say(
        emu, "settings server", {"review_channel": mods_channel}, mod_a
    )
    text = await say(emu, "filter add", {"term": "dragon", "action": "review"}, mod_a)
    assert "held for a moderator" in text

    # 1. A review term holds a job: it runs, its message says "held", the item arrives.
    held_id = await imagine(emu, "a dragon over the hills", owner)
    await emu.wait_for_message(
        lambda m: (
            m.ephemeral and f"`{held_id}`" in m.content and "held for a moderator" in m.content
        )
    )
    await job_message(emu, held_id, "held for review")
    info = await say(emu, "info", {}, owner)
    assert f"`{held_id}`" in info and "held for review" in info
    held_item = await item_message(emu, held_id, "review term `dragon`", "Open:")
    assert held_item.attachments and held_item.attachments[0].filename.startswith("SPOILER_")
    await dm(emu, owner, f"`{held_id}`", "held for review")

    # 2. The deterministic classifier holds another.
    flagged_id = await imagine(emu, "a kraken in the bay", owner)
    await job_message(emu, flagged_id, "held for review")
    flagged_item = await item_message(emu, flagged_id, "classifier: nsfw at 0.75", "Open:")

    # 3. A member reports a third, posted normally, from the message's Apps menu.
    shown_id = await imagine(emu, "a quiet meadow", owner)
    shown = await wait_final(emu, lambda m: f"job `{shown_id}`" in m.content)
    handle = await emu.send_message_command("Report to moderators", shown.id, user=reporter)
    await handle.wait_for_ack()
    reported = await emu.submit_modal(handle, {"reason": "spam"}, user=reporter)
    assert (
        "reported to this server's moderators"
        in (await reported.wait_for_original(lambda m: not m.loading)).content
    )
    again = await emu.send_message_command("Report to moderators", shown.id, user=reporter)
    await again.wait_for_ack()
    twice = await emu.submit_modal(again, {"reason": "spam again"}, user=reporter)
    assert "already reported" in (await twice.wait_for_original(lambda m: not m.loading)).content
    report_item = await item_message(emu, shown_id, "reported by 1 member(s)", "spam")

    # 4. A member may not decide; the moderator approves one and rejects one.
    assert "only moderators" in await click(emu, held_item, "Approve", reporter)
    assert "approve" in await click(emu, held_item, "Approve", mod_a)
    approved = await wait_final(emu, lambda m: f"job `{held_id}`" in m.content)
    assert approved.channel_id == CHANNEL_ID and approved.attachments
    await dm(emu, owner, f"`{held_id}`", "approved")
    text = await with_reason(emu, flagged_item, "Reject", mod_a, "sea monsters are not allowed")
    assert "reject" in text
    await job_message(emu, flagged_id, "removed by a moderator: sea monsters are not allowed")
    rejection = await dm(emu, owner, f"`{flagged_id}`", "was removed")
    await item_message(emu, flagged_id, "Decided: **rejected**")
    assert "rejected in review" in await say(emu, "info", {}, owner)
    lineage = await click(emu, flagged_item, "Show lineage", mod_b)
    assert f"Lineage of job `{flagged_id}`" in lineage and "an original prompt" in lineage

    # 5. The owner appeals from the DM; the rejecting moderator may not decide it, a second
    # moderator grants it, and the job is posted again.
    handle = await emu.click_button(rejection.id, button(rejection, "Appeal"), user=owner)
    await handle.wait_for_ack()
    appealed = await emu.submit_modal(handle, {"reason": "it is a friendly kraken"}, user=owner)
    assert (
        "went to the server's moderators"
        in (await appealed.wait_for_original(lambda m: not m.loading)).content
    )
    appeal_item = await item_message(emu, flagged_id, "appeal", "friendly kraken", "Open:")
    assert "another moderator" in await click(emu, appeal_item, "Grant appeal", mod_a)
    assert "grant" in await click(emu, appeal_item, "Grant appeal", mod_b)
    restored = await wait_final(emu, lambda m: f"job `{flagged_id}`" in m.content)
    assert restored.attachments
    await dm(emu, owner, f"`{flagged_id}`", "was granted")

    # The report: kept up, after a second moderator's simultaneous click loses.
    clicks = await asyncio.gather(
        click(emu, report_item, "Keep it up", mod_a), click(emu, report_item, "Keep it up", mod_b)
    )
    assert sum("already decided" in c for c in clicks) == 1, clicks

    # 6. A member is banned and refused, with the end time.
    assert "may not create jobs" in await say(
        emu, "ban", {"member": troll, "duration": "1d", "reason": "spam"}, mod_a
    )
    handle = await emu.send_slash_command("imagine", {"prompt": "anything"}, user=troll)
    refusal = await handle.wait_for_original(lambda m: not m.loading)
    assert refusal.ephemeral and "banned from Atelier in this server until <t:" in refusal.content
    assert "Nothing was queued or charged" in refusal.content

    # 7. The audit log lists every step, in order.
    page = await ledger.modlog.page(GUILD_ID, limit=50)
    steps = [(e.action, e.target_job_id) for e in reversed(page.entries)]
    expected = [
        (ModAction.FILTER_ADDED, None),
        (ModAction.HELD, held_id),
        (ModAction.CLASSIFIED, flagged_id),
        (ModAction.HELD, flagged_id),
        (ModAction.REPORTED, shown_id),
        (ModAction.APPROVED, held_id),
        (ModAction.REJECTED, flagged_id),
        (ModAction.APPEALED, flagged_id),
        (ModAction.APPEAL_GRANTED, flagged_id),
        (ModAction.APPROVED, shown_id),
        (ModAction.BANNED, None),
    ]
    assert steps == expected
    modlog = await say(emu, "modlog", {}, mod_b)
    assert "granted the appeal of" in modlog and "banned" in modlog

    # 8. Nothing held was ever shown in public; the quota ledger adds up.
    assert_never_shown_while_held(emu)
    assert (await audit(ledger.db)).ok
    held_job = await ledger.queue.require(held_id)
    flagged_job = await ledger.queue.require(flagged_id)
    assert held_job.hold is HoldState.APPROVED and (held_job.charged or 0) > 0
    assert flagged_job.status is JobStatus.SUCCEEDED and flagged_job.charged == 0
    emu.assert_no_violations()
