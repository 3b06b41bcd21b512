"""Tests of the Discord emulator, most of them driven by the real discord.py client.

Each test builds a tiny bot inside itself, points discord.py at a fresh emulator through the
two URLs (``harness.running_client``), and asserts on what the emulator recorded.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from bot.devtools.emulator import (
    DiscordEmulator,
    EmulatorUsageError,
    Limits,
    Upload,
)
from bot.devtools.emulator.harness import discord_pointed_at, running_client

PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + struct.pack(">II", 64, 32) + b"\x08\x02\x00\x00\x00"


class EmuBot(discord.Client):
    """A minimal bot: a command tree, optional DynamicItems, and a log of command errors."""

    def __init__(
        self,
        *dynamic_items: type[discord.ui.DynamicItem[Any]],
        intents: discord.Intents | None = None,
    ) -> None:
        super().__init__(intents=intents or discord.Intents.default(), guild_ready_timeout=0.01)
        self.tree: app_commands.CommandTree[EmuBot] = app_commands.CommandTree(self)
        self.tree.error(self._record_error)
        self.dynamic_item_types = dynamic_items
        self.command_errors: list[BaseException] = []

    async def setup_hook(self) -> None:
        if self.dynamic_item_types:
            self.add_dynamic_items(*self.dynamic_item_types)

    async def _record_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        self.command_errors.append(error)


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator(heartbeat_interval=0.2) as emulator:
        yield emulator


async def call(
    emu: DiscordEmulator,
    method: str,
    path: str,
    *,
    token: str | None = None,
    json_body: Any = None,
    form: aiohttp.FormData | None = None,
) -> tuple[int, Any]:
    """A raw REST call with the bot token, for rules discord.py would refuse to break."""
    headers = {"Authorization": f"Bot {token or emu.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, emu.api_base_url + path, json=json_body, data=form, headers=headers
        ) as response,
    ):
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


async def register(emu: DiscordEmulator, *commands: dict[str, Any]) -> None:
    status, _ = await call(
        emu, "PUT", f"/applications/{emu.application_id}/commands", json_body=list(commands)
    )
    assert status == 200


async def settle(future: asyncio.Future[Any]) -> Any:
    async with asyncio.timeout(5.0):
        return await future


# -- connection ------------------------------------------------------------------------------


async def test_login_ready_and_heartbeats(emu: DiscordEmulator) -> None:
    bot = EmuBot()
    async with running_client(bot, emu):
        assert bot.user is not None and bot.user.id == emu.bot_user.id
        guild = bot.get_guild(emu.guild_id)
        assert guild is not None and guild.get_channel(emu.channel_ids[0]) is not None
        identify = (await emu.wait_for_frame(direction="received", op=2)).d
        await emu.wait_for_frame(direction="sent", op=11)
        joined = asyncio.ensure_future(bot.wait_for("guild_join"))
        emu.add_guild(42, [43], name="Second")
        assert (await settle(joined)).get_channel(43) is not None

    assert identify["token"] == emu.token
    assert identify["intents"] & PRIVILEGED_INTENTS == 0
    dispatches = emu.frames(direction="sent", op=0)
    assert [(f.t, f.s) for f in dispatches[:2]] == [("READY", 1), ("GUILD_CREATE", 2)]
    ready = dispatches[0].d
    assert ready["application"]["id"] == str(emu.application_id)
    assert ready["resume_gateway_url"].startswith("ws://127.0.0.1")
    assert "compress=zlib-stream" in emu.gateway_connections()[0].url
    assert [r.route for r in emu.requests()[:2]] == ["get_current_user", "get_application"]
    assert all(r.authorized for r in emu.requests())
    assert all(r.headers["Authorization"] == "<redacted>" for r in emu.requests())
    emu.assert_no_violations()


async def test_wrong_token_fails_login(emu: DiscordEmulator) -> None:
    bot = EmuBot()
    with discord_pointed_at(emu), pytest.raises(discord.LoginFailure):
        await bot.login("not-the-token")
    await bot.close()
    [request] = emu.requests("get_current_user")
    assert (request.status, request.auth) == (401, "invalid")
    assert [v.kind for v in emu.violations] == ["unauthorized"]


async def test_privileged_intents_are_refused(emu: DiscordEmulator) -> None:
    bot = EmuBot(intents=discord.Intents.all())
    with discord_pointed_at(emu):
        await bot.login(emu.token)
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await bot.connect()
    await bot.close()


async def test_reconnect_resumes_and_replays(emu: DiscordEmulator) -> None:
    bot = EmuBot()

    @bot.tree.command(name="ping", description="Answers pong")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pong")

    async with running_client(bot, emu):
        await bot.tree.sync()
        await (await emu.send_slash_command("ping")).wait_for_ack()
        await emu.disconnect_clients()
        assert not emu.is_connected
        during = await emu.send_slash_command("ping")
        await emu.wait_until_connected()
        await during.wait_for_ack()

    ready = emu.frames(t="READY")[0]
    resume = emu.frames(direction="received", op=6)[0].d
    assert resume["session_id"] == ready.d["session_id"]
    first, second = emu.gateway_connections()[:2]
    assert first.url.startswith("/gateway?v=10") and second.url.startswith("/resume-gateway?v=10")
    [late] = [f for f in emu.frames(t="INTERACTION_CREATE") if f.d["id"] == str(during.id)]
    assert late.connection_id == second.id
    sequence = sorted({f.s for f in emu.frames(direction="sent", op=0) if f.s is not None})
    assert sequence == list(range(1, sequence[-1] + 1))
    assert emu.frames(t="RESUMED")
    emu.assert_no_violations()


async def test_resume_replays_missed_events_over_zlib(emu: DiscordEmulator) -> None:
    await register(emu, {"name": "ping", "description": "Answers pong"})
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(emu.gateway_url + "?v=10&encoding=json") as ws:
            assert (await ws.receive_json())["op"] == 10
            await ws.send_json({"op": 2, "d": {"token": emu.token, "intents": 513}})
            ready = await ws.receive_json()
            assert (await ws.receive_json())["t"] == "GUILD_CREATE"
        await emu.recorder.signal.wait_for(
            lambda: True if not emu.is_connected else None, 5.0, lambda: "the disconnect"
        )
        missed = await emu.send_slash_command("ping")

        url = ready["d"]["resume_gateway_url"] + "?v=10&encoding=json&compress=zlib-stream"
        async with http.ws_connect(url) as ws:
            inflate = zlib.decompressobj()

            async def receive() -> dict[str, Any]:
                data = await ws.receive_bytes()
                assert data.endswith(b"\x00\x00\xff\xff")
                decoded: dict[str, Any] = json.loads(inflate.decompress(data))
                return decoded

            assert (await receive())["op"] == 10
            session_id = ready["d"]["session_id"]
            await ws.send_json(
                {"op": 6, "d": {"token": emu.token, "session_id": session_id, "seq": 2}}
            )
            replayed, resumed = await receive(), await receive()

        async with http.ws_connect(emu.gateway_url + "?v=10&encoding=json") as ws:
            await ws.receive_json()
            await ws.send_json({"op": 6, "d": {"token": emu.token, "session_id": "x", "seq": 1}})
            invalid = await ws.receive_json()

    assert (replayed["t"], replayed["s"], replayed["d"]["id"]) == (
        "INTERACTION_CREATE",
        3,
        str(missed.id),
    )
    assert (resumed["t"], resumed["s"]) == ("RESUMED", 4)
    assert (invalid["op"], invalid["d"]) == (9, False)


# -- commands --------------------------------------------------------------------------------


async def test_command_sync_is_recorded(emu: DiscordEmulator) -> None:
    bot = EmuBot()

    @bot.tree.command(name="imagine", description="Make a picture")
    @app_commands.describe(prompt="What to draw", count="How many")
    async def imagine(
        interaction: discord.Interaction, prompt: str, count: app_commands.Range[int, 1, 4] = 1
    ) -> None:
        await interaction.response.send_message(prompt * count)

    guild = discord.Object(emu.guild_id)
    async with running_client(bot, emu):
        synced = await bot.tree.sync()
        bot.tree.copy_global_to(guild=guild)
        await bot.tree.sync(guild=guild)
        fetched = await bot.tree.fetch_commands()

    [put] = emu.requests("bulk_overwrite_global_commands")
    assert put.method == "PUT" and put.json[0]["name"] == "imagine"
    [command] = emu.registered_commands()
    assert synced[0].id == fetched[0].id == int(command["id"])
    prompt, count = command["options"]
    assert (prompt["name"], prompt["required"]) == ("prompt", True)
    assert (count["min_value"], count["max_value"]) == (1, 4)
    assert emu.registered_commands(emu.guild_id)[0]["guild_id"] == str(emu.guild_id)
    assert emu.requests("get_global_commands")
    emu.assert_no_violations()


async def test_invalid_command_definition_is_rejected(emu: DiscordEmulator) -> None:
    status, body = await call(
        emu,
        "PUT",
        f"/applications/{emu.application_id}/commands",
        json_body=[{"name": "Bad Name", "description": "x" * 101}],
    )
    assert (status, body["code"]) == (400, 50035)
    assert set(body["errors"]["0"]) == {"name", "description"}
    assert [v.kind for v in emu.violations] == ["invalid_command"]


async def test_driver_checks_commands_like_discords_client(emu: DiscordEmulator) -> None:
    await register(
        emu,
        {
            "name": "imagine",
            "description": "Make a picture",
            "options": [
                {"name": "prompt", "description": "p", "type": 3, "required": True},
                {"name": "count", "description": "n", "type": 4, "min_value": 1, "max_value": 4},
            ],
        },
    )
    with pytest.raises(EmulatorUsageError, match="not registered"):
        await emu.send_slash_command("upscale")
    with pytest.raises(EmulatorUsageError, match="missing required"):
        await emu.send_slash_command("imagine", {"count": 2})
    with pytest.raises(EmulatorUsageError, match="within"):
        await emu.send_slash_command("imagine", {"prompt": "cat", "count": 9})
    with pytest.raises(EmulatorUsageError, match="no bot session"):
        await emu.send_slash_command("imagine", {"prompt": "cat"})


# -- interactions ----------------------------------------------------------------------------


async def test_deferred_command_followed_up_with_a_file(emu: DiscordEmulator) -> None:
    bot = EmuBot()

    @bot.tree.command(name="imagine", description="Make a picture")
    async def imagine(interaction: discord.Interaction, prompt: str) -> None:
        await interaction.response.defer(thinking=True)
        embed = discord.Embed(title=prompt).set_image(url="attachment://grid.png")
        grid = discord.File(io.BytesIO(PNG), "grid.png")
        await interaction.followup.send(f"**{prompt}**", embed=embed, file=grid)

    async with running_client(bot, emu):
        await bot.tree.sync()
        handle = await emu.send_slash_command("imagine", {"prompt": "a cat"})
        assert await handle.wait_for_ack() == 5
        [message] = await handle.wait_for_followups()

    assert handle.original is message and not message.loading
    assert message.content == "**a cat**"
    grid = message.attachment("grid.png")
    assert (grid.data, grid.size, grid.content_type) == (PNG, len(PNG), "image/png")
    assert message.embeds[0]["image"]["url"] == grid.url
    assert (grid.payload()["width"], grid.payload()["height"]) == (64, 32)
    [upload] = emu.requests("create_followup_message")
    assert upload.files[0].field == "files[0]" and upload.files[0].data == PNG
    assert upload.json["attachments"][0]["filename"] == "grid.png"
    [callback] = emu.requests("interaction_callback")
    assert callback.json["type"] == 5 and callback.query["with_response"] == "1"
    async with aiohttp.ClientSession() as http, http.get(grid.url) as cdn:
        assert await cdn.read() == PNG
    emu.assert_no_violations()


async def test_button_click_is_handled_by_a_dynamic_item(emu: DiscordEmulator) -> None:
    class Upscale(
        discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"emu:up:(?P<job>\d+):(?P<n>\d)"
    ):
        def __init__(self, job: int, n: int) -> None:
            super().__init__(discord.ui.Button(label=f"U{n}", custom_id=f"emu:up:{job}:{n}"))
            self.job, self.n = job, n

        @classmethod
        async def from_custom_id(
            cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any
        ) -> Upscale:
            return cls(int(match["job"]), int(match["n"]))

        async def callback(self, interaction: discord.Interaction) -> None:
            await interaction.response.edit_message(content=f"job {self.job}: U{self.n}", view=None)

    # A message the bot posted before it restarted: no view of it is in the bot's memory.
    buttons = [
        {"type": 2, "style": 2, "label": f"U{n}", "custom_id": f"emu:up:7:{n}"} for n in (1, 2)
    ]
    grid = emu.post_message(
        emu.channel_ids[0], content="grid", components=[{"type": 1, "components": buttons}]
    )
    bot = EmuBot(Upscale)
    async with running_client(bot, emu):
        handle = await emu.click_button(grid.id, "emu:up:7:2")
        assert await handle.wait_for_ack() == 7

    assert handle.payload["message"]["id"] == str(grid.id)
    assert handle.payload["data"] == {"custom_id": "emu:up:7:2", "component_type": 2}
    assert (grid.content, grid.components, len(grid.versions)) == ("job 7: U2", [], 2)
    with pytest.raises(EmulatorUsageError, match="no component"):
        await emu.click_button(grid.id, "emu:up:7:1")
    emu.assert_no_violations()


async def test_modal_round_trip(emu: DiscordEmulator) -> None:
    class PromptModal(discord.ui.Modal, title="Edit prompt"):
        prompt: discord.ui.Label[Any] = discord.ui.Label(
            text="Prompt", component=discord.ui.TextInput(custom_id="prompt", max_length=200)
        )

        async def on_submit(self, interaction: discord.Interaction) -> None:
            assert isinstance(self.prompt.component, discord.ui.TextInput)
            value = self.prompt.component.value
            await interaction.response.send_message(f"new prompt: {value}", ephemeral=True)

    bot = EmuBot()

    @bot.tree.command(name="edit", description="Edit a prompt")
    async def edit(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(PromptModal())

    async with running_client(bot, emu):
        await bot.tree.sync()
        handle = await emu.send_slash_command("edit")
        assert await handle.wait_for_ack() == 9
        assert handle.modal is not None and handle.modal["title"] == "Edit prompt"
        submitted = await emu.submit_modal(handle, {"prompt": "a dog"})
        reply = await submitted.wait_for_original()

    assert (reply.content, reply.ephemeral) == ("new prompt: a dog", True)
    emu.assert_no_violations()


async def test_autocomplete_choices(emu: DiscordEmulator) -> None:
    bot = EmuBot()

    @bot.tree.command(name="style", description="Pick a style")
    async def style(interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(name)

    @style.autocomplete("name")
    async def complete(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = ("anime", "analog", "oil")
        return [app_commands.Choice(name=n, value=n) for n in names if n.startswith(current)]

    async with running_client(bot, emu):
        await bot.tree.sync()
        handle = await emu.send_autocomplete("style", {"name": "an"}, focused="name")
        assert await handle.wait_for_ack() == 8

    assert [c["value"] for c in handle.choices or []] == ["anime", "analog"]
    emu.assert_no_violations()


async def test_slash_command_in_a_dm(emu: DiscordEmulator) -> None:
    bot = EmuBot()

    @bot.tree.command(name="ping", description="Answers pong")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"pong {interaction.user.id}")

    user = emu.make_user(name="alice")
    async with running_client(bot, emu):
        await bot.tree.sync()
        handle = await emu.send_slash_command("ping", user=user, dm=True)
        reply = await handle.wait_for_original()

    assert "member" not in handle.payload and handle.payload["user"]["id"] == str(user.id)
    assert reply.channel_id == emu.dm_channel(user).id and reply.content == f"pong {user.id}"


async def test_attachment_option_is_resolved_and_downloadable(emu: DiscordEmulator) -> None:
    bot = EmuBot()

    @bot.tree.command(name="vary", description="Vary an image")
    async def vary(interaction: discord.Interaction, image: discord.Attachment) -> None:
        data = await image.read()
        await interaction.response.send_message(f"{image.filename}:{len(data)}")

    async with running_client(bot, emu):
        await bot.tree.sync()
        handle = await emu.send_slash_command("vary", {"image": Upload("in.png", PNG)})
        reply = await handle.wait_for_original()

    assert reply.content == f"in.png:{len(PNG)}"
    emu.assert_no_violations()


# -- Discord's interaction rules -------------------------------------------------------------


async def test_double_acknowledgement_is_rejected(emu: DiscordEmulator) -> None:
    bot = EmuBot()
    outcome: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()

    @bot.tree.command(name="twice", description="Answers twice")
    async def twice(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("first")
        try:
            # A second code path answering on its own InteractionResponse: the bug Discord catches.
            await discord.InteractionResponse(interaction).send_message("second")
        except discord.HTTPException as error:
            outcome.set_result((error.status, error.code))

    async with running_client(bot, emu):
        await bot.tree.sync()
        handle = await emu.send_slash_command("twice")
        assert await settle(outcome) == (400, 40060)

    assert handle.original is not None and handle.original.content == "first"
    [violation] = emu.violations
    assert (violation.kind, violation.interaction_id) == ("double_acknowledgement", handle.id)


async def test_late_acknowledgement_is_rejected(emu: DiscordEmulator) -> None:
    bot = EmuBot()
    started, release = asyncio.Event(), asyncio.Event()
    outcome: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @bot.tree.command(name="slow", description="Answers late")
    async def slow(interaction: discord.Interaction) -> None:
        started.set()
        await release.wait()
        try:
            await interaction.response.defer()
        except discord.NotFound as error:
            outcome.set_result(error.code)

    async with running_client(bot, emu):
        await bot.tree.sync()
        handle = await emu.send_slash_command("slow")
        await started.wait()
        emu.advance_time(3.5)
        release.set()
        assert await settle(outcome) == 10062

    assert not handle.acknowledged
    assert [v.kind for v in emu.violations] == ["interaction_timeout", "late_acknowledgement"]


async def test_expired_token_followup_is_rejected(emu: DiscordEmulator) -> None:
    bot = EmuBot()
    deferred, release = asyncio.Event(), asyncio.Event()
    outcome: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()

    @bot.tree.command(name="slow", description="Finishes after 16 minutes")
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        deferred.set()
        await release.wait()
        try:
            await interaction.followup.send("too late")
        except discord.HTTPException as error:
            outcome.set_result((error.status, error.code))

    async with running_client(bot, emu):
        await bot.tree.sync()
        handle = await emu.send_slash_command("slow")
        await deferred.wait()
        emu.advance_time(16 * 60)
        release.set()
        assert await settle(outcome) == (401, 50027)

    assert handle.original is not None and handle.original.loading
    assert [v.kind for v in emu.violations] == ["expired_interaction_token"]


async def test_ephemeral_replies_stay_out_of_the_channel(emu: DiscordEmulator) -> None:
    bot = EmuBot()

    @bot.tree.command(name="secret", description="Whispers")
    async def secret(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("psst", ephemeral=True)

    async with running_client(bot, emu):
        await bot.tree.sync()
        reply = await (await emu.send_slash_command("secret")).wait_for_original()

    channel = emu.channel_ids[0]
    assert reply.ephemeral and reply.flags & 64
    assert emu.messages(channel, include_ephemeral=False) == []
    assert not [f for f in emu.frames(t="MESSAGE_CREATE") if f.d["id"] == str(reply.id)]
    status, listed = await call(emu, "GET", f"/channels/{channel}/messages")
    assert (status, listed) == (200, [])
    status, body = await call(
        emu, "PATCH", f"/channels/{channel}/messages/{reply.id}", json_body={"content": "x"}
    )
    assert (status, body["code"]) == (404, 10008)


async def test_dm_fallback_when_the_channel_is_denied(emu: DiscordEmulator) -> None:
    bot = EmuBot()
    refusals: list[int] = []

    @bot.tree.command(name="deliver", description="Posts a result")
    async def deliver(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("working", ephemeral=True)
        assert isinstance(interaction.channel, discord.TextChannel)
        try:
            await interaction.channel.send("result")
        except discord.Forbidden as error:
            refusals.append(error.code)
            await interaction.user.send("result (by DM)")

    alice = emu.make_user(name="alice")
    emu.deny_channel(emu.channel_ids[0])
    async with running_client(bot, emu):
        await bot.tree.sync()
        await emu.send_slash_command("deliver", user=alice)
        dm = await emu.wait_for_message(lambda m: m.content == "result (by DM)")

    assert refusals == [50013]
    assert dm.channel_id == emu.dm_channel(alice).id and emu.dm_messages(alice) == [dm]
    assert emu.requests("create_dm")[0].json == {"recipient_id": alice.id}
    assert emu.messages(emu.channel_ids[0], include_ephemeral=False) == []
    emu.assert_no_violations(ignore=["missing_permissions"])


# -- fault injection -------------------------------------------------------------------------


@pytest.mark.parametrize("is_global", [False, True])
async def test_rate_limited_message_is_retried(emu: DiscordEmulator, is_global: bool) -> None:
    bot = EmuBot()
    async with running_client(bot, emu):
        rule = emu.inject_failures("create_message", retry_after=0.05, is_global=is_global)
        channel = bot.get_channel(emu.channel_ids[0])
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("hello")

    first, second = emu.requests("create_message")
    assert (first.status, first.fault_injected, second.status) == (429, True, 200)
    assert first.response["retry_after"] == 0.05 and first.response["global"] is is_global
    assert rule.hits == 1 and rule.remaining == 0
    assert [m.id for m in emu.messages(emu.channel_ids[0])] == [sent.id]
    emu.assert_no_violations()


async def test_rate_limited_interaction_callback_is_retried(emu: DiscordEmulator) -> None:
    bot = EmuBot()

    @bot.tree.command(name="ping", description="Answers pong")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pong")

    async with running_client(bot, emu):
        await bot.tree.sync()
        emu.inject_failures("interaction_callback", count=2)
        reply = await (await emu.send_slash_command("ping")).wait_for_original()

    assert [r.status for r in emu.requests("interaction_callback")] == [429, 429, 200]
    assert reply.content == "pong"
    emu.assert_no_violations()


async def test_server_error_then_success(emu: DiscordEmulator) -> None:
    bot = EmuBot()
    async with running_client(bot, emu):
        emu.inject_failures("create_message", status=500)
        channel = bot.get_channel(emu.channel_ids[0])
        assert isinstance(channel, discord.TextChannel)
        await channel.send("after a retry")  # discord.py sleeps 1 s before retrying a 500
        emu.inject_failures("create_message", status=503)
        with pytest.raises(discord.DiscordServerError):
            await channel.send("503 is not retried by discord.py's HTTPClient")

    assert [r.status for r in emu.requests("create_message")] == [500, 200, 503]
    assert [m.content for m in emu.messages(emu.channel_ids[0])] == ["after a retry"]


# -- limits and plain REST rules -------------------------------------------------------------


def _row(*labels: str) -> dict[str, Any]:
    buttons = [
        {"type": 2, "style": 1, "label": label, "custom_id": f"b{i}"}
        for i, label in enumerate(labels)
    ]
    return {"type": 1, "components": buttons}


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"content": "x" * 2001}, 50035, "content"),
        ({"content": "x", "components": [_row("a") for _ in range(6)]}, 50035, "components"),
        ({"content": "x", "components": [_row(*"abcdef")]}, 50035, "components"),
        ({"content": "x", "components": [_row("x" * 81)]}, 50035, "components"),
        (
            {
                "components": [
                    {
                        "type": 1,
                        "components": [
                            {"type": 2, "style": 1, "label": "a", "custom_id": "c" * 101}
                        ],
                    }
                ]
            },
            50035,
            "components",
        ),
        ({"embeds": [{"title": "t" * 257}]}, 50035, "embeds"),
        ({"embeds": [{"description": "d" * 4097}]}, 50035, "embeds"),
        ({"embeds": [{"fields": [{"name": "n", "value": "v"}] * 26}]}, 50035, "embeds"),
        ({"embeds": [{"description": "d" * 3500}, {"description": "d" * 3500}]}, 50035, "embeds"),
        ({"content": ""}, 50006, None),
    ],
)
async def test_message_limits(
    emu: DiscordEmulator, body: dict[str, Any], code: int, field: str | None
) -> None:
    status, answer = await call(
        emu, "POST", f"/channels/{emu.channel_ids[0]}/messages", json_body=body
    )
    assert (status, answer["code"]) == (400, code)
    if field is not None:
        assert field in answer["errors"]
    assert [v.code for v in emu.violations] == [code]
    assert emu.messages() == []


async def test_attachment_limits() -> None:
    async with DiscordEmulator(limits=Limits(attachment_size=1024)) as emu:
        path = f"/channels/{emu.channel_ids[0]}/messages"

        def form(*sizes: int) -> aiohttp.FormData:
            data = aiohttp.FormData(quote_fields=False)
            data.add_field("payload_json", json.dumps({"content": "files"}))
            for index, size in enumerate(sizes):
                data.add_field(f"files[{index}]", b"x" * size, filename=f"{index}.bin")
            return data

        status, body = await call(emu, "POST", path, form=form(1025))
        assert (status, body["code"]) == (413, 40005)
        status, body = await call(emu, "POST", path, form=form(*[10] * 11))
        assert (status, body["code"]) == (400, 50035)
        status, body = await call(emu, "POST", path, form=form(1024, 3))
        assert status == 200
        [message] = emu.messages()
        assert [a.size for a in message.attachments] == [1024, 3]
        assert [f.data for f in emu.requests("create_message")[-1].files] == [b"x" * 1024, b"xxx"]
        assert [v.kind for v in emu.violations] == ["attachment_too_large", "invalid_message"]


async def test_unknown_things_get_404(emu: DiscordEmulator) -> None:
    assert (await call(emu, "POST", "/channels/1/messages", json_body={"content": "x"}))[1][
        "code"
    ] == 10003
    channel = emu.channel_ids[0]
    assert (await call(emu, "GET", f"/channels/{channel}/messages/1"))[1]["code"] == 10008
    status, body = await call(emu, "GET", "/voice/regions")
    assert (status, body["code"]) == (404, 0)
    assert [v.kind for v in emu.violations] == [
        "unknown_channel",
        "unknown_message",
        "unknown_route",
    ]


async def test_edits_apply_to_the_message_store(emu: DiscordEmulator) -> None:
    channel = emu.channel_ids[0]
    _, created = await call(
        emu,
        "POST",
        f"/channels/{channel}/messages",
        json_body={"content": "v1", "components": [_row("a")]},
    )
    message_id = int(created["id"])
    status, edited = await call(
        emu, "PATCH", f"/channels/{channel}/messages/{message_id}", json_body={"content": "v2"}
    )
    assert status == 200 and edited["edited_timestamp"] is not None
    stored = emu.message(message_id)
    assert (stored.content, len(stored.components), [v.content for v in stored.versions]) == (
        "v2",
        1,
        ["v1", "v2"],
    )


async def test_wait_for_request_wakes_on_new_requests(emu: DiscordEmulator) -> None:
    since = emu.mark()
    waiter = asyncio.create_task(
        emu.wait_for_request(route="create_message", since=since, status=200)
    )
    await asyncio.sleep(0)
    assert not waiter.done()
    await call(emu, "POST", f"/channels/{emu.channel_ids[0]}/messages", json_body={"content": "hi"})
    request = await settle(waiter)
    assert request.json == {"content": "hi"} and request.seq > since
    with pytest.raises(TimeoutError, match="create_message"):
        await emu.wait_for_request(route="create_message", since=request.seq, timeout=0.01)


# -- more of what an image bot does ----------------------------------------------------------


async def test_progress_edits_then_final_image(emu: DiscordEmulator) -> None:
    bot = EmuBot()
    seen: list[str] = []

    @bot.tree.command(name="imagine", description="Make a picture")
    async def imagine(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content="50%")
        final = discord.File(io.BytesIO(PNG), "final.png")
        await interaction.edit_original_response(content="done", attachments=[final])
        seen.append((await interaction.original_response()).content)
        extra = await interaction.followup.send("details", ephemeral=True, wait=True)
        await extra.delete()

    async with running_client(bot, emu):
        await bot.tree.sync()
        handle = await emu.send_slash_command("imagine")
        await handle.wait_until(lambda h: len(h.followups) == 1 and h.followups[0].deleted)

    original = handle.original
    assert original is not None and seen == ["done"]
    assert [v.content for v in original.versions] == ["", "50%", "done"]
    assert original.attachments[0].data == PNG
    assert [r.route for r in handle.requests()] == [
        "interaction_callback",
        "edit_original_response",
        "edit_original_response",
        "get_original_response",
        "create_followup_message",
        "delete_followup_message",
    ]
    assert handle.followups[0].ephemeral
    emu.assert_no_violations()


async def test_reply_with_file_and_select_menu(emu: DiscordEmulator) -> None:
    class StyleView(discord.ui.View):
        @discord.ui.select(
            custom_id="emu:style",
            options=[discord.SelectOption(label=s, value=s) for s in ("anime", "oil")],
        )
        async def pick(
            self, interaction: discord.Interaction, select: discord.ui.Select[StyleView]
        ) -> None:
            await interaction.response.edit_message(content=f"style={select.values[0]}")

    bot = EmuBot()

    @bot.tree.command(name="styles", description="Choose a style")
    async def styles(interaction: discord.Interaction) -> None:
        sample = discord.File(io.BytesIO(PNG), "sample.png")
        await interaction.response.send_message("choose", file=sample, view=StyleView())

    async with running_client(bot, emu):
        await bot.tree.sync()
        message = await (await emu.send_slash_command("styles")).wait_for_original()
        picked = await emu.select_menu(message.id, "emu:style", ["oil"])
        assert await picked.wait_for_ack() == 7

    assert (message.content, message.attachments[0].data) == ("style=oil", PNG)
    [callback] = emu.requests("interaction_callback", predicate=lambda r: bool(r.files))
    assert callback.json["type"] == 4 and callback.files[0].filename == "sample.png"
    emu.assert_no_violations()


async def test_member_roles_reach_the_bot(emu: DiscordEmulator) -> None:
    bot = EmuBot()

    @bot.tree.command(name="whoami", description="Lists roles")
    async def whoami(interaction: discord.Interaction) -> None:
        assert isinstance(interaction.user, discord.Member)
        names = sorted(r.name for r in interaction.user.roles)
        admin = interaction.permissions.administrator
        await interaction.response.send_message(f"{','.join(names)} admin={admin}")

    artist = emu.make_role("artist")
    boss = emu.make_role("boss", permissions=1 << 3)
    carol = emu.make_user(name="carol", roles=[artist, boss])
    async with running_client(bot, emu):
        await bot.tree.sync()
        reply = await (await emu.send_slash_command("whoami", user=carol)).wait_for_original()

    assert reply.content == "@everyone,artist,boss admin=True"


MANAGE_MESSAGES = 1 << 13
SEND_MESSAGES = 1 << 11
VIEW_CHANNEL = 1 << 10
ALL_PERMISSIONS = (1 << 51) - 1


async def test_channel_overwrites_follow_discords_order() -> None:
    async with DiscordEmulator(channel_ids=(201, 202)) as emu:
        _overwrites_in_order(emu, 201, 202)


def _overwrites_in_order(emu: DiscordEmulator, here: int, elsewhere: int) -> None:
    everyone = emu.guild().everyone
    helpers = emu.make_role("helpers")
    mods = emu.make_role("mods", permissions=MANAGE_MESSAGES)
    boss = emu.make_role("boss", permissions=1 << 3)  # Administrator
    helper = emu.make_user(name="helper", roles=[helpers])
    mod = emu.make_user(name="mod", roles=[mods, helpers])
    admin = emu.make_user(name="admin", roles=[boss])
    plain = emu.make_user(name="plain")

    # A role's allow grants in that channel only, never at the guild level.
    emu.set_overwrite(here, helpers, allow=MANAGE_MESSAGES)
    assert emu.permissions_in(helper, here) & MANAGE_MESSAGES
    assert not emu.guild().permissions_of(helper.id) & MANAGE_MESSAGES
    assert not emu.permissions_in(plain, here) & MANAGE_MESSAGES
    # Role overwrites: denies first, then allows, so an allow beats another role's deny.
    emu.set_overwrite(here, mods, deny=MANAGE_MESSAGES)
    assert emu.permissions_in(mod, here) & MANAGE_MESSAGES
    emu.remove_overwrite(here, helpers)
    assert not emu.permissions_in(mod, here) & MANAGE_MESSAGES
    assert emu.guild().permissions_of(mod.id) & MANAGE_MESSAGES
    # The member's own overwrite comes last and beats every role overwrite.
    emu.set_overwrite(here, helpers, allow=MANAGE_MESSAGES)
    emu.set_overwrite(here, helper, deny=MANAGE_MESSAGES)
    assert not emu.permissions_in(helper, here) & MANAGE_MESSAGES
    # @everyone's overwrite applies to all, before role overwrites.
    emu.set_overwrite(here, everyone, deny=VIEW_CHANNEL | SEND_MESSAGES)
    emu.set_overwrite(here, mods, allow=SEND_MESSAGES)
    assert not emu.permissions_in(plain, here) & (VIEW_CHANNEL | SEND_MESSAGES)
    assert emu.permissions_in(mod, here) & SEND_MESSAGES
    assert not emu.permissions_in(mod, here) & VIEW_CHANNEL
    # Administrators and the owner have everything, whatever the overwrites say.
    emu.set_overwrite(here, admin, deny=ALL_PERMISSIONS)
    assert emu.permissions_in(admin, here) == ALL_PERMISSIONS
    owner = emu.guild().owner_id
    assert emu.guild().channel_permissions_of(owner, emu.guild().channels[here]) == ALL_PERMISSIONS
    # Other channels and DMs are untouched.
    for user in (plain, helper, mod):
        assert emu.permissions_in(user, elsewhere) == emu.guild().permissions_of(user.id)
    assert emu.permissions_in(plain, emu.dm_channel(plain).id) == ALL_PERMISSIONS
    with pytest.raises(EmulatorUsageError):
        emu.set_overwrite(emu.dm_channel(plain).id, helpers, allow=MANAGE_MESSAGES)


async def test_channel_overwrites_reach_the_bot(emu: DiscordEmulator) -> None:
    """Overwrites travel in CHANNEL_UPDATE and shape the interaction's channel-level
    permissions (``member.permissions``, ``app_permissions``), not the guild-level ones."""
    bot = EmuBot()

    @bot.tree.command(name="perms", description="Reports permissions")
    async def perms(interaction: discord.Interaction) -> None:
        assert isinstance(interaction.user, discord.Member)
        assert isinstance(interaction.channel, discord.TextChannel)
        here = interaction.permissions.manage_messages
        guild = interaction.user.guild_permissions.manage_messages
        cached = interaction.channel.permissions_for(interaction.user).manage_messages
        app = interaction.app_permissions.send_messages
        await interaction.response.send_message(f"{here} {guild} {cached} {app}")

    channel_id = emu.channel_ids[0]
    async with running_client(bot, emu):
        await bot.tree.sync()
        helpers = emu.make_role("helpers")  # after READY: GUILD_ROLE_CREATE
        helper = emu.make_user(name="helper", roles=[helpers])
        emu.set_overwrite(channel_id, helpers, allow=MANAGE_MESSAGES)
        emu.set_overwrite(channel_id, emu.bot_user, deny=SEND_MESSAGES)
        bot_id = str(emu.bot_user.id)
        await emu.wait_for_frame(
            t="CHANNEL_UPDATE",
            predicate=lambda f: bot_id in [o["id"] for o in f.d["permission_overwrites"]],
        )
        handle = await emu.send_slash_command("perms", user=helper)
        reply = await handle.wait_for_original()
        with pytest.raises(discord.Forbidden):
            channel = bot.get_channel(channel_id)
            assert isinstance(channel, discord.TextChannel)
            await channel.send("hello")

    assert reply.content == "True False True False"
    emu.assert_no_violations(ignore=["missing_permissions"])


async def test_auto_sharded_client_finds_the_gateway_through_rest(emu: DiscordEmulator) -> None:
    bot = discord.AutoShardedClient(intents=discord.Intents.default(), guild_ready_timeout=0.01)
    old_base = discord.http.Route.BASE
    discord.http.Route.BASE = emu.api_base_url  # the gateway URL comes from GET /gateway/bot
    try:
        await bot.login(emu.token)
        connection = asyncio.create_task(bot.connect())
        await emu.wait_until_connected()
        await bot.close()
        await settle(connection)
    finally:
        discord.http.Route.BASE = old_base
    assert emu.requests("get_gateway_bot")[0].status == 200
    assert emu.frames(direction="received", op=2)[0].d["shard"] == [0, 1]


async def test_unanswered_interaction_times_out_in_real_time() -> None:
    async with DiscordEmulator(ack_timeout=0.1) as emu:
        bot = EmuBot()
        release = asyncio.Event()

        @bot.tree.command(name="mute", description="Never answers in time")
        async def mute(interaction: discord.Interaction) -> None:
            await release.wait()

        async with running_client(bot, emu):
            await bot.tree.sync()
            handle = await emu.send_slash_command("mute")
            violation = await emu.wait_for_violation("interaction_timeout")
            release.set()

    assert violation.interaction_id == handle.id and not handle.acknowledged


async def test_reconnect_opcode_and_resumable_invalid_session(emu: DiscordEmulator) -> None:
    bot = EmuBot()
    async with running_client(bot, emu):
        emu.request_reconnect()
        await emu.wait_for_frame(t="RESUMED")
        emu.invalidate_session(resumable=True)
        await emu.wait_for_frame(t="RESUMED", since=emu.frames(t="RESUMED")[0].seq)

    assert len(emu.gateway_connections()) == 3
    assert [f.op for f in emu.frames(direction="received") if f.op in (2, 6)] == [2, 6, 6]
    emu.assert_no_violations()


async def test_component_deferred_update_then_edit(emu: DiscordEmulator) -> None:
    class Reroll(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"emu:rr:(?P<job>\d+)"):
        def __init__(self, job: int) -> None:
            super().__init__(discord.ui.Button(label="Reroll", custom_id=f"emu:rr:{job}"))
            self.job = job

        @classmethod
        async def from_custom_id(
            cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any
        ) -> Reroll:
            return cls(int(match["job"]))

        async def callback(self, interaction: discord.Interaction) -> None:
            await interaction.response.defer()  # type 6 for a component
            await interaction.edit_original_response(content=f"rerolled {self.job}")
            await interaction.followup.send("queued", ephemeral=True)

    row = {
        "type": 1,
        "components": [{"type": 2, "style": 1, "label": "Reroll", "custom_id": "emu:rr:3"}],
    }
    grid = emu.post_message(emu.channel_ids[0], content="grid", components=[row])
    bot = EmuBot(Reroll)
    async with running_client(bot, emu):
        handle = await emu.click_button(grid.id, "emu:rr:3")
        [queued] = await handle.wait_for_followups()

    assert handle.callback_type == 6 and handle.original is grid
    assert grid.content == "rerolled 3" and len(grid.components) == 1
    assert queued.ephemeral and queued.id != grid.id
    emu.assert_no_violations()


async def test_enforced_nonce_posts_once(emu: DiscordEmulator) -> None:
    bot = EmuBot()
    async with running_client(bot, emu):
        channel = bot.get_partial_messageable(emu.channel_ids[0])
        first = await channel.send("result", nonce="job-17")
        again = await channel.send("result", nonce="job-17")  # e.g. a retry after a crash
        emu.advance_time(6 * 60)
        later = await channel.send("result", nonce="job-17")

    assert first.id == again.id != later.id
    assert [m.id for m in emu.messages(emu.channel_ids[0])] == [first.id, later.id]
    assert emu.requests("create_message")[0].json["enforce_nonce"] is True


# -- the bot leaves a guild, an outage, a deleted channel -------------------------------------


class GuildEventsBot(EmuBot):
    """Records the guild events discord.py dispatches, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.events: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

    async def on_guild_remove(self, guild: discord.Guild) -> None:
        self.events.put_nowait(("remove", guild.id))

    async def on_guild_unavailable(self, guild: discord.Guild) -> None:
        self.events.put_nowait(("unavailable", guild.id))

    async def on_guild_available(self, guild: discord.Guild) -> None:
        self.events.put_nowait(("available", guild.id))

    async def on_guild_join(self, guild: discord.Guild) -> None:
        self.events.put_nowait(("join", guild.id))

    async def next(self) -> tuple[str, int]:
        async with asyncio.timeout(5.0):
            return await self.events.get()

    def forget(self) -> None:
        """Drop what was recorded so far (the guilds' first GUILD_CREATE after READY)."""
        while not self.events.empty():
            self.events.get_nowait()


