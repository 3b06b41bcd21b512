"""Group sessions end to end, through the Discord emulator with the tiny model: a host with the
server's host role runs two rounds with approval and anonymity on, four members enter (one is
rejected, one is over their entry limit), vote (a refused self-vote, a changed vote), the bot
restarts in the middle of round 1's voting, and each round's board names the right winners.
The session clock is injected and moved by hand, so the rounds take seconds. Also the hostile
cases: forged ids, another server's session, DMs, members without rights, votes out of time.
Makes the README's board picture (``ATELIER_TEST_SCREENSHOT_DIR``: where to copy it)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from bot.devtools.emulator import DiscordEmulator
from bot.devtools.emulator.models import EmuUser, StoredMessage
from bot.session_ids import panel_id, submit_id, vote_id
from bot.session_runner import PANEL_GRACE, SessionRunner
from config.settings import BotSettings
from storage.audit import audit
from storage.sessions import SessionStore
from storage.sql import utc_now
from storage.types import EntryState, SessionPhase, SessionStatus, SessionTimer, SessionView
from tests.bot.conftest import CHANNEL_ID, GUILD_ID, OTHER_CHANNEL_ID, Atelier, custom_ids
from tests.bot.test_moderation_e2e import MANAGE_MESSAGES, MANAGE_SERVER, button, say

T = TypeVar("T")
MANAGE_EVENTS = 1 << 33
MANAGE_THREADS = 1 << 34
OTHER_GUILD, OTHER_GUILD_CHANNEL = 800_000_000_000_000_009, 700_000_000_000_000_009
FAST_LOOP = {"bot": BotSettings(progress_interval_seconds=0.2, session_poll_seconds=0.2)}


class SkipClock:
    """Real time plus whatever the test skipped: the session's clock."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utc_now() + self.offset

    def skip(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def runner_of(atelier: Atelier) -> SessionRunner:
    assert atelier.runtime is not None
    runner = atelier.runtime.bot.session_runner
    assert runner is not None
    return runner


def store_of(atelier: Atelier) -> SessionStore:
    return runner_of(atelier).store


async def until(probe: Callable[[], Awaitable[T | None]], timeout: float = 60.0) -> T:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while True:
            found = await probe()
            if found is not None and found is not False:
                return found
            await asyncio.sleep(0.1)


async def reply(handle: Any) -> StoredMessage:
    message: StoredMessage = await handle.wait_for_original(lambda m: not m.loading)
    assert message.ephemeral, message.content
    return message


async def run(
    emu: DiscordEmulator, command: str, options: dict[str, Any], user: EmuUser, channel: int
) -> str:
    handle = await emu.send_slash_command(command, options, user=user, channel_id=channel)
    return (await reply(handle)).content


async def click(emu: DiscordEmulator, message_id: int, custom_id: str, user: EmuUser) -> str:
    handle = await emu.click_button(message_id, custom_id, user=user)
    return (await reply(handle)).content


async def phase_is(atelier: Atelier, session_id: str, phase: SessionPhase) -> SessionView:
    async def probe() -> SessionView | None:
        session = await store_of(atelier).get(session_id)
        return session if session.phase is phase else None

    try:
        return await until(probe)
    except TimeoutError:
        store = store_of(atelier)
        session = await store.get(session_id)
        entries = await store.entries(session_id, session.round)
        raise AssertionError(f"not {phase}: {session}\n{entries}") from None


async def skip(atelier: Atelier, clock: SkipClock, seconds: float) -> None:
    """Move the session clock past a phase's end and let the loop fire its timer."""
    clock.skip(seconds)
    await runner_of(atelier).wait_passes(2)


def entry_messages(emu: DiscordEmulator, thread_id: int) -> list[StoredMessage]:
    return [
        m
        for m in emu.messages(thread_id, include_ephemeral=False)
        if any(c.startswith("atl:1:sv:") for c in custom_ids(m))
    ]


async def test_a_two_round_session_with_approval_anonymity_votes_and_a_restart(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    clock = SkipClock()
    atelier.clock = clock
    # Locking the thread at the end needs Manage Threads, which comes from a role.
    emu.set_roles(emu.bot_user, [emu.make_role("bot", permissions=MANAGE_THREADS)])
    await atelier.start(**FAST_LOOP)
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=MANAGE_SERVER)])
    hosts = emu.make_role("hosts")
    host = emu.make_user(name="host", roles=[hosts])
    eventer = emu.make_user(name="eventer", roles=[emu.make_role("ev", permissions=MANAGE_EVENTS)])
    ann, bob, cat, dan = (emu.make_user(name=n) for n in ("ann", "bob", "cat", "dan"))
    members = {ann.id: "ann", bob.id: "bob", cat.id: "cat", dan.id: "dan"}

    # Who may host: the server's host role, once an admin names it (Manage Events no longer).
    text = await say(emu, "settings server", {"session_host_role": hosts}, admin)
    assert "may now host group sessions" in text
    start = {
        "theme": "lighthouses",
        "themes": "dawn; dusk",
        "round_minutes": 1,
        "voting_minutes": 1,
        "approval": True,
        "anonymous": True,
        "pool": "server",
        "pool_gpu_seconds": 500.0,
        "aspect": "1:1",
    }
    refused = await run(emu, "session start", start, eventer, CHANNEL_ID)
    assert "may host a group session here" in refused and f"<@&{hosts.id}>" in refused
    started = await run(emu, "session start", start, host, CHANNEL_ID)
    assert "Session started in" in started
    (thread,) = [t for t in emu.threads(CHANNEL_ID) if t.type == 11]
    thread_id = thread.id
    session = await store_of(atelier).running_in(thread_id)
    assert session is not None and session.rounds == 2 and session.thread_id == thread_id
    card = emu.messages(thread_id)[0]
    assert "Round 1 of 2" in card.content and "<t:" in card.content
    assert custom_ids(card) == [submit_id(session.id)]

    # Round 1: entries by command and by the card's form; one over the limit, one rejected.
    async def enter(user: EmuUser, prompt: str) -> str:
        return await run(emu, "submit", {"prompt": prompt}, user, thread_id)

    assert "received for round 1" in await enter(ann, "a red lighthouse at dawn")
    handle = await emu.click_button(card.id, submit_id(session.id), user=bob)
    await handle.wait_for_ack()
    assert handle.modal is not None
    form = await emu.submit_modal(handle, {"prompt": "a blue lighthouse at dawn"}, user=bob)
    assert "received for round 1" in (await reply(form)).content
    assert "received" in await enter(cat, "a green lighthouse at dawn")
    assert "received" in await enter(dan, "a kraken at dawn")
    assert "the most allowed" in await enter(ann, "a second one")
    assert "aspect 1:1 only" in await enter(cat, "a wide one --ar 16:9")

    # The host panel: a private thread only the host was added to, never the session thread.
    (panel_thread,) = [t for t in emu.threads(CHANNEL_ID) if t.id != thread_id]
    assert panel_thread.type == 12 and host in emu.thread_members(panel_thread.id)
    panels = await until(lambda: _ready(emu.messages(panel_thread.id, include_ephemeral=False), 4))
    entries = await store_of(atelier).entries(session.id, 1)
    by_member = {e.member_id: e for e in entries}
    for member in (ann, bob, cat):
        panel = next(p for p in panels if by_member[member.id].id in p.content)
        assert "Only the session's host" not in await click(
            emu, panel.id, panel_id("a", by_member[member.id].id), host
        )
    dan_panel = next(p for p in panels if by_member[dan.id].id in p.content)
    handle = await emu.click_button(dan_panel.id, button(dan_panel, "Reject"), user=host)
    await handle.wait_for_ack()
    rejected = await emu.submit_modal(handle, {"reason": "off theme"}, user=host)
    assert "rejected" in (await reply(rejected)).content
    assert (await store_of(atelier).entry(by_member[dan.id].id)).state is EntryState.REJECTED

    # Submissions close; the three approved entries generate and are posted, anonymously.
    await skip(atelier, clock, 61)
    await phase_is(atelier, session.id, SessionPhase.VOTE)
    posted = entry_messages(emu, thread_id)
    assert len(posted) == 3
    for message in posted:
        assert "anonymous entry" in message.content
        assert not any(f"<@{m}>" in message.content for m in members)
        # One image, not a grid: the single image's buttons (upscale, vary), no U1-U4.
        ids = custom_ids(message)
        assert len(message.attachments) == 1 and any(i.startswith("atl:1:us:") for i in ids)
        assert not any(i.startswith(("atl:1:u:", "atl:1:v:")) for i in ids), ids
    entry_of = {e.id: e for e in await store_of(atelier).entries(session.id, 1)}
    msg_of = {
        next(e for e in entry_of.values() if e.job_id and e.job_id in m.content).member_id: m
        for m in posted
    }

    def vote_on(owner: EmuUser, voter: EmuUser) -> Awaitable[str]:
        entry = by_member[owner.id]
        return click(emu, msg_of[owner.id].id, vote_id(entry.id), voter)

    assert "your own entry" in await vote_on(ann, ann)
    assert "Vote counted" in await vote_on(bob, ann)
    assert "Vote counted" in await vote_on(bob, dan)  # a rejected member still votes

    # The bot restarts in the middle of round 1's voting: the buttons still work.
    await atelier.restart(**FAST_LOOP)
    fired_before = list(runner_of(atelier).fired)
    assert "Vote counted" in await vote_on(bob, cat)
    assert "used your 1 vote" in await vote_on(ann, cat)
    assert "taken back" in await vote_on(bob, cat)
    assert "Vote counted" in await vote_on(ann, cat)  # cat changed their vote to ann
    assert "Vote counted" in await vote_on(cat, bob)

    # Voting closes: round 1's board (bob 2, then ann and cat 1 each, ann entered first).
    await skip(atelier, clock, 61)
    board1 = await emu.wait_for_message(
        lambda m: "Round 1 of 2" in m.content and bool(m.attachments), channel_id=thread_id
    )
    lines = board1.content.splitlines()
    assert lines[1].startswith("1. Bob: 2 vote(s)"), board1.content
    assert lines[2].startswith("2. Ann: 1 vote(s)") and lines[3].startswith("3. Cat: 1 vote(s)")
    assert "earlier entry" in board1.content
    session = await phase_is(atelier, session.id, SessionPhase.SUBMIT)
    assert session.round == 2
    # Round 1 is over: its entries name their authors now, and take no more votes.
    round1 = dict(msg_of)
    for member_id, message in round1.items():
        await emu.wait_for_message(
            partial(_revealed, message.id, member_id), channel_id=thread_id, timeout=30
        )
        assert vote_id(by_member[member_id].id) not in custom_ids(emu.message(message.id))

    # Round 2: two entries, a tie that goes to the earlier one.
    assert "received for round 2" in await enter(cat, "a lighthouse at dusk")
    assert "received for round 2" in await enter(ann, "another lighthouse at dusk")
    panels = await until(lambda: _ready(emu.messages(panel_thread.id, include_ephemeral=False), 6))
    entries2 = await store_of(atelier).entries(session.id, 2)
    by_member = {e.member_id: e for e in entries2}
    for member in (cat, ann):
        panel = next(p for p in panels if by_member[member.id].id in p.content)
        await click(emu, panel.id, panel_id("a", by_member[member.id].id), host)
    await skip(atelier, clock, 61)
    await phase_is(atelier, session.id, SessionPhase.VOTE)
    posted = await until(lambda: _ready(entry_messages(emu, thread_id), 2))  # round 1: voted
    entries2 = await store_of(atelier).entries(session.id, 2)
    job_to_member = {e.job_id: e.member_id for e in entries2}
    msg_of = {job_to_member[j]: m for m in posted for j in job_to_member if j and j in m.content}
    assert set(msg_of) == {cat.id, ann.id}, ([m.content for m in posted], job_to_member)
    assert "Vote counted" in await vote_on(cat, bob)
    assert "Vote counted" in await vote_on(ann, dan)
    await skip(atelier, clock, 61)

    # The end: round 2's board, the best-of with links to every entry, the thread closed.
    best = await emu.wait_for_message(
        lambda m: "Best of lighthouses" in m.content and bool(m.attachments),
        channel_id=thread_id,
    )
    board2 = next(
        m for m in emu.messages(thread_id) if "Round 2 of 2" in m.content and m.attachments
    )
    assert board2.content.splitlines()[1].startswith("1. Cat: 1 vote(s)")  # the earlier entry
    assert "Round 1 (dawn): Bob" in best.content and "Round 2 (dusk): Cat" in best.content
    assert best.content.count("https://discord.com/channels/") == 5
    await until(lambda: _true(emu.thread(thread_id).archived and emu.thread(thread_id).locked))
    session = await store_of(atelier).get(session.id)
    assert session.status is SessionStatus.ENDED
    assert "Ended after round 2 of 2" in emu.message(card.id).content
    assert custom_ids(emu.message(card.id)) == []

    # Every timer fired exactly once, across the two bot processes.
    fired = fired_before + runner_of(atelier).fired
    assert len(fired) == len(set(fired))
    timers = await store_of(atelier).timers.of_subject(session.id)
    assert all(t.fired_at is not None for t in timers)
    kinds = sorted((t.kind, t.round) for t in timers)
    assert kinds == sorted(
        [(SessionTimer.ROUND_END.value, r) for r in (1, 2)]
        + [(SessionTimer.VOTING_END.value, r) for r in (1, 2)]
    )

    # Authors were never named in the thread before their round's board; every entry named
    # its author once its round was over.
    for message in emu.messages(thread_id, include_ephemeral=False):
        if message.attachments and "vote(s)" in message.content:
            continue  # a board: its round is over
        shown: list[Any] = [*message.versions, message]
        voting = [v for v in message.versions if "atl:1:sv:" in str(v.components)]
        if voting:  # an entry: anonymous while it took votes, named once its round was over
            shown = voting
            assert any(f"<@{m}>" in message.content for m in members), message.content
        for version in shown:
            content = getattr(version, "content", "")
            assert not any(f"<@{m}>" in content for m in members), content
            assert not any(
                re.search(rf"\b{n}\b", content, re.IGNORECASE) for n in members.values()
            ), content

    # The pool adds up: nothing reserved is left, and the quota ledger balances.
    pool = await store_of(atelier).pool(session.id)
    assert pool is not None and pool.reserved == 0
    assert abs(pool.spent + pool.left - pool.pool) < 0.01 and pool.spent > 0
    assert (await audit(store_of(atelier).db)).ok
    target = os.environ.get("ATELIER_TEST_SCREENSHOT_DIR")
    if target:
        (Path(target) / "session-board.png").write_bytes(board1.attachments[0].data)
    emu.assert_no_violations()


