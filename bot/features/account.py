"""Account and query commands: /help, /info, /queue, /cancel and the admins' /quota (/settings
is bot/features/settings.py)."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.features.base import Interaction, answer, requester_of, slash, thinking
from bot.render import (
    render_cancelled,
    render_help,
    render_info,
    render_queue,
    render_quota_override,
)
from bot.router import ButtonRouter
from bot.services.account import AccountService
from config.settings import GenerationSettings


class AccountFeature:
    """A member's quota and jobs; the admins' per-member allowances."""

    def __init__(self, account: AccountService, generation: GenerationSettings) -> None:
        self.account = account
        self.generation = generation

    def register(self, tree: app_commands.CommandTree[Any], router: ButtonRouter) -> None:
        slash(tree, "help", "How to use Atelier: options and buttons", self.help)
        slash(tree, "info", "Your quota and your jobs", self.info)
        slash(tree, "queue", "Your queue positions, the queue depth and ETAs", self.queue)
        slash(tree, "cancel", "Cancel your queued and running jobs", self.cancel)
        slash(tree, "quota", "Admins: set or clear a member's GPU-second allowance", self.quota)

    async def help(self, interaction: Interaction) -> None:
        await interaction.response.send_message(render_help(self.generation), ephemeral=True)

    async def info(self, interaction: Interaction) -> None:
        await thinking(interaction)
        readout, jobs, recent = await self.account.info(requester_of(interaction))
        await answer(interaction, render_info(readout, jobs, recent))

    async def queue(self, interaction: Interaction) -> None:
        await thinking(interaction)
        counts, jobs, worker_hung = await self.account.queue_status(requester_of(interaction))
        await answer(interaction, render_queue(counts, jobs, worker_hung=worker_hung))

    async def cancel(self, interaction: Interaction) -> None:
        await thinking(interaction)
        count = await self.account.cancel_all(requester_of(interaction))
        await answer(interaction, render_cancelled(count))

    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    @app_commands.describe(
        member="Whose allowance to change",
        gpu_seconds="Allowance per rolling window; leave out to go back to the default",
    )
    async def quota(
        self,
        interaction: Interaction,
        member: discord.Member,
        gpu_seconds: app_commands.Range[float, 0, 10_000_000] | None = None,
    ) -> None:
        await thinking(interaction)
        await self.account.set_quota_override(requester_of(interaction), member.id, gpu_seconds)
        await answer(interaction, render_quota_override(member.id, gpu_seconds))
