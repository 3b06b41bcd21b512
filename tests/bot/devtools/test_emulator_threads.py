"""Threads in the emulator (public type 11, private type 12), driven through the real
discord.py client: starting them, posting and editing in them, their members, archiving and
locking, Discord's thread permissions and errors, the THREAD_* gateway events discord.py's
cache follows, active threads in GUILD_CREATE after a restart, and interactions from inside
a thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from bot.devtools.emulator import DiscordEmulator, EmulatorUsageError, EmuUser
from bot.devtools.emulator.harness import running_client

CHANNEL, OTHER = 1_100_000_000_000_000_201, 1_100_000_000_000_000_202

SEND_MESSAGES = 1 << 11
MANAGE_THREADS = 1 << 34
CREATE_PUBLIC_THREADS = 1 << 35
CREATE_PRIVATE_THREADS = 1 << 36
SEND_MESSAGES_IN_THREADS = 1 << 38
GUILD_MEMBERS_INTENT = 1 << 1


class ThreadBot(discord.Client):
    """A command tree and a log of command errors."""

    def __init__(self, *, intents: discord.Intents | None = None) -> None:
        super().__init__(intents=intents or discord.Intents.default(), guild_ready_timeout=0.01)
        self.tree: app_commands.CommandTree[ThreadBot] = app_commands.CommandTree(self)
        self.tree.error(self._record_error)
        self.command_errors: list[BaseException] = []

    async def _record_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        self.command_errors.append(error)

    def text_channel(self, channel_id: int = CHANNEL) -> discord.TextChannel:
        channel = self.get_channel(channel_id)
        assert isinstance(channel, discord.TextChannel)
        return channel

    def guild(self) -> discord.Guild:
        [guild] = self.guilds
        return guild


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator(
        channel_ids=(CHANNEL, OTHER),
        heartbeat_interval=0.2,
        allowed_privileged_intents=GUILD_MEMBERS_INTENT,
    ) as emulator:
        yield emulator


def moderate_threads(emu: DiscordEmulator, user: EmuUser) -> None:
    """Give ``user`` (the bot, before it connects) a role with Manage Threads."""
    role = emu.make_role("thread mod", permissions=MANAGE_THREADS)
    emu.set_roles(user, [role])


async def call(emu: DiscordEmulator, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A raw REST call with the bot token, for bodies discord.py would not send."""
    headers = {"Authorization": f"Bot {emu.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, emu.api_base_url + path, json=body, headers=headers) as answer,
    ):
        data = await answer.json() if answer.content_type == "application/json" else None
        return answer.status, data


async def settle(future: asyncio.Future[Any]) -> Any:
    async with asyncio.timeout(5.0):
        return await future


# -- the bot's own threads -------------------------------------------------------------------


