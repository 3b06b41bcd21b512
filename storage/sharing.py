"""Community sharing (issue 12): likes, owner deletion, visibility changes, the gallery, search
and saved search queries. Every method is one unit of work returning frozen values.

What may be found is decided by ``storage.visibility`` alone; every list, search and like here
goes through it.

- **Likes.** One row per member and job (``likes``) and ``jobs.like_count``, changed together
  under the job's row lock (SQLite: the write transaction), so concurrent toggles by many
  members keep the count exact. Only a job visible to the member can be liked or unliked.
- **Deleting.** Only the owner, only a finished job that moderation is not holding or has not
  removed, and not while a follow-up of it still runs (it reads the images). Its image files
  are deleted in the transaction that records it (as retention does); its refs, preview, likes
  and prompt (the search index entry) go; ``deleted_at`` hides it everywhere; a delivery not
  yet posted is given up. The quota ledger is never touched: the cost stands. Repeating it
  changes nothing and answers the messages again, so a caller can retry removing them.
- **Saved queries.** A search's text and filters under a short random id, for its creator
  only, until ``expires_at``. Each member keeps at most ``max_saved_per_user``; retention
  deletes the expired ones (``prune_saved_queries``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, not_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.errors import JobUnavailable, SavedQueryGone, SharingRefused
from storage.gallery import gallery_list, gallery_page, item_from, item_select
from storage.images import ImageStore
from storage.models import DELIVERIES, GROUP_SESSIONS, JOB_COPIES, JOBS, LIKES, SEARCH_QUERIES
from storage.modlog import log_row
from storage.search import search_page
from storage.search_syntax import parse_query
from storage.session_flow import session_view
from storage.sql import lock_job, utc_now
from storage.types import (
    ACTIVE_STATUSES,
    DeletedJob,
    GalleryPage,
    GalleryView,
    HoldState,
    JobStatus,
    LikeResult,
    MemberProfile,
    ModAction,
    SavedQuery,
    SearchFilters,
    SearchPage,
    SessionView,
    SharedMessage,
    Visibility,
    new_job_id,
)
from storage.visibility import author_shown_clause, hidden_authors, visible_clause

Clock = Callable[[], datetime]

#: How long a saved search answers its page buttons.
QUERY_TTL = timedelta(days=1)
#: The most saved searches one member keeps (older ones go first).
MAX_SAVED_PER_USER = 50
_QUERY_ID = re.compile(r"^[0-9a-z]{12}$")
DELETED_REASON = "deleted by its owner"


class SharingStore:
    """Likes, deletion, visibility, gallery pages, search and saved searches (see the module).

    ``images``, when given, is where deleted jobs' files are removed (inside the unit of work
    that records the deletion); without it the caller removes ``DeletedJob.refs`` itself.
    """

    def __init__(
        self,
        db: Database,
        *,
        images: ImageStore | None = None,
        clock: Clock = utc_now,
        query_ttl: timedelta = QUERY_TTL,
        max_saved_per_user: int = MAX_SAVED_PER_USER,
    ) -> None:
        self.db = db
        self.images = images
        self.clock = clock
        self.query_ttl = query_ttl
        self.max_saved_per_user = max_saved_per_user

    # -- likes ------------------------------------------------------------------------------

    async def toggle_like(
        self, job_id: str, user_id: int, guild_id: int, *, is_moderator: bool = False
    ) -> LikeResult:
        """Like the job, or take the like back if the member already likes it. Raises
        JobUnavailable when the job is not visible to the member in ``guild_id``."""
        now = self.clock()

        async def work(session: AsyncSession) -> LikeResult:
            found = (
                await session.execute(
                    select(JOBS.c.id)
                    .where(
                        JOBS.c.id == job_id,
                        visible_clause(user_id, guild_id, is_moderator=is_moderator),
                    )
                    .with_for_update(of=JOBS)
                )
            ).first()
            if found is None:
                raise JobUnavailable(job_id)
            removed = await session.execute(
                delete(LIKES).where(LIKES.c.job_id == job_id, LIKES.c.user_id == user_id)
            )
            liked = not getattr(removed, "rowcount", 0)
            if liked:
                await session.execute(
                    insert(LIKES).values(job_id=job_id, user_id=user_id, created_at=now)
                )
            count = (
                await session.execute(
                    update(JOBS)
                    .where(JOBS.c.id == job_id)
                    .values(like_count=JOBS.c.like_count + (1 if liked else -1))
                    .returning(JOBS.c.like_count)
                )
            ).scalar_one()
            return LikeResult(liked, int(count))

        return await self.db.write(work)

    async def likes(self, job_id: str, user_id: int) -> LikeResult:
        """Whether ``user_id`` likes the job, and its like count (0 for no such job)."""

        async def work(session: AsyncSession) -> LikeResult:
            count = (
                await session.execute(select(JOBS.c.like_count).where(JOBS.c.id == job_id))
            ).scalar_one_or_none()
            mine = (
                await session.execute(
                    select(LIKES.c.job_id).where(
                        LIKES.c.job_id == job_id, LIKES.c.user_id == user_id
                    )
                )
            ).first()
            return LikeResult(mine is not None, int(count or 0))

        return await self.db.read(work)

    # -- the owner's actions ----------------------------------------------------------------

    async def publish(
        self,
        job_id: str,
        guild_id: int,
        actor_id: int | None,
        *,
        is_moderator: bool = False,
    ) -> bool:
        """Mark a public job of this server published to its showcase, once: by its owner,
        a moderator (featured), or the bot (``actor_id`` None: enough likes). True when this
        call published it; False when it already was (a job is published at most once). Logged
        in the audit log. Raises JobUnavailable for a job that is not public here (stealth,
        held, removed, deleted), SharingRefused for a member who may not publish it."""
        now = self.clock()

        async def work(session: AsyncSession) -> bool:
            job = await lock_job(session, job_id)
            if job is None:
                raise JobUnavailable(job_id)
            listed = await session.execute(
                select(JOBS.c.id).where(JOBS.c.id == job_id, visible_clause(None, guild_id))
            )
            if listed.first() is None:
                raise JobUnavailable(job_id)
            if actor_id is not None and not is_moderator and job["owner_id"] != actor_id:
                raise SharingRefused(
                    f"only the member who made job `{job_id}` or a moderator may publish it"
                )
            if await hidden_authors(session, [job_id]):
                # The showcase post credits its author and is never edited again.
                raise SharingRefused(
                    f"job `{job_id}` is an anonymous session entry; it can go to the showcase "
                    "once its round ends"
                )
            if job["published_at"] is not None:
                return False
            await session.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.published_at.is_(None))
                .values(published_at=now)
            )
            featured = actor_id is not None and actor_id != job["owner_id"]
            await log_row(
                session,
                guild_id,
                ModAction.PUBLISHED,
                now,
                actor_id=actor_id,
                target_user_id=job["owner_id"],
                target_job_id=job_id,
                reason="featured" if featured else ("auto" if actor_id is None else "published"),
            )
            return True

        return await self.db.write(work)

    async def unpublish(self, job_id: str, guild_id: int, moderator_id: int, reason: str) -> None:
        """Record that a moderator took a job off the showcase (its post is removed by the
        caller). It stays published: a job goes to the showcase at most once."""
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            job = (
                (await session.execute(select(JOBS).where(JOBS.c.id == job_id))).mappings().first()
            )
            if job is None or job["guild_id"] != guild_id or job["published_at"] is None:
                raise SharingRefused(f"job `{job_id}` is not on this server's showcase")
            await log_row(
                session,
                guild_id,
                ModAction.UNPUBLISHED,
                now,
                actor_id=moderator_id,
                target_user_id=job["owner_id"],
                target_job_id=job_id,
                reason=reason,
            )

        await self.db.write(work)

    async def delete_job(self, job_id: str, owner_id: int) -> DeletedJob:
        """Delete the owner's job (see the module). Raises JobUnavailable for no such job,
        SharingRefused for someone else's job, a queued or running one ("cancel it first"),
        one held for review or removed by moderators, or one a running follow-up reads."""
        now = self.clock()

        async def work(session: AsyncSession) -> DeletedJob:
            job = await lock_job(session, job_id)
            if job is None:
                raise JobUnavailable(job_id)
            if job["owner_id"] != owner_id:
                raise SharingRefused(f"only the member who made job `{job_id}` can delete it")
            messages = await _messages(session, job_id)
            if job["deleted_at"] is not None:
                return DeletedJob(job_id, (), messages, True, job["published_at"])
            await _check_deletable(session, job)
            refs = tuple(job["result_refs"] or ())
            if job["preview_ref"]:
                refs += (job["preview_ref"],)
            if self.images is not None:
                await self.images.delete_job(job_id)
            await session.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.deleted_at.is_(None))
                .values(deleted_at=now, result_refs=[], preview_ref=None, like_count=0, prompt="")
            )
            await session.execute(delete(LIKES).where(LIKES.c.job_id == job_id))
            await session.execute(
                update(DELIVERIES)
                .where(
                    DELIVERIES.c.job_id == job_id,
                    DELIVERIES.c.posted_at.is_(None),
                    DELIVERIES.c.given_up_at.is_(None),
                )
                .values(
                    given_up_at=now,
                    give_up_reason=DELETED_REASON,
                    claimed_by=None,
                    claim_expires_at=None,
                    next_attempt_at=None,
                    updated_at=now,
                )
            )
            return DeletedJob(job_id, refs, messages, False, job["published_at"])

        return await self.db.write(work)

    async def set_visibility(self, job_id: str, owner_id: int, visibility: Visibility) -> None:
        """The owner makes their job public or stealth. Raises JobUnavailable (no such job,
        or deleted), SharingRefused (someone else's job; a DM job made public)."""
        visibility = Visibility(visibility)

        async def work(session: AsyncSession) -> None:
            job = await lock_job(session, job_id)
            if job is None or job["deleted_at"] is not None:
                raise JobUnavailable(job_id)
            if job["owner_id"] != owner_id:
                raise SharingRefused(f"only the member who made job `{job_id}` can change it")
            if job["guild_id"] is None and visibility is Visibility.PUBLIC:
                raise SharingRefused("a job made in direct messages is always stealth")
            await session.execute(
                update(JOBS).where(JOBS.c.id == job_id).values(visibility=visibility.value)
            )

        await self.db.write(work)

    # -- lists ------------------------------------------------------------------------------

    async def gallery(
        self,
        view: GalleryView,
        guild_id: int,
        viewer_id: int | None,
        *,
        is_moderator: bool = False,
        member_id: int | None = None,
        session_id: str | None = None,
        cursor: str | None = None,
        size: int = 9,
    ) -> GalleryPage:
        """One page of a gallery list of ``guild_id`` as ``viewer_id`` may see it (None: an
        anonymous viewer, public jobs only). ``cursor`` is a page's ``next_cursor`` or
        ``prev_cursor`` (None: the first page); ``member_id`` is needed by
        ``GalleryView.MEMBER``, ``session_id`` by ``GalleryView.SESSION``; ``size`` is 4..9.
        See ``storage.gallery`` for the orders. Raises BadSearchQuery for a cursor that is not
        one, ValueError for bad arguments."""
        listing = gallery_list(
            GalleryView(view),
            guild_id,
            viewer_id,
            is_moderator=is_moderator,
            member_id=member_id,
            now=self.clock(),
            session_id=session_id,
        )

        async def work(session: AsyncSession) -> GalleryPage:
            return await gallery_page(session, GalleryView(view), listing, cursor, size)

        return await self.db.read(work)

    async def profile(
        self,
        guild_id: int,
        member_id: int,
        viewer_id: int | None,
        *,
        is_moderator: bool = False,
        top: int = 3,
    ) -> MemberProfile:
        """``member_id``'s jobs in this server that ``viewer_id`` may find: how many, the likes
        they received, and the ``top`` most liked. Anonymous session entries whose round is on
        are left out of all three (they would say who made them)."""
        where = and_(
            visible_clause(viewer_id, guild_id, is_moderator=is_moderator),
            JOBS.c.owner_id == member_id,
            author_shown_clause(),
        )

        async def work(session: AsyncSession) -> MemberProfile:
            jobs_from = JOBS
            totals = (
                await session.execute(
                    select(func.count(), func.coalesce(func.sum(JOBS.c.like_count), 0))
                    .select_from(jobs_from)
                    .where(where)
                )
            ).one()
            rows = await session.execute(
                item_select()
                .select_from(jobs_from)
                .where(where, JOBS.c.like_count > 0)
                .order_by(JOBS.c.like_count.desc(), JOBS.c.seq.desc())
                .limit(top)
            )
            items = tuple(item_from(row) for row in rows.mappings())
            return MemberProfile(member_id, int(totals[0]), int(totals[1]), items)

        return await self.db.read(work)

    async def hidden_authors(self, job_ids: Iterable[str]) -> set[str]:
        """Those of ``job_ids`` whose author may not be named now: anonymous session entries
        whose round is on (``storage.visibility.author_hidden``)."""
        wanted = list(job_ids)

        async def work(session: AsyncSession) -> set[str]:
            return await hidden_authors(session, wanted)

        return await self.db.read(work)

    async def session_of(self, guild_id: int, session_id: str) -> SessionView | None:
        """The group session ``session_id`` of this server (for its gallery view), or None:
        no such session, or another server's (the caller cannot tell which)."""

        async def work(session: AsyncSession) -> SessionView | None:
            row = (
                (
                    await session.execute(
                        select(GROUP_SESSIONS).where(
                            GROUP_SESSIONS.c.id == session_id,
                            GROUP_SESSIONS.c.guild_id == guild_id,
                        )
                    )
                )
                .mappings()
                .first()
            )
            return None if row is None else session_view(row)

        return await self.db.read(work)

    async def search(
        self,
        guild_id: int,
        viewer_id: int | None,
        text: str,
        filters: SearchFilters = SearchFilters(),  # noqa: B008 - frozen, never mutated
        *,
        is_moderator: bool = False,
        page: int = 0,
        size: int = 9,
    ) -> SearchPage:
        """One page of prompt search results (``storage.search``): ``text`` in the search
        syntax (``storage.search_syntax``), narrowed by ``filters``."""

        async def work(session: AsyncSession) -> SearchPage:
            return await search_page(
                session,
                text,
                filters,
                guild_id=guild_id,
                viewer_id=viewer_id,
                is_moderator=is_moderator,
                page=page,
                size=size,
            )

        return await self.db.read(work)

    async def search_saved(
        self,
        query_id: str,
        viewer_id: int,
        guild_id: int,
        *,
        is_moderator: bool = False,
        page: int = 0,
        size: int = 9,
    ) -> tuple[SavedQuery, SearchPage]:
        """A page of a saved search (``load_query``'s checks, then ``search``)."""
        saved = await self.load_query(query_id, viewer_id, guild_id)
        results = await self.search(
            guild_id,
            viewer_id,
            saved.text,
            saved.filters,
            is_moderator=is_moderator,
            page=page,
            size=size,
        )
        return saved, results

    # -- saved queries ----------------------------------------------------------------------

    async def save_query(
        self,
        guild_id: int,
        user_id: int,
        text: str,
        filters: SearchFilters = SearchFilters(),  # noqa: B008 - frozen, never mutated
    ) -> SavedQuery:
        """Store a search for its result pages; its id is 12 characters. The text is parsed
        first (BadSearchQuery), so a saved search always runs. The member's oldest saved
        searches beyond ``max_saved_per_user`` and their expired ones go."""
        parse_query(text)
        now = self.clock()
        saved = SavedQuery(
            new_job_id(), guild_id, user_id, text, filters, now, now + self.query_ttl
        )

        async def work(session: AsyncSession) -> SavedQuery:
            await session.execute(
                insert(SEARCH_QUERIES).values(
                    id=saved.id,
                    guild_id=guild_id,
                    user_id=user_id,
                    query=text,
                    filters=_filters_json(filters),
                    created_at=now,
                    expires_at=saved.expires_at,
                )
            )
            keep = (
                select(SEARCH_QUERIES.c.id)
                .where(SEARCH_QUERIES.c.user_id == user_id, SEARCH_QUERIES.c.expires_at > now)
                .order_by(SEARCH_QUERIES.c.created_at.desc(), SEARCH_QUERIES.c.id.desc())
                .limit(self.max_saved_per_user)
            )
            await session.execute(
                delete(SEARCH_QUERIES).where(
                    SEARCH_QUERIES.c.user_id == user_id,
                    not_(SEARCH_QUERIES.c.id.in_(keep.scalar_subquery())),
                )
            )
            return saved

        return await self.db.write(work)

    async def load_query(self, query_id: str, user_id: int, guild_id: int) -> SavedQuery:
        """The saved search ``query_id`` (an untrusted custom_id part): only for the member who
        saved it, in the server it was saved in, before it expires; else SavedQueryGone."""
        if not _QUERY_ID.fullmatch(query_id):
            raise SavedQueryGone(query_id)
        now = self.clock()

        async def work(session: AsyncSession) -> RowMapping | None:
            found = await session.execute(
                select(SEARCH_QUERIES).where(
                    SEARCH_QUERIES.c.id == query_id,
                    SEARCH_QUERIES.c.user_id == user_id,
                    SEARCH_QUERIES.c.guild_id == guild_id,
                    SEARCH_QUERIES.c.expires_at > now,
                )
            )
            return found.mappings().first()

        row = await self.db.read(work)
        if row is None:
            raise SavedQueryGone(query_id)
        return SavedQuery(
            id=row["id"],
            guild_id=row["guild_id"],
            user_id=row["user_id"],
            text=row["query"],
            filters=_filters_from(row["filters"] or {}),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
        )


async def prune_saved_queries(db: Database, now: datetime, *, limit: int) -> int:
    """Delete up to ``limit`` saved searches that expired before ``now``; how many."""

    async def work(session: AsyncSession) -> int:
        due = (
            select(SEARCH_QUERIES.c.id)
            .where(SEARCH_QUERIES.c.expires_at <= now)
            .order_by(SEARCH_QUERIES.c.expires_at)
            .limit(limit)
        )
        result = await session.execute(
            delete(SEARCH_QUERIES).where(SEARCH_QUERIES.c.id.in_(due.scalar_subquery()))
        )
        return int(getattr(result, "rowcount", 0) or 0)

    return await db.write(work)


async def count_expired_queries(db: Database, now: datetime) -> int:
    async def work(session: AsyncSession) -> int:
        stmt = select(func.count()).where(SEARCH_QUERIES.c.expires_at <= now)
        return int((await session.execute(stmt)).scalar_one())

    return await db.read(work)


async def _messages(session: AsyncSession, job_id: str) -> tuple[SharedMessage, ...]:
    """Every message known to show the job: its post, then its /show copies."""
    found: list[SharedMessage] = []
    post = (
        await session.execute(
            select(DELIVERIES.c.channel_id, DELIVERIES.c.message_id).where(
                DELIVERIES.c.job_id == job_id
            )
        )
    ).first()
    if post is not None and post.channel_id is not None and post.message_id is not None:
        found.append(SharedMessage(post.channel_id, post.message_id))
    copies = await session.execute(
        select(JOB_COPIES.c.channel_id, JOB_COPIES.c.message_id)
        .where(JOB_COPIES.c.job_id == job_id)
        .order_by(JOB_COPIES.c.id)
    )
    found += [SharedMessage(c.channel_id, c.message_id) for c in copies]
    return tuple(found)


async def _check_deletable(session: AsyncSession, job: RowMapping) -> None:
    job_id, status = job["id"], JobStatus(job["status"])
    if status in ACTIVE_STATUSES:
        raise SharingRefused(
            f"job `{job_id}` is still {status.value}: cancel it first, then delete it"
        )
    if status is JobStatus.BLOCKED:
        raise SharingRefused(
            f"job `{job_id}` was removed by moderators; its images are deleted when its "
            "appeal period ends"
        )
    review = (
        await session.execute(select(DELIVERIES.c.review).where(DELIVERIES.c.job_id == job_id))
    ).scalar_one_or_none()
    if review == HoldState.HELD.value:
        raise SharingRefused(f"job `{job_id}` is held for review; it can be deleted once decided")
    followup = JOBS.alias("followup")
    running_child = (
        await session.execute(
            select(
                exists().where(
                    followup.c.parent_id == job_id, followup.c.status.in_(ACTIVE_STATUSES)
                )
            )
        )
    ).scalar_one()
    if running_child:
        raise SharingRefused(
            f"a follow-up of job `{job_id}` is still running; delete it once that finishes"
        )


def _filters_json(filters: SearchFilters) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("member_id", "model", "mode", "aspect"):
        value = getattr(filters, name)
        if value is not None:
            out[name] = value
    for name in ("since", "until"):
        moment = getattr(filters, name)
        if moment is not None:
            out[name] = moment.isoformat()
    return out


def _filters_from(data: dict[str, Any]) -> SearchFilters:
    def moment(name: str) -> datetime | None:
        value = data.get(name)
        return None if value is None else datetime.fromisoformat(value)

    return SearchFilters(
        member_id=data.get("member_id"),
        model=data.get("model"),
        mode=data.get("mode"),
        aspect=data.get("aspect"),
        since=moment("since"),
        until=moment("until"),
    )
