"""Full-text search over prompts, on each backend's own index.

- SQLite: the FTS5 table ``jobs_fts`` (external content ``jobs``, rowid ``jobs.seq``), kept in
  sync by triggers; ranked by ``bm25``.
- PostgreSQL: the generated ``jobs.search_vector`` column (``to_tsvector('simple', ...)``) with
  a GIN index; ranked by ``ts_rank``.

Both are created by migration 0007 and are not in the models (the schema test leaves
``UNMODELLED`` out). The member's text is parsed by ``storage.search_syntax`` and reaches the
database only as a bound parameter holding quoted tokens. Results: the visibility rule and the
filters, ranked by relevance, then likes, then newest. With no words (only filters, or text
with no letters or digits) they are ranked by likes, then newest.

A broad search is ranked by likes, then newest, too: when at least ``BROAD_MATCHES`` jobs of the
server match the words (counted up to that many, which is cheap), relevance would
have to be computed and sorted for every one of them (``"golden hour"`` or ``lig*`` match a
third of a server's prompts: 150 to 250 ms at 100,000 jobs, ``atelier bench gallery``), and
across thousands of short prompts that all hold the words it says little. That order is served
by the likes index, stopping at the page. The pages a member can reach (``MAX_SEARCH_PAGES``)
stay within the first ``BROAD_MATCHES``, so one search keeps one order across its pages. A search
narrowed to one member is never broad: their matches are few enough to rank, and the member's
own index finds them.

Paging is by offset (``page`` from 0): relevance is a float no cursor can carry exactly, and
search pages are read soon after the query is saved. At most ``MAX_SEARCH_PAGES`` pages.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ColumnElement, Float, Select, and_, literal_column, select, table
from sqlalchemy import column as sql_column
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import func
from sqlalchemy.sql.expression import ColumnClause

from storage.errors import BadSearchQuery
from storage.gallery import check_page_size, item_from, item_select
from storage.models import JOBS
from storage.search_syntax import Term, fts5_match, parse_query, pg_tsquery
from storage.types import SearchFilters, SearchPage
from storage.visibility import author_shown_clause, visible_clause

#: Objects of the search index that the models leave out (migration 0007 makes them).
UNMODELLED_TABLE_PREFIX = "jobs_fts"
UNMODELLED_COLUMNS = frozenset({"search_vector"})
UNMODELLED_INDEXES = frozenset({"ix_jobs_search_vector"})
#: The deepest page a search reaches (offsets beyond this get slow and nobody clicks them).
MAX_SEARCH_PAGES = 50
#: From this many matches on, a search is ranked by likes, then newest (see the module).
BROAD_MATCHES = 1000

_FTS = table("jobs_fts", sql_column("rowid"))


def filters_clause(filters: SearchFilters) -> list[ColumnElement[bool]]:
    terms: list[ColumnElement[bool]] = []
    if filters.member_id is not None:
        # An anonymous entry whose round is on would say who made it: left out until then.
        terms += [JOBS.c.owner_id == filters.member_id, author_shown_clause()]
    if filters.model is not None:
        terms.append(JOBS.c.model == filters.model)
    if filters.mode is not None:
        terms.append(JOBS.c.mode == filters.mode)
    if filters.aspect is not None:
        terms.append(JOBS.c.aspect == filters.aspect)
    if filters.since is not None:
        terms.append(JOBS.c.created_at >= filters.since)
    if filters.until is not None:
        terms.append(JOBS.c.created_at < filters.until)
    return terms


async def search_page(
    session: AsyncSession,
    text: str,
    filters: SearchFilters,
    *,
    guild_id: int,
    viewer_id: int | None,
    is_moderator: bool,
    page: int,
    size: int,
) -> SearchPage:
    """One page of results (see the module). Raises BadSearchQuery for text that cannot be
    searched or a page past the last, ValueError for a page size outside 4..9."""
    check_page_size(size)
    if not 0 <= page < MAX_SEARCH_PAGES:
        raise BadSearchQuery(f"search results have at most {MAX_SEARCH_PAGES} pages")
    terms = parse_query(text)
    froms: Any = JOBS
    where = [visible_clause(viewer_id, guild_id, is_moderator=is_moderator)]
    where += filters_clause(filters)
    order: list[Any] = []
    if terms:
        dialect = session.get_bind().dialect.name
        # A member's jobs are few next to a server's: ranking their matches is cheap, and
        # their own index finds them (walking the likes index for them reads the server).
        if filters.member_id is None and await _is_broad(session, dialect, terms, guild_id):
            where.append(_member_of_matches(dialect, terms))
        else:
            froms, match, rank = _fulltext(dialect, froms, terms)
            where.append(match)
            order.append(rank)
    order += [JOBS.c.like_count.desc(), JOBS.c.seq.desc()]
    stmt = (
        item_select()
        .select_from(froms)
        .where(and_(*where))
        .order_by(*order)
        .offset(page * size)
        .limit(size + 1)
    )
    rows = (await session.execute(stmt)).mappings().all()
    has_next = len(rows) > size and page + 1 < MAX_SEARCH_PAGES
    return SearchPage(tuple(item_from(r) for r in rows[:size]), page, has_next)


def _fulltext(
    dialect: str, froms: Any, terms: tuple[Term, ...]
) -> tuple[Any, ColumnElement[bool], Any]:
    """The joined FROM, the match condition and the ORDER BY term (best first)."""
    if dialect == "sqlite":
        fts: ColumnClause[Any] = literal_column("jobs_fts")
        match = fts.op("MATCH", is_comparison=True)(fts5_match(terms))
        # bm25 is lower for better matches.
        rank = func.bm25(fts, type_=Float).asc()
        return froms.join(_FTS, _FTS.c.rowid == JOBS.c.seq), match, rank
    vector: ColumnClause[Any] = literal_column("jobs.search_vector")
    query = func.to_tsquery(literal_column("'simple'::regconfig"), pg_tsquery(terms))
    match = vector.op("@@", return_type=Boolean)(query)
    return froms, match, func.ts_rank(vector, query, type_=Float).desc()


async def _is_broad(
    session: AsyncSession, dialect: str, terms: tuple[Term, ...], guild_id: int
) -> bool:
    """Whether at least BROAD_MATCHES jobs of the server match the terms. Counting stops
    there. The filters and the visibility rule are left out: counting under a filter no index
    serves (``since``, ``aspect``) would read every match, and this only chooses the order; the
    planner then serves a broad search with a selective filter (a member) from that filter's
    index."""
    froms, match, _ = _fulltext(dialect, JOBS, terms)
    capped: Select[Any] = (
        select(literal_column("1")).select_from(froms).where(match, JOBS.c.guild_id == guild_id)
    )
    found = select(func.count()).select_from(capped.limit(BROAD_MATCHES).subquery())
    return int((await session.execute(found)).scalar_one()) >= BROAD_MATCHES


def _member_of_matches(dialect: str, terms: tuple[Term, ...]) -> ColumnElement[bool]:
    """The match as a filter, leaving the order to the likes index: on SQLite, membership in
    the FTS5 result."""
    if dialect == "sqlite":
        fts: ColumnClause[Any] = literal_column("jobs_fts")
        match = fts.op("MATCH", is_comparison=True)(fts5_match(terms))
        # "+ 0": not the rowid itself, so SQLite does not drive from the FTS5 result by rowid
        # and sort it all; it walks the likes index and tests membership, stopping at the page.
        return (JOBS.c.seq + 0).in_(select(_FTS.c.rowid).where(match))
    return _fulltext(dialect, JOBS, terms)[1]
