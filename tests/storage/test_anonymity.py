"""Anonymous session entries: the one rule (SQL, Python and the batched read agree case by
case), and every list that names or counts authors (gallery views, search, profile, the web's
image page, the showcase) keeping an entry's author hidden until its round ends, on both
backends. The per-session gallery view, keyset-paged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import SharingRefused
from storage.models import JOBS
from storage.sessions import SessionStore
from storage.types import GalleryItem, GalleryView, NewJob, SearchFilters, SessionSpec
from storage.visibility import (
    author_hidden,
    author_hidden_clause,
    author_shown_clause,
    entry_facts,
    hidden_authors,
)
from storage.webdir import WebDirectory
from tests.storage.dbfixtures import Services, make_services, new_job, queue_settings
from tests.storage.sharefixtures import GUILD, OTHER_GUILD, finished, sharing

HOST, A, B, C, MOD = 9001, 1, 2, 3, 4


@pytest.fixture
async def s(db_url: str) -> AsyncIterator[Services]:
    built = await make_services(
        db_url, queue=queue_settings(max_queued_per_user=100, max_running_per_user=10)
    )
    try:
        yield built
    finally:
        await built.db.dispose()


def sessions(s: Services) -> SessionStore:
    return SessionStore(s.db, s.queue, clock=s.clock, claimer_id="bot-a")


def spec(channel: int, **overrides: Any) -> SessionSpec:
    base: dict[str, Any] = {
        "guild_id": GUILD,
        "channel_id": channel,
        "host_id": HOST,
        "theme": "lighthouses",
        "round_seconds": 600,
        "voting_seconds": 300,
        "voting_wait_seconds": 120,
        "anonymous": True,
    }
    return SessionSpec(**{**base, **overrides})


def entry(prompt: str) -> NewJob[dict[str, Any]]:
    return new_job(prompt=prompt)


async def generate(s: Services) -> list[str]:
    """Every queued job succeeds (a grid's refs) and is posted: the worker and the publisher."""
    done: list[str] = []
    while (claimed := await s.queue.claim_next("w1")) is not None:
        refs = [f"{claimed.id}/{n}.png" for n in range(4)] + [f"{claimed.id}/grid.png"]
        await s.queue.complete(claimed.id, claimed.lease_token, result_refs=refs, gpu_seconds=1)
        assert await s.deliveries.claim(claimed.id)
        await s.deliveries.mark_posted(claimed.id, 7000 + len(done))
        done.append(claimed.id)
    return done


async def submit(s: Services, st: SessionStore, session_id: str, member: int, text: str) -> str:
    """An entry (approval off: queued at once), generated and posted; its job id."""
    made = await st.submit(session_id, member, entry(text))
    await generate(s)
    job_id = (await st.entry(made.id)).job_id
    assert job_id is not None
    return job_id


async def finish_round(s: Services, st: SessionStore, session_id: str) -> None:
    """Submissions close, voting starts and ends: the round's results are in."""
    await st.skip_to_voting(session_id)
    await st.generated(session_id)
    s.clock.advance(300)
    for timer in await st.claim_due():
        assert (await st.fire(timer)).fired


async def sql_hidden(s: Services) -> set[str]:
    async def work(session: AsyncSession) -> set[str]:
        found = await session.execute(select(JOBS.c.id).where(author_hidden_clause()))
        return set(found.scalars())

    return await s.db.read(work)


async def sql_shown(s: Services) -> set[str]:
    async def work(session: AsyncSession) -> set[str]:
        found = await session.execute(select(JOBS.c.id).where(author_shown_clause()))
        return set(found.scalars())

    return await s.db.read(work)


# -- the rule ----------------------------------------------------------------------------------


async def test_the_anonymity_rule_in_sql_python_and_batched_agree(s: Services) -> None:
    st = sessions(s)
    jobs: dict[str, str] = {"plain": await finished(s, user=A)}
    # Two rounds: the first finishes (its entry is revealed), the second is on (hidden).
    two = await st.start(spec(601, rounds=2))
    jobs["finished_round"] = await submit(s, st, two.id, A, "round one")
    await finish_round(s, st, two.id)
    assert (await st.get(two.id)).round == 2
    jobs["open_round"] = await submit(s, st, two.id, A, "round two")
    on = await st.start(spec(602))
    jobs["anonymous"] = await submit(s, st, on.id, B, "hidden")
    open_ = await st.start(spec(603, anonymous=False))
    jobs["not_anonymous"] = await submit(s, st, open_.id, B, "named")
    # Ended by its host during submissions: the round never finished, the session did.
    ended = await st.start(spec(604))
    jobs["session_ended"] = await submit(s, st, ended.id, C, "ended")
    await st.end(ended.id, HOST)
    # A job of the session's channel that is not an entry.
    jobs["remix_of_entry"] = await finished(s, user=C, parent_id=jobs["anonymous"])

    async def check(expected: set[str]) -> None:
        in_sql = await sql_hidden(s)
        shown = await sql_shown(s)

        async def work(session: AsyncSession) -> tuple[dict[str, Any], set[str]]:
            ids = list(jobs.values())
            return await entry_facts(session, ids), await hidden_authors(session, ids)

        facts, batched = await s.db.read(work)
        for name, job_id in jobs.items():
            in_python = author_hidden(facts.get(job_id))
            assert in_python == (job_id in in_sql) == (job_id in batched), name
            assert (job_id in shown) != (job_id in in_sql), name
        assert {name for name, job_id in jobs.items() if job_id in in_sql} == expected
        assert await sharing(s).hidden_authors(jobs.values()) == {jobs[n] for n in expected}
        assert await s.deliveries.hidden_authors(jobs.values()) == {jobs[n] for n in expected}

    await check({"open_round", "anonymous"})
    assert set(await s.db.read(lambda session: entry_facts(session, [jobs["plain"]]))) == set()
    # The round ends (the one-round session ends with it); the other session ends early.
    await finish_round(s, st, on.id)
    await check({"open_round"})
    await st.end(two.id, HOST)
    await check(set())
    assert await sharing(s).hidden_authors([]) == set()


# -- every list --------------------------------------------------------------------------------


def owners(items: tuple[GalleryItem, ...]) -> dict[str, int | None]:
    return {item.job_id: item.owner_id for item in items}


async def test_lists_hide_an_entrys_author_until_its_round_ends(s: Services) -> None:
    st, share = sessions(s), sharing(s)
    plain = await finished(s, user=A, prompt="a lighthouse of A")
    session = await st.start(spec(610, entries_per_member=3))
    mine = [await submit(s, st, session.id, A, f"a lighthouse entry {n}") for n in range(2)]
    theirs = await submit(s, st, session.id, B, "a lighthouse by B")
    remix = await finished(s, user=C, prompt="a remix", parent_id=mine[0])
    assert await share.toggle_like(mine[0], C, GUILD) == (True, 1)
    assert await share.toggle_like(plain, C, GUILD) == (True, 1)
    entries = {*mine, theirs}

    async def lists(viewer: int | None, *, moderator: bool = False) -> dict[str, Any]:
        async def page(view: GalleryView, **kw: Any) -> dict[str, int | None]:
            found = await share.gallery(view, GUILD, viewer, is_moderator=moderator, **kw)
            return owners(found.items)

        return {
            "recent": await page(GalleryView.RECENT),
            "top": await page(GalleryView.TOP_ALL),
            "member": await page(GalleryView.MEMBER, member_id=A),
            "session": await page(GalleryView.SESSION, session_id=session.id),
            "profile": await share.profile(GUILD, A, viewer, is_moderator=moderator),
            "search": owners(
                (await share.search(GUILD, viewer, "lighthouse", is_moderator=moderator)).items
            ),
            "search_member": owners(
                (
                    await share.search(
                        GUILD,
                        viewer,
                        "lighthouse",
                        SearchFilters(member_id=A),
                        is_moderator=moderator,
                    )
                ).items
            ),
        }

    for viewer, moderator in ((C, False), (A, False), (MOD, True), (None, False)):
        seen = await lists(viewer, moderator=moderator)
        for name in ("recent", "search"):
            assert {j: seen[name][j] for j in entries} == dict.fromkeys(entries), (name, viewer)
            assert seen[name][plain] == A
        assert seen["top"] == {mine[0]: None, plain: A}
        # Nothing keyed by the member says they made an entry: not the member's list, not a
        # search narrowed to them, not their counts or their best.
        assert seen["member"] == {plain: A}, viewer
        assert seen["search_member"] == {plain: A}, viewer
        profile = seen["profile"]
        assert (profile.jobs, profile.likes, owners(profile.top)) == (1, 1, {plain: A})
        assert list(seen["session"]) == [theirs, mine[1], mine[0]]  # newest first
    # The owner's own list has them (they know), still credited to no one.
    own = await share.gallery(GalleryView.MINE, GUILD, A)
    assert owners(own.items) == {mine[1]: None, mine[0]: None, plain: A}
    # The showcase post names its author and is never edited: not while hidden.
    with pytest.raises(SharingRefused, match="anonymous session entry"):
        await share.publish(mine[0], GUILD, A)
    with pytest.raises(SharingRefused, match="anonymous session entry"):
        await share.publish(mine[0], GUILD, None)
    # The web's image page: the entry, and the entry as a parent of another's remix.
    web = WebDirectory(s.db, clock=s.clock)
    await web.enable(GUILD, "a server", HOST)
    page = await web.job(GUILD, mine[0])
    assert page is not None and page.item.owner_id is None
    assert owners(page.children) == {remix: C}
    child = await web.job(GUILD, remix)
    assert child is not None and child.parent is not None and child.parent.owner_id is None

    await finish_round(s, st, session.id)
    for viewer, moderator in ((C, False), (A, False), (None, False)):
        seen = await lists(viewer, moderator=moderator)
        assert seen["recent"][theirs] == B and seen["recent"][mine[0]] == A
        assert seen["member"] == {mine[1]: A, mine[0]: A, plain: A}
        assert set(seen["search_member"]) == {*mine, plain}
        assert (seen["profile"].jobs, seen["profile"].likes) == (3, 2)
    page = await web.job(GUILD, mine[0])
    assert page is not None and page.item.owner_id == A
    assert await share.publish(mine[0], GUILD, A)


async def test_the_session_view_pages_by_keyset_and_stays_in_its_server(s: Services) -> None:
    st, share = sessions(s), sharing(s)
    session = await st.start(spec(620, entries_per_member=3, anonymous=False))
    made = [await submit(s, st, session.id, m, f"entry {m}.{n}") for m in (A, B) for n in range(3)]
    other = await st.start(spec(621))
    elsewhere = await submit(s, st, other.id, C, "another session's")
    await finished(s, user=A, prompt="not an entry")
    newest_first = list(reversed(made))

    first = await share.gallery(GalleryView.SESSION, GUILD, C, session_id=session.id, size=4)
    assert [i.job_id for i in first.items] == newest_first[:4]
    assert first.next_cursor is not None and first.prev_cursor is None
    second = await share.gallery(
        GalleryView.SESSION, GUILD, C, session_id=session.id, cursor=first.next_cursor, size=4
    )
    assert [i.job_id for i in second.items] == newest_first[4:] and second.next_cursor is None
    assert second.prev_cursor is not None
    back = await share.gallery(
        GalleryView.SESSION, GUILD, C, session_id=session.id, cursor=second.prev_cursor, size=4
    )
    assert [i.job_id for i in back.items] == newest_first[:4]
    # The host removes an entry that was generated: out of the session's list, still a job.
    (removed,) = [e for e in await st.entries(session.id) if e.job_id == made[0]]
    await st.remove_entry(removed.id, HOST, "off theme")
    listed = await share.gallery(GalleryView.SESSION, GUILD, C, session_id=session.id)
    assert made[0] not in {i.job_id for i in listed.items} and len(listed.items) == 5
    recent = await share.gallery(GalleryView.RECENT, GUILD, C)
    assert made[0] in {i.job_id for i in recent.items}
    # Another server sees nothing of it, and cannot read the session.
    assert (
        await share.gallery(GalleryView.SESSION, OTHER_GUILD, C, session_id=session.id)
    ).items == ()
    assert await share.session_of(OTHER_GUILD, session.id) is None
    found = await share.session_of(GUILD, session.id)
    assert found is not None and found.theme == "lighthouses"
    assert await share.session_of(GUILD, "nosuchsess12") is None
    assert elsewhere not in {i.job_id for i in listed.items}
    with pytest.raises(ValueError, match="session_id"):
        await share.gallery(GalleryView.SESSION, GUILD, C)
