"""Intake: every new job, whichever way it comes (/imagine, a button, the remix editor). No
discord.py.

A new job is admitted in two steps. :meth:`JobIntake.prepare_imagine` (or the button path) turns
the user's input into validated requests: the user's stored defaults come from the database, the
prompt is parsed once, its token count and the refused terms are checked. Only then is anything
acknowledged, and :meth:`JobIntake.submit` queues exactly those requests, with no second parse.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from bot.customid import ButtonRef
from bot.errors import UserFacingError
from bot.render import render_images_expired
from bot.requester import Requester
from bot.services.job_cards import JobCards, Ticket
from bot.services.moderation import Moderation
from bot.services.new_job import job_for
from bot.services.review import ReviewService
from bot.services.server_settings import (
    ALLOW_STEALTH_KEY,
    DEFAULT_VISIBILITY_KEY,
    VISIBILITY_KEY,
    owner_only_buttons,
)
from config.settings import Settings
from generation.errors import OptionError
from generation.followups import followup_request, reroll_request
from generation.options import (
    CommandOptions,
    PromptDefaults,
    SeedSource,
    check_prompt_text,
    parse_imagine_prompt,
    random_seed,
)
from generation.request import GenerationRequest, Mode, Operation
from storage.preferences import PreferenceStore
from storage.queue import JobQueue
from storage.types import HoldState, JobKind, JobStatus, JobView, Owner, Visibility
from storage.visibility import visible


class PromptChecker(Protocol):
    """Checks what only the model's tokenizer knows (the prompt's token count)."""

    def check(self, request: GenerationRequest) -> None: ...


@dataclass(frozen=True)
class ImagineInput:
    """/imagine as Discord delivered it: the prompt and the command's native options."""

    prompt: str
    options: CommandOptions = field(default_factory=CommandOptions)


@dataclass(frozen=True)
class Origin:
    """The interaction a new job answers: its snowflake orders the owner's jobs as Discord
    received them, and its token (a credential for 15 minutes; never logged or shown) lets a
    restarted bot finish the response. Kept in the job's delivery record, which workers never
    read."""

    interaction_id: int
    token: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True)
class Admitted:
    """Requests that passed every check a new job needs; only the intake makes these."""

    requests: tuple[GenerationRequest, ...]
    kind: JobKind
    parent_id: str | None = None
    #: A review term matched: the results are held for a moderator (the reason they see).
    hold_reason: str | None = None
    #: Asked in an age-restricted channel: the output classifier's loose thresholds apply.
    age_restricted: bool = False


#: Display names JobIntake remembers having recorded (see ``_name_to_record``).
NAMES_REMEMBERED = 10_000


