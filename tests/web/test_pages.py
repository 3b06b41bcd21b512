"""The web gallery's pages over a real database: lists, search, image and member pages, what an
anonymous visitor may never see, escaping, headers and strict input."""

from __future__ import annotations

from pathlib import Path

from bot.web import CSP
from storage.types import JobKind, Visibility
from tests.storage.dbfixtures import Services, new_job, owner
from tests.storage.sharefixtures import GUILD, OTHER_GUILD, set_columns, set_review
from tests.web.conftest import ADMIN, Web, jobs_listed, link, open_web


async def test_index_lists_only_servers_that_turned_it_on(web: Web) -> None:
    status, html = await web.get("/")
    assert status == 200
    assert f'href="/s/{GUILD}"' in html and "The &lt;b&gt;Club&lt;/b&gt;" in html
    assert f"/s/{OTHER_GUILD}" not in html
    assert (await web.get(f"/s/{OTHER_GUILD}"))[0] == 404
    await web.s.queue.cancel_for_guild(GUILD, "removed")  # the bot left: nothing shows
    assert (await web.get(f"/s/{GUILD}"))[0] == 404
    await web.s.queue.rejoin_guilds([GUILD])
    assert (await web.get(f"/s/{GUILD}"))[0] == 200
    await web.directory.disable(GUILD)
    assert (await web.get(f"/s/{GUILD}"))[0] == 404
    assert 'id="empty"' in (await web.get("/"))[1]


async def test_recent_and_top_are_paged_by_cursor(web: Web) -> None:
    jobs = [await web.job(prompt=f"picture {n}") for n in range(14)]
    for likes, job_id in enumerate(jobs):
        await set_columns(web.s, job_id, like_count=likes % 5)
    status, html = await web.get(f"/s/{GUILD}")
    assert status == 200
    newest = list(reversed(jobs))
    assert jobs_listed(html) == newest[:9]
    assert link(html, "prev-page") is None
    older = link(html, "next-page")
    assert older is not None
    status, html = await web.get(older)
    assert status == 200 and jobs_listed(html) == newest[9:]
    assert link(html, "next-page") is None
    back = link(html, "prev-page")
    assert back is not None and jobs_listed((await web.get(back))[1]) == newest[:9]

    status, html = await web.get(f"/s/{GUILD}?view=top&window=all")
    liked = sorted(
        (j for j in jobs if jobs.index(j) % 5),
        key=lambda j: (jobs.index(j) % 5, jobs.index(j)),
        reverse=True,
    )
    assert status == 200 and jobs_listed(html) == liked[:9]
    assert 'aria-current="page">All time' in html
    second = link(html, "next-page")
    assert second is not None and "view=top" in second and "window=all" in second
    assert jobs_listed((await web.get(second))[1]) == liked[9:]
    assert (await web.get(f"/s/{GUILD}?view=top"))[0] == 200  # this week


async def test_search_phrase_prefix_and_bad_queries(web: Web) -> None:
    red = await web.job(prompt="a red lighthouse at dusk")
    neon = await web.job(prompt="neon lights over the city")
    await web.job(prompt="lighthouse red")
    status, html = await web.get(f"/s/{GUILD}/search", params={"q": '"red lighthouse"'})
    assert status == 200 and jobs_listed(html) == [red]
    assert 'id="search-form"' in html and 'name="q"' in html
    assert "&#34;red lighthouse&#34;" in html  # the form keeps the query, escaped
    status, html = await web.get(f"/s/{GUILD}/search", params={"q": "neo*"})
    assert status == 200 and jobs_listed(html) == [neon]
    status, html = await web.get(f"/s/{GUILD}/search", params={"q": " ".join(["w"] * 17)})
    assert status == 400 and 'id="search-error"' in html and "at most 16 words" in html
    status, html = await web.get(f"/s/{GUILD}/search", params={"q": "x" * 1001})
    assert status == 400 and "at most 1000 characters" in html
    for page in ("0", "51", "x", "-1"):
        status, html = await web.get(f"/s/{GUILD}/search", params={"q": "red", "page": page})
        assert status == 400 and "page must be a number from 1 to 50" in html
    status, html = await web.get(f"/s/{GUILD}/search")
    assert status == 200 and 'id="items"' not in html  # just the form