async def test_bot_starts_threads_posts_and_closes_them(emu: DiscordEmulator) -> None:
    moderate_threads(emu, emu.bot_user)
    alice = emu.make_user(name="alice")
    bot = ThreadBot()
    async with running_client(bot, emu):
        channel = bot.text_channel()
        card = await channel.send("Session 1 starts here")
        created = asyncio.ensure_future(bot.wait_for("thread_create"))
        thread = await card.create_thread(name="Session 1", auto_archive_duration=60)
        assert thread.id == card.id, "a thread from a message shares its id"
        assert (thread.type, thread.parent_id, thread.owner_id) == (
            discord.ChannelType.public_thread,
            CHANNEL,
            emu.bot_user.id,
        )
        assert (await settle(created)).id == thread.id
        assert bot.guild().get_thread(thread.id) is not None
        assert isinstance(bot.get_channel(thread.id), discord.Thread)
        [create] = emu.frames(t="THREAD_CREATE")
        assert create.d["newly_created"] is True and create.d["type"] == 11
        assert create.d["thread_metadata"]["auto_archive_duration"] == 60
        starter = emu.message(card.id)
        assert starter.thread is not None and starter.thread.id == thread.id
        update = emu.frames(t="MESSAGE_UPDATE")[-1].d
        assert update["thread"]["id"] == str(thread.id) and update["flags"] & (1 << 5)
        members_update = emu.frames(t="THREAD_MEMBERS_UPDATE")[-1].d
        assert members_update["added_members"][0]["user_id"] == str(emu.bot_user.id)

        entry = await thread.send("entry 1")
        assert emu.message(entry.id).channel_id == thread.id
        await entry.edit(content="entry 1 (edited)")
        stored = await emu.wait_for_message(
            lambda m: m.content == "entry 1 (edited)", channel_id=thread.id
        )
        assert stored.id == entry.id and len(stored.versions) == 2
        assert emu.thread(thread.id).message_count == 1
        assert [m.id for m in emu.messages(thread.id)] == [entry.id]

        # A private thread without a message: the host panel.
        panel = await channel.create_thread(
            name="Host panel", type=discord.ChannelType.private_thread, invitable=False
        )
        assert (panel.type, panel.invitable) == (discord.ChannelType.private_thread, False)
        await panel.add_user(discord.Object(alice.id))
        assert emu.thread_members(panel.id) == [emu.bot_user, alice]
        fetched = await panel.fetch_members()
        assert {m.id for m in fetched} == {emu.bot_user.id, alice.id}
        assert (await panel.fetch_member(alice.id)).thread_id == panel.id
        with pytest.raises(discord.NotFound):
            await panel.fetch_member(emu.default_user.id)
        await panel.remove_user(discord.Object(alice.id))
        assert emu.thread_members(panel.id) == [emu.bot_user]
        fetched_channel = await bot.fetch_channel(panel.id)
        assert isinstance(fetched_channel, discord.Thread)
        assert fetched_channel.me is not None, "GET /channels/{id} carries the bot's membership"

        # The end of the session: archive and lock in one edit.
        updated = asyncio.ensure_future(bot.wait_for("thread_update"))
        closed = await thread.edit(archived=True, locked=True)
        assert (closed.archived, closed.locked) == (True, True)
        before, after = await settle(updated)
        assert (before.archived, after.archived, after.locked) == (False, True, True)
        assert bot.guild().get_thread(thread.id) is None, "discord.py drops archived threads"
        assert emu.thread(thread.id).archived and emu.thread(thread.id).locked

        deleted = asyncio.ensure_future(bot.wait_for("thread_delete"))
        await panel.delete()
        assert (await settle(deleted)).id == panel.id
        with pytest.raises(discord.NotFound):
            await bot.fetch_channel(panel.id)
    assert emu.threads(CHANNEL) == [emu.thread(thread.id)]
    emu.assert_no_violations(ignore=["unknown_member", "unknown_channel"])


async def test_members_post_and_are_refused_in_a_locked_thread(emu: DiscordEmulator) -> None:
    moderate_threads(emu, emu.bot_user)
    alice = emu.make_user(name="alice")
    mod_role = emu.make_role("mods", permissions=MANAGE_THREADS)
    mod = emu.make_user(name="mod", roles=[mod_role])
    bot = ThreadBot()
    async with running_client(bot, emu):
        thread = await bot.text_channel().create_thread(
            name="Session", type=discord.ChannelType.public_thread
        )
        await emu.wait_for_frame(t="THREAD_CREATE")
        seen = asyncio.ensure_future(bot.wait_for("message"))
        post = emu.post_message(thread.id, content="my entry", author=alice)
        message = await settle(seen)
        assert isinstance(message.channel, discord.Thread) and message.channel.id == thread.id
        assert message.id == post.id
        assert alice in emu.thread_members(thread.id), "posting joins the thread"

        await thread.edit(locked=True)
        await emu.wait_for_frame(t="THREAD_UPDATE")
        with pytest.raises(EmulatorUsageError, match="50083"):
            emu.post_message(thread.id, content="too late", author=alice)
        emu.post_message(thread.id, content="moderators may", author=mod)
        await thread.send("so may the bot, with Manage Threads")

        # An archived (unlocked) thread comes back when a member posts in it.
        archived = asyncio.ensure_future(bot.wait_for("thread_update"))
        await thread.edit(locked=False, archived=True)
        await settle(archived)
        assert bot.guild().get_thread(thread.id) is None
        mark = emu.frames()[-1].seq
        back = asyncio.ensure_future(bot.wait_for("thread_join"))
        emu.post_message(thread.id, content="bump", author=alice)
        assert (await settle(back)).id == thread.id
        unarchived = emu.frames(t="THREAD_UPDATE", since=mark)[0].d
        assert unarchived["thread_metadata"]["archived"] is False
        assert emu.frames(t="THREAD_MEMBER_UPDATE", since=mark), "sent to members on unarchive"
        assert bot.guild().get_thread(thread.id) is not None
        emu.update_thread(thread.id, archived=True)
        with pytest.raises(EmulatorUsageError, match="archived"):
            emu.add_thread_member(thread.id, mod)
    emu.assert_no_violations()


# -- Discord's rules ---------------------------------------------------------------------------


