"""Sharing in Discord: /delete (an owner's job), /search (a server's prompts, paged with stored
queries) and the Open buttons under search results.

A search's page buttons carry only the stored query's short id and a page number
(``atl:1:sq:<id>:<page>``); an Open button carries a job id (``atl:1:so:<job>``). Both are
checked against the database and the clicker at every click.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import discord
from discord import app_commands

from bot.customid import CustomIdError, join
from bot.errors import UserFacingError
from bot.features.base import (
    Interaction,
    answer,
    before_ack,
    origin_of,
    requester_of,
    slash,
    thinking,
)
from bot.publisher import Publisher
from bot.render import escape, found_line, link_after, mention, shorten
from bot.router import ButtonRouter, ModalRoute, Route
from bot.services.intake import JobIntake
from bot.services.job_cards import (
    LIKE_CODE,
    PROMPT_CODE,
    PUBLISH_CODE,
    REMIX_CODE,
    UNPUBLISH_CODE,
    held_note,
    showcase_row,
)
from bot.services.sharing import SearchInput, SharingService, Showcase
from storage.types import CopyKind, GalleryItem, GalleryView, SavedQuery, SearchPage

log = logging.getLogger(__name__)

PAGE_CODE = "sq"
OPEN_CODE = "so"
_PAGE = re.compile(r"(?P<query>[0-9a-z]{12}):(?P<page>[0-9]{1,2})")
_JOB = re.compile(r"[a-z0-9]{6,32}")
_NONE = discord.AllowedMentions.none()


@dataclass(frozen=True)
class PageRef:
    query_id: str
    page: int


def decode_page(code: str, payload: str) -> PageRef:
    match = _PAGE.fullmatch(payload)
    if code != PAGE_CODE or not match or int(match.group("page")) >= 50:
        raise CustomIdError("this button was not made by this version of Atelier")
    return PageRef(match.group("query"), int(match.group("page")))


def decode_open(code: str, payload: str) -> str:
    if code != OPEN_CODE or not _JOB.fullmatch(payload):
        raise CustomIdError("this button was not made by this version of Atelier")
    return payload


#: The gallery's paging buttons: ``atl:1:gl:<view>:<key>:<cursor or empty>``, where the key is
#: the member's id for the member view (``b``), the session's id for the session view (``s``),
#: and empty for the others.
GALLERY_CODE = "gl"
#: View codes (one letter, for the custom_id) -> the list and its title.
VIEWS = {
    "w": (GalleryView.TOP_WEEK, "top this week"),
    "m": (GalleryView.TOP_MONTH, "top this month"),
    "a": (GalleryView.TOP_ALL, "top of all time"),
    "r": (GalleryView.RECENT, "recent"),
    "i": (GalleryView.MINE, "mine"),
    "l": (GalleryView.LIKED, "liked by me"),
    "b": (GalleryView.MEMBER, "by member"),
    "s": (GalleryView.SESSION, "session"),
}
_GALLERY = re.compile(
    r"(?P<view>[wmarilbs]):(?P<key>[0-9a-z]{0,20}):(?P<cursor>(?:[ab][0-9a-z.]{1,31})?)"
)
_MEMBER = re.compile(r"[1-9][0-9]{0,19}")
#: A group session's id: 12 characters of Crockford's base32 (``storage.types.new_job_id``).
SESSION_ID = re.compile(r"[0-9a-hjkmnp-tv-z]{12}")


@dataclass(frozen=True)
class GalleryRef:
    """A gallery page: the view, its member (the member view) or session (the session view),
    and the page's cursor (None: the first page)."""

    view: str
    member: int | None
    cursor: str | None
    session: str | None = None

    def encode(self) -> str:
        key = self.session if self.member is None else str(self.member)
        payload = f"{self.view}:{key or ''}:{self.cursor or ''}"
        value = join(GALLERY_CODE, payload)
        if decode_gallery(GALLERY_CODE, payload) != self:
            raise CustomIdError(f"cannot encode gallery page {self!r}")
        return value


