"""Account and query commands: /help, /info, /queue, /cancel, /settings and the admins' /quota."""

from __future__ import annotations

from typing import Any, Literal

import discord
from discord import app_commands

from bot.errors import UserFacingError
from bot.features.base import Interaction, answer, requester_of, slash, thinking
from bot.render import (
    render_cancelled,
    render_help,
    render_info,
    render_queue,
    render_quota_override,
    render_settings,
)
from bot.router import ButtonRouter
from bot.services.account import AccountService, SettingsChange
from bot.services.review import ModerationChange, ReviewService
from config.settings import GenerationSettings


class AccountFeature:
    """A member's quota, jobs and defaults; the admins' per-member allowances."""

    def __init__(
        self,
        account: AccountService,
        generation: GenerationSettings,
        review: ReviewService | None = None,
    ) -> None:
        self.account = account
        self.generation = generation
        self.review = review

    def register(self, tree: app_commands.CommandTree[Any], router: ButtonRouter) -> None:
        slash(tree, "help", "How to use Atelier: options and buttons", self.help)
        slash(tree, "info", "Your quota and your jobs", self.info)
        slash(tree, "queue", "Your queue positions, the queue depth and ETAs", self.queue)
        slash(tree, "cancel", "Cancel your queued and running jobs", self.cancel)
        slash(tree, "quota", "Admins: set or clear a member's GPU-second allowance", self.quota)
        slash(tree, "settings", "Your defaults (and, for admins, the server's)", self.settings)

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

    @app_commands.describe(
        mode="Default mode for /imagine",
        aspect="Default aspect ratio, e.g. 3:2",
        variation="What V1-V4 do: subtle or strong variations",
        remix="Whether V1-V4 first open an editor to change the prompt",
        buttons="Server setting (admins): who may click a job's buttons",
        review_channel="Server setting (admins): where review items go (moderators only)",
        age_restricted="Server setting (admins): treat this channel as age-restricted",
        appeals="Server setting (admins): who may decide an appeal",
        auto_ban_strikes="Server setting (admins): rejections or refusals that ban (0: off)",
        auto_ban_window_hours="Server setting (admins): within how many hours they count",
        auto_ban_hours="Server setting (admins): how long an automatic ban lasts, in hours",
    )
    async def settings(
        self,
        interaction: Interaction,
        mode: Literal["fast", "quality"] | None = None,
        aspect: str | None = None,
        variation: Literal["subtle", "strong"] | None = None,
        remix: bool | None = None,
        buttons: Literal["owner", "anyone"] | None = None,
        review_channel: discord.TextChannel | None = None,
        age_restricted: bool | None = None,
        appeals: Literal["another moderator", "any moderator"] | None = None,
        auto_ban_strikes: app_commands.Range[int, 0, 20] | None = None,
        auto_ban_window_hours: app_commands.Range[float, 1, 720] | None = None,
        auto_ban_hours: app_commands.Range[float, 1, 8760] | None = None,
    ) -> None:
        await thinking(interaction)
        requester = requester_of(interaction)
        moderation = ModerationChange(
            review_channel=None if review_channel is None else review_channel.id,
            age_restricted=age_restricted,
            appeals=None if appeals is None else appeals.split()[0],
            auto_ban_strikes=auto_ban_strikes,
            auto_ban_window_hours=auto_ban_window_hours,
            auto_ban_hours=auto_ban_hours,
        )
        if review_channel is not None and review_channel.guild.id != requester.guild_id:
            raise UserFacingError("the review channel must be a channel of this server")
        lines: list[str] = []
        if not moderation.empty:
            if self.review is None:
                raise UserFacingError("moderation settings are not available on this bot")
            lines = await self.review.update(requester, moderation)
        change = SettingsChange(
            mode=mode, aspect=aspect, variation=variation, remix=remix, buttons=buttons
        )
        current = await self.account.update_settings(requester, change)
        await answer(interaction, "\n".join([render_settings(current), *lines]))
