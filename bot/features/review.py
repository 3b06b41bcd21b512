"""The review queue in Discord: the item buttons in the moderators' channel (Approve, Reject,
Reject and ban, Grant or Deny an appeal, Show lineage), /review, /ban and /unban for moderators,
"Report to moderators" on any job message (the message's Apps menu), and /appeal (or the Appeal
button of the owner's DM) for a rejected job's owner.

Every button and form is stateless: its custom_id names the item or job, and everything else,
including whether the clicker may act, is checked against the database and the clicker's
server permissions at the moment of the click.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands

from bot.customid import CustomIdError, join
from bot.errors import UserFacingError
from bot.features.base import Interaction, answer, requester_of, slash, thinking
from bot.publisher import Publisher
from bot.review_poster import ACTIONS, APPEAL_CODE, REVIEW_CODE, ReviewPoster
from bot.router import ButtonRouter, ModalRoute, Route
from bot.services.review import DURATION_HELP, ReviewService
from storage.types import Decision, DecisionOutcome

#: Forms: the reason for a decision (``rvm:<r|b|d>:<item>``), an appeal (``apm:<job>``), a
#: report (``rpm:<job>``).
DECISION_FORM = "rvm"
APPEAL_FORM = "apm"
REPORT_FORM = "rpm"
REASON_FIELD = "reason"
_ITEM = re.compile(r"(?P<action>[a-z]):(?P<item>[1-9][0-9]{0,18})")
_JOB = re.compile(r"[a-z0-9]{6,32}")
#: What each button decides.
DECISIONS = {
    "a": Decision.APPROVE,
    "r": Decision.REJECT,
    "b": Decision.REJECT,
    "g": Decision.GRANT,
    "d": Decision.DENY,
}
#: Buttons that first ask for a reason (and claim the item while the form is open).
NEEDS_REASON = {"r", "b", "d"}


@dataclass(frozen=True)
class ItemRef:
    action: str
    item_id: int


def decode_item(code: str, payload: str) -> ItemRef:
    match = _ITEM.fullmatch(payload)
    if code != REVIEW_CODE or not match or match.group("action") not in ACTIONS:
        raise CustomIdError("this button was not made by this version of Atelier")
    return ItemRef(match.group("action"), int(match.group("item")))


def decode_form(payload: str) -> ItemRef:
    match = _ITEM.fullmatch(payload)
    if not match or match.group("action") not in NEEDS_REASON:
        raise CustomIdError("this form was not made by this version of Atelier")
    return ItemRef(match.group("action"), int(match.group("item")))


def decode_job(payload: str) -> str:
    if not _JOB.fullmatch(payload):
        raise CustomIdError("this button was not made by this version of Atelier")
    return payload


class ReasonForm(discord.ui.Modal):
    """One text field; routed by its custom_id (stateless, see ``ButtonRouter.send_modal``)."""

    def __init__(self, title: str, custom_id: str, label: str, *, required: bool = True) -> None:
        super().__init__(title=title, timeout=None, custom_id=custom_id)
        self.add_item(
            discord.ui.TextInput(
                label=label,
                custom_id=REASON_FIELD,
                style=discord.TextStyle.paragraph,
                max_length=500,
                required=required,
            )
        )


class ReviewFeature:
    """Reports, review decisions, appeals and bans."""

    def __init__(self, review: ReviewService, publisher: Publisher, poster: ReviewPoster) -> None:
        self.review = review
        self.publisher = publisher
        self.poster = poster

    def register(self, tree: app_commands.CommandTree[Any], router: ButtonRouter) -> None:
        self.router = router
        slash(tree, "review", "Moderators: the open items of the review queue", self.review_list)
        slash(tree, "ban", "Moderators: stop a member from using Atelier here", self.ban)
        slash(tree, "unban", "Moderators: let a banned member use Atelier again", self.unban)
        slash(tree, "appeal", "Appeal a moderator's rejection of your job (once)", self.appeal)
        report = app_commands.ContextMenu(name="Report to moderators", callback=self.report_message)
        report.guild_only = True
        tree.add_command(report)
        router.add(Route(codes=frozenset({REVIEW_CODE}), decode=decode_item, handle=self.on_item))
        router.add(
            Route(
                codes=frozenset({APPEAL_CODE}),
                decode=lambda code, payload: decode_job(payload),
                handle=self.on_appeal_button,
            )
        )
        router.add_modal(ModalRoute(DECISION_FORM, decode_form, self.on_decision_form))
        router.add_modal(ModalRoute(APPEAL_FORM, decode_job, self.on_appeal_form))
        router.add_modal(ModalRoute(REPORT_FORM, decode_job, self.on_report_form))

    # -- moderators ---------------------------------------------------------------------------

    @app_commands.default_permissions(manage_messages=True)
    @app_commands.guild_only()
    async def review_list(self, interaction: Interaction) -> None:
        await thinking(interaction)
        await answer(interaction, await self.review.open_list(requester_of(interaction)))

    @app_commands.default_permissions(manage_messages=True)
    @app_commands.guild_only()
    @app_commands.describe(
        member="Who may no longer create jobs or click job buttons here",
        duration=f"How long: {DURATION_HELP}",
        reason="Shown to the member whenever they try",
    )
    async def ban(
        self,
        interaction: Interaction,
        member: discord.User,
        duration: app_commands.Range[str, 1, 20],
        reason: app_commands.Range[str, 1, 300] = "no reason given",
    ) -> None:
        await thinking(interaction)
        text = await self.review.ban(requester_of(interaction), member.id, duration, reason)
        await answer(interaction, text)

    @app_commands.default_permissions(manage_messages=True)
    @app_commands.guild_only()
    @app_commands.describe(member="Whose Atelier ban ends now", reason="For the audit log")
    async def unban(
        self,
        interaction: Interaction,
        member: discord.User,
        reason: app_commands.Range[str, 1, 300] = "no reason given",
    ) -> None:
        await thinking(interaction)
        await answer(
            interaction, await self.review.unban(requester_of(interaction), member.id, reason)
        )

    async def on_item(self, interaction: Interaction, ref: ItemRef) -> None:
        """A button on a review item. Whoever clicks must moderate the item's server, from
        inside it (checked here, whatever the custom_id claims)."""
        requester = requester_of(interaction)
        if ref.action == "l":
            await interaction.response.defer(ephemeral=True, thinking=True)
            await answer(interaction, await self.review.lineage(requester, ref.item_id))
            return
        if ref.action in NEEDS_REASON:
            item = await self.review.claim(requester, ref.item_id)
            title = {"r": "Reject", "b": "Reject and ban", "d": "Deny appeal"}[ref.action]
            await self.router.send_modal(
                interaction,
                ReasonForm(
                    f"{title}: review #{item.id}",
                    join(DECISION_FORM, f"{ref.action}:{item.id}"),
                    "Reason (the owner is told)",
                ),
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        reason = "appeal granted" if ref.action == "g" else "approved"
        outcome = await self.review.decide(requester, ref.item_id, DECISIONS[ref.action], reason)
        await self._decided(interaction, outcome)

    async def on_decision_form(
        self, interaction: Interaction, ref: ItemRef, values: dict[str, str]
    ) -> None:
        requester = requester_of(interaction)
        reason = values.get(REASON_FIELD, "").strip()
        if not reason:
            raise UserFacingError("a rejection needs a reason: the owner is told it")
        await interaction.response.defer(ephemeral=True, thinking=True)
        outcome = await self.review.decide(
            requester, ref.item_id, DECISIONS[ref.action], reason, ban=ref.action == "b"
        )
        await self._decided(interaction, outcome)

    async def _decided(self, interaction: Interaction, outcome: DecisionOutcome) -> None:
        item = outcome.item
        self.publisher.wake()
        self.poster.wake()
        who = "the bot" if item.decided_by is None else f"<@{item.decided_by}>"
        decision = item.decision.value if item.decision else "?"
        if not outcome.decided:
            await answer(
                interaction,
                f"Review #{item.id} was already decided ({decision}) by {who}; nothing changed.",
            )
            return
        text = f"Review #{item.id}: {decision}. The owner is told by DM and in /info."
        if outcome.banned_until is not None:
            text += f" They are banned here until <t:{int(outcome.banned_until.timestamp())}:f>."
        await answer(interaction, text)

    # -- members ------------------------------------------------------------------------------

    async def report_message(self, interaction: Interaction, message: discord.Message) -> None:
        """The message's Apps menu: report the job it shows. A form asks why."""
        requester = requester_of(interaction)
        me = interaction.client.user
        if me is None or message.author.id != me.id:
            raise UserFacingError("only Atelier's job messages can be reported here")
        job_id = await self.review.job_of_message(requester, message.id)
        await self.router.send_modal(
            interaction,
            ReasonForm(
                "Report to moderators",
                join(REPORT_FORM, job_id),
                "What is wrong with it?",
            ),
        )

    async def on_report_form(
        self, interaction: Interaction, job_id: str, values: dict[str, str]
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await self.review.report(
            requester_of(interaction), job_id, values.get(REASON_FIELD, "")
        )
        self.poster.wake()
        await answer(interaction, text)

    @app_commands.describe(job="The job id shown under the job and in /info")
    async def appeal(self, interaction: Interaction, job: app_commands.Range[str, 1, 40]) -> None:
        await self._open_appeal(interaction, job.strip().lower())

    async def on_appeal_button(self, interaction: Interaction, job_id: str) -> None:
        await self._open_appeal(interaction, job_id)

    async def _open_appeal(self, interaction: Interaction, job_id: str) -> None:
        if not _JOB.fullmatch(job_id):
            raise UserFacingError(f"`{job_id[:40]}` is not a job id; /info lists yours")
        await self.review.check_appeal(requester_of(interaction), job_id)
        await self.router.send_modal(
            interaction,
            ReasonForm(
                f"Appeal: job {job_id}", join(APPEAL_FORM, job_id), "Why should it be restored?"
            ),
        )

    async def on_appeal_form(
        self, interaction: Interaction, job_id: str, values: dict[str, str]
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await self.review.appeal(
            requester_of(interaction), job_id, values.get(REASON_FIELD, "")
        )
        self.poster.wake()
        await answer(interaction, text)
