"""``/session mine`` end to end, through the Discord emulator with the tiny model: in an
anonymous session with approval on, a member sees their pending entry wait for the host, is
told by DM when it is approved, and follows it to its post in the thread; a rejected member
sees the host's reason; neither sees the other's entry; a member the host removed may still
look; and the command is refused in DMs and in a channel without a session."""

from __future__ import annotations

from bot.devtools.emulator import DiscordEmulator
from bot.devtools.emulator.models import EmuUser, StoredMessage
from bot.session_ids import panel_id
from storage.types import EntryView, SessionPhase
from tests.bot.conftest import CHANNEL_ID, GUILD_ID, OTHER_CHANNEL_ID, Atelier
from tests.bot.test_moderation_e2e import button
from tests.bot.test_sessions_e2e import (
    FAST_LOOP,
    MANAGE_EVENTS,
    SkipClock,
    click,
    entry_messages,
    phase_is,
    reply,
    run,
    skip,
    store_of,
    until,
)


async def test_a_member_follows_their_own_entries_with_session_mine(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    clock = SkipClock()
    atelier.clock = clock
    discord = atelier.settings().discord.model_copy(update={"guild_id": None})
    await atelier.start(discord=discord, **FAST_LOOP)  # global commands: usable in DMs too
    host = emu.make_user(name="host", roles=[emu.make_role("ev", permissions=MANAGE_EVENTS)])
    ann, bob = emu.make_user(name="ann"), emu.make_user(name="bob")

    async def mine(user: EmuUser, channel: int) -> str:
        return await run(emu, "session mine", {}, user, channel)

    # Refused, and nothing else, where there is no session of this server.
    in_dms = await reply(await emu.send_slash_command("session mine", {}, user=ann, dm=True))
    assert "group sessions run in servers" in in_dms.content and "thread" in in_dms.content
    assert "there is no group session here" in await mine(ann, CHANNEL_ID)

    start = {"theme": "boats", "approval": True, "anonymous": True, "round_minutes": 5}
    assert "Session started" in await run(emu, "session start", start, host, CHANNEL_ID)
    (thread,) = [t for t in emu.threads(CHANNEL_ID) if t.type == 11]
    session = await store_of(atelier).running_in(thread.id)
    assert session is not None
    empty = await mine(ann, thread.id)
    assert "You have no entries yet" in empty and "/submit prompt:" in empty
    assert "there is no group session here" in await mine(ann, OTHER_CHANNEL_ID)

    received = await run(emu, "submit", {"prompt": "a red sailboat"}, ann, thread.id)
    assert "received for round 1" in received and "`/session mine`" in received
    assert "received" in await run(emu, "submit", {"prompt": "a blue raft"}, bob, thread.id)
    entries = await store_of(atelier).entries(session.id)
    ann_entry = next(e for e in entries if e.member_id == ann.id)
    bob_entry = next(e for e in entries if e.member_id == bob.id)

    # Pending: the member sees it wait for the host (their own, though the session is
    # anonymous), and nobody else's.
    waiting = await mine(ann, thread.id)
    assert f"`{ann_entry.id}` a red sailboat: waiting for the host's approval" in waiting
    assert "**Round 1** (boats)" in waiting
    assert_not_listed(waiting, bob_entry)
    assert f"`{ann_entry.id}`" in await mine(ann, CHANNEL_ID)  # the parent channel works too

    # The host decides on the panel (a private thread): ann approved, bob rejected.
    panels = await until(lambda: _panels(emu, thread.id, 2))
    ann_panel = next(p for p in panels if ann_entry.id in p.content)
    assert "approved" in await click(emu, ann_panel.id, panel_id("a", ann_entry.id), host)
    bob_panel = next(p for p in panels if bob_entry.id in p.content)
    handle = await emu.click_button(bob_panel.id, button(bob_panel, "Reject"), user=host)
    await handle.wait_for_ack()
    rejected = await emu.submit_modal(handle, {"reason": "not a boat"}, user=host)
    assert "rejected" in (await reply(rejected)).content

    approved_dm = await _dm(emu, ann, f"`{ann_entry.id}`")
    assert "was approved: it is queued and will be posted in" in approved_dm.content
    assert f"<#{thread.id}>" in approved_dm.content and "**boats**" in approved_dm.content
    rejected_dm = await _dm(emu, bob, f"`{bob_entry.id}`")
    assert "was rejected by the host: not a boat" in rejected_dm.content
    for member in (ann, bob):  # one notice each (the DM's other message: ann's /session mine)
        assert len([m for m in emu.dm_messages(member) if not m.ephemeral]) == 1

    # Approved: queued, generating, then posted with a link to its message in the thread.
    now = await mine(ann, thread.id)
    assert any(f"`{ann_entry.id}` a red sailboat: {s}" in now for s in _ON_ITS_WAY), now

    async def posted() -> str | None:
        text = await mine(ann, thread.id)
        return text if "posted: " in text else None

    text = await until(posted)
    (message,) = await until(lambda: _entries_posted(emu, thread.id, 1))
    link = f"https://discord.com/channels/{GUILD_ID}/{thread.id}/{message.id}"
    assert f"`{ann_entry.id}` a red sailboat: posted: {link}" in text
    assert_not_listed(text, bob_entry)

    # The rejected member sees the host's reason, and not ann's entry.
    bobs = await mine(bob, thread.id)
    assert f"`{bob_entry.id}` a blue raft: rejected by the host: not a boat" in bobs
    assert_not_listed(bobs, ann_entry)

    # Voting: the member's votes used of those allowed.
    await skip(atelier, clock, 301)
    await phase_is(atelier, session.id, SessionPhase.VOTE)
    assert "You use 0 of your 1 vote(s) this round." in await mine(ann, thread.id)

    # A member the host removed may still look at their own entries.
    assert "removed from the session" in await run(
        emu, "session remove_member", {"member": bob}, host, thread.id
    )
    still = await mine(bob, thread.id)
    assert f"`{bob_entry.id}` a blue raft: rejected by the host" in still
    assert_not_listed(still, ann_entry)
    emu.assert_no_violations()


#: What an approved entry says on its way to the thread.
_ON_ITS_WAY = ("approved: queued", "generating", "generated; being posted", "posted: ")


def assert_not_listed(text: str, entry: EntryView) -> None:
    assert entry.id not in text and entry.prompt not in text, text


async def _panels(emu: DiscordEmulator, thread_id: int, count: int) -> list[StoredMessage] | None:
    """The host panel's messages (in the private panel thread, never the session's)."""
    panels = [
        m
        for m in emu.messages(include_ephemeral=False)
        if m.channel_id != thread_id and "atl:1:sp:" in str(m.components)
    ]
    return panels if len(panels) >= count else None


async def _entries_posted(
    emu: DiscordEmulator, thread_id: int, count: int
) -> list[StoredMessage] | None:
    found = entry_messages(emu, thread_id)
    return found if len(found) >= count else None


async def _dm(emu: DiscordEmulator, user: EmuUser, needle: str) -> StoredMessage:
    channel_id = emu.dm_channel(user).id
    return await emu.wait_for_message(
        lambda m: m.channel_id == channel_id and needle in m.content, timeout=30
    )
