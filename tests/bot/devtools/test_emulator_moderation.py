"""The emulator's moderation surface: age-restricted (NSFW) channels and MESSAGE commands
("Apps > Report" on a message), driven through the real discord.py client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from bot.devtools.emulator import DiscordEmulator, EmulatorUsageError
from bot.devtools.emulator.harness import running_client

SAFE, ADULT = 1_100_000_000_000_000_201, 1_100_000_000_000_000_202


class ModBot(discord.Client):
    """A command tree and a log of command errors, nothing else."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.01)
        self.tree: app_commands.CommandTree[ModBot] = app_commands.CommandTree(self)
        self.tree.error(self._record_error)
        self.command_errors: list[BaseException] = []

    async def _record_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        self.command_errors.append(error)

    def text_channel(self, channel_id: int) -> discord.TextChannel:
        channel = self.get_channel(channel_id)
        assert isinstance(channel, discord.TextChannel)
        return channel


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator(
        channel_ids=(SAFE, ADULT), nsfw_channel_ids=(ADULT,), heartbeat_interval=0.2
    ) as emulator:
        yield emulator


async def put_commands(emu: DiscordEmulator, commands: list[dict[str, Any]]) -> tuple[int, Any]:
    """A raw bulk overwrite, for definitions discord.py would not build."""
    url = f"{emu.api_base_url}/applications/{emu.application_id}/commands"
    headers = {"Authorization": f"Bot {emu.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.put(url, json=commands, headers=headers) as response,
    ):
        return response.status, await response.json()


async def settle(future: asyncio.Future[Any]) -> Any:
    async with asyncio.timeout(5.0):
        return await future


# -- age-restricted channels -----------------------------------------------------------------


async def test_channels_can_start_age_restricted(emu: DiscordEmulator) -> None:
    bot = ModBot()
    async with running_client(bot, emu):
        assert (bot.text_channel(SAFE).nsfw, bot.text_channel(ADULT).nsfw) == (False, True)
        joined = asyncio.ensure_future(bot.wait_for("guild_join"))
        emu.add_guild(42, [43, 44], nsfw_channel_ids=[44])
        guild = await settle(joined)
        assert [(c.id, c.nsfw) for c in guild.text_channels] == [(43, False), (44, True)]

    [create] = [f.d for f in emu.frames(t="GUILD_CREATE") if f.d["id"] == str(emu.guild_id)]
    assert {c["id"]: c["nsfw"] for c in create["channels"]} == {str(SAFE): False, str(ADULT): True}
    with pytest.raises(EmulatorUsageError, match="not among the channel_ids"):
        emu.add_guild(45, [46], nsfw_channel_ids=[47])
    emu.assert_no_violations()


async def test_set_nsfw_reaches_the_cache_and_interactions(emu: DiscordEmulator) -> None:
    """CHANNEL_UPDATE carries the flag to discord.py's cache, where ``interaction.channel``
    comes from; the interaction's own ``channel`` object carries it too."""
    bot = ModBot()

    @bot.tree.command(name="where", description="Says whether the channel is age-restricted")
    async def where(interaction: discord.Interaction) -> None:
        assert isinstance(interaction.channel, discord.TextChannel)
        await interaction.response.send_message(f"nsfw={interaction.channel.nsfw}")

    async with running_client(bot, emu):
        await bot.tree.sync()
        before = await emu.send_slash_command("where", channel_id=SAFE)
        assert (await before.wait_for_original()).content == "nsfw=False"

        updated = asyncio.ensure_future(bot.wait_for("guild_channel_update"))
        emu.set_nsfw(SAFE)
        old, new = await settle(updated)
        assert (old.nsfw, new.nsfw, bot.text_channel(SAFE).nsfw) == (False, True, True)
        after = await emu.send_slash_command("where", channel_id=SAFE)
        assert (await after.wait_for_original()).content == "nsfw=True"

        updated = asyncio.ensure_future(bot.wait_for("guild_channel_update"))
        emu.set_nsfw(SAFE, False)
        await settle(updated)
        assert bot.text_channel(SAFE).nsfw is False

    assert (before.payload["channel"]["nsfw"], after.payload["channel"]["nsfw"]) == (False, True)
    first, second = [f.d for f in emu.frames(t="CHANNEL_UPDATE")]
    assert (first["id"], first["guild_id"], first["nsfw"]) == (str(SAFE), str(emu.guild_id), True)
    assert first["name"] == "channel-0" and second["nsfw"] is False
    with pytest.raises(EmulatorUsageError, match="not a guild channel"):
        emu.set_nsfw(emu.dm_channel(emu.default_user).id)
    emu.assert_no_violations()


# -- MESSAGE commands ------------------------------------------------------------------------


