"""End to end: users drive the real bot through the Discord API emulator; we assert on what
Discord (the emulator) recorded and on the ledger."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import SecretStr

from bot.devtools.emulator import DiscordEmulator
from bot.devtools.emulator.models import StoredMessage
from bot.runtime import open_worker
from config.settings import BotSettings, QueueSettings, QuotaSettings
from tests.bot.conftest import (
    CHANNEL_ID,
    GUILD_ID,
    OTHER_CHANNEL_ID,
    Atelier,
    custom_ids,
    job_id_of,
    labels,
    wait_final,
)

LIKE = "\u2764 0"  # the like button, with its count
SHARING = [LIKE, "Prompt", "Remix", "Publish"]
#: A grid's job buttons; a server's grid also has the sharing row (a DM job has none).
JOB_GRID_LABELS = ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "\U0001f504"]
GRID_LABELS = [*JOB_GRID_LABELS, *SHARING]
SINGLE_LABELS = [
    "Upscale (Subtle)",
    "Upscale (Creative)",
    "Vary (Subtle)",
    "Vary (Strong)",
    *SHARING,
]
NO_WORKER: dict[str, Any] = {
    "queue": QueueSettings(poll_seconds=0.2, heartbeat_seconds=1, run_worker_in_process=False)
}


def image_size(message: StoredMessage) -> tuple[int, int]:
    with Image.open(io.BytesIO(message.attachments[0].data)) as image:
        return image.size


def button(message: StoredMessage, label: str) -> str:
    for component in message.walk_components():
        if component.get("label") == label:
            return str(component["custom_id"])
    raise AssertionError(f"no button {label!r} on {message.id}")


async def imagine_grid(emu: DiscordEmulator, prompt: str = "a lighthouse at dusk") -> StoredMessage:
    handle = await emu.send_slash_command("imagine", {"prompt": prompt})
    # The answer itself when the ledger stored the job within the budget (the usual case), a
    # deferral when it was slower (a loaded machine): both are correct.
    assert await handle.wait_for_ack() in (4, 5)
    text = prompt.split(" --")[0]
    return await wait_final(emu, lambda m: text in m.content and "U1" in labels(m))


def posted_with(emu: DiscordEmulator, job_id: str) -> list[StoredMessage]:
    return [m for m in emu.messages(include_ephemeral=False) if f"job `{job_id}`" in m.content]


async def test_imagine_posts_one_grid_with_buttons(atelier: Atelier, emu: DiscordEmulator) -> None:
    await atelier.start()
    final = await imagine_grid(emu, "a lighthouse at dusk --ar 3:2")
    assert final.channel_id == CHANNEL_ID and not final.ephemeral
    assert len(final.attachments) == 1 and final.attachments[0].size <= 10 * 1024 * 1024
    assert labels(final) == GRID_LABELS
    assert all(len(cid) <= 100 for cid in custom_ids(final))
    assert "a lighthouse at dusk" in final.content and "done" in final.content
    # progress: the same message went through queued/running states before the grid
    assert len(final.versions) >= 1
    emu.assert_no_violations()


async def test_u2_posts_the_single_image_with_its_buttons(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    grid = await imagine_grid(emu)
    handle = await emu.click_button(grid.id, button(grid, "U2"))
    assert await handle.wait_for_ack() in (4, 5)
    single = await wait_final(emu, lambda m: "Image 2" in m.content and bool(labels(m)))
    assert labels(single) == SINGLE_LABELS and not single.ephemeral
    job = await runtime.ledger.queue.require(job_id_of(single))
    assert job.kind == "select" and job.parent_id == job_id_of(grid)
    assert image_size(single) == (image_size(grid)[0] // 2, image_size(grid)[1] // 2)
    emu.assert_no_violations()


async def test_v3_gives_a_new_grid_linked_to_its_parent(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    grid = await imagine_grid(emu)
    await emu.click_button(grid.id, button(grid, "V3"))
    varied = await wait_final(emu, lambda m: "of image 3" in m.content and "U1" in labels(m))
    job = await runtime.ledger.queue.require(job_id_of(varied))
    assert job.kind == "variation" and job.parent_id == job_id_of(grid)
    assert job.request.to_json()["source"] == {"job_id": job_id_of(grid), "index": 3}
    emu.assert_no_violations()


async def test_reroll_uses_a_new_seed(atelier: Atelier, emu: DiscordEmulator) -> None:
    runtime = await atelier.start()
    grid = await imagine_grid(emu)
    await emu.click_button(grid.id, button(grid, "\U0001f504"))
    rerolled = await wait_final(
        emu, lambda m: "U1" in labels(m) and job_id_of(m) != job_id_of(grid)
    )
    old = await runtime.ledger.queue.require(job_id_of(grid))
    new = await runtime.ledger.queue.require(job_id_of(rerolled))
    assert new.kind == "reroll" and new.parent_id == old.id
    assert new.request.to_json()["seed"] != old.request.to_json()["seed"]
    assert {**new.request.to_json(), "seed": 0} == {**old.request.to_json(), "seed": 0}


async def test_buttons_work_after_a_restart_and_commands_are_not_resynced(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    await atelier.start()
    grid = await imagine_grid(emu)
    syncs = len(emu.requests("bulk_overwrite_guild_commands"))
    assert syncs == 1
    await atelier.restart()
    assert len(emu.requests("bulk_overwrite_guild_commands")) == syncs  # hash unchanged
    await emu.click_button(grid.id, button(grid, "U4"))
    single = await wait_final(emu, lambda m: "Image 4" in m.content and bool(labels(m)))
    assert labels(single) == SINGLE_LABELS
    emu.assert_no_violations()


async def test_restart_between_click_and_result_posts_once(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    await atelier.start()
    grid = await imagine_grid(emu)
    await atelier.restart(**NO_WORKER)
    handle = await emu.click_button(grid.id, button(grid, "U1"))
    await handle.wait_for_followups(1)
    pending = handle.followups[0]
    job_id = job_id_of(pending)
    assert "queued" in pending.content and not pending.attachments
    runtime = await atelier.restart()  # the new process has no interaction token
    final = await wait_final(emu, lambda m: m.id == pending.id)
    await asyncio.wait_for(runtime.bot.publisher.wait_posted(job_id), timeout=10)
    assert labels(final) == SINGLE_LABELS
    assert [m.id for m in posted_with(emu, job_id)] == [pending.id]  # edited, never re-posted
    job = await runtime.ledger.queue.require(job_id)
    assert job.posted_at is not None and job.attempts == 1
    assert emu.requests("edit_message", method="PATCH")  # through the channel, not the token
    emu.assert_no_violations()


async def test_result_after_token_expiry_goes_through_the_channel(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start(**NO_WORKER)
    handle = await emu.send_slash_command("imagine", {"prompt": "a slow castle"})
    original = (await handle.wait_for_followups(1))[0]
    assert "queued" in original.content
    emu.advance_time(16 * 60)
    later = datetime.now(UTC) + timedelta(minutes=16)
    runtime.bot.publisher.clock = lambda: later
    mark = emu.mark()
    async with atelier.worker():
        final = await wait_final(emu, lambda m: m.id == original.id)
    assert labels(final) == GRID_LABELS
    assert emu.requests("edit_message", since=mark, status=200)  # the channel endpoint
    assert not emu.requests("edit_original_response", since=mark)  # never the dead token
    emu.assert_no_violations()


async def test_token_rejected_by_discord_falls_back_to_the_channel(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    # Discord's clock, not ours, decides: if it calls the token expired, use the channel.
    await atelier.start(**NO_WORKER)
    handle = await emu.send_slash_command("imagine", {"prompt": "a slow tower"})
    original = (await handle.wait_for_followups(1))[0]
    assert "queued" in original.content
    emu.advance_time(16 * 60)
    mark = emu.mark()
    async with atelier.worker():
        final = await wait_final(emu, lambda m: m.id == original.id)
    assert labels(final) == GRID_LABELS
    assert len(emu.requests("edit_original_response", since=mark, status=401)) <= 1
    assert emu.requests("edit_message", since=mark, status=200)
    emu.assert_no_violations(ignore=["expired_interaction_token"])


def final_post(request: Any) -> bool:
    """The request that carries a finished job's buttons (not a progress edit)."""
    return bool(request.json and request.json.get("components"))