async def test_thread_permissions_are_enforced(emu: DiscordEmulator) -> None:
    bot = ThreadBot()
    everyone = emu.guild().everyone
    async with running_client(bot, emu):
        channel = bot.text_channel()
        card = await channel.send("card")
        thread = await card.create_thread(name="allowed")

        # Send Messages has no effect in threads; Send Messages in Threads does.
        emu.set_overwrite(CHANNEL, everyone, deny=SEND_MESSAGES)
        await thread.send("still fine")
        emu.set_overwrite(CHANNEL, everyone, deny=SEND_MESSAGES_IN_THREADS)
        await channel.send("and the channel is fine")
        with pytest.raises(discord.Forbidden) as refused:
            await thread.send("refused")
        assert (refused.value.status, refused.value.code) == (403, 50013)

        emu.set_overwrite(CHANNEL, everyone, deny=CREATE_PUBLIC_THREADS | CREATE_PRIVATE_THREADS)
        other = await channel.send("another card")
        for attempt in (
            other.create_thread(name="no"),
            channel.create_thread(name="no", type=discord.ChannelType.public_thread),
            channel.create_thread(name="no", type=discord.ChannelType.private_thread),
        ):
            with pytest.raises(discord.Forbidden) as refused:
                await attempt
            assert refused.value.code == 50013
        emu.remove_overwrite(CHANNEL, everyone)

        # Locking and deleting need Manage Threads; the creator may rename and archive.
        with pytest.raises(discord.Forbidden):
            await thread.edit(locked=True)
        with pytest.raises(discord.Forbidden):
            await thread.delete()
        renamed = await thread.edit(name="renamed by its creator", archived=True)
        assert (renamed.name, renamed.archived) == ("renamed by its creator", True)
        status, body = await call(emu, "PATCH", f"/channels/{thread.id}", {"name": "x"})
        assert (status, body["code"]) == (400, 50083), "an archived thread takes no changes"
        with pytest.raises(discord.HTTPException) as archived:
            await thread.join()
        assert archived.value.code == 50083

        # A private thread the bot is not in, without Manage Threads, is invisible to it.
        hidden = emu.create_thread(CHANNEL, "members only", private=True)
        status, body = await call(emu, "POST", f"/channels/{hidden.id}/messages", {"content": "x"})
        assert (status, body["code"]) == (403, 50001)
        assert not emu.frames(
            direction="sent",
            predicate=lambda f: isinstance(f.d, dict) and f.d.get("id") == str(hidden.id),
        ), "no THREAD_CREATE for a private thread the bot cannot see"
    kinds = sorted({v.kind for v in emu.violations})
    assert kinds == ["missing_access", "missing_permissions", "thread_archived"]


async def test_bad_thread_bodies_get_discords_form_errors(emu: DiscordEmulator) -> None:
    bot = ThreadBot()
    async with running_client(bot, emu):
        channel = bot.text_channel()
        with pytest.raises(discord.HTTPException) as too_long:
            await channel.create_thread(name="x" * 101, type=discord.ChannelType.public_thread)
        assert (too_long.value.status, too_long.value.code) == (400, 50035)
        card = await channel.send("card")
        threads = f"/channels/{CHANNEL}/threads"
        status, body = await call(
            emu, "POST", threads, {"name": "", "auto_archive_duration": 30, "type": 0}
        )
        assert (status, body["code"], body["message"]) == (400, 50035, "Invalid Form Body")
        assert body["errors"] == {
            "name": {
                "_errors": [
                    {
                        "code": "BASE_TYPE_BAD_LENGTH",
                        "message": "Must be between 1 and 100 in length.",
                    }
                ]
            },
            "auto_archive_duration": {
                "_errors": [
                    {
                        "code": "BASE_TYPE_CHOICES",
                        "message": "Value must be one of {60, 1440, 4320, 10080}.",
                    }
                ]
            },
            "type": {
                "_errors": [
                    {"code": "BASE_TYPE_CHOICES", "message": "Value must be one of {11, 12}."}
                ]
            },
        }
        status, body = await call(emu, "POST", threads, {"type": 11})
        assert body["errors"]["name"]["_errors"][0]["code"] == "BASE_TYPE_REQUIRED"

        from_card = f"/channels/{CHANNEL}/messages/{card.id}/threads"
        assert (await call(emu, "POST", from_card, {"name": "first"}))[0] == 201
        status, body = await call(emu, "POST", from_card, {"name": "second"})
        assert (status, body["code"]) == (400, 160004)
        status, body = await call(emu, "POST", f"/channels/{card.id}/threads", {"name": "nested"})
        assert (status, body["code"]) == (400, 50024)
        status, body = await call(
            emu, "PATCH", f"/channels/{card.id}", {"auto_archive_duration": 5}
        )
        assert (status, body["code"]) == (400, 50035)
    counts: dict[str, int] = {}
    for violation in emu.violations:
        counts[violation.kind] = counts.get(violation.kind, 0) + 1
    assert counts == {"invalid_thread": 4, "thread_already_created": 1, "wrong_channel_type": 1}


