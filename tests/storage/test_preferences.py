"""User and guild settings documents and the meta table."""

from __future__ import annotations

import asyncio

from tests.storage.dbfixtures import Services


async def test_user_and_guild_settings_merge(services: Services) -> None:
    p = services.prefs
    assert await p.get_user_settings(1) == {}
    assert await p.update_user_settings(1, {"mode": "fast", "aspect": "16:9"}) == {
        "mode": "fast",
        "aspect": "16:9",
    }
    assert await p.update_user_settings(1, {"aspect": None, "variation": "subtle"}) == {
        "mode": "fast",
        "variation": "subtle",
    }
    assert await p.get_user_settings(2) == {}
    await p.update_guild_settings(10, {"owner_only_buttons": False})
    assert await p.get_guild_settings(10) == {"owner_only_buttons": False}


async def test_concurrent_updates_of_different_keys_both_survive(services: Services) -> None:
    p = services.prefs
    await asyncio.gather(*(p.update_user_settings(1, {f"k{i}": i}) for i in range(10)))
    assert await p.get_user_settings(1) == {f"k{i}": i for i in range(10)}


async def test_meta(services: Services) -> None:
    p = services.prefs
    assert await p.get_meta("commands_hash") is None
    await p.set_meta("commands_hash", "abc")
    await p.set_meta("commands_hash", "def")
    assert await p.get_meta("commands_hash") == "def"
    assert await p.delete_meta("commands_hash")
    assert not await p.delete_meta("commands_hash")
