"""Sharing: an owner's /delete, the members' /search, and opening a found job. No discord.py.

Who may find what is ``storage.visibility``'s rule alone; this service adds the Discord side's
facts (the requester's server, whether they moderate it) and the answers' words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.errors import UserFacingError
from bot.render import credit, escape, found_line, link_after, mention, shorten
from bot.requester import Requester
from bot.services.job_cards import JobCards, Ticket
from bot.services.server_settings import AUTO_FEATURE_KEY, SHOWCASE_CHANNEL_KEY
from config.settings import Settings
from generation.grid import contact_sheet
from generation.request import GenerationRequest
from storage.errors import ImageNotFound, JobUnavailable
from storage.images import ImageStore
from storage.preferences import PreferenceStore
from storage.queue import JobQueue
from storage.sharing import SharingStore
from storage.types import (
    DeletedJob,
    GalleryPage,
    GalleryView,
    JobView,
    LikeResult,
    SavedQuery,
    SearchFilters,
    SearchPage,
    SessionView,
)
from storage.visibility import visible

log = logging.getLogger(__name__)

#: Results on one /search page (numbered Open buttons: at most 9).
SEARCH_PAGE = 5
#: Jobs on one /gallery page (its contact sheet has 3 columns).
GALLERY_PAGE = 9
#: How far /lineage climbs, and how many descendants it lists.
LINEAGE_DEPTH = 20
LINEAGE_NODES = 40


@dataclass(frozen=True)
class Showcase:
    """A publish: the job, the showcase channel, whether this call published it, whether its
    post is still to be made, and the moderator who featured it (None: its owner, or the bot)."""

    job: JobView[GenerationRequest]
    channel_id: int
    published_now: bool
    needs_post: bool
    featured_by: int | None


@dataclass(frozen=True)
class GallerySheet:
    """A gallery page, its contact sheet (None for an empty page) and, for the session view,
    the session (its theme titles the page)."""

    page: GalleryPage
    sheet: bytes | None
    session: SessionView | None = None


@dataclass(frozen=True)
class SearchInput:
    """/search as Discord delivered it."""

    query: str
    member_id: int | None = None
    mode: str | None = None
    aspect: str | None = None
    days: int | None = None


class SharingService:
    """Deleting one's jobs, searching a server's prompts, opening what was found."""

    def __init__(
        self,
        settings: Settings,
        store: SharingStore,
        queue: JobQueue[Any],
        cards: JobCards,
        images: ImageStore,
        prefs: PreferenceStore,
    ) -> None:
        self.prefs = prefs
        self.settings = settings
        self.store = store
        self.queue = queue
        self.cards = cards
        self.images = images

    async def delete(self, requester: Requester, job_id: str) -> DeletedJob:
        """The owner deletes their job: its images, likes and search entry go; the caller
        then removes its messages. Someone else's job (or another server's) is "no job"."""
        job = await self.queue.get(job_id)
        if job is None or not requester.may_see(job.guild_id, job.owner_id):
            raise UserFacingError(f"there is no job `{job_id}` here")
        try:
            return await self.store.delete_job(job_id, requester.user_id)
        except JobUnavailable:
            raise UserFacingError(f"there is no job `{job_id}` here") from None

    async def like(self, requester: Requester, job_id: str) -> LikeResult:
        """Toggle the requester's like of a job they may find in their server."""
        guild_id = self._guild(requester)
        return await self.store.toggle_like(
            job_id, requester.user_id, guild_id, is_moderator=requester.is_moderator
        )

    async def prompt_card(self, requester: Requester, job_id: str) -> str:
        """The exact prompt and every parameter of a job the requester may find, as text to
        copy (ephemeral)."""
        guild_id = self._guild(requester)
        job = await self.queue.get(job_id)
        if job is None or not visible(
            job, requester.user_id, guild_id, is_moderator=requester.is_moderator
        ):
            raise UserFacingError(f"job `{job_id}` is not available here")
        hidden = await self._hidden([job])
        return render_prompt_card(job, author_hidden=job.id in hidden)

    async def remix_text(self, requester: Requester, job_id: str) -> str:
        """What the Remix editor starts from, for a job the requester may remix: a public job
        of their server, or their own."""
        guild_id = self._guild(requester)
        job = await self.queue.get(job_id)
        if job is None or not visible(job, requester.user_id, guild_id):
            raise UserFacingError(f"job `{job_id}` is not available to remix here")
        return command_text(job.request)

    async def gallery(
        self,
        requester: Requester,
        view: GalleryView,
        *,
        member_id: int | None = None,
        session_id: str | None = None,
        cursor: str | None = None,
    ) -> GallerySheet:
        """A gallery page as the requester may see it (privately: a moderator's includes
        stealth jobs), and its contact sheet. The session view needs a session of this
        server."""
        guild_id = self._guild(requester)
        if view is GalleryView.MEMBER and member_id is None:
            raise UserFacingError("the member view needs a member: pick one in /gallery")
        session = None
        if view is GalleryView.SESSION:
            if session_id is None:
                raise UserFacingError("the session view needs a session id: give one in /gallery")
            session = await self.session(requester, session_id)
        page = await self.store.gallery(
            view,
            guild_id,
            requester.user_id,
            is_moderator=requester.is_moderator,
            member_id=member_id,
            session_id=session_id,
            cursor=cursor,
            size=GALLERY_PAGE,
        )
        if not page.items:
            return GallerySheet(page, None, session)
        pictures: list[bytes | None] = []
        for item in page.items:
            data = None
            if item.image_ref is not None:
                with contextlib.suppress(ImageNotFound):
                    data = await self.images.get(item.image_ref)
            pictures.append(data)
        return GallerySheet(page, await asyncio.to_thread(contact_sheet, pictures), session)

    async def session(self, requester: Requester, session_id: str) -> SessionView:
        """A group session of the requester's server (its gallery view's title), else "no
        such session" (another server's reads the same)."""
        found = await self.store.session_of(self._guild(requester), session_id)
        if found is None:
            raise UserFacingError(f"there is no session `{session_id}` here")
        return found

    async def publish(self, requester: Requester | None, job_id: str, guild_id: int) -> Showcase:
        """Publish a job to its server's showcase: its owner, a moderator (featured), or the
        bot (``requester`` None: enough likes). Says where to post it and whether it still
        needs posting there (a first publish, or one whose post never got through)."""
        stored = await self.prefs.get_guild_settings(guild_id)
        channel_id = stored.get(SHOWCASE_CHANNEL_KEY)
        if channel_id is None:
            raise UserFacingError(
                "this server has no showcase channel; an admin sets one with /settings server "
                "showcase_channel"
            )
        published = await self.store.publish(
            job_id,
            guild_id,
            None if requester is None else requester.user_id,
            is_moderator=requester is not None and requester.is_moderator,
        )
        copies = await self.cards.copies(job_id)
        posted = any(channel == channel_id for channel, _ in copies)
        job = await self.queue.require(job_id)
        featured_by = None
        if requester is not None and requester.user_id != job.owner_id:
            featured_by = requester.user_id
        return Showcase(job, int(channel_id), published, not posted, featured_by)

    async def auto_feature(self, guild_id: int, job_id: str, likes: int) -> Showcase | None:
        """After a like: feature the job automatically when the server asks for it at this
        many likes and it was never published."""
        stored = await self.prefs.get_guild_settings(guild_id)
        threshold = int(stored.get(AUTO_FEATURE_KEY, 0))
        if not threshold or likes < threshold or stored.get(SHOWCASE_CHANNEL_KEY) is None:
            return None
        job = await self.queue.get(job_id)
        if job is None or job.published_at is not None or await self._hidden([job]):
            return None  # an anonymous entry waits for its round to end (and a later like)
        return await self.publish(None, job_id, guild_id)

    async def unpublish(self, requester: Requester, job_id: str) -> None:
        guild_id = self._guild(requester)
        if not requester.is_moderator:
            raise UserFacingError("only moderators (Manage Messages) may unpublish")
        await self.store.unpublish(job_id, guild_id, requester.user_id, "unpublished")

    async def profile(self, requester: Requester, member_id: int) -> str:
        """/profile: a member's public work here, the likes it received, their top images.
        Anonymous session entries whose round is on are not counted (``SharingStore``)."""
        guild_id = self._guild(requester)
        found = await self.store.profile(guild_id, member_id, requester.user_id)
        lines = [
            f"**Profile of {mention(member_id)}**: {found.jobs} job(s) you can find here, "
            f"\u2764 {found.likes} received"
        ]
        if found.top:
            lines.append("Most liked:")
            lines.extend(found_line("-", item, 100) for item in found.top)
        else:
            lines.append("No liked images yet.")
        return shorten("\n".join(lines))

    async def lineage(self, requester: Requester, job_id: str) -> str:
        """A job's ancestors up to its original prompt and its descendants (U, V, upscales,
        re-rolls, remixes, across members), as an indented tree. Jobs the requester may not
        find show only as "hidden"."""
        guild_id = self._guild(requester)
        job = await self.queue.get(job_id)
        if job is None or not self._findable(requester, job, guild_id):
            raise UserFacingError(f"job `{job_id}` is not available here")
        ancestors: list[JobView[GenerationRequest]] = []
        current = job
        while current.parent_id and len(ancestors) < LINEAGE_DEPTH:
            parent = await self.queue.get(current.parent_id)
            if parent is None:
                break
            ancestors.append(parent)
            current = parent
        descendants = await self.queue.followups(job.id, limit=LINEAGE_NODES)
        chain = [*reversed(ancestors), job]
        hidden = await self._hidden([*chain, *descendants])
        lines = [f"**Lineage of job `{job.id}`**"]
        for depth, node in enumerate(chain):
            mark = " \u2190 this job" if node.id == job.id else ""
            lines.append(self._node(requester, node, guild_id, depth, hidden) + mark)
        children: dict[str, list[JobView[GenerationRequest]]] = {}
        for child in descendants:
            children.setdefault(child.parent_id or "", []).append(child)

        def walk(parent_id: str, depth: int) -> None:
            for child in children.get(parent_id, []):
                lines.append(self._node(requester, child, guild_id, depth, hidden))
                walk(child.id, depth + 1)

        walk(job.id, len(chain))
        if len(descendants) >= LINEAGE_NODES:
            lines.append(f"(the first {LINEAGE_NODES} jobs made from it)")
        return shorten("\n".join(lines))

    def _findable(
        self, requester: Requester, job: JobView[GenerationRequest], guild_id: int
    ) -> bool:
        return visible(job, requester.user_id, guild_id, is_moderator=requester.is_moderator)

    async def _hidden(self, jobs: Sequence[JobView[GenerationRequest]]) -> set[str]:
        """Which of these jobs' authors may not be named now: anonymous session entries whose
        round is on (``storage.visibility.author_hidden``). Only entries are looked up."""
        entries = [job.id for job in jobs if job.session_id is not None]
        return await self.store.hidden_authors(entries) if entries else set()

    def _node(
        self,
        requester: Requester,
        job: JobView[GenerationRequest],
        guild_id: int,
        depth: int,
        hidden: set[str],
    ) -> str:
        indent = "\u2003" * depth + ("\u2514 " if depth else "")
        if not self._findable(requester, job, guild_id):
            return f"{indent}hidden"
        link = link_after(job.guild_id, job.channel_id, job.message_id)
        prompt = escape(shorten(job.request.prompt, 60))
        who = credit(None if job.id in hidden else job.owner_id)
        return f"{indent}`{job.id}` {job.kind} {who}: {prompt}{link}"

    async def search(
        self, requester: Requester, command: SearchInput
    ) -> tuple[SavedQuery, SearchPage]:
        """A new search of this server's prompts: stored, so its page buttons can name it."""
        guild_id = self._guild(requester)
        since = None
        if command.days is not None:
            since = self.store.clock() - timedelta(days=command.days)
        filters = SearchFilters(
            member_id=command.member_id, mode=command.mode, aspect=command.aspect, since=since
        )
        saved = await self.store.save_query(guild_id, requester.user_id, command.query, filters)
        # The results are private to the requester: a moderator's list includes stealth jobs.
        page = await self.store.search(
            guild_id,
            requester.user_id,
            saved.text,
            saved.filters,
            is_moderator=requester.is_moderator,
            page=0,
            size=SEARCH_PAGE,
        )
        return saved, page

    async def search_page(
        self, requester: Requester, query_id: str, page: int
    ) -> tuple[SavedQuery, SearchPage]:
        """Another page of a stored search: only its creator, in its server, before it
        expires."""
        guild_id = self._guild(requester)
        return await self.store.search_saved(
            query_id,
            requester.user_id,
            guild_id,
            is_moderator=requester.is_moderator,
            page=page,
            size=SEARCH_PAGE,
        )

    async def open(self, requester: Requester, job_id: str) -> Ticket:
        """A found job, posted again in the channel (as /show does): public jobs only, since
        everyone there sees the post (a stealth job shows up only in its owner's and the
        moderators' private result lists)."""
        guild_id = self._guild(requester)
        job = await self.queue.get(job_id)
        if job is None or not visible(job, None, guild_id):
            raise UserFacingError(f"job `{job_id}` is not available here any more")
        return Ticket(job.id, await self.cards.shown_card(job))

    def _guild(self, requester: Requester) -> int:
        if requester.guild_id is None:
            raise UserFacingError("sharing happens in a server; use it there")
        return requester.guild_id


