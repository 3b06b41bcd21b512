"""Moderation commands: /block and /filter add|remove|list (Manage Messages)."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.errors import UserFacingError
from bot.features.base import Interaction, answer, requester_of, slash, thinking
from bot.publisher import Publisher
from bot.router import ButtonRouter
from bot.services.moderation import Moderation


class FilterCommands(app_commands.Group):
    """/filter: the terms this server refuses in prompts."""

    def __init__(self, moderation: Moderation) -> None:
        super().__init__(
            name="filter",
            description="Moderators: terms this server refuses in prompts",
            default_permissions=discord.Permissions(manage_messages=True),
            guild_only=True,
        )
        self.moderation = moderation

    @app_commands.command(name="add", description="Refuse prompts containing a word or phrase")
    @app_commands.describe(term="A word or phrase; end it with * to match words it starts")
    async def add(self, interaction: Interaction, term: app_commands.Range[str, 1, 100]) -> None:
        await thinking(interaction)
        text = await self.moderation.add_banned_term(requester_of(interaction), term)
        await answer(interaction, text)

    @app_commands.command(name="remove", description="Allow a refused term again")
    @app_commands.describe(term="The term as /filter list shows it")
    async def remove(self, interaction: Interaction, term: app_commands.Range[str, 1, 100]) -> None:
        await thinking(interaction)
        text = await self.moderation.remove_banned_term(requester_of(interaction), term)
        await answer(interaction, text)

    @app_commands.command(name="list", description="The terms this server refuses")
    async def list_terms(self, interaction: Interaction) -> None:
        await thinking(interaction)
        await answer(interaction, await self.moderation.banned_terms(requester_of(interaction)))


class ModerationFeature:
    """What moderators do about prompts and jobs."""

    def __init__(self, moderation: Moderation, publisher: Publisher) -> None:
        self.moderation = moderation
        self.publisher = publisher

    def register(self, tree: app_commands.CommandTree[Any], router: ButtonRouter) -> None:
        slash(tree, "block", "Moderators: stop a job, or take a finished one down", self.block)
        tree.add_command(FilterCommands(self.moderation))

    @app_commands.default_permissions(manage_messages=True)
    @app_commands.guild_only()
    @app_commands.describe(
        job="The job id shown under the job",
        reason="Shown in its message instead of the image",
        charge="Refund its owner (the default), or keep the charge for abuse",
        followups="Also remove the upscales and variations made from it",
    )
    @app_commands.choices(
        charge=[
            app_commands.Choice(name="refund (default)", value="refund"),
            app_commands.Choice(name="keep the charge (abuse)", value="keep"),
        ]
    )
    async def block(
        self,
        interaction: Interaction,
        job: app_commands.Range[str, 1, 40],
        reason: app_commands.Range[str, 1, 200] = "no reason given",
        charge: str = "refund",
        followups: bool = False,
    ) -> None:
        await thinking(interaction)
        if charge not in ("refund", "keep"):
            raise UserFacingError(f"charge must be refund or keep, not {charge!r}")
        text = await self.moderation.block(
            requester_of(interaction),
            job.strip().lower(),
            reason,
            keep_charge=charge == "keep",
            followups=followups,
        )
        self.publisher.wake()
        await answer(interaction, text)