def decode_gallery(code: str, payload: str) -> GalleryRef:
    """A gallery page button's payload: the member view carries a member id, the session view
    a session id, every other view nothing."""
    match = _GALLERY.fullmatch(payload)
    if code != GALLERY_CODE or not match:
        raise CustomIdError("this button was not made by this version of Atelier")
    view, key, cursor = match.group("view"), match.group("key"), match.group("cursor") or None
    if view == "b" and _MEMBER.fullmatch(key) and int(key) < 2**63:
        return GalleryRef(view, int(key), cursor)
    if view == "s" and SESSION_ID.fullmatch(key):
        return GalleryRef(view, None, cursor, key)
    if view not in ("b", "s") and not key:
        return GalleryRef(view, None, cursor)
    raise CustomIdError("this button was not made by this version of Atelier")


def session_id_of(text: str) -> str:
    """A session id as a member typed it (in /gallery), or a refusal that says what one is."""
    value = text.strip().lower()
    if not SESSION_ID.fullmatch(value):
        raise UserFacingError(
            "a session id is 12 letters and digits, as the session's card shows it"
        )
    return value


#: Publish (``atl:1:pb:<job>``) and the showcase post's Unpublish (``atl:1:ub:<job>``).


def decode_publish(code: str, payload: str) -> tuple[str, str]:
    if code not in (PUBLISH_CODE, UNPUBLISH_CODE) or not _JOB.fullmatch(payload):
        raise CustomIdError("this button was not made by this version of Atelier")
    return code, payload


REMIX_FORM = "rxf"
REMIX_FIELD = "prompt"


def decode_job_button(code: str, payload: str) -> str:
    if code not in (PROMPT_CODE, REMIX_CODE) or not _JOB.fullmatch(payload):
        raise CustomIdError("this button was not made by this version of Atelier")
    return payload


def decode_job_form(payload: str) -> str:
    if not _JOB.fullmatch(payload):
        raise CustomIdError("this form was not made by this version of Atelier")
    return payload


def decode_like(code: str, payload: str) -> str:
    if code != LIKE_CODE or not _JOB.fullmatch(payload):
        raise CustomIdError("this button was not made by this version of Atelier")
    return payload


def render_results(saved: SavedQuery, page: SearchPage) -> str:
    """A page of search results: number, prompt, owner, likes, link."""
    head = f"**Search** \u201c{escape(shorten(saved.text, 100))}\u201d, page {page.page + 1}"
    if not page.items:
        return f"{head}: nothing found." if page.page == 0 else f"{head}: no more results."
    lines = [f"{head}:"]
    lines.extend(found_line(f"{n}.", item, 120) for n, item in enumerate(page.items, start=1))
    return shorten("\n".join(lines))


def open_buttons(items: Sequence[GalleryItem]) -> list[tuple[str, str]]:
    """Open 1..N under a list of found jobs: each reposts its job, as /show does."""
    return [(f"Open {n}", join(OPEN_CODE, item.job_id)) for n, item in enumerate(items, start=1)]


