"""Prompt search: the query syntax (pure), then the same cases on SQLite's FTS5 and PostgreSQL's
tsvector, hostile input, ranking, filters, visibility, paging, and migration 0007 (backfill and
downgrade)."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

import storage.search as search
from storage import head_revision, upgrade
from storage.errors import BadSearchQuery
from storage.migrate import downgrade
from storage.models import DELIVERIES, JOBS
from storage.search_syntax import (
    MAX_TERMS,
    Term,
    fts5_match,
    parse_query,
    pg_tsquery,
)
from storage.sharing import SharingStore
from storage.types import SearchFilters, Visibility
from tests.storage.dbfixtures import (
    BACKENDS,
    PG_ENV,
    Services,
    _pg_admin,
    _pg_url,
    make_services,
    new_job,
    owner,
)
from tests.storage.sharefixtures import GUILD, OTHER_GUILD, finished, set_review, sharing

OWNER, MEMBER, MOD = 1, 2, 3
OPERATORS = ["fox", "AND", "cat", "OR", "NOT", "dog"]

# -- the syntax, without a database -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("red fox", (Term(("red",)), Term(("fox",)))),
        ('"red fox" snow', (Term(("red", "fox")), Term(("snow",)))),
        ("lig*", (Term(("lig",), prefix=True),)),
        ('"neon li"*', (Term(("neon", "li"), prefix=True),)),
        ("sci-fi", (Term(("sci", "fi")),)),
        ("a:b", (Term(("a", "b")),)),
        ("NEAR(a b)", (Term(("NEAR", "a")), Term(("b",)))),
        ("fox AND cat OR NOT dog", tuple(Term((w,)) for w in OPERATORS)),
        ("*", ()),
        ("* ** ***", ()),
        ('"', ()),
        ('""', ()),
        ('"unclosed phrase', (Term(("unclosed", "phrase")),)),
        ("'); DROP TABLE jobs; --", (Term(("DROP",)), Term(("TABLE",)), Term(("jobs",)))),
        ("fox' | 'cat", (Term(("fox",)), Term(("cat",)))),
        ("!fox <-> cat:*", (Term(("fox",)), Term(("cat",)))),
        ("\u201cred fox\u201d", (Term(("red", "fox")),)),
        ("日本 café", (Term(("日本",)), Term(("café",)))),
        ("under_score", (Term(("under", "score")),)),
        ("", ()),
    ],
)
def test_the_query_syntax(text: str, terms: tuple[Term, ...]) -> None:
    assert parse_query(text) == terms


def test_the_writers_quote_every_token() -> None:
    terms = parse_query('red "neon li"* fox*')
    assert fts5_match(terms) == '"red" "neon li"* "fox"*'
    assert pg_tsquery(terms) == "'red' & ('neon' <-> 'li':*) & 'fox':*"


@pytest.mark.parametrize(
    "text",
    ["x" * 1001, " ".join(["w"] * (MAX_TERMS + 1)), "nul\x00byte", "lone \ud800 surrogate"],
)
def test_unsearchable_text_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(BadSearchQuery):
        parse_query(text)


# -- both backends ---------------------------------------------------------------------------

CORPUS = {
    "fox": "a red fox in the snow",
    "foxes": "two foxes playing",
    "lights": "neon lights over tokyo",
    "light": "soft light portrait",
    "scifi": "sci-fi city at night",
    "pets": "cat,dog and bird",
    "syntax": 'the "big" apple: NEAR OR NOT (AND)',
    "unicode": "café 日本 crème",
    "dotted": "sdxl v1.5 render",
}
CASES = [
    ("fox", {"fox"}),
    ("FOX", {"fox"}),
    ("fox*", {"fox", "foxes"}),
    ("red fox", {"fox"}),
    ("fox red", {"fox"}),
    ('"red fox"', {"fox"}),
    ('"fox red"', set()),
    ("lig*", {"lights", "light"}),
    ('"neon li"*', {"lights"}),
    ("sci-fi", {"scifi"}),
    ("sci", {"scifi"}),
    ("dog", {"pets"}),
    ("cat,dog", {"pets"}),
    ("NEAR", {"syntax"}),
    ("near or not", {"syntax"}),
    ("apple:", {"syntax"}),
    ("(and)", {"syntax", "pets"}),
    ("日本", {"unicode"}),
    ("café", {"unicode"}),
    ("v1", {"dotted"}),
    ("v1.5", {"dotted"}),
    ("1.5", set()),  # "v1" is the word, not "1"
    ("zebra", set()),
]
HOSTILE = [
    '"',
    '""',
    "*",
    "***",
    "(",
    ")",
    "AND",
    "OR NOT",
    "NEAR(a b)",
    "prompt:fox",
    "fox:*",
    "'",
    "\\",
    "fox' | 'cat",
    "a & b | !c",
    "<->",
    "^fox",
    "-fox",
    "+fox",
    "{fox}",
    "fox" * 333,
    "x " * 15,
    "\u0301",
    "🦊 fox",
]


@pytest.fixture
async def corpus(services: Services) -> dict[str, str]:
    ids = {}
    for name, prompt in CORPUS.items():
        ids[name] = await finished(services, prompt=prompt)
    return ids


async def _found(store: SharingStore, text: str, **kw: object) -> set[str]:
    page = await store.search(GUILD, MEMBER, text, size=9, **kw)  # type: ignore[arg-type]
    return {item.job_id for item in page.items}


async def test_the_same_cases_find_the_same_jobs(
    services: Services, corpus: dict[str, str]
) -> None:
    store = sharing(services)
    names = {job_id: name for name, job_id in corpus.items()}
    for text, expected in CASES:
        found = {names[job_id] for job_id in await _found(store, text)}
        assert found == expected, text


async def test_a_broad_search_finds_the_same_jobs(
    services: Services, corpus: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From BROAD_MATCHES matches on, the match is a filter under the likes order (on SQLite,
    membership in the FTS5 result): it finds exactly what the ranked search finds."""
    monkeypatch.setattr(search, "BROAD_MATCHES", 1)
    store = sharing(services)
    names = {job_id: name for name, job_id in corpus.items()}
    for text, expected in CASES:
        found = {names[job_id] for job_id in await _found(store, text)}
        assert found == expected, text