async def test_search_pages(web: Web) -> None:
    for n in range(11):
        await web.job(prompt=f"a boat number {n}")
    status, html = await web.get(f"/s/{GUILD}/search", params={"q": "boat"})
    assert status == 200 and len(jobs_listed(html)) == 9
    after = link(html, "next-page")
    assert after is not None and "page=2" in after
    assert len(jobs_listed((await web.get(after))[1])) == 2


async def test_image_page_shows_prompt_parameters_likes_and_visible_lineage(web: Web) -> None:
    s = web.s
    parent = await web.job(prompt="a lighthouse")
    job = await web.job(
        prompt="a lighthouse at dusk",
        kind=JobKind.VARIATION,
        parent_id=parent,
        request={
            "prompt": "a lighthouse at dusk",
            "seed": 42,
            "steps": 4,
            "guidance": 1.5,
            "width": 1216,
            "height": 832,
            "aspect": "3:2",
            "model": "tiny",
            "mode": "fast",
        },
    )
    await set_columns(s, job, like_count=7)
    child = await web.job(user=2, kind=JobKind.UPSCALE, parent_id=job)
    stealth_child = await web.job(kind=JobKind.UPSCALE, parent_id=job)
    await set_columns(s, stealth_child, visibility=Visibility.STEALTH.value)
    await web.directory.remember(GUILD, 1, "Ada <3")

    status, html = await web.get(f"/s/{GUILD}/i/{job}")
    assert status == 200
    assert '<h1 id="prompt">a lighthouse at dusk</h1>' in html
    for key, value in (
        ("seed", "42"),
        ("steps", "4"),
        ("guidance", "1.5"),
        ("size", "1216x832"),
        ("aspect", "3:2"),
        ("model", "tiny"),
        ("mode", "fast"),
        ("kind", "variation"),
    ):
        assert f'id="param-{key}">{value}</dd>' in html, key
    assert '<span id="likes">7</span> likes' in html
    assert link(html, "parent-link") == f"/s/{GUILD}/i/{parent}"
    assert f'class="child-link" href="/s/{GUILD}/i/{child}"' in html
    assert stealth_child not in html
    assert "Ada &lt;3" in html and "member #2" in html  # no name known for member 2
    assert link(html, "member-link") == f"/s/{GUILD}/m/1"
    assert link(html, "discord-link") == (
        f"https://discord.com/channels/{GUILD}/555/{5000 + len(job)}"
    )
    assert f'src="/s/{GUILD}/img/{job}/4.webp"' in html  # the grid, then its four images
    assert html.count('class="single-link"') == 4
    # The parent page links back to the child; the parent's own parent link is absent.
    status, html = await web.get(f"/s/{GUILD}/i/{parent}")
    assert status == 200 and f'href="/s/{GUILD}/i/{job}"' in html
    assert 'id="parent-link"' not in html


async def test_member_page_counts_and_pages_public_work_only(web: Web) -> None:
    s = web.s
    mine = [await web.job(user=5, prompt=f"work {n}") for n in range(10)]
    await set_columns(s, mine[0], like_count=3)
    await web.job(user=5, visibility=Visibility.STEALTH)
    await web.job(user=6, visibility=Visibility.STEALTH)
    await web.directory.remember(GUILD, 5, "Bea")
    status, html = await web.get(f"/s/{GUILD}/m/5")
    assert status == 200
    assert '<h1 id="member-name">Bea</h1>' in html
    assert '<span id="member-jobs">10</span>' in html and '<span id="member-likes">3</span>' in html
    assert jobs_listed(html) == list(reversed(mine))[:9]
    after = link(html, "next-page")
    assert after is not None and after.startswith(f"/s/{GUILD}/m/5?cursor=")
    assert jobs_listed((await web.get(after))[1]) == [mine[0]]
    # Only stealth work, or none at all: the same 404.
    assert (await web.get(f"/s/{GUILD}/m/6"))[0] == 404
    assert (await web.get(f"/s/{GUILD}/m/7"))[0] == 404


