"""`atelier bench bot` end to end, small: every interaction acknowledged, every result counted."""

from __future__ import annotations

from pathlib import Path

import discord
import pytest
from discord.gateway import DiscordWebSocket

from bot.devtools.bench import bench_bot
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