def command_text(request: GenerationRequest) -> str:
    """A job's prompt and options as /imagine takes them: what the Prompt card shows and the
    Remix editor starts from."""
    parts = [request.prompt]
    if request.aspect != "1:1":
        parts.append(f"--ar {request.aspect}")
    if request.negative_prompt:
        parts.append(f"--no {request.negative_prompt}")
    parts += [f"--{request.mode.value}", f"--steps {request.steps}", f"--cfg {request.guidance:g}"]
    if request.chaos:
        parts.append(f"--chaos {request.chaos}")
    if request.tile:
        parts.append("--tile")
    if request.stop != 100:
        parts.append(f"--stop {request.stop}")
    return " ".join(parts)


def render_prompt_card(job: JobView[GenerationRequest], *, author_hidden: bool = False) -> str:
    """The Prompt card: the command to copy (in a code block), then every parameter. An
    anonymous session entry's (``author_hidden``) names no one."""
    request = job.request
    code = command_text(request).replace("`", "\u02cb")
    lines = [
        f"**Prompt of job `{job.id}`** {credit(None if author_hidden else job.owner_id)}",
        f"```\n{shorten(code, 1500)}\n```",
        f"model `{request.model}` \u00b7 mode {request.mode.value} \u00b7 seed {request.seed} "
        f"\u00b7 steps {request.steps} \u00b7 cfg {request.guidance:g} \u00b7 "
        f"{request.width}x{request.height} ({request.aspect})"
        + (f" \u00b7 made from job `{job.parent_id}`" if job.parent_id else ""),
    ]
    return shorten("\n".join(lines))
