"""Image commands: /imagine, /show, the job buttons (U, V, re-roll, upscale, vary) and the remix
editor."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

import discord
from discord import app_commands

from bot.actions import Action
from bot.customid import ButtonRef, CustomIdError, decode_job_payload, join, split
from bot.errors import UserFacingError
from bot.features.base import (
    Interaction,
    before_ack,
    origin_of,
    requester_of,
    slash,
    thinking,
)
from bot.publisher import Publisher
from bot.requester import Requester
from bot.router import ButtonRouter, ModalRoute, Route
from bot.services.account import AccountService
from bot.services.intake import ImagineInput, JobIntake
from bot.services.job_cards import held_note
from generation.options import CommandOptions, cleaning_note
from generation.request import Mode

log = logging.getLogger(__name__)

#: A modal must be the first answer to a click, so the remix lookup runs before any
#: acknowledgement; a slower database means no editor rather than a failed interaction.
REMIX_LOOKUP_SECONDS = 1.0


class ImageFeature:
    """Making images: new grids, follow-ups from buttons, and reposting a job."""

    def __init__(self, intake: JobIntake, account: AccountService, publisher: Publisher) -> None:
        self.intake = intake
        self.account = account
        self.publisher = publisher

    def register(self, tree: app_commands.CommandTree[Any], router: ButtonRouter) -> None:
        slash(tree, "imagine", "Make a 2x2 grid of images from a prompt", self.imagine)
        slash(tree, "show", "Post a job again, with working buttons", self.show)
        router.add(Route(codes=Action.codes(), decode=decode_job_payload, handle=self.on_click))
        router.add_modal(ModalRoute(REMIX_CODE, decode_remix, self.on_remix))
        self.router = router

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
        self,
        interaction: Interaction,
        prompt: app_commands.Range[str, 1, 1500],
        negative: str | None = None,
        aspect: str | None = None,
        seed: app_commands.Range[int, 0, 4294967295] | None = None,
        mode: Literal["fast", "quality"] | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        chaos: app_commands.Range[int, 0, 100] | None = None,
    ) -> None:
        options = CommandOptions(
            negative=negative,
            aspect=aspect,
            seed=seed,
            mode=Mode(mode) if mode else None,
            steps=steps,
            guidance=guidance,
            chaos=chaos,
        )
        command = ImagineInput(prompt, options)
        tickets = await before_ack(
            interaction,
            self.intake.imagine(requester_of(interaction), command, origin_of(interaction)),
        )
        ids = ", ".join(f"`{ticket.job_id}`" for ticket in tickets)
        note = cleaning_note(prompt, options)
        cleaned = f" I {note} from your text." if note else ""
        await self.publisher.announce(
            interaction, tickets, f"Queued: job {ids}.{cleaned}{held_note(tickets)}"
        )

    @app_commands.describe(job="The job id shown under every result")
    async def show(self, interaction: Interaction, job: app_commands.Range[str, 1, 40]) -> None:
        await thinking(interaction)
        ticket = await self.account.show(requester_of(interaction), job.strip().lower())
        await self.publisher.show(interaction, ticket)

    async def on_click(self, interaction: Interaction, ref: ButtonRef) -> None:
        """A job button: a new job with its own public message. A variation click by a user who
        turned remix on first opens an editor with the prompt."""
        if ref.action.spec.remix:
            prompt = await self._remix_prompt(requester_of(interaction), ref)
            if prompt is not None:
                await self.router.send_modal(interaction, RemixModal(ref, prompt))
                return
        await self.start_followup(interaction, requester_of(interaction), ref, None)

    async def start_followup(
        self, interaction: Interaction, requester: Requester, ref: ButtonRef, prompt: str | None
    ) -> None:
        ticket = await before_ack(
            interaction,
            self.intake.click(requester, ref, prompt=prompt, origin=origin_of(interaction)),
        )
        note = f"{ref.action.announce(ref.index)}: job `{ticket.job_id}`.{held_note([ticket])}"
        await self.publisher.announce(interaction, [ticket], note)

    async def _remix_prompt(self, requester: Requester, ref: ButtonRef) -> str | None:
        try:
            async with asyncio.timeout(REMIX_LOOKUP_SECONDS):
                return await self.intake.remix_prompt(requester, ref)
        except TimeoutError:
            log.warning(
                "remix lookup for user %s took too long; skipping the editor", requester.user_id
            )
            return None

    async def on_remix(
        self, interaction: Interaction, ref: ButtonRef, values: dict[str, str]
    ) -> None:
        """The remix editor's submit: the variation with the edited prompt. It carries its
        button in its custom_id, so it works after a restart and however long it stayed open."""
        prompt = values.get(PROMPT_FIELD)
        if prompt is None:
            raise UserFacingError("this form has no prompt field; click the button again")
        await self.start_followup(interaction, requester_of(interaction), ref, prompt)


#: The remix editor's custom_id code: ``atl:1:mx:<button's action code>:<job id>:<index>``.
REMIX_CODE = "mx"
PROMPT_FIELD = "prompt"


def encode_remix(ref: ButtonRef) -> str:
    value = join(REMIX_CODE, f"{ref.action.code}:{ref.job_id}:{ref.index}")
    if decode_remix(split(value)[1]) != ref:
        raise CustomIdError(f"cannot encode a remix editor for {ref!r}")
    return value


def decode_remix(payload: str) -> ButtonRef:
    """The button a remix editor was opened from; CustomIdError for anything else."""
    code, _, rest = payload.partition(":")
    try:
        ref = decode_job_payload(code, rest)
    except CustomIdError:
        raise CustomIdError("this form was not made by this version of Atelier") from None
    if not ref.action.spec.remix:
        raise CustomIdError("this form names an action that has no editor")
    return ref


class RemixModal(discord.ui.Modal, title="Remix"):
    """Edit the prompt before a variation runs. Stateless: the submit is routed by its
    custom_id (``ImageFeature.on_remix``), never by this object."""

    def __init__(self, ref: ButtonRef, prompt: str) -> None:
        super().__init__(timeout=None, custom_id=encode_remix(ref))
        self.add_item(
            discord.ui.TextInput(
                label="Prompt",
                custom_id=PROMPT_FIELD,
                style=discord.TextStyle.paragraph,
                default=prompt[:1500],
                max_length=1500,
            )
        )
