"""Slash commands. Each handler: interaction -> validated input, one service call, a reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

import discord
from discord import app_commands

from bot.delivery import Publisher, refuse
from bot.errors import reply_error
from bot.render import render_help, shorten
from bot.service import BotService, Requester
from config.settings import Settings

Mode = Literal["fast", "quality"]


def requester_of(interaction: discord.Interaction) -> Requester:
    """Who is asking, from where, with which roles."""
    user = interaction.user
    roles: tuple[int, ...] = ()
    admin = moderator = False
    if isinstance(user, discord.Member):
        roles = tuple(role.id for role in user.roles)
        # Discord resolves the member's permissions into the interaction itself; the role
        # cache may be cold (no members intent), so this is the value to trust.
        admin = interaction.permissions.manage_guild
        moderator = admin or interaction.permissions.manage_messages
    return Requester(
        user_id=user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id or 0,
        role_ids=roles,
        is_admin=admin,
        is_moderator=moderator,
    )


def register_commands(
    tree: app_commands.CommandTree[Any],
    service: BotService,
    publisher: Publisher,
    settings: Settings,
) -> None:
    """Add Atelier's commands to ``tree``."""

    @tree.command(name="imagine", description="Make a 2x2 grid of images from a prompt")
    @app_commands.describe(
        prompt="What to draw; Midjourney-style --options may follow",
        negative="What to leave out (like --no)",
        aspect="Aspect ratio W:H, e.g. 3:2 (like --ar)",
        seed="Seed 0..4294967295 (like --seed)",
        mode="fast drafts or quality",
        steps="Denoising steps (like --steps)",
        guidance="Guidance scale (like --cfg)",
        chaos="0..100: how different the four images are (like --chaos)",
    )
    async def imagine(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 1500],
        negative: str | None = None,
        aspect: str | None = None,
        seed: app_commands.Range[int, 0, 4294967295] | None = None,
        mode: Mode | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        chaos: app_commands.Range[int, 0, 100] | None = None,
    ) -> None:
        options: dict[str, Any] = {
            "no": negative,
            "ar": aspect,
            "seed": seed,
            "steps": steps,
            "cfg": guidance,
            "chaos": chaos,
            "fast": mode == "fast",
            "quality": mode == "quality",
        }
        # Parsing is pure and takes microseconds: a bad option is refused before anything is
        # acknowledged publicly, so the refusal can be ephemeral and nothing is queued.
        try:
            service.precheck(prompt, options)
        except Exception as exc:  # noqa: BLE001 - reply_error logs what is not a user error
            await reply_error(interaction, exc)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            tickets = await service.imagine(requester_of(interaction), prompt, options)
        except Exception as exc:  # noqa: BLE001 - refuse() logs what is not a user error
            await refuse(interaction, exc)
            return
        ids = ", ".join(f"`{ticket.job_id}`" for ticket in tickets)
        await publisher.announce(interaction, tickets, f"Queued: job {ids}.")

    @tree.command(name="help", description="How to use Atelier: options and buttons")
    async def help_command(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            shorten(render_help(settings.generation), 2000), ephemeral=True
        )

    @tree.command(name="info", description="Your quota and your jobs")
    async def info(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await service.info(requester_of(interaction))
        await interaction.followup.send(shorten(text, 2000), ephemeral=True)

    @tree.command(name="queue", description="Your queue positions, the queue depth and ETAs")
    async def queue(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await service.queue_status(requester_of(interaction))
        await interaction.followup.send(shorten(text, 2000), ephemeral=True)

    @tree.command(name="cancel", description="Cancel your queued and running jobs")
    async def cancel(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await service.cancel_all(requester_of(interaction))
        await interaction.followup.send(text, ephemeral=True)

    @tree.command(name="show", description="Post a job again, with working buttons")
    @app_commands.describe(job="The job id shown under every result")
    async def show(interaction: discord.Interaction, job: app_commands.Range[str, 1, 40]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            ticket = await service.show(requester_of(interaction), job.strip().lower())
        except Exception as exc:  # noqa: BLE001
            await refuse(interaction, exc)
            return
        await publisher.show(interaction, ticket)

    @tree.command(name="block", description="Moderators: stop a queued or running job")
    @app_commands.default_permissions(manage_messages=True)
    @app_commands.guild_only()
    @app_commands.describe(job="The job id shown under the job", reason="Shown in its message")
    async def block(
        interaction: discord.Interaction,
        job: app_commands.Range[str, 1, 40],
        reason: app_commands.Range[str, 1, 200] = "blocked by a moderator",
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            text = await service.moderation.block(
                requester_of(interaction), job.strip().lower(), reason
            )
        except Exception as exc:  # noqa: BLE001 - refuse() logs what is not a user error
            await refuse(interaction, exc)
            return
        publisher.wake()
        await interaction.edit_original_response(content=text)

    terms = app_commands.Group(
        name="filter",
        description="Moderators: terms this server refuses in prompts",
        default_permissions=discord.Permissions(manage_messages=True),
        guild_only=True,
    )

    @terms.command(name="add", description="Refuse prompts containing a word or phrase")
    @app_commands.describe(term="A word or phrase; end it with * to match words it starts")
    async def filter_add(
        interaction: discord.Interaction, term: app_commands.Range[str, 1, 100]
    ) -> None:
        await _moderate(interaction, service.moderation.add_banned_term, term)

    @terms.command(name="remove", description="Allow a refused term again")
    @app_commands.describe(term="The term as /filter list shows it")
    async def filter_remove(
        interaction: discord.Interaction, term: app_commands.Range[str, 1, 100]
    ) -> None:
        await _moderate(interaction, service.moderation.remove_banned_term, term)

    @terms.command(name="list", description="The terms this server refuses")
    async def filter_list(interaction: discord.Interaction) -> None:
        await _moderate(interaction, service.moderation.banned_terms)

    tree.add_command(terms)

    @tree.command(name="quota", description="Admins: set or clear a member's GPU-second allowance")
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    @app_commands.describe(
        member="Whose allowance to change",
        gpu_seconds="Allowance per rolling window; leave out to go back to the default",
    )
    async def quota(
        interaction: discord.Interaction,
        member: discord.Member,
        gpu_seconds: app_commands.Range[float, 0, 10_000_000] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await service.set_quota_override(requester_of(interaction), member.id, gpu_seconds)
        await interaction.followup.send(text, ephemeral=True)

    @tree.command(name="settings", description="Your defaults (and, for admins, the server's)")
    @app_commands.describe(
        mode="Default mode for /imagine",
        aspect="Default aspect ratio, e.g. 3:2",
        variation="What V1-V4 do: subtle or strong variations",
        remix="Whether V1-V4 first open an editor to change the prompt",
        buttons="Server setting (admins): who may click a job's buttons",
    )
    async def settings_command(
        interaction: discord.Interaction,
        mode: Mode | None = None,
        aspect: str | None = None,
        variation: Literal["subtle", "strong"] | None = None,
        remix: bool | None = None,
        buttons: Literal["owner", "anyone"] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await service.update_settings(
            requester_of(interaction),
            mode=mode,
            aspect=aspect,
            variation=variation,
            remix=remix,
            buttons=buttons,
        )
        await interaction.followup.send(text, ephemeral=True)


async def _moderate(
    interaction: discord.Interaction,
    action: Callable[..., Awaitable[str]],
    *args: str,
) -> None:
    """Defer ephemerally, run one moderation call, reply with its text or its refusal."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        text = await action(requester_of(interaction), *args)
    except Exception as exc:  # noqa: BLE001 - refuse() logs what is not a user error
        await refuse(interaction, exc)
        return
    await interaction.followup.send(shorten(text, 2000), ephemeral=True)