class SharingFeature:
    """/delete, /search and the search results' buttons."""

    def __init__(self, sharing: SharingService, intake: JobIntake, publisher: Publisher) -> None:
        self.sharing = sharing
        self.intake = intake
        self.publisher = publisher

    def register(self, tree: app_commands.CommandTree[Any], router: ButtonRouter) -> None:
        self.router = router
        slash(
            tree, "delete", "Delete one of your jobs: its images and every post of it", self.delete
        )
        slash(tree, "search", "Search this server's shared prompts", self.search)
        slash(tree, "lineage", "Where a job came from and what was made from it", self.lineage)
        slash(tree, "profile", "A member's shared images and the likes they received", self.profile)
        slash(tree, "gallery", "Browse this server's shared images", self.gallery)
        router.add(
            Route(codes=frozenset({GALLERY_CODE}), decode=decode_gallery, handle=self.on_gallery)
        )
        router.add(
            Route(
                codes=frozenset({PUBLISH_CODE, UNPUBLISH_CODE}),
                decode=decode_publish,
                handle=self.on_publish,
            )
        )
        router.add(Route(codes=frozenset({PAGE_CODE}), decode=decode_page, handle=self.on_page))
        router.add(Route(codes=frozenset({OPEN_CODE}), decode=decode_open, handle=self.on_open))
        router.add(Route(codes=frozenset({LIKE_CODE}), decode=decode_like, handle=self.on_like))
        router.add(
            Route(codes=frozenset({PROMPT_CODE}), decode=decode_job_button, handle=self.on_prompt)
        )
        router.add(
            Route(codes=frozenset({REMIX_CODE}), decode=decode_job_button, handle=self.on_remix)
        )
        router.add_modal(ModalRoute(REMIX_FORM, decode_job_form, self.on_remix_form))

    @app_commands.describe(job="The job id shown under the job and in /info")
    async def delete(self, interaction: Interaction, job: app_commands.Range[str, 1, 40]) -> None:
        await thinking(interaction)
        job_id = job.strip().lower()
        deleted = await self.sharing.delete(requester_of(interaction), job_id)
        removed = 0
        for shared in deleted.messages:
            channel = interaction.client.get_partial_messageable(shared.channel_id)
            with contextlib.suppress(discord.NotFound, discord.Forbidden):
                await channel.get_partial_message(shared.message_id).edit(
                    content=f"Job `{job_id}` was deleted by its owner.",
                    attachments=[],
                    view=None,
                    allowed_mentions=_NONE,
                )
                removed += 1
        again = " (it was deleted already)" if deleted.already else ""
        await answer(
            interaction,
            f"Deleted job `{job_id}`{again}: its images are gone and {removed} message(s) of it "
            "now say so. What it cost stays in your quota's history.",
        )

    @app_commands.guild_only()
    @app_commands.describe(
        query='Words, "exact phrases" and prefixes like light*',
        member="Only this member's jobs",
        mode="Only fast or quality jobs",
        aspect="Only this aspect ratio, e.g. 3:2",
        days="Only jobs of the last this many days",
    )
    async def search(
        self,
        interaction: Interaction,
        query: app_commands.Range[str, 1, 300],
        member: discord.User | None = None,
        mode: Literal["fast", "quality"] | None = None,
        aspect: app_commands.Range[str, 1, 10] | None = None,
        days: app_commands.Range[int, 1, 3650] | None = None,
    ) -> None:
        await thinking(interaction)
        command = SearchInput(
            query=query,
            member_id=None if member is None else member.id,
            mode=mode,
            aspect=aspect,
            days=days,
        )
        saved, page = await self.sharing.search(requester_of(interaction), command)
        await interaction.followup.send(
            render_results(saved, page), view=self._view(saved, page), ephemeral=True
        )

    @app_commands.guild_only()
    @app_commands.describe(job="The job id shown under the job")
    async def lineage(self, interaction: Interaction, job: app_commands.Range[str, 1, 40]) -> None:
        await thinking(interaction)
        text = await self.sharing.lineage(requester_of(interaction), job.strip().lower())
        await answer(interaction, text)

    @app_commands.guild_only()
    @app_commands.describe(member="Whose profile (yours if left out)")
    async def profile(self, interaction: Interaction, member: discord.User | None = None) -> None:
        await thinking(interaction)
        requester = requester_of(interaction)
        target = requester.user_id if member is None else member.id
        await answer(interaction, await self.sharing.profile(requester, target))

    @app_commands.guild_only()
    @app_commands.describe(
        view="Which images: the most liked (week, month, all time), the newest, yours, the ones "
        "you liked, one member's, or one group session's entries",
        member="Whose images, for the member view",
        session="A group session's id, for the session view",
    )
    @app_commands.choices(
        view=[app_commands.Choice(name=label, value=code) for code, (_, label) in VIEWS.items()]
    )
    async def gallery(
        self,
        interaction: Interaction,
        view: str = "r",
        member: discord.User | None = None,
        session: app_commands.Range[str, 1, 40] | None = None,
    ) -> None:
        await thinking(interaction)
        if view not in VIEWS:
            raise UserFacingError(f"view must be one of {', '.join(VIEWS)}, not {view[:10]!r}")
        if member is not None and session is not None:
            raise UserFacingError("name a member or a session, not both")
        if member is not None and view != "b":
            view = "b"  # naming a member means their images
        if session is not None and view != "s":
            view = "s"  # naming a session means its entries
        ref = GalleryRef(
            view,
            None if member is None else member.id,
            None,
            None if session is None else session_id_of(session),
        )
        content, files, buttons = await self._gallery_page(interaction, ref)
        await interaction.followup.send(content, files=files, view=buttons, ephemeral=True)

    async def on_gallery(self, interaction: Interaction, ref: GalleryRef) -> None:
        await interaction.response.defer()
        content, files, buttons = await self._gallery_page(interaction, ref)
        await interaction.edit_original_response(content=content, attachments=files, view=buttons)

    async def _gallery_page(
        self, interaction: Interaction, ref: GalleryRef
    ) -> tuple[str, list[discord.File], discord.ui.View]:
        view, title = VIEWS[ref.view]
        found = await self.sharing.gallery(
            requester_of(interaction),
            view,
            member_id=ref.member,
            session_id=ref.session,
            cursor=ref.cursor,
        )
        page, sheet = found.page, found.sheet
        who = f" of {mention(ref.member)}" if ref.member is not None else ""
        if found.session is not None:
            theme = escape(shorten(found.session.theme, 80))
            who = f" \u201c{theme}\u201d (`{found.session.id}`)"
        if not page.items:
            return f"**Gallery: {title}{who}**: nothing here yet.", [], self.router.view([])
        lines = [f"**Gallery: {title}{who}**"]
        lines.extend(found_line(f"{n}.", item, 80) for n, item in enumerate(page.items, start=1))
        files = [discord.File(io.BytesIO(sheet), filename="gallery.webp")] if sheet else []
        opens = open_buttons(page.items)
        paging = []
        if page.prev_cursor:
            paging.append(("Previous", replace(ref, cursor=page.prev_cursor).encode()))
        if page.next_cursor:
            paging.append(("Next", replace(ref, cursor=page.next_cursor).encode()))
        rows = [opens[:5], opens[5:], paging]
        return shorten("\n".join(lines)), files, self.router.view([r for r in rows if r])

    async def on_page(self, interaction: Interaction, ref: PageRef) -> None:
        requester = requester_of(interaction)
        saved, page = await self.sharing.search_page(requester, ref.query_id, ref.page)
        await interaction.response.edit_message(
            content=render_results(saved, page), view=self._view(saved, page)
        )

    async def on_like(self, interaction: Interaction, job_id: str) -> None:
        """❤: acknowledged at once with a deferred update (nothing visible changes), then the
        like is toggled, and the message's count follows in a coalesced edit. Enough likes may
        feature the job on the showcase (a server setting)."""
        await interaction.response.defer()
        requester = requester_of(interaction)
        result = await self.sharing.like(requester, job_id)
        self.publisher.likes_changed(job_id)
        if result.liked and requester.guild_id is not None:
            featured = await self.sharing.auto_feature(
                requester.guild_id, job_id, result.like_count
            )
            if featured is not None and featured.needs_post:
                await self._post_showcase(interaction.client, featured)

    async def on_publish(self, interaction: Interaction, ref: tuple[str, str]) -> None:
        """Publish (the owner) or feature (a moderator) a job on the showcase, once; or
        Unpublish it (moderators, from the showcase post)."""
        code, job_id = ref
        await thinking(interaction)
        requester = requester_of(interaction)
        if code == UNPUBLISH_CODE:
            await self.sharing.unpublish(requester, job_id)
            if interaction.message is not None:
                with contextlib.suppress(discord.NotFound, discord.Forbidden):
                    await interaction.message.delete()
            await answer(interaction, f"Job `{job_id}` is off the showcase.")
            return
        if requester.guild_id is None:
            raise UserFacingError("the showcase belongs to a server; publish there")
        showcase = await self.sharing.publish(requester, job_id, requester.guild_id)
        if showcase.needs_post:
            await self._post_showcase(interaction.client, showcase)
        elif not showcase.published_now:
            await answer(
                interaction, f"Job `{job_id}` is on the showcase already; a job goes there once."
            )
            return
        verb = "Featured" if showcase.featured_by else "Published"
        await answer(interaction, f"{verb} job `{job_id}` in <#{showcase.channel_id}>.")

    async def _post_showcase(self, client: discord.Client, showcase: Showcase) -> None:
        """The showcase post: the image, credit, prompt, a link to the original, its own ❤.
        Posted with a nonce (Discord drops a repeat) and recorded as a copy of the job, so
        deleting or removing the job reaches it."""
        job = showcase.job
        message = await self.sharing.cards.message_for(job)
        files = [
            discord.File(io.BytesIO(data), filename=name)
            for name, data in await self.sharing.cards.result_files(message)
        ]
        credit = f"by {mention(job.owner_id)}"
        if showcase.featured_by is not None:
            credit += f", featured by {mention(showcase.featured_by)}"
        original = link_after(job.guild_id, job.channel_id, job.message_id)
        link = f" \u00b7 original:{original}" if original else ""
        content = shorten(f"**{escape(shorten(job.request.prompt, 900))}** {credit}{link}")
        view = self.router.view([list(showcase_row(job.id, job.like_count))])
        channel = client.get_partial_messageable(showcase.channel_id)
        sent = await channel.send(
            content, files=files, view=view, allowed_mentions=_NONE, nonce=f"pub{job.id}"[:25]
        )
        await self.sharing.cards.add_copy(job.id, showcase.channel_id, sent.id, CopyKind.SHOWCASE)

    async def on_prompt(self, interaction: Interaction, job_id: str) -> None:
        """Prompt: the job's exact prompt and parameters, privately, for those who may find it."""
        await thinking(interaction)
        await answer(interaction, await self.sharing.prompt_card(requester_of(interaction), job_id))

    async def on_remix(self, interaction: Interaction, job_id: str) -> None:
        """Remix: an editor prefilled with the job's prompt and options; the new job is the
        clicker's. Public jobs (and one's own stealth ones) only."""
        text = await self.sharing.remix_text(requester_of(interaction), job_id)
        modal: discord.ui.Modal = discord.ui.Modal(
            title="Remix", timeout=None, custom_id=join(REMIX_FORM, job_id)
        )
        modal.add_item(
            discord.ui.TextInput(
                label="Prompt and options",
                custom_id=REMIX_FIELD,
                style=discord.TextStyle.paragraph,
                default=text[:1500],
                max_length=1500,
            )
        )
        await self.router.send_modal(interaction, modal)

    async def on_remix_form(
        self, interaction: Interaction, job_id: str, values: dict[str, str]
    ) -> None:
        text = values.get(REMIX_FIELD, "").strip()
        if not text:
            raise UserFacingError("the remix needs a prompt; describe the image")
        tickets = await before_ack(
            interaction,
            self.intake.remix_of(
                requester_of(interaction), job_id, text, origin=origin_of(interaction)
            ),
        )
        ids = ", ".join(f"`{ticket.job_id}`" for ticket in tickets)
        await self.publisher.announce(
            interaction, tickets, f"Remix of job `{job_id}`: job {ids}.{held_note(tickets)}"
        )

    async def on_open(self, interaction: Interaction, job_id: str) -> None:
        await thinking(interaction)
        ticket = await self.sharing.open(requester_of(interaction), job_id)
        await self.publisher.show(interaction, ticket)

    def _view(self, saved: SavedQuery, page: SearchPage) -> discord.ui.View:
        opens = open_buttons(page.items)
        paging = []
        if page.has_prev:
            paging.append(("Previous", join(PAGE_CODE, f"{saved.id}:{page.page - 1}")))
        if page.has_next:
            paging.append(("Next", join(PAGE_CODE, f"{saved.id}:{page.page + 1}")))
        return self.router.view([row for row in (opens, paging) if row])
