"""`atelier bench bot` end to end, small: every interaction acknowledged, every result counted."""

from __future__ import annotations

from pathlib import Path

import discord
import pytest
from discord.gateway import DiscordWebSocket

from bot.devtools.bench import bench_bot
from bot.devtools.bench_edits import measure_publisher
from config.settings import Settings


async def test_bench_bot_acknowledges_and_posts_every_interaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bot points discord.py at the bench's emulator process-wide: restore that afterwards.
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", DiscordWebSocket.DEFAULT_GATEWAY)
    settings = Settings(data_dir=tmp_path, model="tiny")
    # Ten interactions in half a second: the last ones are still being stored when the last
    # acknowledgement arrives, which the count of posted results must wait for.
    table = await bench_bot(settings, interactions=10, users=3, seconds=0.5)
    assert "bench bot: 10 /imagine from 3 users" in table
    assert "acknowledged within 3 s: 10/10; results posted: 10; Discord rule violations: 0" in table


async def test_budgeted_publisher_posts_a_result_ahead_of_200_position_edits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", DiscordWebSocket.DEFAULT_GATEWAY)
    settings = Settings(data_dir=tmp_path, model="tiny")
    # The emulator enforces Discord's rate limits here; the cap only bounds a failing run.
    run = await measure_publisher(settings, "budgeted", 200, cap=60.0, budget=True)
    assert run.ready_to_posted is not None, "the result was never posted"
    assert run.rate_limited == 0
    # The result went out while nearly all of the 200 position edits were still wanted.
    assert run.edits_before_result <= 2 * 3
    assert run.refused > 0