async def _hidden_jobs(web: Web) -> dict[str, str]:
    s = web.s
    await web.directory.enable(OTHER_GUILD + 1, "Also on", ADMIN)
    cases = {
        "stealth": await web.job(prompt="zebra stealth", visibility=Visibility.STEALTH),
        "blocked": await web.job(prompt="zebra blocked"),
        "held": await web.job(prompt="zebra held"),
        "rejected": await web.job(prompt="zebra rejected"),
        "deleted": await web.job(prompt="zebra deleted"),
        "pruned": await web.job(prompt="zebra pruned"),
        "dm": await web.job(prompt="zebra dm", guild=None),
        "other": await web.job(prompt="zebra other", guild=OTHER_GUILD),
        "other_on": await web.job(prompt="zebra elsewhere", guild=OTHER_GUILD + 1),
    }
    await s.queue.block(cases["blocked"], "rule 1")
    await set_review(s, cases["held"], "held")
    await set_review(s, cases["rejected"], "rejected")
    await web.sharing.delete_job(cases["deleted"], 1)
    await set_columns(s, cases["pruned"], pruned_at=s.clock(), result_refs=[])
    cases["queued"] = (await s.queue.enqueue(owner(1, GUILD), new_job(prompt="zebra q"))).id
    return cases


async def test_nothing_hidden_is_served_listed_or_found(web: Web) -> None:
    public = await web.job(prompt="zebra public")
    cases = await _hidden_jobs(web)
    _, recent = await web.get(f"/s/{GUILD}")
    _, top = await web.get(f"/s/{GUILD}?view=top&window=all")
    _, found = await web.get(f"/s/{GUILD}/search", params={"q": "zebra"})
    _, member = await web.get(f"/s/{GUILD}/m/1")
    assert jobs_listed(recent) == [public] and jobs_listed(found) == [public]
    assert jobs_listed(member) == [public] and jobs_listed(top) == []
    for name, job_id in cases.items():
        for path in (
            f"/s/{GUILD}/i/{job_id}",
            f"/s/{GUILD}/t/{job_id}.webp",
            f"/s/{GUILD}/img/{job_id}/0.webp",
            f"/s/{GUILD}/img/{job_id}/4.webp",
        ):
            status, html = await web.get(path)
            assert status == 404, (name, path)
            assert "There is no such page here." in html
        for page in (recent, top, found, member):
            assert job_id not in page, name
    # The other servers' jobs are not reachable through this server's paths either; the
    # server that turned the gallery on shows its own job on its own path only.
    assert (await web.get(f"/s/{OTHER_GUILD}/i/{cases['other']}"))[0] == 404
    assert (await web.get(f"/s/{OTHER_GUILD + 1}/i/{cases['other_on']}"))[0] == 200


async def test_user_text_is_escaped_everywhere(web: Web) -> None:
    nasty = "<script>alert(1)</script>\"'&"
    job = await web.job(prompt=f"lamp {nasty}")
    await web.directory.remember(GUILD, 1, f"<img src=x onerror=alert(1)>{nasty}")
    escaped = "lamp &lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&amp;"
    for path, params in (
        (f"/s/{GUILD}", {}),
        (f"/s/{GUILD}/i/{job}", {}),
        (f"/s/{GUILD}/m/1", {}),
        (f"/s/{GUILD}/search", {"q": f"lamp {nasty}"}),
        (f"/s/{GUILD}/search", {"q": f'{nasty} "unclosed'}),
        (f"/s/{GUILD}", {"view": nasty}),  # a 400 that quotes the bad value
    ):
        status, html = await web.get(path, params=params)
        assert status in (200, 400), path
        assert "<script>" not in html and "<img src=x" not in html, (path, params)
        assert "alert(1)" not in html or "&lt;" in html
    _, html = await web.get(f"/s/{GUILD}/i/{job}")
    assert f'alt="{escaped}"' in html and f'<h1 id="prompt">{escaped}</h1>' in html


async def test_security_headers_on_every_response(web: Web) -> None:
    job = await web.job()
    paths = [
        "/",
        f"/s/{GUILD}",
        f"/s/{GUILD}/i/{job}",
        f"/s/{GUILD}/t/{job}.webp",
        f"/s/{GUILD}/img/{job}/1.webp",
        f"/s/{GUILD}/search?q=cat",
        f"/s/{GUILD}/m/1",
        "/static/atelier.css",
        "/nowhere",
        f"/s/{GUILD}?view=nope",
        f"/s/{GUILD}/i/UPPER",
    ]
    for path in paths:
        async with web.client.get(path) as response:
            assert response.headers["Content-Security-Policy"] == CSP, path
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert response.headers["X-Frame-Options"] == "DENY"
            if response.content_type == "text/html":
                body = await response.text()
                assert "<script" not in body and "style=" not in body, path
                assert body.startswith("<!DOCTYPE html>")
    async with web.client.post(f"/s/{GUILD}") as response:
        assert response.status == 405 and "GET" in response.headers["Allow"]
        assert response.headers["Content-Security-Policy"] == CSP
    async with web.client.head(f"/s/{GUILD}/i/{job}") as response:
        assert response.status == 200 and response.headers["Content-Security-Policy"] == CSP
    async with web.client.get("/static/atelier.css") as response:
        assert response.content_type == "text/css"
        assert "max-age=" in response.headers["Cache-Control"]
        etag = response.headers["ETag"]
    async with web.client.get("/static/atelier.css", headers={"If-None-Match": etag}) as again:
        assert again.status == 304