async def test_a_broad_search_ranks_by_likes_then_newest(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, store = services, sharing(services)
    strong = await finished(s, prompt="owl owl owl")
    liked = await finished(s, prompt="an owl in a forest at dusk with mist")
    newest = await finished(s, prompt="an owl in a forest at dusk with fog")
    await finished(s, prompt="owl", visibility=Visibility.STEALTH)
    await finished(s, prompt="owl", guild=OTHER_GUILD)
    await store.toggle_like(liked, MEMBER, GUILD)
    monkeypatch.setattr(search, "BROAD_MATCHES", 4)  # 4 of this server match, counting stealth
    page = await store.search(GUILD, MEMBER, "owl")
    assert [i.job_id for i in page.items] == [liked, newest, strong]
    only_mist = await store.search(GUILD, MEMBER, "owl mist")  # one match: ranked as ever
    assert [i.job_id for i in only_mist.items] == [liked]
    monkeypatch.setattr(search, "BROAD_MATCHES", 5)  # 5 needed: ranked by relevance again
    page = await store.search(GUILD, MEMBER, "owl")
    assert [i.job_id for i in page.items] == [strong, liked, newest]


async def test_hostile_text_is_only_ever_text(services: Services, corpus: dict[str, str]) -> None:
    store = sharing(services)
    for text in HOSTILE:
        found = await _found(store, text)
        if not parse_query(text):
            assert len(found) == 9, text  # no words: every visible job, by likes and recency
    assert await _found(store, "🦊 fox") == {corpus["fox"]}
    with pytest.raises(BadSearchQuery, match="1000"):
        await store.search(GUILD, MEMBER, "x" * 1001)
    saved = await store.save_query(GUILD, MEMBER, "fox' | 'cat (NEAR)")
    assert (await store.load_query(saved.id, MEMBER, GUILD)).text == "fox' | 'cat (NEAR)"


async def test_results_rank_by_relevance_then_likes(services: Services) -> None:
    s, store = services, sharing(services)
    strong = await finished(s, prompt="owl owl owl")
    weak_liked = await finished(s, prompt="an owl in a forest at dusk with mist")
    weak = await finished(s, prompt="an owl in a forest at dusk with fog")
    await store.toggle_like(weak_liked, MEMBER, GUILD)
    page = await store.search(GUILD, MEMBER, "owl")
    assert [i.job_id for i in page.items] == [strong, weak_liked, weak]
    for user in range(5):
        await store.toggle_like(weak, 100 + user, GUILD)
    page = await store.search(GUILD, MEMBER, "owl")
    assert [i.job_id for i in page.items] == [strong, weak, weak_liked]
    page = await store.search(GUILD, MEMBER, "")  # no words: likes, then newest
    assert [i.job_id for i in page.items] == [weak, weak_liked, strong]


async def test_filters_narrow_the_results(services: Services) -> None:
    s, store = services, sharing(services)
    base = {"prompt": "a lighthouse", "mode": "fast"}
    wide = await finished(s, request={**base, "model": "sdxl", "aspect": "16:9"})
    tall = await finished(s, user=MEMBER, request={**base, "model": "flux", "aspect": "9:16"})
    s.clock.advance(86_400)
    slow = await finished(s, prompt="a lighthouse", mode="relax", model="flux", aspect="1:1")
    assert (await s.queue.require(slow)).model == "flux"
    assert (await s.queue.require(wide)).aspect == "16:9"
    day = s.clock() - timedelta(hours=1)
    for filters, expected in (
        (SearchFilters(), {wide, tall, slow}),
        (SearchFilters(member_id=MEMBER), {tall}),
        (SearchFilters(model="flux"), {tall, slow}),
        (SearchFilters(mode="relax"), {slow}),
        (SearchFilters(aspect="16:9"), {wide}),
        (SearchFilters(since=day), {slow}),
        (SearchFilters(until=day), {wide, tall}),
        (SearchFilters(model="flux", until=day), {tall}),
        (SearchFilters(model="none"), set()),
    ):
        assert await _found(store, "lighthouse", filters=filters) == expected, filters
        assert await _found(store, "", filters=filters) == expected, filters


async def test_search_follows_visibility(services: Services) -> None:
    s, store = services, sharing(services)
    public = await finished(s, prompt="heron")
    stealth = await finished(s, prompt="heron", visibility=Visibility.STEALTH)
    held = await finished(s, prompt="heron")
    await set_review(s, held, "held")
    await finished(s, prompt="heron", guild=OTHER_GUILD)
    await finished(s, prompt="heron", guild=None)
    queued = await s.queue.enqueue(owner(OWNER), new_job(prompt="heron"))
    assert await _found(store, "heron") == {public}
    owners = await store.search(GUILD, OWNER, "heron")
    assert {i.job_id for i in owners.items} == {public, stealth}
    mods = await store.search(GUILD, MOD, "heron", is_moderator=True)
    assert {i.job_id for i in mods.items} == {public, stealth}
    anonymous = await store.search(GUILD, None, "heron")
    assert {i.job_id for i in anonymous.items} == {public}
    assert queued.id not in await _found(store, "heron")


async def test_search_pages_by_offset(services: Services) -> None:
    s, store = services, sharing(services)
    jobs = [await finished(s, prompt=f"kite number {n}") for n in range(12)]
    pages = [await store.search(GUILD, MEMBER, "kite", page=n, size=5) for n in range(3)]
    assert [len(p.items) for p in pages] == [5, 5, 2]
    assert [p.has_next for p in pages] == [True, True, False]
    assert [p.has_prev for p in pages] == [False, True, True]
    found = [i.job_id for p in pages for i in p.items]
    assert sorted(found) == sorted(jobs) and len(set(found)) == 12
    with pytest.raises(BadSearchQuery, match="pages"):
        await store.search(GUILD, MEMBER, "kite", page=50)
    with pytest.raises(ValueError, match="4 to 9"):
        await store.search(GUILD, MEMBER, "kite", size=10)


async def test_the_index_follows_inserts_and_deletes(services: Services) -> None:
    s, store = services, sharing(services)
    gone = await finished(s, prompt="walrus on ice")
    given = dataclasses.replace(new_job(), request={"mode": "fast"}, prompt="explicit walrus")
    view = await s.queue.enqueue(owner(OWNER), given)
    assert view.prompt == "explicit walrus"
    odd = dataclasses.replace(new_job(), request={"prompt": 42, "mode": "fast"})
    assert (await s.queue.enqueue(owner(OWNER), odd)).prompt == ""

    async def drop(session: AsyncSession) -> None:  # as retention deletes rows
        await session.execute(delete(JOBS).where(JOBS.c.id == gone))

    await s.db.write(drop)
    claimed = await s.queue.claim_next("w")
    assert claimed is not None and claimed.id == view.id
    await s.queue.complete(view.id, claimed.lease_token, result_refs=["a/b"], gpu_seconds=1)
    assert await _found(store, "walrus") == {view.id}


# -- migration 0007 --------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    if not os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} is not set")
    name = f"atelier_m_{secrets.token_hex(4)}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_downgrade_and_upgrade_keep_jobs_and_backfill_the_index(fresh_url: str) -> None:
    assert await upgrade(fresh_url) == head_revision()
    s = await make_services(fresh_url)
    try:
        server = await finished(s, prompt="ignored", request={"prompt": "amber owl", "mode": "f"})
        # Too long for the column: refused at enqueue, cut by the backfill.
        dm = await finished(
            s, guild=None, request={"prompt": "amber dm", "model": "m" * 300}, model=""
        )
    finally:
        await s.db.dispose()
    assert await downgrade(fresh_url, "0006") == "0006"
    assert await upgrade(fresh_url) == head_revision()
    s = await make_services(fresh_url)
    try:
        store = sharing(s)
        assert await _found(store, "amber") == {server}
        view = await s.queue.require(dm)
        assert view.visibility is Visibility.STEALTH and view.prompt == "amber dm"
        assert view.model == "m" * 255 and view.like_count == 0
        assert (await store.toggle_like(server, MEMBER, GUILD)).liked

        async def posted(session: AsyncSession) -> int:
            rows = await session.execute(select(DELIVERIES.c.job_id))
            return len(rows.all())

        assert await s.db.read(posted) == 2  # deliveries survived (no table was recreated)
    finally:
        await s.db.dispose()
