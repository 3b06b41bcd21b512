"""/settings me (a member's own defaults) and /settings server (the server's settings)."""

from __future__ import annotations

from typing import Any, Literal

import discord
from discord import app_commands

from bot.features.base import Interaction, answer, requester_of, thinking
from bot.render_settings import render_server_change, render_server_settings, render_settings
from bot.router import ButtonRouter
from bot.services.account import AccountService, SettingsChange
from bot.services.review import ModerationChange
from bot.services.server_settings import ServerChange, ServerSettings
from storage.session_rules import LANE_SECONDS


class SettingsCommands(app_commands.Group):
    """/settings: a member's defaults, and the server's settings.

    The group has neither ``default_permissions`` nor ``guild_only``: Discord applies both to
    the whole command (discord.py sends them for top-level commands only), and either would hide
    /settings me from members or from DMs. /settings server is checked in ``ServerSettings`` on
    every call instead."""

    def __init__(self, account: AccountService, server: ServerSettings) -> None:
        super().__init__(name="settings", description="Your defaults, and your server's settings")
        self.account = account
        self.server_settings = server

    @app_commands.command(
        name="me", description="Your defaults for /imagine and its buttons; none to see them"
    )
    @app_commands.describe(
        mode="Default mode for /imagine",
        aspect="Default aspect ratio, e.g. 3:2",
        variation="What V1-V4 do: subtle or strong variations",
        remix="Whether V1-V4 first open an editor to change the prompt",
        visibility="Who may find your new jobs: the server's members, or only you (stealth)",
    )
    async def me(
        self,
        interaction: Interaction,
        mode: Literal["fast", "quality"] | None = None,
        aspect: str | None = None,
        variation: Literal["subtle", "strong"] | None = None,
        remix: bool | None = None,
        visibility: Literal["public", "stealth"] | None = None,
    ) -> None:
        await thinking(interaction)
        change = SettingsChange(
            mode=mode, aspect=aspect, variation=variation, remix=remix, visibility=visibility
        )
        current = await self.account.update_settings(requester_of(interaction), change)
        await answer(interaction, render_settings(current))

    @app_commands.command(
        name="server",
        description="This server's settings: admins change them, moderators see them",
    )
    @app_commands.describe(
        buttons="Who may click a job's buttons",
        review_channel="Where review items go (moderators only)",
        age_restricted="Treat this channel as age-restricted",
        appeals="Who may decide an appeal",
        auto_ban_strikes="Rejections or refusals that ban (0: off)",
        auto_ban_window_hours="Within how many hours they count",
        auto_ban_hours="How long an automatic ban lasts, in hours",
        default_visibility="Who may find new jobs unless their members choose otherwise",
        allow_stealth="Whether members may make stealth jobs (found only by them and moderators)",
        showcase_channel="Where published and featured images are posted",
        auto_feature_likes="Likes that feature an image automatically (0: off)",
        web_gallery="Show this server's public jobs on the read-only web gallery",
        session_host_role="Who may host group sessions (@everyone: Manage Events again)",
        session_lane_minutes=(
            "Minutes before a session round closes when its entries jump the queue (0: off)"
        ),
    )
    async def server(
        self,
        interaction: Interaction,
        buttons: Literal["owner", "anyone"] | None = None,
        review_channel: discord.TextChannel | None = None,
        age_restricted: bool | None = None,
        appeals: Literal["another moderator", "any moderator"] | None = None,
        auto_ban_strikes: app_commands.Range[int, 0, 20] | None = None,
        auto_ban_window_hours: app_commands.Range[float, 1, 720] | None = None,
        auto_ban_hours: app_commands.Range[float, 1, 8760] | None = None,
        default_visibility: Literal["public", "stealth"] | None = None,
        allow_stealth: bool | None = None,
        showcase_channel: discord.TextChannel | None = None,
        auto_feature_likes: app_commands.Range[int, 0, 1000] | None = None,
        web_gallery: bool | None = None,
        session_host_role: discord.Role | None = None,
        session_lane_minutes: app_commands.Range[int, 0, LANE_SECONDS[1] // 60] | None = None,
    ) -> None:
        await thinking(interaction)
        requester = requester_of(interaction)
        change = ServerChange(
            buttons=buttons,
            default_visibility=default_visibility,
            allow_stealth=allow_stealth,
            showcase_channel=None if showcase_channel is None else showcase_channel.id,
            showcase_channel_guild=None if showcase_channel is None else showcase_channel.guild.id,
            auto_feature_likes=auto_feature_likes,
            web_gallery=web_gallery,
            server_name=interaction.guild.name if interaction.guild is not None else "",
            moderation=ModerationChange(
                review_channel=None if review_channel is None else review_channel.id,
                age_restricted=age_restricted,
                appeals=None if appeals is None else appeals.split()[0],
                auto_ban_strikes=auto_ban_strikes,
                auto_ban_window_hours=auto_ban_window_hours,
                auto_ban_hours=auto_ban_hours,
            ),
            review_channel_guild=None if review_channel is None else review_channel.guild.id,
            session_host_role=None if session_host_role is None else session_host_role.id,
            session_host_role_guild=(
                None if session_host_role is None else session_host_role.guild.id
            ),
            session_lane_minutes=session_lane_minutes,
        )
        if change.empty:
            view = await self.server_settings.show(requester)
            await answer(interaction, render_server_settings(view))
            return
        lines, view = await self.server_settings.update(requester, change)
        await answer(interaction, render_server_change(lines, view))


class SettingsFeature:
    """The /settings group."""

    def __init__(self, account: AccountService, server: ServerSettings) -> None:
        self.account = account
        self.server = server

    def register(self, tree: app_commands.CommandTree[Any], router: ButtonRouter) -> None:
        tree.add_command(SettingsCommands(self.account, self.server))
