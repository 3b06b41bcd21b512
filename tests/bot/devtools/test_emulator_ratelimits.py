"""The emulator's opt-in rate limits: bucket headers on every answer, 429 once exhausted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest

from bot.devtools.emulator import DiscordEmulator, RateLimits
from bot.devtools.emulator.harness import running_client
from bot.devtools.emulator.ratelimits import RateLimiter

LIMIT_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Reset-After",
    "X-RateLimit-Bucket",
)


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator(heartbeat_interval=0.2) as emulator:
        yield emulator


async def edit(emu: DiscordEmulator, channel_id: int, message_id: int) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bot {emu.token}"}
    url = f"{emu.api_base_url}/channels/{channel_id}/messages/{message_id}"
    async with (
        aiohttp.ClientSession() as session,
        session.patch(url, json={"content": "edited"}, headers=headers) as response,
    ):
        return response.status, await response.json(), response.headers


async def test_off_by_default(emu: DiscordEmulator) -> None:
    channel = emu.channel_ids[0]
    message = emu.post_message(channel, content="hi", author=emu.bot_user)
    for _ in range(8):
        status, _, headers = await edit(emu, channel, message.id)
        assert status == 200
        assert "X-RateLimit-Bucket" not in headers


async def test_channel_edits_carry_bucket_headers_then_429(emu: DiscordEmulator) -> None:
    emu.rate_limits = RateLimits()
    channel = emu.channel_ids[0]
    message = emu.post_message(channel, content="hi", author=emu.bot_user)
    remaining = []
    for _ in range(5):
        status, _, headers = await edit(emu, channel, message.id)
        assert status == 200
        assert all(name in headers for name in LIMIT_HEADERS)
        assert headers["X-RateLimit-Limit"] == "5"
        remaining.append(int(headers["X-RateLimit-Remaining"]))
    assert remaining == [4, 3, 2, 1, 0]
    status, body, headers = await edit(emu, channel, message.id)
    assert status == 429
    assert 0 < body["retry_after"] <= 5.0
    assert body["global"] is False
    assert headers["Via"] == "1.1 google"
    assert emu.message(message.id).content == "edited"
    assert [r.rate_limited for r in emu.requests("edit_message", status=429)] == [True]
    # The window passes (the emulator's clock): the bucket is full again.
    emu.advance_time(5.0)
    status, _, headers = await edit(emu, channel, message.id)
    assert (status, headers["X-RateLimit-Remaining"]) == (200, "4")


async def test_each_channel_has_its_own_bucket() -> None:
    channels = (1_100_000_000_000_000_201, 1_100_000_000_000_000_202)
    async with DiscordEmulator(channel_ids=channels, rate_limits=RateLimits()) as emu:
        first = emu.post_message(channels[0], content="a", author=emu.bot_user)
        second = emu.post_message(channels[1], content="b", author=emu.bot_user)
        for _ in range(5):
            assert (await edit(emu, channels[0], first.id))[0] == 200
        assert (await edit(emu, channels[0], first.id))[0] == 429
        assert (await edit(emu, channels[1], second.id))[0] == 200


async def test_the_global_limit_answers_a_global_429(emu: DiscordEmulator) -> None:
    emu.rate_limits = RateLimits(per_channel=100, global_per_second=3)
    channel = emu.channel_ids[0]
    message = emu.post_message(channel, content="hi", author=emu.bot_user)
    statuses = [(await edit(emu, channel, message.id))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    status, body, headers = await edit(emu, channel, message.id)
    assert status == 429
    assert body["global"] is True
    assert headers["X-RateLimit-Global"] == "true"


def test_interaction_routes_are_limited_per_token_and_not_globally() -> None:
    limiter = RateLimiter(RateLimits(per_interaction=2, global_per_second=1))
    one, two = {"interaction_token": "one"}, {"interaction_token": "two"}
    verdicts = [limiter.check("edit_followup_message", one, 0.0) for _ in range(3)]
    assert [v is not None and v.refused is None for v in verdicts] == [True, True, False]
    other = limiter.check("edit_followup_message", two, 0.0)
    assert other is not None and other.refused is None
    assert limiter.check("interaction_callback", one, 0.0) is None


async def test_discord_py_waits_on_the_headers_instead_of_getting_429s(
    emu: DiscordEmulator,
) -> None:
    # A short window keeps the test quick; discord.py sleeps it out once Remaining is 0.
    emu.rate_limits = RateLimits(per_channel=2, channel_window=0.3)
    channel = emu.channel_ids[0]
    message = emu.post_message(channel, content="hi", author=emu.bot_user)
    client = discord.Client(intents=discord.Intents.none(), guild_ready_timeout=0.01)
    async with running_client(client, emu):
        target = client.get_partial_messageable(channel).get_partial_message(message.id)
        for number in range(6):
            await target.edit(content=f"edit {number}")
    assert len(emu.requests("edit_message", status=200)) == 6
    assert emu.requests("edit_message", status=429) == []
