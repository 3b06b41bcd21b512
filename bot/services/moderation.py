"""Moderation: refused terms in prompts (the operator's and each server's), /block, which
stops unfinished jobs and takes finished ones down (with the jobs made from them, on request),
and the server's audit log (/modlog), where each of those is recorded.

Every new job passes :meth:`Moderation.screen` before it is queued, whichever way it comes
(/imagine, a button, the remix editor), so a refused prompt is never queued or charged. A server's
terms have an action: ``refuse`` (nothing is queued) or ``review`` (the job runs, and its result
is held for a moderator). The check reads both the prompt as typed and the words the text
encoders will receive.

The audit log records what happened after it happened: a refused prompt (by the bot: actor
None), a filter edit and each blocked job. A refusal in a DM belongs to no server and is only
logged by the application.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from typing import Any

from bot.errors import UserFacingError
from bot.prompt_filter import TermError, TermFilter, parse_term
from bot.render import shorten
from bot.requester import Requester
from bot.services.review import ReviewService
from config import ConfigError
from config.settings import Settings
from generation.request import GenerationRequest
from generation.weights import encoder_text
from storage.errors import IllegalTransition
from storage.modlog import ModerationLog
from storage.preferences import PreferenceStore
from storage.queue import JobQueue
from storage.types import JobStatus, JobView, ModAction, ModLogPage

log = logging.getLogger(__name__)

#: What /block can act on: unfinished jobs, and finished ones with images to take down.
BLOCKABLE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED)
#: The most follow-ups one /block lists or removes with it.
MAX_FOLLOWUPS = 50

#: Where a guild's refused terms live in its settings document.
BANNED_TERMS_KEY = "banned_terms"
#: Where a guild's review terms live (prompts with them are held for a moderator).
REVIEW_TERMS_KEY = "review_terms"
#: What a term does, and the settings key of each list.
TERM_ACTIONS = {"refuse": BANNED_TERMS_KEY, "review": REVIEW_TERMS_KEY}
#: How much of a refused prompt the audit log keeps (never in the reason, which names the term).
LOGGED_PROMPT_CHARS = 120
#: Rows on one /modlog page.
MODLOG_PAGE = 10


class Moderation:
    """What moderators (Manage Messages) can do, and the prompt check it implies."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue[GenerationRequest],
        prefs: PreferenceStore,
        modlog: ModerationLog,
        review: ReviewService | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.prefs = prefs
        self.modlog = modlog
        self.review = review
        try:
            self._operator_terms = tuple(parse_term(term) for term in settings.bot.banned_terms)
        except TermError as exc:
            raise ConfigError(f"ATELIER_BOT_BANNED_TERMS: {exc}") from None

    async def screen(self, requester: Requester, requests: list[GenerationRequest]) -> str | None:
        """Every new job passes here. A prompt with a refused term queues nothing (and counts
        towards the server's automatic ban); one with a review term is admitted, and the
        returned reason holds its result for a moderator. None: nothing matched."""
        server_terms: list[str] = []
        review_terms: list[str] = []
        if requester.guild_id is not None:
            guild = await self.prefs.get_guild_settings(requester.guild_id)
            server_terms = guild.get(BANNED_TERMS_KEY, [])
            review_terms = guild.get(REVIEW_TERMS_KEY, [])
        terms = TermFilter.of(self._operator_terms, server_terms)
        review = TermFilter.of((), review_terms)
        hold: str | None = None
        for request in requests:
            # The raw prompt, and the words the model gets: escapes (``n\\sfw``) and weight
            # marks split a word for the eye but not for the text encoders.
            encoded = encoder_text(request.prompt)
            term = terms.find(request.prompt) or terms.find(encoded)
            if term is not None:
                await self._refused(requester, request, term)
            found = review.find(request.prompt) or review.find(encoded)
            if found is not None and hold is None:
                hold = f"review term `{found}`"
        return hold

    async def _refused(self, requester: Requester, request: GenerationRequest, term: str) -> None:
        log.info(
            "refused a prompt of user %s in guild %s: it contains a banned term",
            requester.user_id,
            requester.guild_id,
        )
        if requester.guild_id is not None:
            await self.modlog.record(
                requester.guild_id,
                ModAction.REFUSED,
                actor_id=None,
                target_user_id=requester.user_id,
                reason=term,
                details={
                    "prompt": shorten(request.prompt, LOGGED_PROMPT_CHARS),
                    "channel_id": requester.channel_id,
                },
            )
            if self.review is not None:
                await self.review.strike(requester.guild_id, requester.user_id)
        raise UserFacingError(
            f"the prompt contains `{term}`, a term this server does not allow; "
            "nothing was queued or charged"
        )

    async def block(
        self,
        requester: Requester,
        job_id: str,
        reason: str,
        *,
        keep_charge: bool = False,
        followups: bool = False,
    ) -> str:
        """Moderation: stop a queued or running job of this server, or take a finished one
        down. Refunded unless ``keep_charge`` (for abuse). With ``followups``, the jobs made
        from it (upscales, variations, re-rolls) go too; without, the answer lists them."""
        if not requester.is_moderator:
            raise UserFacingError("only moderators (Manage Messages) may block jobs")
        job = await self.queue.get(job_id)
        if job is None or requester.guild_id is None or job.guild_id != requester.guild_id:
            raise UserFacingError(f"there is no job `{job_id}` in this server")
        lines = [await self._block_one(requester, job, reason, keep_charge, followups)]
        children = [
            child
            for child in await self.queue.followups(job.id, limit=MAX_FOLLOWUPS)
            if child.guild_id == requester.guild_id and child.status in BLOCKABLE
        ]
        if children and followups:
            done = 0
            for child in children:
                with contextlib.suppress(UserFacingError):  # it ended meanwhile
                    await self._block_one(
                        requester,
                        child,
                        f"{reason} (made from job {job.id})",
                        keep_charge,
                        followups,
                        parent_id=job.id,
                    )
                    done += 1
            lines.append(f"Also blocked {done} job(s) made from it.")
        elif children:
            listed = ", ".join(f"`{c.id}` ({c.kind}, {c.status})" for c in children)
            lines.append(
                f"Made from it: {listed}. Run /block again with followups:True to remove them too."
            )
        log.info(
            "moderator %s blocked job %s in guild %s (keep charge: %s, follow-ups: %s)",
            requester.user_id,
            job.id,
            requester.guild_id,
            keep_charge,
            followups,
        )
        return "\n".join(lines)

    async def _block_one(
        self,
        requester: Requester,
        job: JobView[GenerationRequest],
        reason: str,
        keep_charge: bool,
        followups: bool,
        *,
        parent_id: str | None = None,
    ) -> str:
        if job.status not in BLOCKABLE:
            already = "already removed" if job.status is JobStatus.BLOCKED else str(job.status)
            raise UserFacingError(
                f"job `{job.id}` has ended ({already}); there is nothing to block"
            )
        days = self.settings.bot.appeal_days
        try:
            blocked = await self.queue.block(
                job.id, reason, keep_charge=keep_charge, keep_images=timedelta(days=days)
            )
        except IllegalTransition:
            raise UserFacingError(f"job `{job.id}` ended before it could be blocked") from None
        assert job.guild_id is not None  # block() only reaches a server's own jobs
        await self.modlog.record(
            job.guild_id,
            ModAction.BLOCKED,
            actor_id=requester.user_id,
            target_user_id=job.owner_id,
            target_job_id=job.id,
            reason=reason,
            details={
                "keep_charge": keep_charge,
                "followups": followups,
                "was": str(job.status),
                "charged": blocked.charged,
                "parent_job_id": parent_id,
            },
        )
        if job.status is JobStatus.SUCCEEDED:
            what = (
                f"Removed job `{job.id}`: its message now says so, and its images are kept "
                f"hidden for {days:g} days (for an appeal), then deleted."
            )
        else:
            what = f"Blocked job `{job.id}` before it finished."
        if blocked.charged:
            return f"{what} Its owner keeps the charge of {blocked.charged:.1f} GPU-seconds."
        return f"{what} Its owner was not charged."

    async def add_banned_term(self, requester: Requester, raw: str, action: str = "refuse") -> str:
        """Moderation: refuse prompts with ``raw`` in this server from now on, or (``review``)
        hold their results for a moderator. A term is on one list at a time: adding it with
        the other action moves it."""
        guild_id = self._moderator_guild(requester)
        if action not in TERM_ACTIONS:
            raise UserFacingError(f"a term's action is refuse or review, not {action!r}")
        term = _parsed(raw)
        limit = self.settings.bot.max_banned_terms
        key = TERM_ACTIONS[action]
        other = REVIEW_TERMS_KEY if key == BANNED_TERMS_KEY else BANNED_TERMS_KEY

        def add(current: dict[str, Any]) -> dict[str, Any]:
            terms: list[str] = current.get(key, [])
            if term in terms:
                already = "refused" if action == "refuse" else "held for review"
                raise UserFacingError(f"`{term}` is already {already} in this server")
            total = len(terms) + len(current.get(other, []))
            if len(terms) >= limit or total >= 2 * limit:
                raise UserFacingError(
                    f"this server already has {len(terms)} {action} terms, the most allowed "
                    f"({limit}); remove one with /filter remove first"
                )
            moved = [t for t in current.get(other, []) if t != term]
            return {**current, key: sorted([*terms, term]), other: moved}

        await self.prefs.edit_guild_settings(guild_id, add)
        await self.modlog.record(
            guild_id,
            ModAction.FILTER_ADDED,
            actor_id=requester.user_id,
            reason=term,
            details={"action": action},
        )
        if action == "review":
            return (
                f"Prompts containing `{term}` now run, but their results are held for a "
                "moderator's review before anyone sees them."
            )
        return f"Prompts containing `{term}` are now refused in this server."

    async def remove_banned_term(self, requester: Requester, raw: str) -> str:
        """Moderation: allow ``raw`` again in this server."""
        guild_id = self._moderator_guild(requester)
        term = _parsed(raw)

        def remove(current: dict[str, Any]) -> dict[str, Any]:
            lists = {key: current.get(key, []) for key in TERM_ACTIONS.values()}
            if not any(term in terms for terms in lists.values()):
                raise UserFacingError(
                    f"`{term}` is not on this server's lists; /filter list shows them"
                )
            return {**current, **{k: [t for t in v if t != term] for k, v in lists.items()}}

        await self.prefs.edit_guild_settings(guild_id, remove)
        await self.modlog.record(
            guild_id, ModAction.FILTER_REMOVED, actor_id=requester.user_id, reason=term
        )
        return f"`{term}` is allowed again in this server."

    async def banned_terms(self, requester: Requester) -> str:
        """Moderation: the terms refused in this server, the operator's included."""
        guild_id = self._moderator_guild(requester)
        guild = await self.prefs.get_guild_settings(guild_id)
        server = guild.get(BANNED_TERMS_KEY, [])
        held = guild.get(REVIEW_TERMS_KEY, [])
        lines = [
            f"This server refuses {len(server)} term(s) of at most "
            f"{self.settings.bot.max_banned_terms}: "
            + (", ".join(f"`{t}`" for t in server) or "none"),
            f"Held for review ({len(held)}): " + (", ".join(f"`{t}`" for t in held) or "none"),
        ]
        if self._operator_terms:
            listed = ", ".join(f"`{t}`" for t in self._operator_terms)
            lines.append(f"Refused everywhere by the bot's operator: {listed}")
        return "\n".join(lines)

    async def modlog_page(
        self,
        requester: Requester,
        guild_id: int,
        *,
        member: int | None = None,
        job: str | None = None,
        before_id: int | None = None,
        after_id: int | None = None,
    ) -> ModLogPage:
        """Moderation: one page of ``guild_id``'s audit log, newest first, for a moderator of
        that server (a page button names its server; one from elsewhere is refused)."""
        self.check_modlog_access(requester, guild_id)
        return await self.modlog.page(
            guild_id,
            member=member,
            job=job,
            before_id=before_id,
            after_id=after_id,
            limit=MODLOG_PAGE,
        )

    def check_modlog_access(self, requester: Requester, guild_id: int) -> None:
        """Refuse anyone but a moderator of ``guild_id`` asking from inside it."""
        if requester.guild_id is None:
            raise UserFacingError("the audit log belongs to a server; use /modlog in one")
        if requester.guild_id != guild_id:
            raise UserFacingError("this page belongs to another server's audit log")
        if not requester.is_moderator:
            raise UserFacingError("only moderators (Manage Messages) may read the audit log")

    def _moderator_guild(self, requester: Requester) -> int:
        if requester.guild_id is None:
            raise UserFacingError("refused terms belong to a server; use /filter in one")
        if not requester.is_moderator:
            raise UserFacingError("only moderators (Manage Messages) may see or change /filter")
        return requester.guild_id


def _parsed(raw: str) -> str:
    try:
        return parse_term(raw)
    except TermError as exc:
        raise UserFacingError(str(exc)) from None