def _ready(messages: list[StoredMessage], count: int) -> Awaitable[list[StoredMessage] | None]:
    async def value() -> list[StoredMessage] | None:
        return messages if len(messages) >= count else None

    return value()


def _true(value: bool) -> Awaitable[bool]:
    async def wrapped() -> bool:
        return value

    return wrapped()


async def test_hostile_session_inputs(atelier: Atelier, emu: DiscordEmulator) -> None:
    """Forged ids, another server's session, DMs, members without rights, votes out of time."""
    await atelier.start(**FAST_LOOP)
    mod = emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=MANAGE_MESSAGES)])
    host = emu.make_user(name="host", roles=[emu.make_role("ev", permissions=MANAGE_EVENTS)])
    member = emu.make_user(name="member")
    assert "Manage Events" in await run(emu, "session start", {"theme": "x"}, member, CHANNEL_ID)
    too_many = await run(
        emu, "session start", {"theme": "x", "rounds": 2, "themes": "a; b; c"}, host, CHANNEL_ID
    )
    assert "one theme per round" in too_many
    bad_aspect = await run(emu, "session start", {"theme": "x", "aspect": "wide"}, host, CHANNEL_ID)
    assert "aspect" in bad_aspect
    assert "Session started" in await run(emu, "session start", {"theme": "x"}, host, CHANNEL_ID)
    assert "already running" in await run(emu, "session start", {"theme": "y"}, host, CHANNEL_ID)
    (thread,) = emu.threads(CHANNEL_ID)
    session = await store_of(atelier).running_in(thread.id)
    assert session is not None
    card = emu.messages(thread.id)[0]
    assert "no group session running here" in await run(
        emu, "submit", {"prompt": "cat"}, member, 700_000_000_000_000_002
    )
    assert "only the session's host" in await run(emu, "session pause", {}, member, thread.id)
    assert "paused" in await run(emu, "session pause", {}, mod, thread.id)
    assert "paused" in await run(emu, "submit", {"prompt": "cat"}, member, thread.id)
    assert "runs again" in await run(emu, "session resume", {}, host, thread.id)
    # Forged custom_ids: on a message of ours, the router answers every one.
    for forged in ("atl:1:sv:short", "atl:1:sp:x:" + "a" * 12, "atl:1:ss:" + "u" * 12):
        emu.message(card.id).components[0]["components"][0]["custom_id"] = forged
        answered = await click(emu, card.id, forged, member)
        assert "not made by this version" in answered or "do not know" in answered
    # Another server's session: the same id, clicked from elsewhere, is refused.
    other = emu.add_guild(OTHER_GUILD, [OTHER_GUILD_CHANNEL])
    stranger = emu.make_user(name="stranger", guild_id=other.id)
    form = emu.submit_form(
        f"atl:1:se:{session.id}", {"prompt": "cat"}, user=stranger, channel_id=OTHER_GUILD_CHANNEL
    )
    assert "do not know here" in (await reply(form)).content
    dm_form = emu.submit_form(f"atl:1:se:{session.id}", {"prompt": "cat"}, user=member, dm=True)
    assert "do not know here" in (await reply(dm_form)).content
    # A vote outside voting.
    assert "received" in await run(emu, "submit", {"prompt": "a cat"}, member, thread.id)
    (entry,) = await store_of(atelier).entries(session.id)
    (posted,) = await until(lambda: _ready(entry_messages(emu, thread.id), 1))
    assert "voting is not open" in await click(emu, posted.id, vote_id(entry.id), mod)
    assert "only the session's host" in await run(emu, "session end", {}, member, thread.id)
    assert "ended" in await run(emu, "session end", {}, host, thread.id)
    assert session.guild_id == GUILD_ID


