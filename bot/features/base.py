"""What every feature shares: the Feature protocol, who is asking, and ephemeral replies."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import discord
from discord import app_commands

from bot.render import shorten
from bot.requester import Requester
from bot.router import ButtonRouter
from bot.services.intake import Origin

Interaction = discord.Interaction[Any]
T = TypeVar("T")
log = logging.getLogger(__name__)

#: How long a handler may work before it must acknowledge: Discord allows 3 s for the first
#: response, and the network takes its share.
ACK_BUDGET_SECONDS = 1.5
#: How long Discord accepts an interaction's token (responses, follow-ups, edits).
INTERACTION_TOKEN_LIFETIME = timedelta(minutes=15)


class Feature(Protocol):
    """A group of slash commands and buttons, registered once at start."""

    def register(self, tree: app_commands.CommandTree[Any], router: ButtonRouter) -> None: ...


def slash(
    tree: app_commands.CommandTree[Any],
    name: str,
    description: str,
    callback: Callable[..., Coroutine[Any, Any, None]],
) -> None:
    """Add a bound method as a top-level slash command. Its parameters (and decorators such as
    ``app_commands.describe`` or ``default_permissions``) define the command's options."""
    tree.add_command(app_commands.Command(name=name, description=description, callback=callback))


def requester_of(interaction: Interaction) -> Requester:
    """Who is asking, from where, with which roles.

    Admin and moderator rights come from the member's server-level permissions: every action
    they gate (terms, blocks, quotas, click rules) reaches the whole server, and
    ``interaction.permissions`` are the invoker's permissions in this one channel, where an
    overwrite may grant what the server does not.
    """
    user = interaction.user
    roles: tuple[int, ...] = ()
    admin = moderator = events = False
    if isinstance(user, discord.Member):
        roles = tuple(role.id for role in user.roles)
        permissions = _server_permissions(interaction, user)
        admin = permissions.manage_guild
        moderator = admin or permissions.manage_messages
        events = permissions.manage_events
    return Requester(
        user_id=user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id or 0,
        role_ids=roles,
        is_admin=admin,
        is_moderator=moderator,
        manage_events=events,
        age_restricted=bool(getattr(interaction.channel, "nsfw", False)),
        display_name=user.display_name,
    )


def _server_permissions(interaction: Interaction, member: discord.Member) -> discord.Permissions:
    """The member's permissions across the server, from the cached guild's roles (GUILD_CREATE
    and role events keep them; the interaction names the member's role ids). Owner and
    Administrator mean every permission. A guild that is not cached grants nothing (fail
    closed); a role missing from the cache can only take rights away."""
    guild = member.guild
    cached = interaction.client.get_guild(guild.id) is guild and not guild.unavailable
    if not cached or guild.get_role(guild.id) is None:
        log.debug("guild %s not cached: no moderator or admin rights for %s", guild.id, member.id)
        return discord.Permissions.none()
    return member.guild_permissions


async def before_ack(interaction: Interaction, work: Awaitable[T]) -> T:
    """Do ``work`` before acknowledging when it finishes within the budget, so a refusal is the
    interaction's own ephemeral response and an acknowledgement means the job is stored. When the
    database is slower, acknowledge privately ("thinking...") and finish the work after."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=ACK_BUDGET_SECONDS)
        if not done:
            await thinking(interaction)
        return await task
    finally:
        task.cancel()  # a no-op once it is done; stops it when this handler is cancelled


def origin_of(interaction: Interaction) -> Origin:
    """The interaction as a new job records it (see ``Origin``)."""
    return Origin(
        interaction.id, interaction.token, interaction.created_at + INTERACTION_TOKEN_LIFETIME
    )


async def thinking(interaction: Interaction) -> None:
    """Acknowledge privately ("thinking..."): the answer follows within 15 minutes."""
    await interaction.response.defer(ephemeral=True, thinking=True)


async def answer(interaction: Interaction, text: str) -> None:
    """The private answer to a deferred interaction (it replaces "thinking...")."""
    await interaction.followup.send(shorten(text), ephemeral=True)
