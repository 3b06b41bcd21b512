"""User and guild settings documents and the meta table."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

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


async def test_concurrent_edits_of_one_list_lose_nothing(services: Services) -> None:
    p = services.prefs

    def adding(term: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def edit(current: dict[str, Any]) -> dict[str, Any]:
            return {**current, "terms": sorted([*current.get("terms", []), term])}

        return edit

    await asyncio.gather(*(p.edit_guild_settings(5, adding(f"t{i}")) for i in range(10)))
    assert (await p.get_guild_settings(5))["terms"] == sorted(f"t{i}" for i in range(10))


async def test_an_edit_that_raises_changes_nothing(services: Services) -> None:
    p = services.prefs
    await p.update_guild_settings(5, {"terms": ["a"]})

    def refuse(current: dict[str, Any]) -> dict[str, Any]:
        raise LookupError("no")

    with pytest.raises(LookupError):
        await p.edit_guild_settings(5, refuse)
    assert await p.get_guild_settings(5) == {"terms": ["a"]}