async def test_rest_429_and_500_are_retried_without_regenerating(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    emu.inject_failures("edit_followup_message", status=429, count=2, predicate=final_post)
    emu.inject_failures("edit_followup_message", status=500, count=1, predicate=final_post)
    grid = await imagine_grid(emu)
    await asyncio.wait_for(runtime.bot.publisher.wait_posted(job_id_of(grid)), timeout=10)
    job = await runtime.ledger.queue.require(job_id_of(grid))
    assert job.attempts == 1 and job.posted_at is not None
    assert runtime.worker is not None and runtime.worker.stats.succeeded == 1
    assert len(posted_with(emu, job.id)) == 1
    statuses = [r.status for r in emu.requests("edit_followup_message") if final_post(r)]
    assert statuses == [429, 429, 500, 200]
    emu.assert_no_violations()


async def test_5xx_on_channel_edit_is_retried_by_the_publisher(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    await atelier.start(**NO_WORKER)
    handle = await emu.send_slash_command("imagine", {"prompt": "a stormy sea"})
    original = (await handle.wait_for_followups(1))[0]
    assert "queued" in original.content
    runtime = await atelier.restart()  # no token: the result goes through the channel
    # discord.py itself does not retry a 503 on the bot route: the publisher must.
    emu.inject_failures("edit_message", status=503, count=2, predicate=final_post)
    final = await wait_final(emu, lambda m: m.id == original.id)
    job_id = job_id_of(final)
    await asyncio.wait_for(runtime.bot.publisher.wait_posted(job_id), timeout=10)
    statuses = [r.status for r in emu.requests("edit_message") if final_post(r)]
    assert statuses == [503, 503, 200]
    job = await runtime.ledger.queue.require(job_id)
    assert job.attempts == 1 and runtime.worker is not None
    assert runtime.worker.stats.succeeded == 1  # posted three times, generated once
    emu.assert_no_violations()


async def test_bad_options_are_ephemeral_and_queue_nothing(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    for prompt, fragment in [
        ("a cat --ar 99:1", "--ar 99:1 is too extreme"),
        ("a cat --steps 500", "--steps must be from 1 to 60"),
        ("a cat --frobnicate", "unknown option --frobnicate"),
        (" ".join(["castle"] * 90), "tokens long; the limit is 77 tokens"),
    ]:
        handle = await emu.send_slash_command("imagine", {"prompt": prompt})
        assert await handle.wait_for_ack() == 4
        reply = await handle.wait_for_original()
        assert reply.ephemeral and fragment in reply.content
    assert await runtime.ledger.queue.list_for_user(emu.default_user.id) == []
    assert (await runtime.ledger.queue.quota_readout(emu.default_user.id)).used == 0
    emu.assert_no_violations()


async def refusal_of(handle: Any) -> StoredMessage:
    reply: StoredMessage = await handle.wait_for_original(lambda m: not m.loading)
    assert reply.ephemeral and not handle.followups
    return reply


async def test_quota_exceeded_and_queue_cap(atelier: Atelier, emu: DiscordEmulator) -> None:
    runtime = await atelier.start(
        queue=QueueSettings(run_worker_in_process=False, max_queued_per_user=2),
        quota=QuotaSettings(user_daily_gpu_seconds=25, estimate_quality_seconds=10),
    )
    for _ in range(2):
        handle = await emu.send_slash_command("imagine", {"prompt": "a cat"})
        await handle.wait_for_followups(1)
    # Third: the queue cap (2 waiting) refuses before the quota does.
    handle = await emu.send_slash_command("imagine", {"prompt": "a third cat"})
    refusal = await refusal_of(handle)
    assert "2" in refusal.content and "queue" in refusal.content.lower()
    await runtime.ledger.queue.cancel_for_user(emu.default_user.id)  # refunds both
    runtime = await atelier.restart(
        queue=QueueSettings(run_worker_in_process=False),
        quota=QuotaSettings(user_daily_gpu_seconds=15, estimate_quality_seconds=10),
    )
    handle = await emu.send_slash_command("imagine", {"prompt": "a fourth cat"})
    await handle.wait_for_followups(1)  # reserves 10 of 15 GPU-seconds
    handle = await emu.send_slash_command("imagine", {"prompt": "a fifth cat"})
    refusal = await refusal_of(handle)
    assert "quota" in refusal.content.lower()
    readout = await runtime.ledger.queue.quota_readout(emu.default_user.id)
    assert (readout.reserved, readout.used) == (10, 0)
    jobs = await runtime.ledger.queue.list_for_user(emu.default_user.id)
    assert not any("fifth" in job.request.to_json()["prompt"] for job in jobs)
    emu.assert_no_violations()


async def test_non_owner_click_refused_when_guild_allows_only_owners(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    grid = await imagine_grid(emu)
    stranger = emu.make_user(name="stranger")
    handle = await emu.click_button(grid.id, button(grid, "U1"), user=stranger)
    reply = await handle.wait_for_original(lambda m: not m.loading)
    assert reply.ephemeral and "only the person who made this job" in reply.content
    assert not handle.followups
    assert await runtime.ledger.queue.list_for_user(stranger.id) == []
    emu.assert_no_violations()


async def test_forged_button_gets_an_ephemeral_explanation(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    forged = emu.post_message(
        CHANNEL_ID,
        content="looks like a grid",
        author=emu.bot_user,
        components=[
            {
                "type": 1,
                "components": [
                    {"type": 2, "style": 2, "label": "U1", "custom_id": "atl:1:u:zzzzzzzzzzzz:1"},
                    {"type": 2, "style": 2, "label": "X", "custom_id": "evil:payload"},
                ],
            }
        ],
    )
    for custom_id in ("atl:1:u:zzzzzzzzzzzz:1", "evil:payload"):
        handle = await emu.click_button(forged.id, custom_id)
        reply = await handle.wait_for_original(lambda m: not m.loading)
        assert reply.ephemeral and reply.content
    assert await runtime.ledger.queue.list_for_user(emu.default_user.id) == []
    emu.assert_no_violations()


async def test_prompt_cannot_ping_everyone(atelier: Atelier, emu: DiscordEmulator) -> None:
    await atelier.start()
    handle = await emu.send_slash_command("imagine", {"prompt": "hello @everyone and @here"})
    job_message = (await handle.wait_for_followups(1))[0]
    final = await wait_final(emu, lambda m: m.id == job_message.id)
    assert "hello" in final.content
    assert "@everyone" not in final.content and "@here" not in final.content
    bodies = [r for r in emu.requests() if isinstance(r.json, dict) and r.json.get("content")]
    assert bodies
    for request in bodies:
        assert request.json.get("allowed_mentions", {}).get("parse") == [], request.route
    emu.assert_no_violations()


async def test_owner_gets_a_dm_when_the_channel_is_closed_to_the_bot(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    await atelier.start(**NO_WORKER)
    handle = await emu.send_slash_command("imagine", {"prompt": "a locked room"})
    pending = (await handle.wait_for_followups(1))[0]
    emu.state.delete_message(emu.message(pending.id))  # a moderator removed it
    emu.deny_channel(CHANNEL_ID)  # and the bot may no longer post there
    runtime = await atelier.restart()  # no live token: the channel route is the only one left
    job_id = job_id_of(pending)
    await asyncio.wait_for(runtime.bot.publisher.wait_posted(job_id), timeout=30)
    dms = emu.dm_messages(emu.default_user)
    assert len(dms) == 1 and f"job `{job_id}`" in dms[0].content
    assert dms[0].attachments and labels(dms[0]) == GRID_LABELS
    assert "could not post in the channel" in dms[0].content
    emu.assert_no_violations(ignore=["missing_permissions", "unknown_message"])


async def test_commands_resync_only_when_changed_and_go_global_without_a_guild(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    from bot.app import COMMANDS_HASH_KEY
    from config.settings import DiscordSettings
    from tests.bot.conftest import TOKEN

    runtime = await atelier.start()
    assert len(emu.requests("bulk_overwrite_guild_commands")) == 1
    names = {command["name"] for command in emu.registered_commands(GUILD_ID)}
    assert {"imagine", "info", "queue", "cancel", "show", "settings", "help"} <= names
    await runtime.ledger.prefs.set_meta(COMMANDS_HASH_KEY, "an older command set")
    await atelier.restart()
    assert len(emu.requests("bulk_overwrite_guild_commands")) == 2  # changed: synced again
    await atelier.restart(
        discord=DiscordSettings(
            token=SecretStr(TOKEN), api_base_url=emu.api_base_url, gateway_url=emu.gateway_url
        )
    )
    assert len(emu.requests("bulk_overwrite_global_commands")) == 1  # new target: global
    assert len(emu.requests("bulk_overwrite_guild_commands")) == 2


async def test_new_jobs_are_rate_limited_per_member(atelier: Atelier, emu: DiscordEmulator) -> None:
    """Issue 9, defect 13: imagine-and-cancel loops were free and each posted a message."""
    runtime = await atelier.start(
        queue=QueueSettings(run_worker_in_process=False, new_jobs_per_window=2, new_jobs_burst=2)
    )
    for prompt in ("one owl", "two owls"):
        handle = await emu.send_slash_command("imagine", {"prompt": prompt})
        await handle.wait_for_followups(1)
    cancel = await emu.send_slash_command("cancel")
    assert "Cancelled 2 job(s)" in (await cancel.wait_for_followups(1))[0].content
    handle = await emu.send_slash_command("imagine", {"prompt": "three owls"})
    refusal = await refusal_of(handle)
    assert "too fast" in refusal.content and "try again in" in refusal.content
    other = emu.make_user(name="other")
    allowed = await emu.send_slash_command("imagine", {"prompt": "an owl"}, user=other)
    await allowed.wait_for_followups(1)
    jobs = await runtime.ledger.queue.list_for_user(emu.default_user.id)
    assert sorted(job.request.prompt for job in jobs) == ["one owl", "two owls"]
    emu.assert_no_violations()


async def test_the_answer_is_sent_once_the_job_is_stored(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    """Issue 10: persist, then respond. On the fast path the interaction's own response is the
    final "Queued" answer (no deferral, no edit), and the job it names already exists."""
    runtime = await atelier.start(**NO_WORKER)
    handle = await emu.send_slash_command("imagine", {"prompt": "a stored fox"})
    assert await handle.wait_for_ack() == 4
    original = await handle.wait_for_original()
    assert original.ephemeral and original.content.startswith("Queued: job `")
    job_id = original.content.split("`")[1]
    job = await runtime.ledger.queue.require(job_id)
    assert job.order_key == handle.id  # ordered by what Discord saw
    (message,) = await handle.wait_for_followups(1)
    assert job_id_of(message) == job_id and not message.ephemeral
    emu.assert_no_violations()


async def test_one_members_commands_run_in_the_order_discord_received_them(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    """Issue 10, seen 2: six commands sent together were queued 1, 4, 0, 2, 3, 5. Whatever
    order the handlers commit in, the member's jobs are claimed in interaction order."""
    no_limit = NO_WORKER["queue"].model_copy(update={"new_jobs_per_window": 0})
    runtime = await atelier.start(queue=no_limit)
    handles = await asyncio.gather(
        *(emu.send_slash_command("imagine", {"prompt": f"a step {n}"}) for n in range(6))
    )
    sent = sorted(handles, key=lambda h: h.id)
    ids = [job_id_of((await h.wait_for_followups(1))[0]) for h in sent]
    claimed = []
    for _ in ids:
        job = await runtime.ledger.queue.claim_next("test-worker")
        assert job is not None
        claimed.append(job.id)
        await runtime.ledger.queue.release(job.id, job.lease_token)
        await runtime.ledger.queue.cancel(job.id)
    assert claimed == ids
    emu.assert_no_violations()


async def test_a_restart_finishes_an_answer_left_thinking(
    atelier: Atelier, emu: DiscordEmulator, data_dir: Path
) -> None:
    """Issue 10, seen 1: the bot stopped after the deferral and the commit, before the answer.
    The restarted bot finishes the "thinking..." answer while the token lives and posts the
    job's message, and the job is generated and posted once."""
    import sqlite3

    runtime = await atelier.start()
    stored = asyncio.Event()

    async def stop_here(*_: object) -> None:
        stored.set()
        await asyncio.Event().wait()  # the process is "killed" here

    runtime.bot.publisher.announce = stop_here  # type: ignore[method-assign,assignment]
    blocker = sqlite3.connect(data_dir / "atelier.db", timeout=30, check_same_thread=False)
    try:
        # A slow ledger, so the handler defers first. Taken in a thread: the bot's own
        # transactions must be able to finish while this waits for the lock.
        await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")
        handle = await emu.send_slash_command("imagine", {"prompt": "a patient crane"})
        assert await handle.wait_for_ack() == 5
    finally:
        blocker.rollback()
        blocker.close()
    await stored.wait()
    runtime = await atelier.restart()
    original = await handle.wait_for_original()
    assert "Queued: job" in original.content and "after a restart" in original.content
    (message,) = await handle.wait_for_followups(1)
    job_id = job_id_of(message)
    final = await wait_final(emu, lambda m: m.id == message.id)
    assert "done" in final.content and len(posted_with(emu, job_id)) == 1
    job = await runtime.ledger.queue.require(job_id)
    assert job.status == "succeeded" and job.attempts == 1  # generated once, by either process
    emu.assert_no_violations()


async def test_a_job_whose_interaction_was_never_answered_is_withdrawn(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    """The bot stopped after storing a job and before any answer: the user saw the command
    fail, so the restarted bot cancels the job (refunded) instead of running it unasked."""
    runtime = await atelier.start(**NO_WORKER)
    stored = asyncio.Event()

    async def stop_here(*_: object) -> None:
        stored.set()
        await asyncio.Event().wait()

    runtime.bot.publisher.announce = stop_here  # type: ignore[method-assign,assignment]
    await emu.send_slash_command("imagine", {"prompt": "an unseen owl"})
    await stored.wait()
    user = emu.default_user.id
    (job,) = await runtime.ledger.queue.list_for_user(user)
    runtime = await atelier.restart(**NO_WORKER)
    await asyncio.wait_for(runtime.bot.publisher.wait_recovered(), timeout=10)
    withdrawn = await runtime.ledger.queue.require(job.id)
    assert withdrawn.status == "cancelled" and withdrawn.posted_at is not None
    assert posted_with(emu, job.id) == []  # nothing to show: the user saw it fail
    readout = await runtime.ledger.queue.quota_readout(user)
    assert (readout.used, readout.reserved) == (0, 0)
    emu.assert_no_violations(ignore=["followup_before_acknowledgement", "interaction_timeout"])


async def test_a_job_whose_answer_discord_refused_is_withdrawn(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    """The job was stored, but the answer came too late (Discord: 10062 Unknown interaction,
    the user saw the command fail): the job is cancelled and refunded, and nothing is posted."""
    runtime = await atelier.start(**NO_WORKER)
    publisher = runtime.bot.publisher
    announce, withdraw = publisher.announce, publisher.cards.withdraw
    withdrawn = asyncio.Event()

    async def late(*args: Any) -> None:
        emu.advance_time(4)  # past Discord's 3 s for the first answer
        await announce(*args)

    async def record(job_ids: list[str]) -> None:
        await withdraw(job_ids)
        withdrawn.set()

    publisher.announce = late  # type: ignore[method-assign,assignment]
    publisher.cards.withdraw = record  # type: ignore[method-assign]
    await emu.send_slash_command("imagine", {"prompt": "a late lark"})
    await withdrawn.wait()
    user = emu.default_user.id
    (job,) = await runtime.ledger.queue.list_for_user(user)
    assert job.status == "cancelled" and job.posted_at is not None and job.message_id is None
    readout = await runtime.ledger.queue.quota_readout(user)
    assert (readout.used, readout.reserved) == (0, 0)
    assert posted_with(emu, job.id) == []
    emu.assert_no_violations(ignore=["late_acknowledgement", "interaction_timeout"])


# -- results that cannot be delivered, and servers that remove the bot ------------------------


def small_budget(budget: int = 1000) -> dict[str, Any]:
    return {
        "bot": BotSettings(
            progress_interval_seconds=0.2,
            delivery_retry_seconds=0.2,
            delivery_retry_max_seconds=1.0,
            invalid_request_budget=budget,
        )
    }


def failed(request: Any) -> bool:
    return bool(request.status >= 400)


async def test_a_result_that_cannot_be_delivered_is_given_up_after_the_fallbacks(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    await atelier.start(**NO_WORKER)
    handle = await emu.send_slash_command("imagine", {"prompt": "a sunken bell"})
    pending = (await handle.wait_for_followups(1))[0]
    job_id = job_id_of(pending)
    emu.delete_channel(CHANNEL_ID)  # the channel is gone
    emu.block_dms(emu.default_user)  # and the owner refuses DMs
    runtime = await atelier.restart(**small_budget())  # no live token: the channel route only
    mark = emu.mark()
    reason = await asyncio.wait_for(runtime.bot.publisher.wait_given_up(job_id), timeout=30)
    assert "404 Unknown Channel" in reason and "403 Cannot send messages" in reason
    job = await runtime.ledger.queue.require(job_id)
    assert job.status == "succeeded" and job.posted_at is None
    assert job.given_up_at is not None and job.give_up_reason == reason
    assert job.charged is not None and job.charged > 0, "billing settled: the measured cost"
    # The fallbacks were each tried once: at most one refused progress edit, then the final
    # edit (404), no new message in a channel that is gone, and one DM (403).
    refused = emu.requests(since=mark, predicate=failed)
    assert [(r.route, r.status) for r in refused if r.route != "edit_message"] == [
        ("create_message", 403)
    ]
    assert 1 <= len([r for r in refused if r.route == "edit_message"]) <= 2
    assert len(emu.requests(since=mark)) <= 8
    assert runtime.bot.publisher.budget.totals == {403: 1}
    # Nothing more is tried: the next sweeps find nothing to deliver.
    assert await runtime.ledger.delivery.list_undelivered() == []
    assert not await runtime.ledger.delivery.claim(job_id)

    info = await emu.send_slash_command("info", channel_id=OTHER_CHANNEL_ID)
    text = (await info.wait_for_followups(1))[0].content
    assert f"`{job_id}`" in text and "could not be delivered" in text
    assert "Unknown Channel" in text
    show = await emu.send_slash_command("show", {"job": job_id}, channel_id=OTHER_CHANNEL_ID)
    copy = (await show.wait_for_followups(1))[0]
    assert f"job `{job_id}`" in copy.content and "could not be delivered" in copy.content
    emu.assert_no_violations(ignore=["unknown_channel", "cannot_message_user"])


async def test_the_invalid_request_budget_holds_deliveries_until_the_window_frees(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    await atelier.start(**NO_WORKER)
    pending = []
    for prompt in ("a first lost kite", "a second lost kite"):
        handle = await emu.send_slash_command("imagine", {"prompt": prompt})
        pending.append((await handle.wait_for_followups(1))[0])
    first, second = (job_id_of(m) for m in pending)
    emu.delete_channel(CHANNEL_ID)
    emu.block_dms(emu.default_user)
    runtime = await atelier.restart(**NO_WORKER, **small_budget(budget=1))
    publisher = runtime.bot.publisher
    now = [1000.0]
    publisher.budget.clock = lambda: now[0]
    async with open_worker(atelier.settings(**NO_WORKER), runtime.ledger) as worker:
        assert await worker.run_once()  # the first job (oldest first)
        await asyncio.wait_for(publisher.wait_given_up(first), timeout=30)
        assert publisher.budget.exhausted()  # its DM's 403 spent the budget of 1
        assert await worker.run_once()
    mark = emu.mark()
    held = await asyncio.wait_for(publisher.wait_held(publisher.held_passes), timeout=10)
    await asyncio.wait_for(publisher.wait_held(held), timeout=10)  # a whole sweep, held
    assert emu.requests(since=mark) == [], "no risky call while the budget is spent"
    job = await runtime.ledger.queue.require(second)
    assert job.status == "succeeded" and job.post_attempts == 0 and job.given_up_at is None
    now[0] += 601  # the window frees
    reason = await asyncio.wait_for(publisher.wait_given_up(second), timeout=30)
    assert "Cannot send messages" in reason
    assert publisher.budget.totals == {403: 2}
    emu.assert_no_violations(ignore=["unknown_channel", "cannot_message_user"])


class RecordedPresence:
    """Wraps the bot's guild presence, so a test can wait until a guild event was handled."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.handled: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

    async def removed(self, guild_id: int) -> int:
        stopped = int(await self.inner.removed(guild_id))
        self.handled.put_nowait(("removed", (guild_id, stopped)))
        return stopped

    async def present(self, guild_ids: Any) -> None:
        await self.inner.present(guild_ids)
        self.handled.put_nowait(("present", sorted(guild_ids)))

    async def reconcile(self, guild_ids: Any) -> list[int]:
        gone: list[int] = await self.inner.reconcile(guild_ids)
        self.handled.put_nowait(("reconcile", gone))
        return gone

    async def next(self, kind: str) -> object:
        """What the next handled event of ``kind`` was about (others are skipped)."""
        while True:
            handled, about = await asyncio.wait_for(self.handled.get(), 10)
            if handled == kind:
                return about


async def test_removing_the_bot_cancels_the_servers_jobs_and_survives_a_restart(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start(**NO_WORKER)
    ids = []
    for prompt in ("a castle left behind", "a harbour left behind"):
        handle = await emu.send_slash_command("imagine", {"prompt": prompt})
        ids.append(job_id_of((await handle.wait_for_followups(1))[0]))
    queue = runtime.ledger.queue
    user = emu.default_user.id
    assert (await queue.quota_readout(user, GUILD_ID)).reserved > 0
    presence = RecordedPresence(runtime.bot.guilds_presence)
    runtime.bot.guilds_presence = presence
    mark = emu.mark()
    emu.remove_bot()
    assert await presence.next("removed") == (GUILD_ID, 2)
    for job_id in ids:
        job = await queue.require(job_id)
        assert job.status == "cancelled" and job.given_up_at is not None
        assert job.give_up_reason == "the bot was removed from the server"
    assert (await queue.quota_readout(user, GUILD_ID)).reserved == 0, "refunded"
    assert await queue.left_guilds() == [GUILD_ID]

    # A restart while the bot is out finds the same state, and runs and posts nothing there.
    runtime = await atelier.restart()
    queue = runtime.ledger.queue
    assert await queue.left_guilds() == [GUILD_ID]
    assert [(await queue.require(job_id)).status for job_id in ids] == ["cancelled"] * 2
    assert await runtime.ledger.delivery.list_undelivered() == []
    assert not [r for r in emu.requests(since=mark) if r.route == "edit_message"]

    # Added back: the record goes; what was given up stays given up.
    presence = RecordedPresence(runtime.bot.guilds_presence)
    runtime.bot.guilds_presence = presence
    emu.add_bot()
    assert await presence.next("present") == [GUILD_ID]
    assert await queue.left_guilds() == []
    final = await imagine_grid(emu, "a castle rebuilt")
    assert labels(final) == GRID_LABELS
    emu.assert_no_violations()


async def test_a_removal_while_the_bot_is_away_is_found_at_start(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start(**NO_WORKER)
    handle = await emu.send_slash_command("imagine", {"prompt": "a lantern left on"})
    job_id = job_id_of((await handle.wait_for_followups(1))[0])
    await asyncio.wait_for(runtime.bot.guilds_settled.wait(), 10)
    assert await runtime.ledger.queue.guilds_with_work() == [GUILD_ID]
    await atelier.stop()
    await emu.disconnect_clients()
    emu.remove_bot()  # while no bot process runs
    runtime = await atelier.start(**NO_WORKER)
    await asyncio.wait_for(runtime.bot.guilds_settled.wait(), 10)  # READY no longer lists it
    queue = runtime.ledger.queue
    assert await queue.left_guilds() == [GUILD_ID]
    job = await queue.require(job_id)
    assert job.status == "cancelled" and job.given_up_at is not None
    assert (await queue.quota_readout(emu.default_user.id, GUILD_ID)).reserved == 0
    assert await queue.guilds_with_work() == []
    # Until READY's guilds are settled, a progress edit may meet the removal (one 403).
    assert len(emu.requests(status=403)) <= 1
    emu.assert_no_violations(ignore=["missing_access"])


async def test_an_outage_is_not_a_removal(atelier: Atelier, emu: DiscordEmulator) -> None:
    runtime = await atelier.start(**NO_WORKER)
    handle = await emu.send_slash_command("imagine", {"prompt": "a lighthouse in the fog"})
    pending = (await handle.wait_for_followups(1))[0]
    unavailable = asyncio.ensure_future(runtime.bot.wait_for("guild_unavailable"))
    emu.guild_outage()
    guild = await asyncio.wait_for(unavailable, 10)
    assert guild.id == GUILD_ID
    assert await runtime.ledger.queue.left_guilds() == []
    assert (await runtime.ledger.queue.require(job_id_of(pending))).status == "queued"
    emu.end_guild_outage()
    async with atelier.worker():
        final = await wait_final(emu, lambda m: m.id == pending.id)
    assert labels(final) == GRID_LABELS
    emu.assert_no_violations()


async def test_a_message_posted_but_not_recorded_before_a_restart_is_not_posted_twice(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    """The bot stopped after posting the job's message and before recording it: the restarted
    bot finds that message (its channel's history, after the job's interaction) and uses it."""
    runtime = await atelier.start(**NO_WORKER)
    posted = asyncio.Event()

    async def stop_here(*_: object) -> None:
        posted.set()
        await asyncio.Event().wait()  # "killed" between the post and the commit

    runtime.bot.publisher._remember = stop_here  # type: ignore[method-assign,assignment]
    handle = await emu.send_slash_command("imagine", {"prompt": "a shy otter"})
    (message,) = await handle.wait_for_followups(1)
    await posted.wait()
    job_id = job_id_of(message)
    assert (await runtime.ledger.queue.require(job_id)).message_id is None
    runtime = await atelier.restart()
    await asyncio.wait_for(runtime.bot.publisher.wait_recovered(), timeout=10)
    assert (await runtime.ledger.queue.require(job_id)).message_id == message.id
    final = await wait_final(emu, lambda m: m.id == message.id)
    assert "done" in final.content and len(posted_with(emu, job_id)) == 1
    emu.assert_no_violations()
