"""Persistent buttons: one DynamicItem class for every button Atelier posts.

The template matches any custom_id so that a forged or stale one still reaches us and gets an
ephemeral explanation instead of Discord's "This interaction failed".
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bot.customid import ButtonRef, CustomIdError, decode
from bot.errors import reply_error

if TYPE_CHECKING:
    from bot.app import AtelierBot


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"(?P<raw>.{1,100})"):
    """A U/V/re-roll/upscale/vary button; its state is the job in the database."""

    def __init__(self, label: str, ref: ButtonRef | None, raw: str | None = None) -> None:
        custom_id = ref.encode() if ref is not None else (raw or "invalid")
        style = discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(label=label, custom_id=custom_id, style=style))
        self.ref = ref
        self.raw = custom_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> JobButton:
        raw = match.group("raw")
        try:
            ref: ButtonRef | None = decode(raw)
        except CustomIdError:
            ref = None
        label = getattr(item, "label", None) or "?"
        return cls(label, ref, raw)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        bot: AtelierBot = interaction.client
        if self.ref is None:
            await reply_error(interaction, CustomIdError("this button is not one of Atelier's"))
            return
        await bot.publisher.handle_click(interaction, self.ref)


def build_view(rows: list[list[tuple[str, ButtonRef]]]) -> discord.ui.View:
    """A timeout-free view of JobButtons, laid out row by row."""
    view = discord.ui.View(timeout=None)
    for row_index, row in enumerate(rows):
        for label, ref in row:
            button = JobButton(label, ref)
            button.item.row = row_index
            view.add_item(button)
    return view


__all__ = ["JobButton", "build_view"]