# -- the gateway -------------------------------------------------------------------------------


async def test_member_threads_reach_the_cache_and_survive_a_restart(emu: DiscordEmulator) -> None:
    alice = emu.make_user(name="alice")
    intents = discord.Intents.default()
    intents.members = True
    bot = ThreadBot(intents=intents)
    async with running_client(bot, emu):
        created = asyncio.ensure_future(bot.wait_for("thread_create"))
        public = emu.create_thread(CHANNEL, "alice's session", owner=alice)
        thread = await settle(created)
        assert (thread.id, thread.owner_id, thread.type) == (
            public.id,
            alice.id,
            discord.ChannelType.public_thread,
        )
        private = emu.create_thread(CHANNEL, "alice's secret", private=True, owner=alice)
        # The bot cannot see the private thread until it is added to it.
        joined = asyncio.ensure_future(bot.wait_for("thread_join"))
        emu.add_thread_member(private.id, emu.bot_user)
        assert (await settle(joined)).id == private.id
        cached = bot.guild().get_thread(private.id)
        assert cached is not None and cached.me is not None
        member_joined = asyncio.ensure_future(bot.wait_for("thread_member_join"))
        bob = emu.make_user(name="bob")
        emu.add_thread_member(public.id, bob)
        assert (await settle(member_joined)).id == bob.id, "with the GUILD_MEMBERS intent"

        renamed = asyncio.ensure_future(bot.wait_for("thread_update"))
        emu.update_thread(public.id, name="renamed")
        assert (await settle(renamed))[1].name == "renamed"
        archived = emu.create_thread(CHANNEL, "old session", owner=alice)
        emu.update_thread(archived.id, archived=True)
        created = asyncio.ensure_future(
            bot.wait_for("thread_create", check=lambda t: t.name == "bot's")
        )
        own = await bot.text_channel().create_thread(
            name="bot's", type=discord.ChannelType.public_thread
        )
        await settle(created)
        hidden = emu.create_thread(OTHER, "not for the bot", private=True, owner=alice)
        active = {t.id for t in bot.guild().threads}
        assert active == {public.id, private.id, own.id}

    restarted = ThreadBot()
    mark = emu.frames()[-1].seq
    async with running_client(restarted, emu):
        [create] = [f.d for f in emu.frames(t="GUILD_CREATE", since=mark)]
        listed = {t["id"]: t for t in create["threads"]}
        assert set(listed) == {str(public.id), str(private.id), str(own.id)}
        assert listed[str(own.id)]["member"].keys() == {"join_timestamp", "flags"}
        assert "member" not in listed[str(public.id)]
        guild = restarted.guild()
        for thread_id in (public.id, private.id, own.id):
            found = guild.get_thread(thread_id)
            assert found is not None and found.parent_id == CHANNEL
        assert guild.get_thread(own.id).me is not None  # type: ignore[union-attr]
        assert guild.get_thread(archived.id) is None
        assert guild.get_thread(hidden.id) is None
        assert isinstance(restarted.get_channel(public.id), discord.Thread)
        listed_by_rest = await guild.active_threads()
        assert {t.id for t in listed_by_rest} == {public.id, private.id, own.id}
    emu.assert_no_violations()


# -- interactions from inside a thread ----------------------------------------------------------


class NameModal(discord.ui.Modal, title="Name your entry"):
    entry: discord.ui.TextInput[NameModal] = discord.ui.TextInput(label="Name", custom_id="name")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        assert isinstance(interaction.channel, discord.Thread)
        await interaction.response.send_message(f"named {self.entry.value}")


