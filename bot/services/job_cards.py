"""The publisher's read model of the ledger: job cards, job messages, result files. No discord.py.

A job's message shows a :class:`JobCard` (prompt, options, status, position) and, once the job is
finished, its result and buttons. :class:`JobCards` builds both from the ledger and walks the
delivery steps (claim, release, mark posted) for the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from bot.actions import layout_of
from bot.customid import ButtonRef, join
from bot.render import JobCard, job_buttons, operation_title, options_summary
from bot.session_ids import vote_id
from config.settings import Settings
from generation.grid import reencode
from generation.request import GenerationRequest
from storage.delivery_ledger import DeliveryLedger
from storage.errors import IllegalTransition, JobNotFound
from storage.images import ImageStore
from storage.queue import JobQueue
from storage.session_reads import SessionReads
from storage.types import CopyKind, HoldState, JobStatus, JobView, OpenInteraction, Visibility

#: The sharing row's custom_id codes: like (``atl:1:lk:<job id>``), the prompt card
#: (``atl:1:pc:<job id>``) and remix of the prompt (``atl:1:rx:<job id>``).
LIKE_CODE = "lk"
PROMPT_CODE = "pc"
REMIX_CODE = "rx"
PUBLISH_CODE = "pb"
#: A showcase post's button that takes it off the showcase (moderators).
UNPUBLISH_CODE = "ub"


def like_label(count: int) -> str:
    return f"\u2764 {count}"


def showcase_row(job_id: str, like_count: int) -> tuple[tuple[str, str], ...]:
    """The buttons of a job's showcase post: its own like (with the count) and Unpublish."""
    return (
        (like_label(like_count), join(LIKE_CODE, job_id)),
        ("Unpublish", join(UNPUBLISH_CODE, job_id)),
    )


@dataclass(frozen=True)
class Ticket:
    """An accepted (or re-shown) job and how its message should look now."""

    job_id: str
    card: JobCard
    #: Its result will be held for a moderator's review (a review term matched).
    held: bool = False


def held_note(tickets: Sequence[Ticket]) -> str:
    """What the first answer says when a review term will hold the result."""
    if not any(ticket.held for ticket in tickets):
        return ""
    return (
        " Its prompt has a term this server reviews: the result will be held for a "
        "moderator, and you will be told (here in /info, and by DM) when they decide."
    )


@dataclass(frozen=True)
class JobMessage:
    """A job whose message is not final yet, as the publisher needs it."""

    job_id: str
    owner_id: int
    channel_id: int
    message_id: int | None
    attachment_limit: int
    terminal: bool
    card: JobCard
    buttons: list[list[tuple[str, ButtonRef]]]
    image_refs: tuple[str, ...]
    preview_ref: str | None
    #: The interaction that asked for it: where to look for a message posted but not recorded.
    interaction_id: int | None = None
    #: Tries of the final post so far (the claim of this try not counted).
    post_attempts: int = 0
    #: Its result may be shown (succeeded, not held for review, not deleted).
    showable: bool = False
    #: A last row of (label, custom_id) buttons that make no job: the like button.
    extra_row: tuple[tuple[str, str], ...] = ()


