"""Moderation commands: /block, /filter add|remove|list and /modlog (Manage Messages), and the
audit log's Older/Newer buttons."""

from __future__ import annotations

from typing import Any, Literal

import discord
from discord import app_commands

from bot.customid import MODLOG_CODE, MODLOG_JOB, ModlogPageRef, decode_modlog_page
from bot.errors import UserFacingError
from bot.features.base import Interaction, answer, requester_of, slash, thinking
from bot.publisher import Publisher
from bot.render import render_modlog
from bot.router import ButtonRouter, Route
from bot.services.moderation import Moderation
from storage.types import ModLogPage


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

    @app_commands.command(
        name="add", description="Refuse prompts with a word or phrase, or hold their results"
    )
    @app_commands.describe(
        term="A word or phrase; end it with * to match words it starts",
        action="refuse: nothing is queued (default); review: it runs, a moderator approves it",
    )
    async def add(
        self,
        interaction: Interaction,
        term: app_commands.Range[str, 1, 100],
        action: Literal["refuse", "review"] = "refuse",
    ) -> None:
        await thinking(interaction)
        text = await self.moderation.add_banned_term(requester_of(interaction), term, action)
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
        slash(tree, "modlog", "Moderators: this server's audit log, newest first", self.modlog)
        tree.add_command(FilterCommands(self.moderation))
        router.add(
            Route(codes=frozenset({MODLOG_CODE}), decode=decode_modlog_page, handle=self.on_page)
        )
        self.router = router

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

    @app_commands.default_permissions(manage_messages=True)
    @app_commands.guild_only()
    @app_commands.describe(
        member="Only what was done to or by the bot about this member",
        job="Only what concerns this job id",
    )
    async def modlog(
        self,
        interaction: Interaction,
        member: discord.User | None = None,
        job: app_commands.Range[str, 1, 40] | None = None,
    ) -> None:
        await thinking(interaction)
        requester = requester_of(interaction)
        job_id = None if job is None else job.strip().lower()
        if job_id is not None and not MODLOG_JOB.fullmatch(job_id):
            raise UserFacingError(f"`{job_id[:40]}` is not a job id; it is shown under each job")
        member_id = None if member is None else member.id
        guild_id = requester.guild_id or 0
        page = await self.moderation.modlog_page(requester, guild_id, member=member_id, job=job_id)
        text, view = self._page(guild_id, page, member_id, job_id)
        await interaction.followup.send(text, view=view, ephemeral=True)

    async def on_page(self, interaction: Interaction, ref: ModlogPageRef) -> None:
        """Older or Newer under a /modlog page: the next page, in place. The button's server,
        like the rest of its custom_id, is only a claim: the clicker must moderate it, from
        inside it."""
        requester = requester_of(interaction)
        self.moderation.check_modlog_access(requester, ref.guild_id)
        await interaction.response.defer()
        page = await self.moderation.modlog_page(
            requester,
            ref.guild_id,
            member=ref.member,
            job=ref.job,
            before_id=ref.anchor if ref.older else None,
            after_id=None if ref.older else ref.anchor,
        )
        text, view = self._page(ref.guild_id, page, ref.member, ref.job)
        await interaction.edit_original_response(content=text, view=view)

    def _page(
        self, guild_id: int, page: ModLogPage, member: int | None, job: str | None
    ) -> tuple[str, discord.ui.View]:
        buttons = []
        if page.newer:
            newer = ModlogPageRef(
                guild_id, older=False, anchor=page.entries[0].id, member=member, job=job
            )
            buttons.append(("Newer", newer.encode()))
        if page.older:
            older = ModlogPageRef(
                guild_id, older=True, anchor=page.entries[-1].id, member=member, job=job
            )
            buttons.append(("Older", older.encode()))
        return render_modlog(page, member=member, job=job), self.router.view([buttons])