class CardView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Join", custom_id="join")
    async def join(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        channel = interaction.channel
        assert isinstance(channel, discord.Thread)
        await interaction.response.send_message(f"joined from {channel.parent_id}")

    @discord.ui.button(label="Name", custom_id="name")
    async def name(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await interaction.response.send_modal(NameModal())


async def test_interactions_from_inside_threads(emu: DiscordEmulator) -> None:
    alice = emu.make_user(name="alice")
    bob = emu.make_user(name="bob")
    bot = ThreadBot()
    seen: list[tuple[type, int | None, int | None, bool]] = []

    @bot.tree.command(name="submit", description="Submit an entry")
    async def submit(interaction: discord.Interaction) -> None:
        channel = interaction.channel
        seen.append(
            (
                type(channel),
                getattr(channel, "parent_id", None),
                interaction.channel_id,
                interaction.app_permissions.send_messages_in_threads,
            )
        )
        await interaction.response.send_message("entry card", view=CardView())

    async with running_client(bot, emu):
        await bot.tree.sync()
        thread = emu.create_thread(CHANNEL, "Session", owner=alice)
        await emu.wait_for_frame(t="THREAD_CREATE")
        handle = await emu.send_slash_command("submit", user=alice, channel_id=thread.id)
        card = await handle.wait_for_original()
        assert card.channel_id == thread.id, "the bot's reply lands in the thread"
        assert seen == [(discord.Thread, CHANNEL, thread.id, True)]
        payload = handle.payload
        assert (payload["channel_id"], payload["channel"]["type"]) == (str(thread.id), 11)
        assert payload["channel"]["parent_id"] == str(CHANNEL)
        assert int(payload["app_permissions"]) & SEND_MESSAGES_IN_THREADS

        click = await emu.click_button(card.id, "join", user=bob)
        reply = await click.wait_for_original()
        assert (reply.channel_id, reply.content) == (thread.id, f"joined from {CHANNEL}")
        assert click.payload["channel"]["parent_id"] == str(CHANNEL)

        opened = await emu.click_button(card.id, "name", user=bob)
        assert await opened.wait_for_ack() == 9
        submitted = await emu.submit_modal(opened, {"name": "sunset"})
        named = await submitted.wait_for_original()
        assert (named.channel_id, named.content) == (thread.id, "named sunset")
        assert submitted.payload["channel_id"] == str(thread.id)

        # A private thread the bot is not in: discord.py builds the Thread from the payload.
        secret = emu.create_thread(CHANNEL, "Host panel", private=True, owner=alice)
        hosted = await emu.send_slash_command("submit", user=alice, channel_id=secret.id)
        assert (await hosted.wait_for_original()).channel_id == secret.id
        assert seen[-1] == (discord.Thread, CHANNEL, secret.id, True)
        assert hosted.payload["channel"]["type"] == 12
        with pytest.raises(EmulatorUsageError, match="cannot see private thread"):
            await emu.send_slash_command("submit", user=bob, channel_id=secret.id)
        emu.update_thread(thread.id, archived=True)
        with pytest.raises(EmulatorUsageError, match="archived"):
            await emu.send_slash_command("submit", user=alice, channel_id=thread.id)
    assert bot.command_errors == []
    emu.assert_no_violations()


async def test_joining_leaving_and_deleting(emu: DiscordEmulator) -> None:
    alice = emu.make_user(name="alice")
    bot = ThreadBot()
    async with running_client(bot, emu):
        created = asyncio.ensure_future(bot.wait_for("thread_create"))
        public = emu.create_thread(CHANNEL, "open session", owner=alice)
        thread = await settle(created)
        assert thread.id == public.id and thread.me is None
        joined = asyncio.ensure_future(bot.wait_for("thread_join"))
        await thread.join()
        await settle(joined)
        assert emu.thread_members(public.id) == [alice, emu.bot_user]
        mark = emu.frames()[-1].seq
        left = asyncio.ensure_future(bot.wait_for("thread_remove"))
        await thread.leave()
        assert (await settle(left)).id == public.id
        [update] = [f.d for f in emu.frames(t="THREAD_MEMBERS_UPDATE", since=mark)]
        assert update["removed_member_ids"] == [str(emu.bot_user.id)]
        assert update["member_count"] == 1

        # Without Manage Threads the bot may not remove others from a public thread.
        with pytest.raises(discord.Forbidden):
            await thread.remove_user(discord.Object(alice.id))
        with pytest.raises(discord.NotFound):
            await thread.add_user(discord.Object(123))

        deleted = asyncio.ensure_future(bot.wait_for("thread_delete"))
        emu.delete_channel(public.id)
        assert (await settle(deleted)).id == public.id
        assert emu.threads() == []
        doomed = emu.create_thread(OTHER, "goes with its channel", owner=alice)
        gone = asyncio.ensure_future(bot.wait_for("guild_channel_delete"))
        emu.delete_channel(OTHER)
        await settle(gone)
        assert bot.guild().get_thread(doomed.id) is None and emu.threads() == []
        with pytest.raises(EmulatorUsageError, match="no overwrites"):
            emu.set_overwrite(emu.create_thread(CHANNEL, "t", owner=alice).id, alice)
    emu.assert_no_violations(ignore=["missing_permissions", "unknown_user"])
