"""End to end: the moderation audit log (/modlog) and its stateless page buttons."""

from __future__ import annotations

from typing import Any

from bot.devtools.emulator import DiscordEmulator
from storage.types import ModAction
from tests.bot.conftest import CHANNEL_ID, GUILD_ID, Atelier, custom_ids, job_id_of, labels
from tests.bot.test_e2e import NO_WORKER, button

MANAGE_MESSAGES = 1 << 13


async def test_modlog_lists_filter_edits_refusals_and_blocks_in_order(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start(**NO_WORKER)
    moderator = emu.make_user(name="mod", roles=[emu.make_role("mods", MANAGE_MESSAGES)])
    member = emu.default_user

    async def say(command: str, options: dict[str, Any], user: Any = None) -> str:
        handle = await emu.send_slash_command(command, options, user=user)
        reply = await handle.wait_for_original(lambda m: not m.loading)
        assert reply.ephemeral
        return reply.content

    assert "now refused" in await say("filter add", {"term": "red fox"}, moderator)
    assert "does not allow" in await say("imagine", {"prompt": "a red fox @everyone"})
    handle = await emu.send_slash_command("imagine", {"prompt": "a lighthouse"})
    job_id = job_id_of((await handle.wait_for_followups(1))[0])
    assert f"Blocked job `{job_id}`" in await say(
        "block", {"job": job_id, "reason": "off-topic"}, moderator
    )

    text = await say("modlog", {}, moderator)
    lines = text.splitlines()[1:]
    assert len(lines) == 3, text
    assert f"<@{moderator.id}> blocked job `{job_id}` of <@{member.id}>: off\\-topic" in lines[0]
    assert f"the bot refused a prompt of <@{member.id}>: `red fox`" in lines[1]
    assert "@everyone" not in lines[1]
    assert f"<@{moderator.id}> added a refused term: `red fox`" in lines[2]
    # Filtered by member and by job.
    about_member = await say("modlog", {"member": member}, moderator)
    assert "blocked" in about_member and "refused" in about_member
    assert "added a refused term" not in about_member
    about_job = await say("modlog", {"job": job_id.upper()}, moderator)
    assert len(about_job.splitlines()) == 2 and "blocked" in about_job
    assert "not a job id" in await say("modlog", {"job": "no such job!"}, moderator)

    # A member without rights is refused, and sees nothing of the log.
    refused = await say("modlog", {})
    assert "only moderators" in refused and "red fox" not in refused
    assert len([e async for e in runtime.ledger.modlog.export(GUILD_ID)]) == 3
    emu.assert_no_violations()


async def test_older_and_newer_page_through_and_forged_pages_are_refused(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start(**NO_WORKER)
    moderator = emu.make_user(name="mod", roles=[emu.make_role("mods", MANAGE_MESSAGES)])
    for n in range(23):
        await runtime.ledger.modlog.record(
            GUILD_ID, ModAction.FILTER_ADDED, actor_id=moderator.id, reason=f"term{n}"
        )
    handle = await emu.send_slash_command("modlog", {}, user=moderator)
    page = (await handle.wait_for_followups(1))[0]
    assert page.ephemeral and "term22" in page.content and "term13" in page.content
    assert "term12" not in page.content and labels(page) == ["Older"]

    click = await emu.click_button(page.id, button(page, "Older"), user=moderator)
    await click.wait_for_ack()
    second = await emu.wait_for_message(lambda m: m.id == page.id and "term12" in m.content)
    assert "term3" in second.content and "term13" not in second.content
    assert labels(second) == ["Newer", "Older"]
    older = button(second, "Older")

    # The buttons survive a restart: they carry all they need.
    runtime = await atelier.restart(**NO_WORKER)
    click = await emu.click_button(page.id, older, user=moderator)
    await click.wait_for_ack()
    last = await emu.wait_for_message(lambda m: m.id == page.id and "term2" in m.content)
    assert "term0" in last.content and "term3" not in last.content
    assert labels(last) == ["Newer"]
    click = await emu.click_button(page.id, button(last, "Newer"), user=moderator)
    await click.wait_for_ack()
    back = await emu.wait_for_message(lambda m: m.id == page.id and "term12" in m.content)
    assert "term3" in back.content and labels(back) == ["Newer", "Older"]

    # A member without rights clicking a real page button is refused, the page stays.
    stranger = emu.make_user(name="stranger")
    denied = await emu.click_button(page.id, custom_ids(back)[0], user=stranger)
    reply = await denied.wait_for_original(lambda m: not m.loading)
    assert reply.ephemeral and "only moderators" in reply.content and reply.id != page.id

    # Forged buttons: another server's log, and ids we never made.
    other_guild = GUILD_ID + 1
    forged_ids = {
        f"atl:1:ml:{other_guild}:o:100::": "another server",
        f"atl:1:ml:{other_guild}:n:1:{moderator.id}:": "another server",
        f"atl:1:ml:{GUILD_ID}:x:1::": "not made by this version",
        f"atl:1:ml:{GUILD_ID}:o:1::JOB": "not made by this version",
        "atl:1:ml:" + "9" * 20 + ":o:1::": "not made by this version",
    }
    forged = emu.post_message(
        CHANNEL_ID,
        content="looks like a log page",
        author=emu.bot_user,
        components=[
            {
                "type": 1,
                "components": [
                    {"type": 2, "style": 2, "label": str(i), "custom_id": custom_id}
                    for i, custom_id in enumerate(forged_ids)
                ],
            }
        ],
    )
    for custom_id, fragment in forged_ids.items():
        handle = await emu.click_button(forged.id, custom_id, user=moderator)
        reply = await handle.wait_for_original(lambda m: not m.loading)
        assert reply.ephemeral and fragment in reply.content, (custom_id, reply.content)
        assert "term" not in reply.content
    assert emu.message(forged.id).content == "looks like a log page"
    emu.assert_no_violations()