async def test_bad_ids_cursors_and_parameters_are_4xx_never_500(web: Web) -> None:
    job = await web.job()
    huge = "a" + "z" * 13
    not_found = [
        "/s/abc",
        "/s/0",
        "/s/-1",
        "/s/99999999999999999999",
        "/s/9223372036854775808",
        f"/s/{GUILD}/i/UPPERCASE123",
        f"/s/{GUILD}/i/abc",
        f"/s/{GUILD}/i/{'a' * 17}",
        f"/s/{GUILD}/i/nosuchjob000",
        f"/s/{GUILD}/i/{job}%00",
        f"/s/{GUILD}/m/abc",
        f"/s/{GUILD}/m/99999999999999999999",
        f"/s/{GUILD}/img/{job}/5.webp",
        f"/s/{GUILD}/img/{job}/-1.webp",
        f"/s/{GUILD}/img/{job}/01.webp",
        f"/s/{GUILD}/img/{job}/x.webp",
        f"/s/{GUILD}/t/{job}.png",
        f"/s/{GUILD}/t/..%2F..%2Fetc.webp",
        "/static/../../pyproject.toml",
    ]
    for path in not_found:
        status, html = await web.get(path)
        assert status == 404, path
        assert "Traceback" not in html
    bad = [
        (f"/s/{GUILD}", {"view": "best"}, "view must be one of recent, top"),
        (f"/s/{GUILD}", {"view": "top", "window": "year"}, "window must be one of"),
        (f"/s/{GUILD}", {"window": "week"}, "window applies only to view=top"),
        (f"/s/{GUILD}", {"cursor": "zz"}, "page link is not valid"),
        (f"/s/{GUILD}", {"cursor": huge}, "page link is not valid"),
        (f"/s/{GUILD}", {"cursor": "a1.2"}, "page link is not valid"),  # width of top
        (f"/s/{GUILD}", {"view": "top", "cursor": "a1"}, "page link is not valid"),
        (f"/s/{GUILD}", {"view": "top", "cursor": "azzzzzzz.1"}, "page link is not valid"),
        (f"/s/{GUILD}", {"cursor": "a" + "1" * 40}, "page link is not valid"),
        (f"/s/{GUILD}/m/1", {"cursor": "b!"}, "page link is not valid"),
        (f"/s/{GUILD}/search", {"q": "a\x00b"}, "cannot contain that character"),
    ]
    for path, params, message in bad:
        status, html = await web.get(path, params=params)
        assert status == 400, (path, params)
        assert message in html, (path, params)
    # The largest cursor the database can take is a page (all older jobs), not an error.
    status, html = await web.get(f"/s/{GUILD}", params={"cursor": "a1y2p0ij32e8e7"})
    assert status == 200 and jobs_listed(html) == [job]


async def test_links_carry_the_public_base_path(services: Services, tmp_path: Path) -> None:
    from config.settings import WebSettings

    settings = WebSettings(public_base_url="https://example.org/gallery/")
    assert settings.base_url == "https://example.org/gallery"
    async for web in open_web(services, tmp_path, web=settings):
        await web.directory.enable(GUILD, "Club", ADMIN)
        job = await web.job()
        status, html = await web.get(f"/s/{GUILD}")
        assert status == 200
        assert f'href="/gallery/s/{GUILD}/i/{job}"' in html
        assert 'href="/gallery/static/atelier.css?v=' in html
        _, html = await web.get(f"/s/{GUILD}/i/{job}")
        page = f"https://example.org/gallery/s/{GUILD}/i/{job}"
        assert f'<link rel="canonical" href="{page}">' in html
        thumb = f"https://example.org/gallery/s/{GUILD}/t/{job}.webp"
        assert f'<meta property="og:image" content="{thumb}">' in html
