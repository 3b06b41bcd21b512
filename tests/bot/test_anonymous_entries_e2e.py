"""Anonymous group-session entries through the emulator: while the entry's round is on, its
author appears in no search result, gallery page, profile, lineage, Prompt card or /show copy,
and a member filter does not find it; once the round ends, they show everywhere. The session's
own gallery view (``/gallery session:``) and its page buttons."""

from __future__ import annotations

import asyncio
import re
from functools import partial
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.devtools.emulator import DiscordEmulator
from bot.devtools.emulator.models import EmuUser, StoredMessage
from bot.runtime import Runtime
from config.settings import Settings
from generation.options import parse_imagine_prompt
from generation.request import GenerationRequest
from storage.models import JOBS
from storage.quota_policy import estimate_seconds
from storage.sessions import SessionStore
from storage.types import JobKind, JobStatus, NewJob, SessionSpec
from tests.bot.conftest import CHANNEL_ID, GUILD_ID, OTHER_CHANNEL_ID, Atelier
from tests.bot.test_moderation_e2e import button, say
from tests.bot.test_sharing_e2e import make

HOST_ID = 4242


def entry_job(settings: Settings, prompt: str) -> NewJob[GenerationRequest]:
    (request,) = parse_imagine_prompt(prompt, settings=settings.generation, model=settings.model)[
        :1
    ]
    return NewJob(
        kind=JobKind.IMAGINE,
        request=request,
        mode=request.mode.value,
        batch_key=request.batch_key(),
        estimated_cost=estimate_seconds(settings.quota, JobKind.IMAGINE, request.mode.value),
        work_units=request.work_units,
        prompt=request.prompt,
        model=request.model,
        aspect=request.aspect,
    )


async def generated(runtime: Runtime, job_id: str) -> None:
    for _ in range(600):
        if (await runtime.ledger.queue.require(job_id)).status is JobStatus.SUCCEEDED:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"entry job {job_id} did not finish")


async def shown_copy(emu: DiscordEmulator, job_id: str, user: EmuUser) -> StoredMessage:
    """/show the job; the copy it posts in the channel."""
    before = {m.id for m in emu.messages()}
    handle = await emu.send_slash_command("show", {"job": job_id}, user=user)
    await handle.wait_for_original(lambda m: not m.loading)
    return await emu.wait_for_message(
        lambda m: (
            m.id not in before
            and not m.ephemeral
            and f"job `{job_id}`" in m.content
            and bool(m.attachments)
        )
    )


def anonymous(text: str, who: EmuUser) -> bool:
    return "anonymous entry" in text and f"<@{who.id}>" not in text


