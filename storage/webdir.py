"""What the read-only web gallery may show (issue 12): which servers turned it on, the names it
credits members by, and the reads of its image pages.

The web is an anonymous viewer: every job it reads goes through ``visible_clause(None, guild)``
(public, succeeded, not held, deleted or pruned, of that server), and only for a server with a
``web_galleries`` row that the bot has not left (``left_guilds``). Lists and search come from
``SharingStore`` with ``viewer_id=None`` (the web checks ``get`` first); the reads here are the
ones it lacks (one job with its lineage; one job's image refs).

Names are recorded by the bot (``remember``) because the web has no Discord to ask; a name longer
than ``WEB_NAME_LENGTH`` is shortened, control characters become spaces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, not_, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.gallery import item_from, item_select
from storage.models import (
    JOBS,
    LEFT_GUILDS,
    MEMBER_NAMES,
    WEB_GALLERIES,
    WEB_NAME_LENGTH,
)
from storage.sql import upsert, utc_now
from storage.types import GalleryItem, WebGallery, WebJob
from storage.visibility import visible_clause

Clock = Callable[[], datetime]

#: The most children an image page lists (follow-ups of one job, oldest first).
MAX_CHILDREN = 24
#: ``names`` reads this many members per query (bound parameters stay well under any limit).
_NAMES_CHUNK = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean_name(name: str) -> str:
    """A name as stored: control characters as spaces, trimmed, at most WEB_NAME_LENGTH."""
    return _CONTROL.sub(" ", name).strip()[:WEB_NAME_LENGTH].strip()


async def remember_name(
    session: AsyncSession, guild_id: int, user_id: int, name: str, now: datetime
) -> None:
    """Record (or update) a member's display name in a server, inside the caller's unit of work
    (``JobQueue.enqueue_many`` records the owner's with their job). A name that is empty once
    cleaned is not recorded."""
    shown = clean_name(name)
    if not shown:
        return
    await session.execute(
        upsert(
            session,
            MEMBER_NAMES,
            {"guild_id": guild_id, "user_id": user_id, "name": shown, "updated_at": now},
            ["guild_id", "user_id"],
        )
    )


def _gallery(row: RowMapping) -> WebGallery:
    return WebGallery(row["guild_id"], row["name"], row["enabled_by"], row["enabled_at"])


def _not_left(guild: Any) -> Any:
    """The bot is still in the server: once removed, its admins could not turn the web gallery
    off any more, so it shows nothing until the bot is back."""
    return not_(exists().where(LEFT_GUILDS.c.guild_id == guild))


def _listed(guild_id: int) -> Any:
    return and_(exists().where(WEB_GALLERIES.c.guild_id == guild_id), _not_left(guild_id))


class WebDirectory:
    """The web gallery's own storage: opted-in servers, member names, image-page reads."""

    def __init__(self, db: Database, *, clock: Clock = utc_now) -> None:
        self.db = db
        self.clock = clock

    # -- which servers are shown ------------------------------------------------------------

    async def enable(self, guild_id: int, name: str, by: int) -> WebGallery:
        """Turn the web gallery on for a server (its admins chose to). Repeating it only
        refreshes the name; who turned it on and when stay."""
        now = self.clock()
        shown = clean_name(name) or f"server {guild_id}"

        async def work(session: AsyncSession) -> WebGallery:
            await session.execute(
                upsert(
                    session,
                    WEB_GALLERIES,
                    {"guild_id": guild_id, "name": shown, "enabled_by": by, "enabled_at": now},
                    ["guild_id"],
                    {"name": shown},
                )
            )
            row = (
                (
                    await session.execute(
                        select(WEB_GALLERIES).where(WEB_GALLERIES.c.guild_id == guild_id)
                    )
                )
                .mappings()
                .one()
            )
            return _gallery(row)

        return await self.db.write(work)

    async def disable(self, guild_id: int) -> bool:
        """Turn it off: the server's pages are 404 from the next request. True when it was on."""

        async def work(session: AsyncSession) -> bool:
            done = await session.execute(
                delete(WEB_GALLERIES).where(WEB_GALLERIES.c.guild_id == guild_id)
            )
            return bool(getattr(done, "rowcount", 0))

        return await self.db.write(work)

    async def get(self, guild_id: int) -> WebGallery | None:
        """The server's gallery when it is on (and the bot is still in the server), else None."""

        async def work(session: AsyncSession) -> WebGallery | None:
            row = (
                (
                    await session.execute(
                        select(WEB_GALLERIES).where(
                            WEB_GALLERIES.c.guild_id == guild_id,
                            _not_left(WEB_GALLERIES.c.guild_id),
                        )
                    )
                )
                .mappings()
                .first()
            )
            return None if row is None else _gallery(row)

        return await self.db.read(work)

    async def listed(self) -> tuple[WebGallery, ...]:
        """Every server with the web gallery on (that the bot is still in), by name."""

        async def work(session: AsyncSession) -> tuple[WebGallery, ...]:
            rows = await session.execute(
                select(WEB_GALLERIES)
                .where(_not_left(WEB_GALLERIES.c.guild_id))
                .order_by(WEB_GALLERIES.c.name, WEB_GALLERIES.c.guild_id)
            )
            return tuple(_gallery(row) for row in rows.mappings())

        return await self.db.read(work)

    # -- member names -----------------------------------------------------------------------

    async def remember(self, guild_id: int, user_id: int, name: str) -> None:
        """Record a member's display name in a server (the bot calls this as it sees them).
        A name that is empty once cleaned is not recorded."""
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            await remember_name(session, guild_id, user_id, name, now)

        await self.db.write(work)

    async def names(self, guild_id: int, user_ids: Iterable[int]) -> dict[int, str]:
        """The recorded names of these members of a server (members with none are left out)."""
        wanted = sorted(set(user_ids))
        if not wanted:
            return {}

        async def work(session: AsyncSession) -> dict[int, str]:
            found: dict[int, str] = {}
            for start in range(0, len(wanted), _NAMES_CHUNK):
                rows = await session.execute(
                    select(MEMBER_NAMES.c.user_id, MEMBER_NAMES.c.name).where(
                        MEMBER_NAMES.c.guild_id == guild_id,
                        MEMBER_NAMES.c.user_id.in_(wanted[start : start + _NAMES_CHUNK]),
                    )
                )
                found.update({int(r.user_id): str(r.name) for r in rows})
            return found

        return await self.db.read(work)

    # -- image pages ------------------------------------------------------------------------

    async def job(self, guild_id: int, job_id: str) -> WebJob | None:
        """The job as an anonymous viewer may see it in a server with the web gallery on, with
        its visible parent and visible children; None when it is not public there (no such
        job, another server's, a DM's, stealth, held, removed, deleted, pruned, or the server
        has the web gallery off): the caller cannot tell which."""
        shown = visible_clause(None, guild_id)
        froms = JOBS

        async def work(session: AsyncSession) -> WebJob | None:
            row = (
                (
                    await session.execute(
                        item_select()
                        .add_columns(JOBS.c.request)
                        .select_from(froms)
                        .where(JOBS.c.id == job_id, shown, _listed(guild_id))
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            parent: GalleryItem | None = None
            if row["parent_id"] is not None:
                found = (
                    (
                        await session.execute(
                            item_select()
                            .select_from(froms)
                            .where(JOBS.c.id == row["parent_id"], shown)
                        )
                    )
                    .mappings()
                    .first()
                )
                parent = None if found is None else item_from(found)
            children = await session.execute(
                item_select()
                .select_from(froms)
                .where(JOBS.c.parent_id == job_id, shown)
                .order_by(JOBS.c.seq)
                .limit(MAX_CHILDREN)
            )
            request = row["request"]
            return WebJob(
                item=item_from(row),
                refs=tuple(row["result_refs"] or ()),
                request=dict(request) if isinstance(request, dict) else {},
                parent=parent,
                children=tuple(item_from(c) for c in children.mappings()),
            )

        return await self.db.read(work)

    async def image_refs(self, guild_id: int, job_id: str) -> tuple[str, ...] | None:
        """The job's image refs when an anonymous viewer may see it in a server with the web
        gallery on (as ``job``), else None. Read on every image request, cached or not."""

        async def work(session: AsyncSession) -> tuple[str, ...] | None:
            row = (
                await session.execute(
                    select(JOBS.c.result_refs)
                    .select_from(JOBS)
                    .where(JOBS.c.id == job_id, visible_clause(None, guild_id), _listed(guild_id))
                )
            ).first()
            return None if row is None else tuple(row[0] or ())

        return await self.db.read(work)