class JobIntake:
    """Turns a requester's input into admitted requests, and admitted requests into jobs."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue[GenerationRequest],
        prefs: PreferenceStore,
        cards: JobCards,
        moderation: Moderation,
        checker: PromptChecker | None = None,
        seed_source: SeedSource = random_seed,
        review: ReviewService | None = None,
    ) -> None:
        self.review = review
        self.settings = settings
        self.queue = queue
        self.prefs = prefs
        self.cards = cards
        self.moderation = moderation
        self.checker = checker
        self.seed_source = seed_source
        #: (server, member) -> the display name last recorded with one of their jobs.
        self._names: dict[tuple[int, int], str] = {}

    # -- /imagine -----------------------------------------------------------------------

    async def prepare_imagine(self, requester: Requester, command: ImagineInput) -> Admitted:
        """Parse once, with the user's stored defaults, and check everything: nothing is
        acknowledged or queued for a prompt that fails here."""
        defaults = await self._defaults(requester.user_id)
        requests = parse_imagine_prompt(
            command.prompt,
            settings=self.settings.generation,
            model=self.settings.model,
            options=command.options,
            defaults=defaults,
            seed_source=self.seed_source,
        )
        return await self._admit(requester, requests, JobKind.IMAGINE, parent_id=None)

    async def imagine(
        self, requester: Requester, command: ImagineInput, origin: Origin | None = None
    ) -> list[Ticket]:
        """/imagine: prepare, then submit."""
        admitted = await self.prepare_imagine(requester, command)
        return await self.submit(requester, admitted, origin)

    async def remix_of(
        self, requester: Requester, job_id: str, text: str, origin: Origin | None = None
    ) -> list[Ticket]:
        """Remix of a job the requester may find (another member's public job, or their own):
        ``text`` (the prompt and options, prefilled with the job's) is parsed as /imagine
        would, and the new job is the requester's, paid from their quota, with the job
        recorded as its parent."""
        parent = await self.queue.get(job_id)
        if (
            parent is None
            or requester.guild_id is None
            or not visible(parent, requester.user_id, requester.guild_id)
        ):
            raise UserFacingError(f"job `{job_id}` is not available to remix here")
        defaults = await self._defaults(requester.user_id)
        requests = parse_imagine_prompt(
            text,
            settings=self.settings.generation,
            model=self.settings.model,
            defaults=defaults,
            seed_source=self.seed_source,
        )
        admitted = await self._admit(requester, requests, JobKind.IMAGINE, parent_id=parent.id)
        return await self.submit(requester, admitted, origin)

    async def submit(
        self, requester: Requester, admitted: Admitted, origin: Origin | None = None
    ) -> list[Ticket]:
        """Queue admitted requests (quota reserved in the same transaction), in the order of
        ``origin``'s interaction, with the interaction kept for the response."""
        owner = Owner(
            requester.user_id,
            requester.guild_id,
            requester.channel_id,
            name=self._name_to_record(requester),
        )
        visibilities = [await self.visibility(requester, request) for request in admitted.requests]
        jobs = [
            replace(
                job_for(self.settings.quota, admitted.kind, request),
                parent_id=admitted.parent_id,
                order_key=origin.interaction_id if origin else None,
                interaction_id=origin.interaction_id if origin else None,
                interaction_token=origin.token if origin else None,
                interaction_expires_at=origin.expires_at if origin else None,
                hold_reason=admitted.hold_reason,
                age_restricted=admitted.age_restricted,
                visibility=visibility,
            )
            for request, visibility in zip(admitted.requests, visibilities, strict=True)
        ]
        views = await self.queue.enqueue_many(owner, jobs, role_ids=requester.role_ids)
        self._recorded(owner)
        return [
            Ticket(view.id, await self.cards.card(view), held=view.hold is HoldState.HELD)
            for view in views
        ]

    def _name_to_record(self, requester: Requester) -> str | None:
        """The member's display name when it is not the one this process last recorded for
        them in that server (it is written with their job), else None. Bounded: the oldest
        remembered names are forgotten first, which only costs a repeated write."""
        if requester.guild_id is None or not requester.display_name:
            return None
        if self._names.get((requester.guild_id, requester.user_id)) == requester.display_name:
            return None
        return requester.display_name

    def _recorded(self, owner: Owner) -> None:
        """``owner.name`` was written with their job (the enqueue committed)."""
        if owner.name is None or owner.guild_id is None:
            return
        key = (owner.guild_id, owner.user_id)
        self._names.pop(key, None)
        self._names[key] = owner.name
        while len(self._names) > NAMES_REMEMBERED:
            del self._names[next(iter(self._names))]

    async def visibility(self, requester: Requester, request: GenerationRequest) -> Visibility:
        """Who may find the job: ``--stealth``/``--public``, else the member's default, else
        the server's (``public`` unless its admins chose otherwise). DM jobs are stealth. A
        server that does not allow stealth refuses ``--stealth`` (nothing is queued)."""
        if requester.guild_id is None:
            return Visibility.STEALTH
        guild = await self.prefs.get_guild_settings(requester.guild_id)
        allowed = bool(guild.get(ALLOW_STEALTH_KEY, True))
        if request.stealth is True:
            if not allowed:
                raise UserFacingError(
                    "this server does not allow stealth jobs (its admins chose so in /settings "
                    "server); use --public or leave the flag out. Nothing was queued or charged."
                )
            return Visibility.STEALTH
        if request.stealth is False:
            return Visibility.PUBLIC
        if allowed:
            mine = (await self.prefs.get_user_settings(requester.user_id)).get(VISIBILITY_KEY)
            if mine in (Visibility.PUBLIC.value, Visibility.STEALTH.value):
                return Visibility(mine)
        server = guild.get(DEFAULT_VISIBILITY_KEY, Visibility.PUBLIC.value)
        return Visibility(server) if server in {v.value for v in Visibility} else Visibility.PUBLIC

    async def _defaults(self, user_id: int) -> PromptDefaults:
        stored = await self.prefs.get_user_settings(user_id)
        mode = stored.get("mode")
        return PromptDefaults(mode=Mode(mode) if mode else None, aspect=stored.get("aspect"))

    async def _admit(
        self,
        requester: Requester,
        requests: list[GenerationRequest],
        kind: JobKind,
        parent_id: str | None,
    ) -> Admitted:
        """The checks every new job passes: a ban, the token count, then the server's terms
        (refused, or held for review)."""
        restricted = False
        if self.review is not None:
            await self.review.check_not_banned(requester)
            restricted = await self.review.age_restricted(requester)
        if self.checker is not None:
            for request in requests:
                self.checker.check(request)
        hold = await self.moderation.screen(requester, requests)
        return Admitted(tuple(requests), kind, parent_id, hold, restricted)

    # -- buttons ------------------------------------------------------------------------

    async def remix_prompt(self, requester: Requester, ref: ButtonRef) -> str | None:
        """The parent's prompt for the remix editor when the clicker has remix on and may use
        the parent; else None (and the click itself says why it is refused, if it is)."""
        if not (await self.prefs.get_user_settings(requester.user_id)).get("remix"):
            return None
        if self.review is not None:
            try:
                await self.review.check_not_banned(requester)
            except UserFacingError:
                return None  # the click itself answers with the ban
        parent = await self.queue.get(ref.job_id)
        if parent is None or not parent.showable:
            return None
        if parent.pruned_at is not None and _needs_images(ref):
            return None
        if not requester.may_see(parent.guild_id, parent.owner_id):
            return None  # never show another server's (or another user's DM) prompt
        if parent.visibility is Visibility.STEALTH and requester.user_id != parent.owner_id:
            return None  # nor a stealth job's, to anyone but its owner
        return parent.request.prompt

    async def click(
        self,
        requester: Requester,
        ref: ButtonRef,
        prompt: str | None = None,
        origin: Origin | None = None,
    ) -> Ticket:
        """A new job from a button, after checking the job, the guild and the clicker.

        ``prompt`` replaces the parent's prompt (the remix editor)."""
        parent = await self.queue.get(ref.job_id)
        if parent is None or not requester.may_see(parent.guild_id, parent.owner_id):
            raise UserFacingError("this button belongs to a job I do not know here")
        if parent.status is JobStatus.BLOCKED:
            raise UserFacingError(f"job `{parent.id}` was removed by a moderator")
        if parent.deleted_at is not None:
            raise UserFacingError(f"job `{parent.id}` was deleted by its owner")
        if parent.status is JobStatus.SUCCEEDED and not parent.showable:
            raise UserFacingError(
                f"job `{parent.id}` is held for a moderator's review; its buttons work once "
                "it is approved"
            )
        if parent.status is not JobStatus.SUCCEEDED:
            raise UserFacingError(f"job `{parent.id}` has no images to work from ({parent.status})")
        if parent.pruned_at is not None and _needs_images(ref):
            raise UserFacingError(
                render_images_expired(parent.id, self.settings.retention.images_days)
                + " (its re-roll button still works: it needs only the prompt)"
            )
        if parent.visibility is Visibility.STEALTH and requester.user_id != parent.owner_id:
            raise UserFacingError(
                f"job `{parent.id}` is stealth: only the member who made it may use its buttons"
            )
        await self._check_may_click(requester, parent)
        new = await self._followup(requester, ref, parent.request, parent.id)
        if prompt is not None and prompt.strip() != new.prompt:
            new = self._remixed(new, prompt)
        admitted = await self._admit(requester, [new], ref.action.spec.kind, parent_id=parent.id)
        return (await self.submit(requester, admitted, origin))[0]

    async def _followup(
        self, requester: Requester, ref: ButtonRef, parent: GenerationRequest, parent_id: str
    ) -> GenerationRequest:
        """The request ``ref``'s action makes from the parent's request."""
        operation = ref.action.spec.operation
        if operation is Operation.IMAGINE:
            return reroll_request(parent, self.seed_source())
        if operation is None:  # V1-V4 follow the clicker's variation setting
            stored = await self.prefs.get_user_settings(requester.user_id)
            strong = stored.get("variation", "strong") == "strong"
            operation = Operation.VARY_STRONG if strong else Operation.VARY_SUBTLE
        return followup_request(
            parent,
            operation,
            ref.index,
            parent_job_id=parent_id,
            settings=self.settings.generation,
            seed=self.seed_source(),
        )

    def _remixed(self, request: GenerationRequest, prompt: str) -> GenerationRequest:
        text = check_prompt_text(prompt, self.settings.generation, "remixed prompt")
        if not text:
            raise OptionError("the remixed prompt is empty; describe the image")
        return GenerationRequest.model_validate({**request.to_json(), "prompt": text})

    async def _check_may_click(
        self, requester: Requester, parent: JobView[GenerationRequest]
    ) -> None:
        if requester.user_id == parent.owner_id or requester.is_admin:
            return
        guild = await self.prefs.get_guild_settings(requester.guild_id or 0)
        if owner_only_buttons(guild, self.settings):
            raise UserFacingError(
                "only the person who made this job may use its buttons in this server "
                "(an admin can change that with /settings server buttons:anyone)"
            )


def _needs_images(ref: ButtonRef) -> bool:
    """Whether the button's action works from the job's images (all but the re-roll, which
    needs only the prompt and still works once the images have expired)."""
    return ref.action.spec.operation is not Operation.IMAGINE