async def test_an_anonymous_entrys_author_shows_nowhere_until_its_round_ends(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    alice, carol = emu.make_user(name="alice"), emu.make_user(name="carol")
    plain = _job_id(await make(emu, "a plain lighthouse", carol))
    store = SessionStore(runtime.ledger.db, runtime.ledger.queue, claimer_id="e2e")
    session = await store.start(
        SessionSpec(
            guild_id=GUILD_ID,
            channel_id=CHANNEL_ID,
            host_id=HOST_ID,
            theme="harbours at night",
            anonymous=True,
        )
    )
    entered = await store.submit(
        session.id, alice.id, entry_job(atelier.settings(), "a secret harbour")
    )
    assert entered.job_id is not None
    entry_id = entered.job_id
    await generated(runtime, entry_id)
    # A member's job made from the entry: its author is named, the entry's is not.
    remix_id = _job_id(await make(emu, "a remixed harbour", carol))
    await runtime.ledger.db.write(partial(_set_parent, job_id=remix_id, parent_id=entry_id))

    async def everywhere() -> dict[str, str]:
        copy = await shown_copy(emu, entry_id, carol)
        prompt = await emu.click_button(copy.id, button(copy, "Prompt"), user=carol)
        return {
            "search": await say(emu, "search", {"query": "harbour"}, carol),
            "recent": await say(emu, "gallery", {"view": "r"}, carol),
            "session": await say(emu, "gallery", {"session": session.id}, carol),
            "lineage": await say(emu, "lineage", {"job": remix_id}, carol),
            "entry_lineage": await say(emu, "lineage", {"job": entry_id}, carol),
            "show": copy.content,
            "prompt": (await prompt.wait_for_original(lambda m: not m.loading)).content,
        }

    seen = await everywhere()
    for name, text in seen.items():
        assert anonymous(text, alice), (name, text)
    assert f"job `{entry_id}`" in seen["session"] and "harbours at night" in seen["session"]
    assert f"job `{plain}`" not in seen["session"] and f"job `{plain}`" in seen["recent"]
    assert f"<@{carol.id}>" in seen["lineage"]  # the remix's own author
    assert f"Prompt of job `{entry_id}`" in seen["prompt"]
    # Nothing keyed by alice finds it, or counts it.
    theirs = await say(emu, "search", {"query": "harbour", "member": alice}, carol)
    assert f"job `{entry_id}`" not in theirs
    member_view = await say(emu, "gallery", {"member": alice}, carol)
    assert f"job `{entry_id}`" not in member_view
    assert "0 job(s)" in await say(emu, "profile", {"member": alice}, carol)
    # The showcase credits its author and is never edited: no Publish, no auto-feature yet.
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=1 << 5)])
    showcase = emu.guild().channels[OTHER_CHANNEL_ID]
    settings = {"showcase_channel": showcase, "auto_feature_likes": 1}
    assert "Published images now go to" in await say(emu, "settings server", settings, admin)
    copy = await shown_copy(emu, entry_id, carol)
    like = await emu.click_button(copy.id, button(copy, "\u2764 0"), user=carol)
    assert await like.wait_for_ack() == 6
    publish = await emu.click_button(copy.id, button(copy, "Publish"), user=alice)
    refused = (await publish.wait_for_original(lambda m: not m.loading)).content
    assert "anonymous session entry" in refused and f"<@{alice.id}>" not in refused
    for _ in range(100):
        if (await runtime.ledger.queue.require(entry_id)).like_count == 1:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # the like's handler has checked the threshold
    assert not [m for m in emu.messages(OTHER_CHANNEL_ID) if "secret harbour" in m.content]
    assert not like.followups  # skipped quietly, not refused: the like stands

    # The round ends (voting, then the host ends the session: the round is tallied).
    await store.skip_to_voting(session.id)
    await store.generated(session.id)
    await store.end(session.id, HOST_ID)
    seen = await everywhere()
    for name, text in seen.items():
        if name != "lineage":  # the remix's tree names its parent by id only
            assert f"<@{alice.id}>" in text and "anonymous entry" not in text, (name, text)
    theirs = await say(emu, "search", {"query": "harbour", "member": alice}, carol)
    assert f"job `{entry_id}`" in theirs
    assert "1 job(s)" in await say(emu, "profile", {"member": alice}, carol)


async def test_the_session_view_pages_and_refuses_other_sessions(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    members = [emu.make_user(name=f"m{n}") for n in range(10)]
    store = SessionStore(runtime.ledger.db, runtime.ledger.queue, claimer_id="e2e")
    session = await store.start(
        SessionSpec(guild_id=GUILD_ID, channel_id=CHANNEL_ID, host_id=HOST_ID, theme="moons")
    )
    jobs = []
    for n, member in enumerate(members):  # one more than a page
        made = await store.submit(session.id, member.id, entry_job(atelier.settings(), f"moon {n}"))
        assert made.job_id is not None
        jobs.append(made.job_id)
    for job_id in jobs:
        await generated(runtime, job_id)
    viewer = members[0]
    handle = await emu.send_slash_command("gallery", {"session": session.id.upper()}, user=viewer)
    first = await handle.wait_for_original(lambda m: not m.loading)
    assert first.ephemeral and first.content.count("job `") == 9 and "moons" in first.content
    assert f"job `{jobs[-1]}`" in first.content and f"job `{jobs[0]}`" not in first.content
    nxt = button(first, "Next")
    assert re.fullmatch(rf"atl:1:gl:s:{session.id}:a[0-9a-z]+", nxt), nxt
    click = await emu.click_button(first.id, nxt, user=viewer)
    await click.wait_for_ack()
    second = await emu.wait_for_message(
        lambda m: m.id == first.id and f"job `{jobs[0]}`" in m.content
    )
    assert second.content.count("job `") == 1
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"session": "zzzzzzzzzzzz"}, "no session `zzzzzzzzzzzz` here"),
        ({"session": "../../etc"}, "a session id is 12 letters and digits"),
        ({"view": "s"}, "needs a session id"),
        ({"session": session.id, "member": viewer}, "not both"),
    ]
    for options, expected in refusals:
        assert expected in await say(emu, "gallery", options, viewer), options


def _job_id(message: StoredMessage) -> str:
    found = re.search(r"job `([0-9a-z]+)`", message.content)
    assert found, message.content
    return found.group(1)


async def _set_parent(session: AsyncSession, *, job_id: str, parent_id: str) -> None:
    """Make a job a follow-up of another (as a remix records its parent)."""
    await session.execute(update(JOBS).where(JOBS.c.id == job_id).values(parent_id=parent_id))
