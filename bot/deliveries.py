"""The publisher's read model of the ledger: job cards, deliveries, result files. No discord.py.

Split from BotService so the Discord handlers' service stays about requests and permissions.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from bot.customid import ButtonRef
from bot.render import JobCard, grid_buttons, options_summary, single_buttons
from config.settings import Settings
from generation.grid import reencode
from generation.request import GenerationRequest, Operation
from storage.delivery_ledger import DeliveryLedger
from storage.images import ImageStore
from storage.queue import JobQueue
from storage.types import JobView

LABELS = {
    Operation.IMAGINE: "imagine",
    Operation.SELECT: "Image {index}",
    Operation.UPSCALE_SUBTLE: "Upscale (Subtle)",
    Operation.UPSCALE_CREATIVE: "Upscale (Creative)",
    Operation.VARY_SUBTLE: "Vary (Subtle) of image {index}",
    Operation.VARY_STRONG: "Vary (Strong) of image {index}",
}


@dataclass(frozen=True)
class Delivery:
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


class Deliveries:
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

    async def card(self, job: JobView[GenerationRequest]) -> JobCard:
        request = job.request
        position = eta = None
        if job.status == "queued":
            place = await self.queue.place(job.id)
            position, eta = place.position, place.eta_seconds
        label = LABELS[request.operation].format(
            index=request.source.index if request.source else 0
        )
        return JobCard(
            job_id=job.id,
            owner_id=job.owner_id,
            prompt=request.prompt,
            label=label,
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
        )

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
        """Jobs whose message is not final: finished ones first (so a long queue never holds a
        result back), then queued and running ones, oldest first."""
        finished = await self.ledger.list_undelivered(terminal_only=True)
        active = [job for job in await self.ledger.list_undelivered() if not job.terminal]
        return [*finished, *active]

    async def delivery_of(self, job_id: str) -> Delivery:
        return await self.delivery_for(await self.queue.require(job_id))

    async def delivery_for(self, job: JobView[GenerationRequest]) -> Delivery:
        request = job.request
        single = request.operation.image_count == 1
        return Delivery(
            job_id=job.id,
            owner_id=job.owner_id,
            channel_id=job.channel_id or 0,
            message_id=job.message_id,
            attachment_limit=job.attachment_limit
            or self.settings.generation.attachment_limit_bytes,
            terminal=job.terminal,
            card=await self.card(job),
            buttons=single_buttons(job.id) if single else grid_buttons(job.id),
            image_refs=tuple(job.result_refs),
            preview_ref=job.preview_ref,
        )

    async def claim(self, job_id: str) -> bool:
        return await self.ledger.claim(job_id)

    async def release(self, job_id: str, error: str) -> None:
        await self.ledger.release(job_id, error)

    async def mark_posted(self, job_id: str, message_id: int) -> None:
        await self.ledger.mark_posted(job_id, message_id)

    async def result_files(self, delivery: Delivery) -> list[tuple[str, bytes]]:
        """The one attachment of a finished job (the grid, or the single image), re-encoded
        if it is bigger than the attachment limit the job's interaction reported."""
        if not delivery.image_refs:
            return []
        ref = delivery.image_refs[-1]  # by convention the last ref is what gets posted
        name = ref.rsplit("/", 1)[-1]
        data = await self.images.get(ref)
        if len(data) > delivery.attachment_limit:
            encoded = await asyncio.to_thread(
                reencode, data, delivery.attachment_limit, name.rsplit(".", 1)[0]
            )
            return [(encoded.filename, encoded.data)]
        return [(name, data)]

    async def preview(self, delivery: Delivery) -> bytes | None:
        if delivery.preview_ref is None:
            return None
        return await self.images.get(delivery.preview_ref)
