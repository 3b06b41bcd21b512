"""`atelier bench gallery` end to end on SQLite, and its web hook (time to first byte under
concurrent clients) against stand-in aiohttp apps. No timings are asserted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from bot.cli import main
from bot.devtools.bench_gallery import WebTarget, bench_gallery, measure_ttfb
from storage import Database
from storage.bench_seed import SeedReport
from storage.sharing import SharingStore
from storage.types import GalleryView


async def _tiny_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        await asyncio.sleep(0.001)
        return web.Response(text="x" * 2000)

    app = web.Application()
    app.router.add_get("/page", page)
    return app


async def test_ttfb_with_twenty_concurrent_clients() -> None:
    times = await measure_ttfb(_tiny_app, ["/page", "/page", "/missing"], clients=20, requests=90)
    assert len(times.first_byte) == len(times.complete) == 90 and times.clients == 20
    assert times.statuses == {200: 60, 404: 30}
    assert all(0 < f <= c for f, c in zip(times.first_byte, times.complete, strict=True))
    assert times.requests_per_second > 0


async def test_a_factory_that_fails_fails_the_measurement() -> None:
    async def broken() -> web.Application:
        raise RuntimeError("no app today")

    with pytest.raises(RuntimeError, match="no app today"):
        await measure_ttfb(broken, ["/"], clients=2, requests=2)


async def test_the_whole_bench_with_a_stand_in_web_gallery(tmp_path: Path) -> None:
    """The web row measures an app over the seeded database (as bot.web will be wired)."""
    served: list[int] = []

    async def wiring(url: str, seeded: SeedReport) -> WebTarget:
        async def factory() -> web.Application:
            db = Database(url)
            store = SharingStore(db)

            async def gallery(request: web.Request) -> web.Response:
                page = await store.gallery(GalleryView.RECENT, seeded.guild_id, None)
                served.append(len(page.items))
                return web.Response(text="\n".join(item.job_id for item in page.items))

            async def close(app: web.Application) -> None:
                await db.dispose()

            app = web.Application()
            app.router.add_get("/gallery", gallery)
            app.on_cleanup.append(close)
            return app

        return WebTarget(factory, ("/gallery",))

    url = f"sqlite+aiosqlite:///{tmp_path}/bench.db"
    report = await bench_gallery(
        [url], 200, samples=4, naive_samples=2, sheet_runs=1, web_requests=40, wiring=wiring
    )
    (result,) = report.backends
    assert result.web is not None and result.web_alone is not None
    assert result.web.statuses == {200: 40} and result.web_alone.statuses == {200: 20}
    assert served and set(served) == {9}
    assert len(report.sheet.ours) == len(report.sheet.naive) == 1 and report.sheet.sheet_bytes
    table = report.table()
    for expected in (
        "seeded 200 jobs",
        "search: all of the above",
        "gallery: recent, first page",
        "LIKE '%word%'",
        "OFFSET",
        "web TTFB, 20 clients",
        "web TTFB, 1 client",
        "contact sheet render",
        "full LANCZOS",
    ):
        assert expected in table, expected
    assert "< 50 ms:" in table and "< 100 ms:" in table


def test_the_command_prints_every_row(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ATELIER_TEST_POSTGRES_URL", raising=False)
    args = ["bench", "gallery", "--jobs", "120", "--samples", "2", "--sheet-runs", "1"]
    args += ["--web-requests", "20"]
    assert main([*args, "--backend", "sqlite"]) == 0
    out = capsys.readouterr().out
    assert "gallery bench on sqlite" in out and "contact sheet render" in out
    assert "web TTFB" in out and "skipped" not in out
    assert main([*args, "--backend", "postgres"]) == 2
    assert "--postgres-url" in capsys.readouterr().err


async def test_the_web_row_measures_the_real_web_gallery(tmp_path: Path) -> None:
    """The wiring `atelier bench gallery` uses: bot.web over the seeded database, every page
    answering 200 (the gallery, a deep page, searches, a member's page, image pages)."""
    from bot.devtools.bench_gallery import default_web_wiring

    wiring, note = default_web_wiring()
    assert wiring is not None, note
    url = f"sqlite+aiosqlite:///{tmp_path}/bench.db"
    report = await bench_gallery(
        [url], 300, samples=4, naive_samples=2, sheet_runs=1, web_requests=40, wiring=wiring
    )
    (result,) = report.backends
    assert result.web is not None and result.web.statuses == {200: 40}
    assert result.web_alone is not None and result.web_alone.statuses == {200: 20}