async def test_an_outage_is_not_a_removal(emu: DiscordEmulator) -> None:
    bot = GuildEventsBot()
    guild_id = emu.guild().id
    async with running_client(bot, emu):
        bot.forget()
        emu.guild_outage()
        assert await bot.next() == ("unavailable", guild_id)
        frame = emu.frames(t="GUILD_DELETE")[-1]
        assert frame.d == {"id": str(guild_id), "unavailable": True}
        emu.end_guild_outage()
        assert await bot.next() == ("available", guild_id)
        channel = bot.get_channel(emu.channel_ids[0])
        assert isinstance(channel, discord.TextChannel)
        await channel.send("still here")  # the bot never left
    assert bot.events.empty()
    emu.assert_no_violations()


async def test_removing_the_bot_and_adding_it_back(emu: DiscordEmulator) -> None:
    bot = GuildEventsBot()
    guild_id, channel_id = emu.guild().id, emu.channel_ids[0]
    alice = emu.make_user(name="alice")
    async with running_client(bot, emu):
        await register(emu, {"name": "ping", "description": "ping"})
        bot.forget()
        emu.remove_bot()
        assert await bot.next() == ("remove", guild_id)
        assert emu.frames(t="GUILD_DELETE")[-1].d == {"id": str(guild_id)}
        assert bot.get_guild(guild_id) is None
        status, body = await call(
            emu, "POST", f"/channels/{channel_id}/messages", json_body={"content": "hi"}
        )
        assert (status, body["code"]) == (403, 50001)
        with pytest.raises(EmulatorUsageError, match="not in guild"):
            await emu.send_slash_command("ping", user=alice)
        with pytest.raises(EmulatorUsageError, match="not in guild"):
            emu.remove_bot()
    mark = emu.frames()[-1].seq
    other = GuildEventsBot()
    async with running_client(other, emu):
        ready = emu.frames(t="READY", since=mark)[0]
        assert ready.d["guilds"] == [], "a new session's READY leaves the guild out"
        assert other.get_guild(guild_id) is None
        emu.add_bot()
        assert await other.next() == ("join", guild_id)
        status, _ = await call(
            emu, "POST", f"/channels/{channel_id}/messages", json_body={"content": "back"}
        )
        assert status == 200
        with pytest.raises(EmulatorUsageError, match="already in guild"):
            emu.add_bot()
    emu.assert_no_violations(ignore=["missing_access"])


async def test_a_deleted_channel_is_unknown(emu: DiscordEmulator) -> None:
    bot = EmuBot()
    channel_id = emu.channel_ids[0]
    async with running_client(bot, emu):
        message = emu.post_message(channel_id, content="before", author=emu.bot_user)
        emu.delete_channel(channel_id)
        await emu.wait_for_frame(t="CHANNEL_DELETE")
        status, body = await call(
            emu,
            "PATCH",
            f"/channels/{channel_id}/messages/{message.id}",
            json_body={"content": "x"},
        )
        assert (status, body["code"]) == (404, 10003)
        status, body = await call(
            emu, "POST", f"/channels/{channel_id}/messages", json_body={"content": "x"}
        )
        assert (status, body["code"]) == (404, 10003)
        assert bot.get_channel(channel_id) is None
    emu.assert_no_violations(ignore=["unknown_channel"])
