"""The one place where errors become what a Discord user sees.

Handlers never catch errors to answer them: slash commands raise into the command tree's error
handler, buttons into the router, modals into their ``on_error``, and all three call
:func:`reply_error`. Domain errors (bad options, full queue, no quota, forbidden button) carry a
message meant for the user and go back as a short ephemeral reply. Anything else is logged with its
context and the user gets a generic apology with a reference, never a stack trace or a secret.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import discord
from discord import app_commands

from bot.customid import CustomIdError
from bot.render import shorten
from generation.errors import GenerationError
from storage.errors import StorageError

log = logging.getLogger(__name__)


class UserFacingError(Exception):
    """A refusal decided by the bot itself (permissions, unknown job); the message is for users."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    UserFacingError,
    CustomIdError,
    GenerationError,
    StorageError,
)


def user_message(error: BaseException) -> str | None:
    """The text to show for a domain error, or None for an unexpected one."""
    if isinstance(error, StorageError) and not error.user_facing:
        return None
    if isinstance(error, USER_ERRORS):
        return str(error) or error.__class__.__name__
    return None


async def reply_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """Answer an interaction with an ephemeral error, whatever state its response is in.

    Not yet answered: an ephemeral response. Deferred (ephemerally, as every handler here
    defers): Discord turns the first follow-up into an edit of the "thinking..." message.
    """
    text = user_message(error)
    if text is None:
        ref = secrets.token_hex(4)
        log.error(
            "unexpected error in interaction %s (user %s, guild %s) [ref %s]",
            interaction.id,
            interaction.user.id if interaction.user else None,
            interaction.guild_id,
            ref,
            exc_info=error,
        )
        text = f"Something went wrong on our side (ref {ref}). Nothing was charged."
    # A message Discord refuses for its length would leave the user with "interaction failed".
    text = shorten(text)
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not deliver an error message for interaction %s", interaction.id)


def install_error_handler(tree: app_commands.CommandTree[Any]) -> None:
    """Route every slash command's exception to :func:`reply_error`."""

    @tree.error
    async def on_app_command_error(
        interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        await reply_error(interaction, original)