class JobCards:
    """What a job's message shows, and the delivery steps, over the ledger and the images."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue[GenerationRequest],
        ledger: DeliveryLedger[GenerationRequest],
        images: ImageStore,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.ledger = ledger
        self.images = images
        #: Group sessions, when wired: an entry's message shows a vote button and, while its
        #: round runs in an anonymous session, no author.
        self.sessions: SessionReads | None = None

    async def card(self, job: JobView[GenerationRequest]) -> JobCard:
        """The card of ``job`` now; a queued job's card asks the queue for its position."""
        request = job.request
        position = eta = None
        if job.status is JobStatus.QUEUED:
            place = await self.queue.place(job.id)
            position, eta = place.position, place.eta_seconds
        return JobCard(
            job_id=job.id,
            owner_id=job.owner_id,
            prompt=request.prompt,
            label=operation_title(request.operation, request.source.index if request.source else 0),
            options=options_summary(
                request.aspect,
                request.seed,
                request.mode.value,
                request.steps,
                request.guidance,
                request.chaos,
                request.negative_prompt,
            ),
            status=job.status,
            position=position,
            eta_seconds=eta,
            step=job.progress_step,
            total_steps=job.progress_total,
            error=job.error,
            charged=job.charged,
            undeliverable=job.give_up_reason if job.given_up_at is not None else None,
            held=job.status is JobStatus.SUCCEEDED and job.hold is HoldState.HELD,
            deleted=job.deleted_at is not None,
        )

    async def shown_card(self, job: JobView[GenerationRequest]) -> JobCard:
        """The card of a job posted again (``/show``, Open): an anonymous session entry's
        whose round is on names no one (``storage.visibility.author_hidden``)."""
        card = await self.card(job)
        if job.session_id is None:
            return card
        return replace(card, author_hidden=bool(await self.ledger.hidden_authors([job.id])))

    async def attach_message(
        self, job_id: str, message_id: int, attachment_limit: int, token_expires_at: datetime
    ) -> None:
        await self.ledger.attach_message(
            job_id,
            message_id,
            attachment_limit=attachment_limit,
            interaction_expires_at=token_expires_at,
        )

    async def undelivered_jobs(self) -> list[JobView[GenerationRequest]]:
        """Jobs whose message is not final: finished ones that are due first (so a long queue
        never holds a result back; a result that keeps failing waits out its backoff behind the
        others), then queued and running ones, oldest first. Given-up deliveries and those of
        servers the bot has left are not listed."""
        finished = await self.ledger.list_undelivered(terminal_only=True)
        active = await self.ledger.list_undelivered(active_only=True)
        return [*finished, *active]

    async def message_of(self, job_id: str) -> JobMessage:
        return await self.message_for(await self.queue.require(job_id))

    async def message_for(self, job: JobView[GenerationRequest]) -> JobMessage:
        card = await self.card(job)
        extra_row = self._extra_row(job)
        if job.session_id is not None and self.sessions is not None:
            entry = await self.sessions.entry_of_job(job.id)
            session = await self.sessions.find(job.session_id)
            if entry is not None and session is not None:
                running = session.live and session.round == entry.round
                card = replace(card, author_hidden=session.anonymous and running)
                if job.showable and running:
                    extra_row = (("Vote", vote_id(entry.id)), *extra_row)
        return JobMessage(
            job_id=job.id,
            owner_id=job.owner_id,
            channel_id=job.channel_id or 0,
            message_id=job.message_id,
            attachment_limit=job.attachment_limit
            or self.settings.generation.attachment_limit_bytes,
            terminal=job.terminal,
            card=card,
            buttons=job_buttons(job.id, layout_of(job.request.image_count)),
            extra_row=extra_row,
            # The one rule for serving images: a succeeded job's results unless they are held
            # for review, a running job's preview. A blocked job keeps its files for an
            # appeal, but nothing serves them. Previews are shown only while nothing can hold
            # the result: no review term matched and no output classifier is configured (a
            # preview of a result the classifier will flag would be public already).
            image_refs=tuple(job.result_refs) if job.showable else (),
            preview_ref=job.preview_ref if self._previews_shown(job) else None,
            interaction_id=job.interaction_id,
            post_attempts=job.post_attempts,
            showable=job.showable,
        )

    def _extra_row(self, job: JobView[GenerationRequest]) -> tuple[tuple[str, str], ...]:
        """The sharing row of a server's shown job: like (with its count), Prompt, Remix. Who
        may use them is checked at the click (``storage.visibility``)."""
        if job.guild_id is None or not job.showable:
            return ()
        row = [
            (like_label(job.like_count), join(LIKE_CODE, job.id)),
            ("Prompt", join(PROMPT_CODE, job.id)),
            ("Remix", join(REMIX_CODE, job.id)),
        ]
        if job.visibility is Visibility.PUBLIC:
            row.append(("Publish", join(PUBLISH_CODE, job.id)))
        return tuple(row)

    def _previews_shown(self, job: JobView[GenerationRequest]) -> bool:
        return (
            job.status is JobStatus.RUNNING
            and job.hold is None
            and self.settings.moderation.classifier_model is None
        )

    async def claim(self, job_id: str) -> bool:
        return await self.ledger.claim(job_id)

    async def release(self, job_id: str, error: str, retry_after: float | None = None) -> None:
        """Let a failed post go, to be tried again in ``retry_after`` seconds."""
        await self.ledger.release(job_id, error, retry_after=retry_after)

    async def give_up(self, job_id: str, reason: str) -> bool:
        """Stop trying to post a result; ``reason`` is shown to its owner."""
        return await self.ledger.give_up(job_id, reason)

    async def open_interactions(self) -> list[OpenInteraction]:
        return await self.ledger.open_interactions()

    async def forget_tokens(self, job_ids: list[str] | None = None) -> int:
        return await self.ledger.forget_tokens(job_ids)

    async def withdraw(self, job_ids: list[str]) -> None:
        """Cancel (and refund) jobs whose interaction was never answered: the user saw it fail,
        so the job must not run either."""
        for job_id in job_ids:
            with contextlib.suppress(IllegalTransition, JobNotFound):
                await self.queue.cancel(job_id)
                # Nothing to show: the user saw the command fail, so no "cancelled" message.
                if await self.ledger.claim(job_id):
                    await self.ledger.mark_posted(job_id)

    async def add_copy(
        self, job_id: str, channel_id: int, message_id: int, kind: CopyKind = CopyKind.SHOW
    ) -> None:
        await self.ledger.add_copy(job_id, channel_id, message_id, kind)

    async def copies(self, job_id: str) -> list[tuple[int, int]]:
        return await self.ledger.copies(job_id)

    async def copy_records(self, job_id: str) -> list[tuple[int, int, CopyKind]]:
        return await self.ledger.copy_records(job_id)

    async def forget_copies(self, job_id: str) -> None:
        await self.ledger.forget_copies(job_id)

    async def mark_posted(self, job_id: str, message_id: int | None) -> None:
        await self.ledger.mark_posted(job_id, message_id)

    async def result_files(self, message: JobMessage) -> list[tuple[str, bytes]]:
        """The one attachment of a finished job (the grid, or the single image), re-encoded
        if it is bigger than the attachment limit the job's interaction reported."""
        if not message.image_refs:
            return []
        ref = message.image_refs[-1]  # by convention the last ref is what gets posted
        name = ref.rsplit("/", 1)[-1]
        data = await self.images.get(ref)
        if len(data) > message.attachment_limit:
            encoded = await asyncio.to_thread(
                reencode, data, message.attachment_limit, name.rsplit(".", 1)[0]
            )
            return [(encoded.filename, encoded.data)]
        return [(name, data)]

    async def preview(self, message: JobMessage) -> bytes | None:
        if message.preview_ref is None:
            return None
        return await self.images.get(message.preview_ref)
