"""Gallery lists as SQL: what a contact sheet shows, keyset-paged.

Every list is ``visible_clause`` (``storage.visibility``) plus the list's own narrowing, in a
total order that ends with ``jobs.seq`` (unique), so ties are stable.

Paging is keyset, not offset: a cursor names the sort key of the row a page ended (or began)
at, and the next page is the rows strictly after it. New jobs, new likes and deletions between
two clicks then never repeat or skip a row that kept its place, which offsets do whenever
anything before the page changes (every new job shifts "recent" by one). A cursor is short
(``a``/``b`` for after/before, then base-36 numbers) and fits in a custom_id; it is untrusted
input and parsed strictly. A "previous" page that reaches the start comes back as the first
page, full.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Select, and_, exists, not_, or_, select, true
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import BadSearchQuery
from storage.models import DELIVERIES, JOBS, LIKES, SESSION_ENTRIES
from storage.types import (
    CURSOR_MAX_CHARS,
    EntryState,
    GalleryItem,
    GalleryPage,
    GalleryView,
    JobKind,
    Visibility,
)
from storage.visibility import author_hidden_clause, author_shown_clause, visible_clause

#: Page sizes a contact sheet holds.
MIN_PAGE_SIZE, MAX_PAGE_SIZE = 4, 9
TOP_WINDOWS = {
    GalleryView.TOP_WEEK: timedelta(days=7),
    GalleryView.TOP_MONTH: timedelta(days=30),
}
_CURSOR = re.compile(r"^([ab])([0-9a-z]{1,13})(?:\.([0-9a-z]{1,13}))?$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: What the sort keys' columns hold: ``jobs.seq`` (64-bit), ``jobs.like_count`` (32-bit), and a
#: like's time in microseconds since the epoch (up to the year 9999).
MAX_BIGINT = 2**63 - 1
MAX_INT = 2**31 - 1
MAX_MICROS = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)


def check_page_size(size: int) -> None:
    if not MIN_PAGE_SIZE <= size <= MAX_PAGE_SIZE:
        raise ValueError(
            f"a page holds {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE} images (got size={size})"
        )


def item_select() -> Select[Any]:
    """The columns a GalleryItem needs: the job, its post's message id, and whether its author
    is hidden now (an anonymous session entry: ``storage.visibility``). Select them from
    ``jobs`` alone: the message id is a correlated subquery, which the database evaluates for
    the rows of the page only, after its sort and limit (a join with ``deliveries`` would be
    made for every candidate first: a whole-table hash join on PostgreSQL for a search that
    ranks a few thousand matches)."""
    return select(
        JOBS.c.id,
        JOBS.c.seq,
        JOBS.c.owner_id,
        JOBS.c.guild_id,
        JOBS.c.channel_id,
        JOBS.c.prompt,
        JOBS.c.result_refs,
        JOBS.c.like_count,
        JOBS.c.created_at,
        JOBS.c.visibility,
        JOBS.c.kind,
        JOBS.c.mode,
        JOBS.c.model,
        JOBS.c.aspect,
        JOBS.c.parent_id,
        JOBS.c.published_at,
        JOBS.c.session_id,
        select(DELIVERIES.c.message_id)
        .where(DELIVERIES.c.job_id == JOBS.c.id)
        .correlate(JOBS)
        .scalar_subquery()
        .label("message_id"),
        author_hidden_clause().label("author_hidden"),
    )


def item_from(row: RowMapping) -> GalleryItem:
    refs = list(row["result_refs"] or ())
    return GalleryItem(
        job_id=row["id"],
        owner_id=None if row["author_hidden"] else row["owner_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        message_id=row["message_id"],
        prompt=row["prompt"] or "",
        # A grid's refs are its images then the grid: the last one is what a sheet shows.
        image_ref=refs[-1] if refs else None,
        like_count=row["like_count"] or 0,
        created_at=row["created_at"],
        visibility=Visibility(row["visibility"]),
        kind=JobKind(row["kind"]),
        mode=row["mode"],
        model=row["model"] or "",
        aspect=row["aspect"] or "",
        parent_id=row["parent_id"],
        published_at=row["published_at"],
        session_id=row["session_id"],
    )


@dataclass(frozen=True, slots=True)
class _Cursor:
    after: bool
    key: tuple[int, ...]


def _encode(after: bool, key: Sequence[int]) -> str:
    text = ("a" if after else "b") + ".".join(_base36(k) for k in key)
    assert len(text) <= CURSOR_MAX_CHARS
    return text


def cursor_after(key: Sequence[int]) -> str:
    """The "next page" cursor of a page that ended at sort key ``key`` (its ``to_ints``)."""
    return _encode(True, key)


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _decode(cursor: str, limits: Sequence[int]) -> _Cursor:
    """A cursor's direction and numbers; each number at most its key's limit, so a forged
    cursor never reaches the database with a value its column cannot hold."""
    found = _CURSOR.fullmatch(cursor)
    parts = [p for p in found.groups()[1:] if p is not None] if found else []
    numbers = tuple(int(p, 36) for p in parts)
    if (
        found is None
        or len(numbers) != len(limits)
        or any(n > limit for n, limit in zip(numbers, limits, strict=True))
    ):
        raise BadSearchQuery("this page link is not valid; open the gallery again")
    return _Cursor(found.group(1) == "a", numbers)


@dataclass(frozen=True, slots=True)
class _List:
    """One list: its FROM, its filter, and its sort key (all descending)."""

    froms: FromClause
    stmt: Select[Any]
    where: ColumnElement[bool]
    key: tuple[ColumnElement[Any], ...]
    #: Turns a row's sort key into cursor numbers, and cursor numbers back into SQL values.
    to_ints: Callable[[RowMapping], tuple[int, ...]]
    from_ints: Callable[[tuple[int, ...]], tuple[Any, ...]]
    #: The largest number a cursor may carry for each key (what its column holds).
    limits: tuple[int, ...] = (MAX_BIGINT,)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _from_micros(n: int) -> datetime:
    return _EPOCH + timedelta(microseconds=n)


def gallery_list(
    view: GalleryView,
    guild_id: int,
    viewer_id: int | None,
    *,
    is_moderator: bool,
    member_id: int | None,
    now: datetime,
    session_id: str | None = None,
) -> _List:
    froms: FromClause = JOBS
    base = item_select().select_from(froms)
    where = visible_clause(viewer_id, guild_id, is_moderator=is_moderator)
    plain: tuple[
        Callable[[RowMapping], tuple[int, ...]], Callable[[tuple[int, ...]], tuple[Any, ...]]
    ] = (lambda r: (r["seq"],), lambda k: k)
    if view in TOP_WINDOWS or view is GalleryView.TOP_ALL:
        where = and_(where, JOBS.c.like_count > 0)
        if view in TOP_WINDOWS:
            where = and_(where, JOBS.c.created_at >= now - TOP_WINDOWS[view])
        return _List(
            froms,
            base,
            where,
            (JOBS.c.like_count, JOBS.c.seq),
            lambda r: (r["like_count"], r["seq"]),
            lambda k: k,
            (MAX_INT, MAX_BIGINT),
        )
    if view is GalleryView.RECENT:
        return _List(froms, base, where, (JOBS.c.seq,), *plain)
    if view is GalleryView.MINE:
        if viewer_id is None:
            raise ValueError("the 'mine' gallery needs a viewer")
        return _List(froms, base, and_(where, JOBS.c.owner_id == viewer_id), (JOBS.c.seq,), *plain)
    if view is GalleryView.MEMBER:
        if member_id is None:
            raise ValueError("the 'member' gallery needs a member_id")
        # An anonymous entry whose round is on would say who made it: left out until then.
        mine = and_(JOBS.c.owner_id == member_id, author_shown_clause())
        return _List(froms, base, and_(where, mine), (JOBS.c.seq,), *plain)
    if view is GalleryView.SESSION:
        if session_id is None:
            raise ValueError("the 'session' gallery needs a session_id")
        removed = exists().where(
            SESSION_ENTRIES.c.job_id == JOBS.c.id,
            SESSION_ENTRIES.c.state == EntryState.REMOVED.value,
        )
        entries = and_(JOBS.c.session_id == session_id, not_(removed))
        return _List(froms, base, and_(where, entries), (JOBS.c.seq,), *plain)
    if view is GalleryView.LIKED:
        if viewer_id is None:
            raise ValueError("the 'liked' gallery needs a viewer")
        liked_from = froms.join(
            LIKES, and_(LIKES.c.job_id == JOBS.c.id, LIKES.c.user_id == viewer_id)
        )
        liked = item_select().add_columns(LIKES.c.created_at.label("liked_at"))
        return _List(
            liked_from,
            liked.select_from(liked_from),
            where,
            (LIKES.c.created_at, JOBS.c.seq),
            lambda r: (_micros(r["liked_at"]), r["seq"]),
            lambda k: (_from_micros(k[0]), k[1]),
            (MAX_MICROS, MAX_BIGINT),
        )
    raise ValueError(f"unknown gallery view {view!r}")  # pragma: no cover


def _beyond(key: Sequence[ColumnElement[Any]], values: Sequence[Any], after: bool) -> Any:
    """Rows strictly after (descending order) or before ``values``: the row comparison
    spelled out, with a redundant bound on the first column. Without that bound SQLite plans
    ``a < x OR (a = x AND b < y)`` as a multi-index OR whose rows it collects and sorts (tens of
    milliseconds for "top this week" at 100,000 jobs); with it, one index range in order."""
    strict = _strictly_beyond(key, values, after)
    if len(key) == 1:
        return strict
    bound = key[0] <= values[0] if after else key[0] >= values[0]
    return and_(bound, strict)


def _strictly_beyond(key: Sequence[ColumnElement[Any]], values: Sequence[Any], after: bool) -> Any:
    first, rest = key[0], key[1:]
    strict = first < values[0] if after else first > values[0]
    if not rest:
        return strict
    return or_(strict, and_(first == values[0], _strictly_beyond(rest, values[1:], after)))


async def gallery_page(
    session: AsyncSession,
    view: GalleryView,
    listing: _List,
    cursor: str | None,
    size: int,
) -> GalleryPage:
    check_page_size(size)
    parsed = None if cursor is None else _decode(cursor, listing.limits)
    stmt = listing.stmt.where(listing.where)
    rows: list[RowMapping]
    if parsed is not None and not parsed.after:
        values = listing.from_ints(parsed.key)
        found = await session.execute(
            stmt.where(_beyond(listing.key, values, after=False))
            .order_by(*(k.asc() for k in listing.key))
            .limit(size)
        )
        rows = list(reversed(found.mappings().all()))
        if len(rows) < size:  # reached the start: show the first page, full
            parsed = None
    if parsed is None or parsed.after:
        page = stmt
        if parsed is not None:
            page = page.where(_beyond(listing.key, listing.from_ints(parsed.key), after=True))
        found = await session.execute(page.order_by(*(k.desc() for k in listing.key)).limit(size))
        rows = list(found.mappings().all())
    if not rows:
        return GalleryPage(view, (), None, None)
    first, last = listing.to_ints(rows[0]), listing.to_ints(rows[-1])
    more_after = await _exists(session, listing, listing.from_ints(last), after=True)
    more_before = await _exists(session, listing, listing.from_ints(first), after=False)
    return GalleryPage(
        view,
        tuple(item_from(r) for r in rows),
        _encode(True, last) if more_after else None,
        _encode(False, first) if more_before else None,
    )


async def _exists(session: AsyncSession, listing: _List, values: Any, *, after: bool) -> bool:
    # Ordered along the list from the boundary outwards, so the index scan starts next to the
    # page and stops at the first row that qualifies. Unordered, SQLite walks the index from
    # its far end: for "top this week" that is every old job with one like before a recent one.
    order = (k.desc() if after else k.asc() for k in listing.key)
    stmt = (
        select(true())
        .select_from(listing.froms)
        .where(listing.where, _beyond(listing.key, values, after))
        .order_by(*order)
        .limit(1)
    )
    return (await session.execute(stmt)).first() is not None
