"""The web gallery and group sessions: an anonymous entry's author is on no page (credits, the
image page's byline, lineage, the member page and its counts) until its round ends, and a
session's own page (``/s/<server>/session/<id>``) lists its public entries, for sessions of
that server only. Both backends."""

from __future__ import annotations

from typing import Any

from storage.sessions import SessionStore
from storage.types import SessionSpec
from tests.storage.dbfixtures import new_job
from tests.storage.sharefixtures import GUILD, OTHER_GUILD
from tests.web.conftest import NAMES, Web, jobs_listed, link, png

HOST, ALICE, CAROL = 9001, 11, 12


def sessions(web: Web) -> SessionStore:
    return SessionStore(web.s.db, web.s.queue, clock=web.s.clock, claimer_id="bot-a")


def spec(**overrides: Any) -> SessionSpec:
    base: dict[str, Any] = {
        "guild_id": GUILD,
        "channel_id": 555,
        "host_id": HOST,
        "theme": "Harbours <at> night",
        "anonymous": True,
        "entries_per_member": 3,
    }
    return SessionSpec(**{**base, **overrides})


async def enter(web: Web, st: SessionStore, session_id: str, member: int, prompt: str) -> str:
    """An entry, generated (real PNGs) and posted; its job id."""
    made = await st.submit(session_id, member, new_job(prompt=prompt))
    claimed = await web.s.queue.claim_next("w1")
    assert claimed is not None and claimed.id == made.job_id
    refs = [await web.images.put(claimed.id, n, png((90, 60, 30))) for n in NAMES]
    await web.s.queue.complete(claimed.id, claimed.lease_token, result_refs=refs, gpu_seconds=1)
    assert await web.s.deliveries.claim(claimed.id)
    await web.s.deliveries.mark_posted(claimed.id, 6000)
    return claimed.id


async def test_an_anonymous_entrys_author_is_on_no_page_until_its_round_ends(web: Web) -> None:
    st = sessions(web)
    await web.directory.remember(GUILD, ALICE, "Alice Author")
    await web.directory.remember(GUILD, CAROL, "Carol")
    session = await st.start(spec())
    entry = await enter(web, st, session.id, ALICE, "a harbour entry")
    remix = await web.job(user=CAROL, prompt="a harbour remix", parent_id=entry)

    pages = {
        "recent": f"/s/{GUILD}",
        "search": f"/s/{GUILD}/search?q=harbour",
        "entry": f"/s/{GUILD}/i/{entry}",
        "remix": f"/s/{GUILD}/i/{remix}",
        "session": f"/s/{GUILD}/session/{session.id}",
    }
    for name, path in pages.items():
        status, html = await web.get(path)
        assert status == 200, name
        assert "Alice Author" not in html and f"/m/{ALICE}" not in html, name
    _, recent = await web.get(pages["recent"])
    assert jobs_listed(recent) == [remix, entry] and "anonymous entry" in recent
    _, page = await web.get(pages["entry"])
    assert 'id="member-anonymous"' in page and 'id="member-link"' not in page
    assert link(page, "session-link") == pages["session"]
    assert "Carol" in page  # the remix's author, in the entry's lineage
    _, page = await web.get(pages["remix"])
    assert link(page, "member-link") == f"/s/{GUILD}/m/{CAROL}"
    assert link(page, "parent-link") == pages["entry"]
    # Her member page would say she made it: it does not exist while she has nothing else.
    assert (await web.get(f"/s/{GUILD}/m/{ALICE}"))[0] == 404
    plain = await web.job(user=ALICE, prompt="a plain lighthouse")
    status, member = await web.get(f"/s/{GUILD}/m/{ALICE}")
    assert status == 200 and jobs_listed(member) == [plain]
    assert '<span id="member-jobs">1</span>' in member

    # The round ends (voting, then the host ends the session).
    await st.skip_to_voting(session.id)
    await st.generated(session.id)
    await st.end(session.id, HOST)
    _, recent = await web.get(pages["recent"])
    assert "anonymous entry" not in recent and f'href="/s/{GUILD}/m/{ALICE}"' in recent
    _, page = await web.get(pages["entry"])
    assert link(page, "member-link") == f"/s/{GUILD}/m/{ALICE}" and "Alice Author" in page
    _, member = await web.get(f"/s/{GUILD}/m/{ALICE}")
    assert jobs_listed(member) == [plain, entry] and '<span id="member-jobs">2</span>' in member


async def test_a_sessions_page_lists_its_public_entries_of_this_server_only(web: Web) -> None:
    st = sessions(web)
    session = await st.start(spec(anonymous=False, rounds=2, themes=("dawn", "dusk")))
    entries = [await enter(web, st, session.id, ALICE + n, f"entry {n}") for n in range(10)]
    await web.job(user=CAROL, prompt="not an entry")
    path = f"/s/{GUILD}/session/{session.id}"
    status, html = await web.get(path)
    assert status == 200
    assert '<h1 id="session-theme">Harbours &lt;at&gt; night</h1>' in html
    assert "dawn" in html and "dusk" in html and "round 1 on" in html
    assert jobs_listed(html) == list(reversed(entries))[:9]
    after = link(html, "next-page")
    assert after is not None and after.startswith(f"{path}?cursor=")
    assert jobs_listed((await web.get(after))[1]) == [entries[0]]
    # Another server's session, a malformed id, an unknown one: the same 404.
    elsewhere = await st.start(spec(guild_id=OTHER_GUILD, channel_id=556))
    for bad in (elsewhere.id, "ZZZZZZZZZZZZ", "uuuuuuuuuuuu", "zzzzzzzzzzzz", "1", "../x"):
        assert (await web.get(f"/s/{GUILD}/session/{bad}"))[0] == 404, bad
    assert (await web.get(f"/s/{OTHER_GUILD}/session/{elsewhere.id}"))[0] == 404  # gallery off
    assert (await web.get(f"{path}?cursor=zz"))[0] == 400