async def test_host_controls_and_a_panel_in_the_review_channel(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    """Extend, skip, remove an entry and a participant (audit-logged); with a review channel the
    panel goes there, and a moderator decides there."""
    clock = SkipClock()
    atelier.clock = clock
    await atelier.start(**FAST_LOOP)
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=MANAGE_SERVER)])
    mod = emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=MANAGE_MESSAGES)])
    host = emu.make_user(name="host", roles=[emu.make_role("ev", permissions=MANAGE_EVENTS)])
    ann, bob = emu.make_user(name="ann"), emu.make_user(name="bob")
    mods_channel = emu.guild().channels[OTHER_CHANNEL_ID]
    await say(emu, "settings server", {"review_channel": mods_channel}, admin)
    # The priority lane is the server's: a moderator may not set it, an admin may.
    lane = {"session_lane_minutes": 2}
    assert "only server admins" in await say(emu, "settings server", lane, mod)
    assert "last 2 minute(s)" in await say(emu, "settings server", lane, admin)
    start = {"theme": "boats", "approval": True, "round_minutes": 5, "entries_per_member": 2}
    assert "Session started" in await run(emu, "session start", start, host, CHANNEL_ID)
    assert [t.type for t in emu.threads(CHANNEL_ID)] == [11], "no private panel thread"
    (thread,) = emu.threads(CHANNEL_ID)
    session = await store_of(atelier).running_in(thread.id)
    assert session is not None and session.lane_seconds == 120
    card = await emu.wait_for_message(lambda m: "Group session" in m.content, channel_id=thread.id)
    assert "jump the queue in the round's last 2 min" in card.content
    # The first panel's post fails (Discord answers 503, which discord.py does not retry):
    # the sessions loop posts it once the entry has waited PANEL_GRACE without one.
    emu.inject_failures(
        "create_message",
        status=503,
        count=1,
        predicate=lambda r: r.params.get("channel_id") == str(OTHER_CHANNEL_ID),
    )
    for user, prompt in ((ann, "a boat"), (ann, "a ship"), (bob, "a raft")):
        assert "received" in await run(emu, "submit", {"prompt": prompt}, user, thread.id)
    assert len(emu.messages(OTHER_CHANNEL_ID, include_ephemeral=False)) == 2
    clock.skip(PANEL_GRACE.total_seconds())
    await runner_of(atelier).wait_passes(2)
    panels = await until(lambda: _ready(emu.messages(OTHER_CHANNEL_ID, include_ephemeral=False), 3))
    assert not any(
        m.channel_id == thread.id and "Approve" in str(m.components) for m in emu.messages()
    )
    for entry in await store_of(atelier).entries(session.id):
        panel = next(p for p in panels if entry.id in p.content)
        assert "approved" in await click(emu, panel.id, panel_id("a", entry.id), mod)
    ann_ship, bob_raft = (await store_of(atelier).entries(session.id))[1:]

    before = await store_of(atelier).get(session.id)
    assert "more minute" in await run(emu, "session extend", {"minutes": 3}, host, thread.id)
    after = await store_of(atelier).get(session.id)
    assert before.phase_ends_at and after.phase_ends_at
    assert after.phase_ends_at - before.phase_ends_at == timedelta(minutes=3)
    assert "removed" in await run(
        emu,
        "session remove_entry",
        {"entry": ann_ship.id, "reason": "a duplicate"},
        host,
        thread.id,
    )
    assert (await store_of(atelier).entry(ann_ship.id)).state is EntryState.REMOVED
    assert "removed from the session" in await run(
        emu, "session remove_member", {"member": bob}, mod, thread.id
    )
    assert (await store_of(atelier).entry(bob_raft.id)).state is EntryState.REMOVED
    assert "the host removed you" in await run(emu, "submit", {"prompt": "x"}, bob, thread.id)
    assert "Submissions are closed" in await run(emu, "session skip", {}, host, thread.id)
    await phase_is(atelier, session.id, SessionPhase.VOTE)
    assert "ended" in await run(emu, "session end", {}, host, thread.id)
    await emu.wait_for_message(
        lambda m: "Best of boats" in m.content and bool(m.attachments), channel_id=thread.id
    )
    log = await run(emu, "modlog", {}, mod, CHANNEL_ID)
    assert "removed the session entry" in log and "a duplicate" in log, log
    assert "removed from a group session" in log and "started a group session" in log


def _revealed(message_id: int, member_id: int, message: StoredMessage) -> bool:
    return message.id == message_id and f"<@{member_id}>" in message.content
