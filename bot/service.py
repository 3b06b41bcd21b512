"""BotService: the one service Discord handlers call. No discord.py in here.

It turns a requester and their input into validated requests (generation's parser), jobs (the
ledger) and tickets; ``self.deliveries`` answers the ledger questions the publisher asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bot.customid import Action, ButtonRef
from bot.deliveries import Deliveries
from bot.errors import UserFacingError
from bot.moderation import Moderation
from bot.render import JobCard
from bot.requester import Requester
from config.settings import Settings
from generation.errors import OptionError
from generation.followups import followup_request, reroll_request
from generation.options import (
    PromptDefaults,
    SeedSource,
    aspect_size,
    parse_imagine_prompt,
    random_seed,
)
from generation.presets import resolve_preset
from generation.request import GenerationRequest, Mode, Operation
from generation.weights import check_prompt_syntax
from storage.delivery_ledger import DeliveryLedger
from storage.images import ImageStore
from storage.preferences import PreferenceStore
from storage.queue import JobQueue
from storage.quota_policy import estimate_seconds
from storage.types import JobKind, JobView, NewJob, Owner

GRID_ACTIONS = {
    Action.SELECT: Operation.SELECT,
    Action.UPSCALE_SUBTLE: Operation.UPSCALE_SUBTLE,
    Action.UPSCALE_CREATIVE: Operation.UPSCALE_CREATIVE,
    Action.VARY_SUBTLE: Operation.VARY_SUBTLE,
    Action.VARY_STRONG: Operation.VARY_STRONG,
}
KIND_OF = {
    Operation.IMAGINE: JobKind.IMAGINE,
    Operation.SELECT: JobKind.SELECT,
    Operation.UPSCALE_SUBTLE: JobKind.UPSCALE,
    Operation.UPSCALE_CREATIVE: JobKind.UPSCALE,
    Operation.VARY_SUBTLE: JobKind.VARIATION,
    Operation.VARY_STRONG: JobKind.VARIATION,
}


class PromptChecker(Protocol):
    """Checks what only the model's tokenizer knows (the prompt's token count)."""

    def check(self, request: GenerationRequest) -> None: ...


@dataclass(frozen=True)
class Ticket:
    """An accepted (or re-shown) job and how its message should look now."""

    job_id: str
    card: JobCard


class BotService:
    """Everything the Discord handlers need, over the ledger and the image store."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue[GenerationRequest],
        delivery: DeliveryLedger[GenerationRequest],
        prefs: PreferenceStore,
        images: ImageStore,
        checker: PromptChecker | None = None,
        seed_source: SeedSource = random_seed,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.deliveries = Deliveries(settings, queue, delivery, images)
        self.prefs = prefs
        self.images = images
        self.checker = checker
        self.seed_source = seed_source
        self.moderation = Moderation(settings, queue, prefs)

    # -- /imagine -----------------------------------------------------------------------

    def _parse(
        self, prompt: str, options: Mapping[str, Any], defaults: PromptDefaults | None
    ) -> list[GenerationRequest]:
        requests = parse_imagine_prompt(
            prompt,
            settings=self.settings.generation,
            model=self.settings.model,
            extra_options=options,
            defaults=defaults,
            seed_source=self.seed_source,
        )
        if self.checker is not None:
            for request in requests:
                self.checker.check(request)
        return requests

    def precheck(self, prompt: str, options: Mapping[str, Any]) -> None:
        """Validate without the user's stored defaults: pure, instant, before the ack."""
        self._parse(prompt, options, None)

    async def imagine(
        self, requester: Requester, prompt: str, options: Mapping[str, Any]
    ) -> list[Ticket]:
        defaults = await self._defaults(requester.user_id)
        requests = self._parse(prompt, options, defaults)
        return await self._enqueue(requester, requests, parent=None, kind=JobKind.IMAGINE)

    async def _defaults(self, user_id: int) -> PromptDefaults:
        stored = await self.prefs.get_user_settings(user_id)
        mode = stored.get("mode")
        return PromptDefaults(mode=Mode(mode) if mode else None, aspect=stored.get("aspect"))

    async def _enqueue(
        self,
        requester: Requester,
        requests: list[GenerationRequest],
        *,
        parent: str | None,
        kind: JobKind,
    ) -> list[Ticket]:
        await self.moderation.refuse_banned_terms(requester, requests)
        owner = Owner(requester.user_id, requester.guild_id, requester.channel_id)
        jobs = [
            NewJob(
                kind=kind,
                parent_id=parent,
                request=request,
                mode=request.mode.value,
                batch_key=request.batch_key(),
                estimated_cost=estimate_seconds(self.settings.quota, kind, request.mode.value),
            )
            for request in requests
        ]
        views = await self.queue.enqueue_many(owner, jobs, role_ids=requester.role_ids)
        return [Ticket(view.id, await self.deliveries.card(view)) for view in views]

    # -- buttons ------------------------------------------------------------------------

    async def remix_prompt(self, user_id: int, ref: ButtonRef) -> str | None:
        """The parent's prompt when ``user_id`` has remix on, else None."""
        if not (await self.prefs.get_user_settings(user_id)).get("remix"):
            return None
        parent = await self.queue.get(ref.job_id)
        return None if parent is None else parent.request.prompt

    async def click(
        self, requester: Requester, ref: ButtonRef, prompt: str | None = None
    ) -> Ticket:
        """A new job from a button, after checking the job, the guild and the clicker.

        ``prompt`` replaces the parent's prompt (the remix editor)."""
        parent = await self.queue.get(ref.job_id)
        if parent is None or parent.guild_id != requester.guild_id:
            raise UserFacingError("this button belongs to a job I do not know here")
        if parent.status != "succeeded":
            raise UserFacingError(f"job `{parent.id}` has no images to work from ({parent.status})")
        await self._check_may_click(requester, parent)
        request = parent.request
        if ref.action is Action.REROLL:
            new = reroll_request(request, self.seed_source())
            return (await self._enqueue(requester, [new], parent=parent.id, kind=JobKind.REROLL))[0]
        operation = GRID_ACTIONS.get(ref.action)
        if operation is None:  # V1-V4 follow the clicker's variation setting
            stored = await self.prefs.get_user_settings(requester.user_id)
            strong = stored.get("variation", "strong") == "strong"
            operation = Operation.VARY_STRONG if strong else Operation.VARY_SUBTLE
        new = followup_request(
            request,
            operation,
            ref.index,
            parent_job_id=parent.id,
            settings=self.settings.generation,
            seed=self.seed_source(),
        )
        if prompt is not None and prompt.strip() != new.prompt:
            new = self._remixed(new, prompt)
        kind = KIND_OF[operation]
        return (await self._enqueue(requester, [new], parent=parent.id, kind=kind))[0]

    def _remixed(self, request: GenerationRequest, prompt: str) -> GenerationRequest:
        text = " ".join(prompt.split())
        if not text:
            raise OptionError("the remixed prompt is empty; describe the image")
        if len(text) > self.settings.generation.max_prompt_chars:
            raise OptionError(
                f"the remixed prompt is {len(text)} characters long; at most "
                f"{self.settings.generation.max_prompt_chars} are allowed"
            )
        check_prompt_syntax(text)
        remixed = GenerationRequest.model_validate({**request.to_json(), "prompt": text})
        if self.checker is not None:
            self.checker.check(remixed)
        return remixed

    async def _check_may_click(
        self, requester: Requester, parent: JobView[GenerationRequest]
    ) -> None:
        if requester.user_id == parent.owner_id or requester.is_admin:
            return
        guild = await self.prefs.get_guild_settings(requester.guild_id or 0)
        owner_only = guild.get("owner_only_buttons", self.settings.bot.owner_only_buttons)
        if owner_only:
            raise UserFacingError(
                "only the person who made this job may use its buttons in this server "
                "(an admin can change that with /settings buttons:anyone)"
            )

    # -- other commands -----------------------------------------------------------------

    async def show(self, requester: Requester, job_id: str) -> Ticket:
        job = await self.queue.get(job_id)
        if job is None or job.guild_id != requester.guild_id:
            raise UserFacingError(f"there is no job `{job_id}` in this server")
        return Ticket(job.id, await self.deliveries.card(job))

    async def info(self, requester: Requester) -> str:
        readout = await self.queue.quota_readout(
            requester.user_id, requester.guild_id, requester.role_ids
        )
        jobs = await self.queue.list_for_user(requester.user_id, active_only=True)
        lines = [
            f"**Quota** (GPU-seconds per {self.settings.quota.window_seconds / 3600:g} h): "
            f"used {readout.used:.1f}, reserved {readout.reserved:.1f}, "
            f"remaining {readout.remaining:.1f} of {readout.allowance:.1f}"
            + (
                f", next reset <t:{int(readout.resets_at.timestamp())}:R>"
                if readout.resets_at
                else ""
            ),
        ]
        if not jobs:
            lines.append("No queued or running jobs.")
        for job in jobs:
            link = (
                f"https://discord.com/channels/{job.guild_id or '@me'}/{job.channel_id}/"
                f"{job.message_id}"
                if job.message_id
                else "(message pending)"
            )
            lines.append(f"- `{job.id}` {job.kind} {job.status} {link}")
        return "\n".join(lines)

    async def queue_status(self, requester: Requester) -> str:
        jobs = await self.queue.list_for_user(requester.user_id, active_only=True)
        stats = await self.queue.stats()
        lines = [f"Queue: {stats.queued} waiting, {stats.running} running."]
        for job in jobs:
            if job.status == "queued":
                place = await self.queue.place(job.id)
                lines.append(
                    f"- `{job.id}` position {place.position}, about {place.eta_seconds:.0f} s"
                )
            else:
                lines.append(f"- `{job.id}` running")
        if not jobs:
            lines.append("You have no queued or running jobs.")
        return "\n".join(lines)

    async def cancel_all(self, requester: Requester) -> str:
        cancelled = await self.queue.cancel_for_user(requester.user_id)
        if not cancelled:
            return "You have no queued or running jobs."
        return f"Cancelled {cancelled} job(s); nothing is charged for them."

    async def update_settings(
        self,
        requester: Requester,
        *,
        mode: str | None,
        aspect: str | None,
        variation: str | None,
        remix: bool | None,
        buttons: str | None,
    ) -> str:
        if aspect is not None:
            preset = resolve_preset(self.settings.model, self.settings.generation.fast_lora)
            aspect_size(aspect, preset, self.settings.generation.max_aspect_ratio)
        changes = {
            key: value
            for key, value in {
                "mode": mode,
                "aspect": aspect,
                "variation": variation,
                "remix": remix,
            }.items()
            if value is not None
        }
        if changes:
            await self.prefs.update_user_settings(requester.user_id, changes)
        if buttons is not None:
            if not requester.is_admin or requester.guild_id is None:
                raise UserFacingError("only server admins (Manage Server) may change who clicks")
            await self.prefs.update_guild_settings(
                requester.guild_id, {"owner_only_buttons": buttons == "owner"}
            )
        current = await self.prefs.get_user_settings(requester.user_id)
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(current.items())) or "defaults"
        return f"Your settings: {shown}."

    async def set_quota_override(
        self, requester: Requester, user_id: int, seconds: float | None
    ) -> str:
        """An admin's per-user allowance (None restores the settings and role tiers)."""
        if not requester.is_admin:
            raise UserFacingError("only server admins (Manage Server) may change quotas")
        quota = self.queue.quota
        if seconds is None:
            await quota.clear_override(user_id)
            return f"<@{user_id}> is back on the default allowance."
        await quota.set_override(
            user_id, seconds, set_by=requester.user_id, reason="set with /quota"
        )
        return f"<@{user_id}> now has {seconds:g} GPU-seconds per rolling window."

    async def get_meta(self, key: str) -> str | None:
        return await self.prefs.get_meta(key)

    async def set_meta(self, key: str, value: str) -> None:
        await self.prefs.set_meta(key, value)
