"""End to end: progress, /info, /queue, /cancel, /show, /settings me and server, and the remix
editor."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.devtools.emulator import DiscordEmulator
from bot.devtools.emulator.models import StoredMessage
from config.settings import QueueSettings
from tests.bot.conftest import (
    CHANNEL_ID,
    GUILD_ID,
    OTHER_CHANNEL_ID,
    Atelier,
    job_id_of,
    labels,
    wait_final,
)
from tests.bot.test_e2e import GRID_LABELS, JOB_GRID_LABELS, NO_WORKER, button, imagine_grid


async def test_progress_edits_show_percent_and_a_preview(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    await atelier.start()
    handle = await emu.send_slash_command("imagine", {"prompt": "a long walk --steps 40"})
    message = (await handle.wait_for_followups(1))[0]
    final = await wait_final(emu, lambda m: m.id == message.id)
    running = [v for v in final.versions if "running (" in v.content]
    assert running, [v.content for v in final.versions]
    assert any(v.attachment_ids for v in running)  # the latent preview
    assert "%" in running[-1].content
    emu.assert_no_violations()


async def test_info_queue_and_cancel(atelier: Atelier, emu: DiscordEmulator) -> None:
    runtime = await atelier.start(**NO_WORKER)
    handle = await emu.send_slash_command("imagine", {"prompt": "a cat --repeat 2"})
    jobs = await handle.wait_for_followups(2)
    ids = [job_id_of(m) for m in jobs]

    info = await emu.send_slash_command("info")
    text = (await info.wait_for_followups(1))[0]
    assert text.ephemeral and "Quota" in text.content and "reserved 20.0" in text.content
    assert all(job_id in text.content for job_id in ids)

    queue = await emu.send_slash_command("queue")
    text = (await queue.wait_for_followups(1))[0]
    assert "2 waiting" in text.content and "position 1" in text.content

    cancel = await emu.send_slash_command("cancel")
    text = (await cancel.wait_for_followups(1))[0]
    assert "Cancelled 2 job(s)" in text.content
    for job_id in ids:
        job = await runtime.ledger.queue.require(job_id)
        assert job.status == "cancelled"
        await asyncio.wait_for(runtime.bot.publisher.wait_posted(job_id), timeout=10)
    readout = await runtime.ledger.queue.quota_readout(emu.default_user.id)
    assert (readout.used, readout.reserved) == (0, 0)
    assert all("cancelled" in emu.message(m.id).content for m in jobs)
    emu.assert_no_violations()


async def test_show_reposts_a_job_with_working_buttons(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    await atelier.start()
    grid = await imagine_grid(emu)
    handle = await emu.send_slash_command("show", {"job": job_id_of(grid)})
    shown = (await handle.wait_for_followups(1))[0]
    assert labels(shown) == GRID_LABELS and shown.attachments and not shown.ephemeral
    await emu.click_button(shown.id, button(shown, "U3"))
    await wait_final(emu, lambda m: "Image 3" in m.content)
    missing = await emu.send_slash_command("show", {"job": "nosuchjob123"})
    reply = await missing.wait_for_original(lambda m: not m.loading)
    assert reply.ephemeral and "no job" in reply.content
    emu.assert_no_violations()


async def test_settings_defaults_apply_and_guild_click_setting(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start(queue=QueueSettings(run_worker_in_process=False))
    handle = await emu.send_slash_command("settings me", {"mode": "fast", "aspect": "2:3"})
    reply = (await handle.wait_for_followups(1))[0]
    assert "mode: fast" in reply.content and "aspect: 2:3" in reply.content
    handle = await emu.send_slash_command("imagine", {"prompt": "a tall tree"})
    job_id = job_id_of((await handle.wait_for_followups(1))[0])
    request = (await runtime.ledger.queue.require(job_id)).request.to_json()
    assert (request["mode"], request["aspect"]) == ("fast", "2:3")
    assert request["height"] > request["width"]

    bad = await emu.send_slash_command("settings me", {"aspect": "9:1"})
    assert "too extreme" in (await bad.wait_for_original(lambda m: not m.loading)).content

    # Who may click is for admins only.
    denied = await emu.send_slash_command("settings server", {"buttons": "anyone"})
    text = (await denied.wait_for_followups(1))[0].content
    assert "only server admins" in text
    emu.assert_no_violations()


MANAGE_SERVER = 1 << 5
MANAGE_MESSAGES = 1 << 13
SUMMARY = "**This server's settings**"


async def reply_to(
    emu: DiscordEmulator, command: str, options: dict[str, Any], **kwargs: Any
) -> str:
    handle = await emu.send_slash_command(command, options, **kwargs)
    reply = await handle.wait_for_original(lambda m: not m.loading)
    assert reply.ephemeral, reply.content
    return reply.content


async def test_settings_is_a_group_that_hides_neither_subcommand(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    """Discord would apply permissions and guild-only to both subcommands: /settings sets
    neither (the service checks /settings server), and stays well under 25 options each."""
    await atelier.start(**NO_WORKER)
    (group,) = [c for c in emu.registered_commands(GUILD_ID) if c["name"] == "settings"]
    assert group["default_member_permissions"] is None
    assert group.get("dm_permission") is not False
    subcommands = {option["name"]: option for option in group["options"]}
    assert set(subcommands) == {"me", "server"}
    assert all(option["type"] == 1 for option in subcommands.values())  # SUB_COMMAND
    mine = [option["name"] for option in subcommands["me"]["options"]]
    assert mine == ["mode", "aspect", "variation", "remix", "visibility"]
    server = [option["name"] for option in subcommands["server"]["options"]]
    assert server[:2] == ["buttons", "review_channel"] and len(server) == 14
    assert server[-7:] == [
        "default_visibility",
        "allow_stealth",
        "showcase_channel",
        "auto_feature_likes",
        "web_gallery",
        "session_host_role",
        "session_lane_minutes",
    ]
    lane = next(o for o in subcommands["server"]["options"] if o["name"] == "session_lane_minutes")
    assert (lane["min_value"], lane["max_value"]) == (0, 60)
    emu.assert_no_violations()


async def test_a_member_sets_and_sees_their_own_defaults_in_a_server_and_in_dms(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    discord = atelier.settings().discord.model_copy(update={"guild_id": None})
    runtime = await atelier.start(discord=discord, **NO_WORKER)  # global: DMs too
    assert await reply_to(emu, "settings me", {}) == "Your settings: defaults."
    text = await reply_to(emu, "settings me", {"variation": "strong", "remix": True})
    assert text == "Your settings: remix: True, variation: strong."
    text = await reply_to(emu, "settings me", {"mode": "fast"}, dm=True)
    assert text == "Your settings: mode: fast, remix: True, variation: strong."
    assert await reply_to(emu, "settings me", {}) == text
    assert await runtime.ledger.prefs.get_guild_settings(GUILD_ID) == {}
    emu.assert_no_violations()


async def test_settings_server_admins_change_moderators_look_members_are_refused(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start(**NO_WORKER)
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=MANAGE_SERVER)])
    mod = emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=MANAGE_MESSAGES)])
    member = emu.make_user(name="member")

    # No options: the summary, the operator's defaults before anyone chose.
    shown = await reply_to(emu, "settings server", {}, user=admin)
    assert shown.startswith(SUMMARY)
    for fragment in (
        "Who may click a job's buttons: its owner (and admins)",
        "Review channel: not set",
        "Age-restricted channels: none marked",
        "Appeals are decided by: a moderator other than the one who rejected",
        "Automatic bans are off.",
    ):
        assert fragment in shown, shown

    # An admin changes them: what changed first, then the settings as they now are.
    options = {
        "buttons": "anyone",
        "review_channel": emu.guild().channels[OTHER_CHANNEL_ID],
        "age_restricted": True,
        "appeals": "any moderator",
        "auto_ban_strikes": 3,
    }
    changed, summary = (await reply_to(emu, "settings server", options, user=admin)).split(SUMMARY)
    assert "Anyone in this server may now click a job's buttons." in changed
    assert f"Review items now go to <#{OTHER_CHANNEL_ID}>." in changed
    assert f"<#{CHANNEL_ID}> is now age-restricted" in changed
    assert "Appeals may be decided by any moderator" in changed
    assert "Automatic ban: 3 rejections or refusals within 24 h ban for 24 h." in changed
    assert "Who may click a job's buttons: anyone" in summary
    assert f"Review channel: <#{OTHER_CHANNEL_ID}>" in summary
    assert f"Age-restricted channels: <#{CHANNEL_ID}> (and" in summary
    assert "Appeals are decided by: any moderator, even the one who rejected" in summary
    assert "Automatic ban: 3 rejections" in summary

    # A moderator sees the same settings, and may not change them.
    assert await reply_to(emu, "settings server", {}, user=mod) == SUMMARY + summary
    refused = await reply_to(emu, "settings server", {"buttons": "owner"}, user=mod)
    assert "only server admins (Manage Server)" in refused and "no options" in refused
    # A member may do neither.
    assert "only moderators" in await reply_to(emu, "settings server", {}, user=member)
    for change in ({"buttons": "owner"}, {"auto_ban_strikes": 0}, {"age_restricted": False}):
        refused = await reply_to(emu, "settings server", change, user=member)
        assert "only server admins (Manage Server)" in refused
        assert "no options" not in refused
    stored = await runtime.ledger.prefs.get_guild_settings(GUILD_ID)
    assert stored["owner_only_buttons"] is False and stored["auto_ban"] == {"strikes": 3}
    assert stored["age_restricted_channels"] == [CHANNEL_ID]
    emu.assert_no_violations()


async def test_settings_server_in_dms_says_where_to_run_it(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    """Discord cannot keep one subcommand out of DMs: the answer says where it works."""
    discord = atelier.settings().discord.model_copy(update={"guild_id": None})
    await atelier.start(discord=discord, **NO_WORKER)  # global commands: usable in DMs too
    for options in ({}, {"buttons": "anyone"}, {"auto_ban_strikes": 2}, {"web_gallery": True}):
        text = await reply_to(emu, "settings server", options, dm=True)
        assert "run /settings server there" in text and "/settings me" in text
    emu.assert_no_violations()


async def test_remix_opens_an_editor_and_uses_the_new_prompt(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    await (await emu.send_slash_command("settings me", {"remix": True})).wait_for_followups(1)
    grid = await imagine_grid(emu, "a red fox")
    click = await emu.click_button(grid.id, button(grid, "V2"))
    assert await click.wait_for_ack() == 9  # a modal, not a deferral
    assert click.modal is not None
    field = click.modal["components"][0]["components"][0]
    assert field["value"] == "a red fox"
    submit = await emu.submit_modal(click, {field["custom_id"]: "a blue fox"})
    message = (await submit.wait_for_followups(1))[0]
    job = await runtime.ledger.queue.require(job_id_of(message))
    assert job.request.to_json()["prompt"] == "a blue fox" and job.kind == "variation"
    await wait_final(emu, lambda m: m.id == message.id)
    emu.assert_no_violations()


async def test_a_remix_editor_still_submits_after_a_restart_and_an_hour(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    """Issue 10, seen 9: editors were lost on restart and after 10 minutes. An editor is now
    stateless: its custom_id names its button, so a submit works whenever it comes."""
    await atelier.start()
    await (await emu.send_slash_command("settings me", {"remix": True})).wait_for_followups(1)
    grid = await imagine_grid(emu, "a red fox")
    click = await emu.click_button(grid.id, button(grid, "V2"))
    assert await click.wait_for_ack() == 9 and click.modal is not None
    field = click.modal["components"][0]["components"][0]
    runtime = await atelier.restart()
    emu.advance_time(3600)  # Discord keeps a form open as long as the user likes
    submit = await emu.submit_modal(click, {field["custom_id"]: "a green fox"})
    message = (await submit.wait_for_followups(1))[0]
    job = await runtime.ledger.queue.require(job_id_of(message))
    assert job.request.prompt == "a green fox" and job.parent_id == job_id_of(grid)
    emu.assert_no_violations()


@pytest.mark.parametrize(
    ("custom_id", "fragment"),
    [
        ("atl:1:mx:v:zzzzzzzzzzzz:1", "do not know"),  # a job that does not exist
        ("atl:1:mx:u:zzzzzzzzzzzz:1", "no editor"),  # an action without an editor
        ("atl:1:mx:v:zzzzzzzzzzzz:9", "not made by this version"),
        ("atl:1:mx:garbage", "not made by this version"),
        ("atl:2:mx:v:zzzzzzzzzzzz:1", "not made by this version"),
        ("evil", "not made by this version"),
    ],
)
async def test_forged_forms_get_an_explanation_and_queue_nothing(
    atelier: Atelier, emu: DiscordEmulator, custom_id: str, fragment: str
) -> None:
    runtime = await atelier.start(**NO_WORKER)
    handle = emu.submit_form(custom_id, {"prompt": "a forged fox"})
    reply = await handle.wait_for_original(lambda m: not m.loading)
    assert reply.ephemeral and fragment in reply.content
    assert await runtime.ledger.queue.list_for_user(emu.default_user.id) == []
    emu.assert_no_violations()


async def test_admins_set_quota_overrides_and_click_rules(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start(**NO_WORKER)
    admin_role = emu.make_role("mods", permissions=1 << 5)  # Manage Server
    admin = emu.make_user(name="admin", roles=[admin_role])
    member = emu.make_user(name="member")

    refused = await emu.send_slash_command("quota", {"member": admin}, user=member)
    assert "only server admins" in (await refused.wait_for_followups(1))[0].content

    handle = await emu.send_slash_command(
        "quota", {"member": member, "gpu_seconds": 5.0}, user=admin
    )
    assert "5 GPU-seconds" in (await handle.wait_for_followups(1))[0].content
    readout = await runtime.ledger.queue.quota_readout(member.id, GUILD_ID)
    assert readout.allowance == 5  # in this server only (issue 9, defect 1)
    assert (await runtime.ledger.queue.quota_readout(member.id)).allowance == 600
    refusal = await emu.send_slash_command("imagine", {"prompt": "a dog"}, user=member)
    reply = await refusal.wait_for_original(lambda m: not m.loading)
    assert "quota" in reply.content.lower() and not refusal.followups

    opened = await emu.send_slash_command("settings server", {"buttons": "anyone"}, user=admin)
    text = (await opened.wait_for_followups(1))[0].content
    assert "Anyone in this server may now click" in text
    assert "Who may click a job's buttons: anyone" in text
    guild = await runtime.ledger.prefs.get_guild_settings(GUILD_ID)
    assert guild == {"owner_only_buttons": False}
    emu.assert_no_violations()


async def test_a_model_that_cannot_load_fails_its_job_clearly_and_refunds(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    from config.settings import GenerationSettings

    runtime = await atelier.start(generation=GenerationSettings(enabled_models=["sdxl"]))
    handle = await emu.send_slash_command("imagine", {"prompt": "a cat --model sdxl"})
    message = (await handle.wait_for_followups(1))[0]
    failed = await emu.wait_for_message(
        lambda m: m.id == message.id and "failed" in m.content, timeout=30
    )
    assert "sdxl" in failed.content and "nothing was charged" in failed.content
    job = await runtime.ledger.queue.require(job_id_of(message))
    assert job.status in ("failed", "dead")
    readout = await runtime.ledger.queue.quota_readout(emu.default_user.id)
    assert (readout.used, readout.reserved) == (0, 0)
    # The default model keeps serving.
    grid = await imagine_grid(emu, "a dog")
    assert labels(grid) == GRID_LABELS


async def test_attachments_fit_the_limit_the_interaction_reports(data_dir: Path) -> None:
    from bot.devtools.emulator import Limits
    from tests.bot.conftest import APP_ID, CHANNEL_ID, TOKEN

    limit = 12_000
    async with DiscordEmulator(
        token=TOKEN,
        application_id=APP_ID,
        guild_id=GUILD_ID,
        channel_ids=[CHANNEL_ID],
        limits=Limits(attachment_size=limit),
    ) as small:
        harness = Atelier(emu=small, data_dir=data_dir, overrides={})
        try:
            runtime = await harness.start()
            grid = await imagine_grid(small, "a noisy meadow")
            assert grid.attachments[0].size <= limit
            assert grid.attachments[0].filename.endswith(".webp")
            job = await runtime.ledger.queue.require(job_id_of(grid))
            stored = await runtime.ledger.images.get(job.result_refs[-1])
            assert len(stored) > limit  # re-encoded for this interaction, not at generation
            small.assert_no_violations()
        finally:
            await harness.stop()


async def test_acknowledged_while_the_database_is_locked(
    atelier: Atelier, emu: DiscordEmulator, data_dir: Path
) -> None:
    import sqlite3

    runtime = await atelier.start()
    grid = await imagine_grid(emu, "a first light")
    blocker = sqlite3.connect(data_dir / "atelier.db", timeout=30, check_same_thread=False)
    try:
        # Another process holds SQLite's write lock. It waits for the lock off the event loop:
        # blocking the loop while the bot is inside a write transaction would stop that
        # transaction from ever committing, and the wait would time out ("database is locked").
        await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")
        handle = await emu.send_slash_command("imagine", {"prompt": "a patient heron"})
        assert await handle.wait_for_ack() == 5
        click = await emu.click_button(grid.id, button(grid, "U1"))
        assert await click.wait_for_ack() == 5
        assert not handle.followups  # nothing could be queued yet
    finally:
        blocker.rollback()
        blocker.close()
    message = (await handle.wait_for_followups(1))[0]
    await wait_final(emu, lambda m: m.id == message.id)
    await click.wait_for_followups(1)
    assert runtime.worker is not None
    emu.assert_no_violations()


async def test_the_token_never_reaches_logs_or_the_database(
    atelier: Atelier, emu: DiscordEmulator, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from tests.bot.conftest import TOKEN

    caplog.set_level(logging.DEBUG)
    await atelier.start()
    grid = await imagine_grid(emu, "a secret garden")
    await emu.click_button(grid.id, button(grid, "U1"))
    await wait_final(emu, lambda m: "Image 1" in m.content)
    await atelier.stop()
    assert caplog.records, "DEBUG logging was captured"
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
    for path in data_dir.glob("atelier.db*"):
        assert TOKEN.encode() not in path.read_bytes()


async def test_cancel_stops_a_running_job_and_the_worker_carries_on(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start(
        queue=QueueSettings(poll_seconds=0.2, heartbeat_seconds=0.1, progress_interval_seconds=0.05)
    )
    handle = await emu.send_slash_command("imagine", {"prompt": "a very long road --steps 60"})
    message = (await handle.wait_for_followups(1))[0]
    await emu.wait_for_message(lambda m: m.id == message.id and "running (" in m.content)
    cancel = await emu.send_slash_command("cancel")
    assert "Cancelled 1 job(s)" in (await cancel.wait_for_followups(1))[0].content
    job_id = job_id_of(message)
    await asyncio.wait_for(runtime.bot.publisher.wait_posted(job_id), timeout=30)
    job = await runtime.ledger.queue.require(job_id)
    assert job.status == "cancelled" and not job.result_refs
    # Charged the GPU time it used before it stopped, and the message says how much.
    assert job.gpu_seconds and job.charged == job.gpu_seconds
    assert f"cancelled; charged {job.charged:.1f} GPU" in emu.message(message.id).content
    readout = await runtime.ledger.queue.quota_readout(emu.default_user.id)
    assert (readout.used, readout.reserved) == (job.charged, 0)
    grid = await imagine_grid(emu, "a short road")  # the engine is free again
    assert labels(grid) == GRID_LABELS
    emu.assert_no_violations()


async def test_moderators_block_jobs_and_their_owners_are_refunded(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start(**NO_WORKER)
    moderator = emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=1 << 13)])
    handle = await emu.send_slash_command("imagine", {"prompt": "something unwelcome"})
    message = (await handle.wait_for_followups(1))[0]
    job_id = job_id_of(message)

    denied = await emu.send_slash_command("block", {"job": job_id})
    reply = await denied.wait_for_original(lambda m: not m.loading)
    assert "only moderators" in reply.content

    blocked = await emu.send_slash_command(
        "block", {"job": job_id, "reason": "off-topic"}, user=moderator
    )
    reply = await blocked.wait_for_original(lambda m: not m.loading)
    assert reply.ephemeral and f"Blocked job `{job_id}`" in reply.content
    await asyncio.wait_for(runtime.bot.publisher.wait_posted(job_id), timeout=10)
    shown = emu.message(message.id).content
    assert "removed by a moderator: off\\-topic" in shown
    job = await runtime.ledger.queue.require(job_id)
    assert job.status == "blocked"
    readout = await runtime.ledger.queue.quota_readout(emu.default_user.id)
    assert (readout.used, readout.reserved) == (0, 0)
    again = await emu.send_slash_command("block", {"job": job_id}, user=moderator)
    assert "already removed" in (await again.wait_for_original(lambda m: not m.loading)).content
    emu.assert_no_violations()


async def test_a_finished_job_is_taken_down_with_its_images_and_buttons(
    atelier: Atelier, emu: DiscordEmulator, tmp_path: Path
) -> None:
    """Issue 9, defect 4: moderation happens after the result is seen. The message loses its
    image and buttons, /show and the buttons refuse, the owner is refunded, and the jobs made
    from it are listed (and removed on request)."""
    runtime = await atelier.start()
    moderator = emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=1 << 13)])
    grid = await imagine_grid(emu, "a grim scene")
    job_id = job_id_of(grid)
    v1 = button(grid, "V1")
    click = await emu.click_button(grid.id, button(grid, "U2"))
    await click.wait_for_followups(1)
    single = await wait_final(emu, lambda m: "Image 2" in m.content and "Upscale" in str(labels(m)))
    child_id = job_id_of(single)
    used = (await runtime.ledger.queue.quota_readout(emu.default_user.id)).used
    assert used > 0
    show = await emu.send_slash_command("show", {"job": job_id})
    copy = (await show.wait_for_followups(1))[0]
    assert copy.attachments and labels(copy) == GRID_LABELS

    async def say(command: str, options: dict[str, Any], user: Any = None) -> str:
        handle = await emu.send_slash_command(command, options, user=user)
        reply = await handle.wait_for_original(lambda m: not m.loading)
        assert reply.ephemeral
        return reply.content

    assert "only moderators" in await say("block", {"job": job_id, "reason": "gore"})
    text = await say("block", {"job": job_id, "reason": "gore"}, moderator)
    assert f"Removed job `{job_id}`" in text and child_id in text and "followups:True" in text
    # The job's own message and its /show copy.
    for message_id in (grid.id, copy.id):

        def removed(m: StoredMessage, i: int = message_id) -> bool:
            return m.id == i and "removed by a moderator: gore" in m.content

        taken_down = await emu.wait_for_message(removed)
        assert taken_down.attachments == [] and labels(taken_down) == []
    # A /show copy made earlier, or a client that still shows the buttons: they refuse.
    stale = emu.post_message(
        CHANNEL_ID,
        content="an older copy",
        author=emu.bot_user,
        components=[
            {"type": 1, "components": [{"type": 2, "style": 2, "label": "V1", "custom_id": v1}]}
        ],
    )
    again = await emu.click_button(stale.id, v1)
    reply = await again.wait_for_original(lambda m: not m.loading)
    assert reply.ephemeral and "removed by a moderator" in reply.content
    assert "removed by a moderator" in await say("show", {"job": job_id})
    # Refunded: only the upscale's cost is left.
    child = await runtime.ledger.queue.require(child_id)
    readout = await runtime.ledger.queue.quota_readout(emu.default_user.id)
    assert readout.used == pytest.approx(child.charged or 0)
    # The follow-up goes too when asked.
    text = await say("block", {"job": child_id, "reason": "gore"}, moderator)
    assert f"Removed job `{child_id}`" in text
    gone = await emu.wait_for_message(lambda m: m.id == single.id and "removed by" in m.content)
    assert gone.attachments == [] and labels(gone) == []
    assert (await runtime.ledger.queue.quota_readout(emu.default_user.id)).used == 0
    emu.assert_no_violations()


async def test_help_lists_options_with_this_servers_bounds(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    from config.settings import GenerationSettings

    await atelier.start(generation=GenerationSettings(max_steps=25))
    handle = await emu.send_slash_command("help")
    assert await handle.wait_for_ack() == 4
    reply = await handle.wait_for_original()
    assert reply.ephemeral and "--steps" in reply.content and "(1..25)" in reply.content
    emu.assert_no_violations()


async def test_moderators_refuse_terms_and_nothing_with_them_is_queued(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    bot = atelier.settings().bot.model_copy(update={"banned_terms": ["Gore"]})
    runtime = await atelier.start(bot=bot)
    moderator = emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=1 << 13)])
    grid = await imagine_grid(emu, "a red fox in the snow")

    async def say(command: str, options: dict[str, Any], user: Any = None) -> str:
        handle = await emu.send_slash_command(command, options, user=user)
        reply = await handle.wait_for_original(lambda m: not m.loading)
        assert reply.ephemeral
        return reply.content

    assert "only moderators" in await say("filter add", {"term": "fox"})
    assert "now refused" in await say("filter add", {"term": "Red  FOX"}, moderator)
    assert "already refused" in await say("filter add", {"term": "red fox"}, moderator)
    assert "no letters or digits" in await say("filter add", {"term": "!!"}, moderator)
    listed = await say("filter list", {}, moderator)
    assert "`red fox`" in listed and "operator: `gore`" in listed

    before = await runtime.ledger.queue.stats()
    for prompt in ["a (RED fox:1.3) at night --ar 3:2", "gore, a castle"]:
        refused = await say("imagine", {"prompt": prompt})
        assert "a term this server does not allow" in refused and "nothing was queued" in refused
    # What to leave out may name a refused term: that is the point of --no.
    allowed = await emu.send_slash_command("imagine", {"prompt": "a castle", "negative": "gore"})
    await allowed.wait_for_followups(1)
    # An older job's prompt is refused too: its buttons make new jobs from it.
    click = await emu.click_button(grid.id, button(grid, "V1"))
    reply = await click.wait_for_original(lambda m: not m.loading)
    assert reply.ephemeral and "`red fox`" in reply.content

    assert "allowed again" in await say("filter remove", {"term": "red fox"}, moderator)
    assert "not on this server's list" in await say("filter remove", {"term": "red fox"}, moderator)
    await emu.click_button(grid.id, button(grid, "V1"))
    await wait_final(emu, lambda m: "of image 1" in m.content and "U1" in labels(m))
    after = await runtime.ledger.queue.stats()
    # The castle and, once the term was removed, the variation: nothing refused was queued.
    assert sum(after.counts.values()) == sum(before.counts.values()) + 2
    readout = await runtime.ledger.queue.quota_readout(emu.default_user.id)
    assert readout.reserved == 0
    emu.assert_no_violations()


async def test_a_channel_overwrite_grants_no_server_wide_rights(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    """Issue 9, defect 12: rights came from the member's permissions in the channel, so an
    overwrite granting Manage Messages or Manage Server in one channel reached the server."""
    manage_server, manage_messages = 1 << 5, 1 << 13
    runtime = await atelier.start(**NO_WORKER)
    helpers = emu.make_role("helpers")
    helper = emu.make_user(name="helper", roles=[helpers])
    emu.set_overwrite(CHANNEL_ID, helpers, allow=manage_messages)
    emu.set_overwrite(CHANNEL_ID, helper, allow=manage_server)
    mods = emu.make_role("mods", permissions=manage_messages)
    moderator = emu.make_user(name="mod", roles=[mods])
    emu.set_overwrite(CHANNEL_ID, mods, deny=manage_messages)
    member = emu.make_user(name="member")
    handle = await emu.send_slash_command("imagine", {"prompt": "a quiet pond"})
    job_id = job_id_of((await handle.wait_for_followups(1))[0])

    async def say(command: str, options: dict[str, Any], user: Any) -> str:
        handle = await emu.send_slash_command(command, options, user=user, channel_id=CHANNEL_ID)
        reply = await handle.wait_for_original(lambda m: not m.loading)
        assert reply.ephemeral
        return reply.content

    # Moderators are those with Manage Messages across the server, whatever this channel says.
    assert "now refused" in await say("filter add", {"term": "red fox"}, moderator)
    assert "only moderators" in await say("filter add", {"term": "pond"}, helper)
    assert "only moderators" in await say("filter remove", {"term": "red fox"}, helper)
    assert "only moderators" in await say("block", {"job": job_id}, helper)
    listed = await say("filter list", {}, moderator)
    assert "`red fox`" in listed and "pond" not in listed
    assert (await runtime.ledger.queue.require(job_id)).status != "blocked"
    assert "allowed again" in await say("filter remove", {"term": "red fox"}, moderator)
    assert f"Blocked job `{job_id}`" in await say("block", {"job": job_id}, moderator)

    # Admins are those with Manage Server across the server: for commands and for buttons.
    assert "only server admins" in await say(
        "quota", {"member": member, "gpu_seconds": 5.0}, helper
    )
    assert "only server admins" in await say("settings server", {"buttons": "anyone"}, helper)
    readout = await runtime.ledger.queue.quota_readout(member.id)
    assert readout.allowance != 5
    assert "owner_only_buttons" not in await runtime.ledger.prefs.get_guild_settings(GUILD_ID)
    async with atelier.worker():
        grid = await imagine_grid(emu)
    click = await emu.click_button(grid.id, button(grid, "V1"), user=helper)
    reply = await click.wait_for_original(lambda m: not m.loading)
    assert reply.ephemeral and "only the person who made this job" in reply.content
    emu.assert_no_violations()


async def test_a_guild_the_bot_has_not_cached_grants_no_rights(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    """Without the guild in the bot's cache (here: no GUILD_CREATE, as for an install without
    the bot user) there are no roles to compute server-wide rights from: none are granted."""
    discord = atelier.settings().discord.model_copy(update={"guild_id": None})
    await atelier.start(discord=discord, **NO_WORKER)  # global commands: usable there too
    elsewhere, channel_id = 710_000_000_000_000_000, 710_000_000_000_000_001
    emu.state.add_guild(elsewhere, [channel_id], "Elsewhere")  # the bot is not told
    boss = emu.make_role("boss", permissions=1 << 3, guild_id=elsewhere)  # Administrator
    admin = emu.make_user(name="admin", roles=[boss], guild_id=elsewhere)
    for command, options, refusal in [
        ("settings server", {"buttons": "anyone"}, "only server admins"),
        ("settings server", {}, "only moderators"),
        ("filter add", {"term": "pond"}, "only moderators"),
    ]:
        handle = await emu.send_slash_command(command, options, user=admin, channel_id=channel_id)
        assert refusal in (await handle.wait_for_original(lambda m: not m.loading)).content
    emu.assert_no_violations()


async def test_a_dm_job_is_shown_to_its_owner_only(atelier: Atelier, emu: DiscordEmulator) -> None:
    """Issue 9, defect 5: /show compared guild ids, and two DM jobs both have none."""
    discord = atelier.settings().discord.model_copy(update={"guild_id": None})
    await atelier.start(discord=discord)  # global commands: usable in DMs too
    handle = await emu.send_slash_command("imagine", {"prompt": "a private sketch"}, dm=True)
    message = (await handle.wait_for_followups(1))[0]
    await wait_final(emu, lambda m: m.id == message.id)
    job_id = job_id_of(message)
    stranger = emu.make_user(name="stranger")
    for kwargs in ({"user": stranger, "dm": True}, {"user": stranger}, {}):
        refused = await emu.send_slash_command("show", {"job": job_id}, **kwargs)
        reply = await refused.wait_for_original(lambda m: not m.loading)
        assert reply.ephemeral and "no job" in reply.content
    shown = await emu.send_slash_command("show", {"job": job_id}, dm=True)
    assert (
        labels((await shown.wait_for_followups(1))[0]) == JOB_GRID_LABELS
    )  # a DM job: no sharing row
    emu.assert_no_violations()


async def test_the_acknowledgement_says_what_was_removed_from_the_prompt(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    handle = await emu.send_slash_command(
        "imagine", {"prompt": "a castle\u202e at\x00 dawn", "negative": "fog\u200b"}
    )
    reply = await handle.wait_for_original(lambda m: not m.loading)
    assert reply.ephemeral and "Queued: job" in reply.content
    assert (
        "I removed 1 bidirectional control character, 1 control character and "
        "1 zero-width character from your text." in reply.content
    )
    (job,) = await runtime.ledger.queue.list_for_user(emu.default_user.id)
    assert (job.request.prompt, job.request.negative_prompt) == ("a castle at dawn", "fog")
    emu.assert_no_violations()
