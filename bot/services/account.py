"""Account and query commands: /info, /queue, /cancel, /show, /settings me, /quota. No
discord.py.

Each method checks the requester's right to ask, reads or changes the ledger, and returns plain
values; bot/render.py turns them into messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.errors import UserFacingError
from bot.render import JobLine, render_images_expired
from bot.requester import Requester
from bot.services.job_cards import JobCards, Ticket
from config.settings import Settings
from generation.options import aspect_size
from generation.presets import resolve_preset
from generation.request import GenerationRequest
from storage.preferences import PreferenceStore
from storage.queue import JobQueue
from storage.types import JobStatus, JobView, QuotaReadout, Visibility


@dataclass(frozen=True)
class SettingsChange:
    """A member's own defaults that /settings me may change; None leaves one as it is. (The
    server's settings are /settings server's: see ``ServerSettings``.)"""

    mode: str | None = None
    aspect: str | None = None
    variation: str | None = None
    remix: bool | None = None
    #: "public" or "stealth": who may find the member's new jobs by default.
    visibility: str | None = None


def _line(
    job: JobView[GenerationRequest], position: int | None = None, eta: float | None = None
) -> JobLine:
    return JobLine(
        job_id=job.id,
        kind=job.kind,
        status=job.status,
        guild_id=job.guild_id,
        channel_id=job.channel_id,
        message_id=job.message_id,
        position=position,
        eta_seconds=eta,
        reserved=job.reserved,
        gpu_seconds=job.gpu_seconds,
        charged=job.charged,
        undeliverable=job.give_up_reason if job.given_up_at is not None else None,
        hold=job.hold,
        error=job.error,
    )


#: How many finished jobs /info lists with their cost.
RECENT_JOBS = 10


class AccountService:
    """A member's view of their own quota, jobs and settings, and the admins' quota overrides.

    ``worker_hung`` (given when a worker runs in the bot's process) says whether that worker
    stopped after a job hung; /queue then says so."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue[GenerationRequest],
        prefs: PreferenceStore,
        cards: JobCards,
        worker_hung: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.prefs = prefs
        self.cards = cards
        self.worker_hung = worker_hung

    async def info(self, requester: Requester) -> tuple[QuotaReadout, list[JobLine], list[JobLine]]:
        """The requester's quota standing, their queued and running jobs, and what their
        recent finished jobs cost."""
        readout = await self.queue.quota_readout(
            requester.user_id, requester.guild_id, requester.role_ids
        )
        active = await self.queue.list_for_user(requester.user_id, active_only=True)
        latest = await self.queue.list_for_user(requester.user_id, limit=RECENT_JOBS)
        recent = [_line(job) for job in latest if job.terminal]
        return readout, [_line(job) for job in active], recent

    async def queue_status(
        self, requester: Requester
    ) -> tuple[dict[JobStatus, int], list[JobLine], bool]:
        """The queue's depth per status, the requester's jobs with positions and ETAs, and
        whether this process's worker stopped after a job hung."""
        jobs = await self.queue.list_for_user(requester.user_id, active_only=True)
        stats = await self.queue.stats()
        lines = []
        for job in jobs:
            if job.status is JobStatus.QUEUED:
                place = await self.queue.place(job.id)
                lines.append(_line(job, place.position, place.eta_seconds))
            else:
                lines.append(_line(job))
        counts = {JobStatus.QUEUED: stats.queued, JobStatus.RUNNING: stats.running}
        return counts, lines, self.worker_hung is not None and self.worker_hung()

    async def cancel_all(self, requester: Requester) -> int:
        """Cancel the requester's queued jobs (refunded) and running ones (charged the GPU time
        they used); how many there were."""
        return await self.queue.cancel_for_user(requester.user_id)

    async def show(self, requester: Requester, job_id: str) -> Ticket:
        """Any job of the requester's server, to post again."""
        job = await self.queue.get(job_id)
        if job is None or not requester.may_see(job.guild_id, job.owner_id):
            raise UserFacingError(f"there is no job `{job_id}` in this server")
        if job.status is JobStatus.BLOCKED:
            raise UserFacingError(f"job `{job_id}` was removed by a moderator")
        if job.deleted_at is not None:
            raise UserFacingError(f"job `{job_id}` was deleted by its owner")
        if job.guild_id is not None and job.visibility is Visibility.STEALTH:
            if job.owner_id != requester.user_id and not requester.is_moderator:
                raise UserFacingError(f"there is no job `{job_id}` in this server")
            raise UserFacingError(
                f"job `{job_id}` is stealth: /show would post it for everyone here"
            )
        if job.status is JobStatus.SUCCEEDED and not job.showable:
            raise UserFacingError(f"job `{job_id}` is held for a moderator's review")
        if job.status is JobStatus.SUCCEEDED and job.pruned_at is not None:
            raise UserFacingError(
                render_images_expired(job.id, self.settings.retention.images_days)
            )
        return Ticket(job.id, await self.cards.shown_card(job))

    async def update_settings(self, requester: Requester, change: SettingsChange) -> dict[str, Any]:
        """Store the requester's own defaults, in a server or in DMs alike; the requester's
        settings afterwards (unchanged when nothing is given)."""
        if change.aspect is not None:
            preset = resolve_preset(self.settings.model, self.settings.generation.fast_lora)
            aspect_size(change.aspect, preset, self.settings.generation.max_aspect_ratio)
        own = {
            "mode": change.mode,
            "aspect": change.aspect,
            "variation": change.variation,
            "remix": change.remix,
            "visibility": change.visibility,
        }
        changes = {key: value for key, value in own.items() if value is not None}
        if changes:
            await self.prefs.update_user_settings(requester.user_id, changes)
        return await self.prefs.get_user_settings(requester.user_id)

    async def set_quota_override(
        self, requester: Requester, user_id: int, seconds: float | None
    ) -> None:
        """An admin's allowance for a member in this server (None restores the settings and
        role tiers), at most the operator's ceiling. Usage still counts across all servers."""
        if not requester.is_admin or requester.guild_id is None:
            raise UserFacingError("only server admins (Manage Server) may change quotas")
        if seconds is None:
            await self.queue.quota.clear_override(user_id, guild_id=requester.guild_id)
            return
        ceiling = self.settings.quota.admin_override_ceiling
        if not 0 <= seconds <= ceiling:  # NaN too: Discord bounds the option, we check again
            raise UserFacingError(
                f"{seconds:g} GPU-seconds is not an allowance a server may grant; the bot's "
                f"operator allows 0 to {ceiling:g} per member"
            )
        await self.queue.quota.set_override(
            user_id,
            seconds,
            guild_id=requester.guild_id,
            set_by=requester.user_id,
            reason="set with /quota",
        )