async def test_context_menu_definitions_follow_discords_rules(emu: DiscordEmulator) -> None:
    status, body = await put_commands(
        emu,
        [
            {"type": 3, "name": "Report image"},
            {"type": 3, "name": "Save", "description": ""},
            {"type": 2, "name": "Show Profile"},
            {"type": 1, "name": "report", "description": "A slash command of the same name"},
        ],
    )
    assert status == 200
    assert [(c["type"], c["name"], c["description"]) for c in body] == [
        (3, "Report image", ""),
        (3, "Save", ""),
        (2, "Show Profile", ""),
        (1, "report", "A slash command of the same name"),
    ]

    status, body = await put_commands(
        emu,
        [
            {"type": 3, "name": "Report", "description": "Reports it"},
            {
                "type": 3,
                "name": "Flag",
                "options": [{"type": 3, "name": "why", "description": "w"}],
            },
            {"type": 3, "name": "x" * 33},
            {"type": 3, "name": "   "},
            {"type": 3, "name": "Report!"},
            {"type": 9, "name": "odd"},
            {"type": 3, "name": "Save"},
            {"type": 3, "name": "Save"},
        ],
    )
    assert (status, body["code"]) == (400, 50035)
    codes = {
        key: [e["code"] for field in errors.values() for e in field["_errors"]]
        for key, errors in body["errors"].items()
    }
    assert codes == {
        "0": ["APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION_INVALID"],
        "1": ["APPLICATION_COMMAND_CONTEXT_MENU_OPTIONS_INVALID"],
        "2": ["APPLICATION_COMMAND_INVALID_NAME"],
        "3": ["APPLICATION_COMMAND_INVALID_NAME"],
        "4": ["APPLICATION_COMMAND_INVALID_NAME"],
        "5": ["BASE_TYPE_CHOICES"],
        "7": ["APPLICATION_COMMANDS_DUPLICATE_NAME"],
    }
    # The failed overwrite changed nothing.
    assert [c["name"] for c in emu.registered_commands()][:2] == ["Report image", "Save"]

    too_many = [{"type": 3, "name": f"Action {n}"} for n in range(16)]
    status, body = await put_commands(emu, too_many)
    assert status == 400
    assert body["errors"]["_errors"][0]["code"] == "APPLICATION_COMMANDS_MAX_EXCEEDED"
    assert [v.kind for v in emu.violations] == ["invalid_command", "invalid_command"]


async def test_context_menu_gets_the_message_and_can_answer_with_a_modal(
    emu: DiscordEmulator,
) -> None:
    class ReportModal(discord.ui.Modal, title="Report this image"):
        reason: discord.ui.Label[Any] = discord.ui.Label(
            text="Why?", component=discord.ui.TextInput(custom_id="reason", max_length=200)
        )

        def __init__(self, message: discord.Message) -> None:
            super().__init__()
            self.message = message

        async def on_submit(self, interaction: discord.Interaction) -> None:
            assert isinstance(self.reason.component, discord.ui.TextInput)
            reason = self.reason.component.value
            await interaction.response.send_message(
                f"reported {self.message.id}: {reason}", ephemeral=True
            )

    bot = ModBot()
    received: list[discord.Message] = []

    async def report(interaction: discord.Interaction, message: discord.Message) -> None:
        received.append(message)
        await interaction.response.send_modal(ReportModal(message))

    bot.tree.add_command(app_commands.ContextMenu(name="Report image", callback=report))
    alice = emu.make_user(name="alice")
    async with running_client(bot, emu):
        [synced] = await bot.tree.sync()
        assert synced.type is discord.AppCommandType.message
        posted = await bot.text_channel(ADULT).send("a cat, in oils")
        handle = await emu.send_message_command("Report image", posted.id, user=alice)
        assert await handle.wait_for_ack() == 9
        assert handle.modal is not None and handle.modal["title"] == "Report this image"
        submitted = await emu.submit_modal(handle, {"reason": "not art"})
        reply = await submitted.wait_for_original()

    [message] = received
    assert isinstance(message, discord.Message)
    assert (message.id, message.content) == (posted.id, "a cat, in oils")
    assert bot.user is not None and message.author.id == bot.user.id
    assert message.channel.id == ADULT and message.guild is not None
    data = handle.payload["data"]
    assert (data["type"], data["name"], data["target_id"]) == (3, "Report image", str(posted.id))
    assert data["resolved"]["messages"][str(posted.id)]["content"] == "a cat, in oils"
    assert "options" not in data
    assert (handle.payload["channel_id"], handle.payload["channel"]["nsfw"]) == (str(ADULT), True)
    assert handle.payload["member"]["user"]["id"] == str(alice.id)
    assert (reply.content, reply.ephemeral) == (f"reported {posted.id}: not art", True)
    assert bot.command_errors == []
    emu.assert_no_violations()


async def test_message_commands_are_offered_only_where_discord_offers_them(
    emu: DiscordEmulator,
) -> None:
    bot = ModBot()

    @bot.tree.command(name="ping", description="Answers pong, to the caller only")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pong", ephemeral=True)

    async def report(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.send_message("reported", ephemeral=True)

    bot.tree.add_command(app_commands.ContextMenu(name="Report image", callback=report))
    posted = emu.post_message(SAFE, content="hello")
    async with running_client(bot, emu):
        await bot.tree.sync()
        with pytest.raises(EmulatorUsageError, match="MESSAGE command 'ping' is not registered"):
            await emu.send_message_command("ping", posted.id)
        with pytest.raises(EmulatorUsageError, match="not registered"):
            await emu.send_message_command("report image", posted.id)  # names keep their case
        with pytest.raises(EmulatorUsageError, match="/Report is not registered"):
            await emu.send_slash_command("Report image")

        pong = await (await emu.send_slash_command("ping", channel_id=SAFE)).wait_for_original()
        with pytest.raises(EmulatorUsageError, match="ephemeral"):
            await emu.send_message_command("Report image", pong.id)
        bob = emu.make_user(name="bob")
        in_dm = emu.post_message(emu.dm_channel(bob).id, content="psst")
        with pytest.raises(EmulatorUsageError, match="another user"):
            await emu.send_message_command("Report image", in_dm.id)
        in_bobs_dm = await emu.send_message_command("Report image", in_dm.id, user=bob)
        assert await in_bobs_dm.wait_for_ack() == 4

        await bot.text_channel(SAFE).get_partial_message(posted.id).delete()
        with pytest.raises(EmulatorUsageError, match="does not exist"):
            await emu.send_message_command("Report image", posted.id)
    emu.assert_no_violations()
