"""``atelier bench gallery``: search, gallery pages, the contact sheet and the web gallery's
time to first byte, on a seeded 100,000-job server, each against the naive way where there is one.

The database half is ``storage.bench_gallery`` (seeding in ``storage.bench_seed``), the image
half ``generation.bench_sheet``. The web half is here: ``measure_ttfb`` starts any aiohttp
application on 127.0.0.1 (its own thread and event loop, so the clients' work is not the
server's) and has ``clients`` concurrent clients, each its own ``ClientSession``, fetch ``paths``
in turn until ``requests`` responses came back; a lone client's run is the baseline. The web
gallery plugs in through a ``WebWiring``: given the seeded database's URL and what was seeded,
it returns the app factory and the paths to fetch.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from generation.bench_sheet import SheetTimes, bench_contact_sheet
from storage.bench import Latency
from storage.bench_gallery import GalleryBenchReport, OpRow, bench_gallery_db
from storage.bench_seed import SeedReport

#: Makes the application to measure; awaited on the server's own event loop.
AppFactory = Callable[[], Awaitable[web.Application]]
CLIENTS = 20


@dataclass(frozen=True)
class WebTarget:
    """An app to measure and the paths (with query strings) its clients fetch, in turn."""

    factory: AppFactory
    paths: tuple[str, ...]


#: Builds the WebTarget for a seeded database: (database URL, what was seeded) -> target.
WebWiring = Callable[[str, SeedReport], Awaitable[WebTarget]]


@dataclass(frozen=True)
class TtfbTimes:
    """Seconds from sending a request to its response's headers, and to its last byte."""

    clients: int
    first_byte: tuple[float, ...]
    complete: tuple[float, ...]
    statuses: dict[int, int]
    seconds: float

    @property
    def requests_per_second(self) -> float:
        return len(self.first_byte) / self.seconds if self.seconds else 0.0


async def measure_ttfb(
    factory: AppFactory, paths: Sequence[str], *, clients: int = CLIENTS, requests: int = 400
) -> TtfbTimes:
    """Serve ``factory()``'s app on 127.0.0.1 and fetch ``paths`` round robin with ``clients``
    concurrent clients until ``requests`` responses are in (see the module)."""
    if not paths or clients < 1 or requests < 1:
        raise ValueError("measure_ttfb needs paths, at least one client and one request")
    server = _Server(factory)
    port = await asyncio.wrap_future(server.start())
    try:
        return await _fetch_all(f"http://127.0.0.1:{port}", paths, clients, requests)
    finally:
        await asyncio.wrap_future(server.stop())


async def _fetch_all(base: str, paths: Sequence[str], clients: int, requests: int) -> TtfbTimes:
    first: list[float] = []
    complete: list[float] = []
    statuses: Counter[int] = Counter()
    issued = 0

    async def client() -> None:
        nonlocal issued
        async with aiohttp.ClientSession() as session:
            while issued < requests:
                path = paths[issued % len(paths)]
                issued += 1
                started = time.perf_counter()
                async with session.get(base + path, allow_redirects=False) as response:
                    first.append(time.perf_counter() - started)
                    await response.read()
                    complete.append(time.perf_counter() - started)
                    statuses[response.status] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return TtfbTimes(
        clients, tuple(first), tuple(complete), dict(statuses), time.perf_counter() - started
    )


class _Server:
    """An aiohttp app on 127.0.0.1 in its own thread and event loop."""

    def __init__(self, factory: AppFactory) -> None:
        self.factory = factory
        self._ready: Future[int] = Future()
        self._done: Future[None] = Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="bench-web", daemon=True)

    def start(self) -> Future[int]:
        self._thread.start()
        return self._ready

    def stop(self) -> Future[None]:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        return self._done

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting side, raised there
            if not self._ready.done():
                self._ready.set_exception(exc)
            self._done.set_exception(exc)
        else:
            self._done.set_result(None)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(await self.factory(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._ready.set_result(int(runner.addresses[0][1]))
            await self._stop.wait()
        finally:
            await runner.cleanup()


def default_web_wiring() -> tuple[WebWiring | None, str]:
    """The web gallery's wiring (``web_gallery_target``), or None and why not."""
    if importlib.util.find_spec("bot.web") is None:
        return None, "web TTFB: skipped, bot.web (the web gallery) is not in this build"
    return web_gallery_target, ""


async def web_gallery_target(url: str, seeded: SeedReport) -> WebTarget:
    """The real web gallery (``bot.web.build_app``) over the seeded database, the server
    turned on, and the pages a visitor reads: the gallery (recent, top), a deep page, searches
    (a word, a phrase, a prefix), a member's page and image pages. The seeded jobs have no
    image files, so image bytes are not measured (thumbnails are files cached on disk)."""
    import tempfile
    from pathlib import Path

    from bot.web import build_app
    from config.settings import Settings
    from storage.db import Database
    from storage.images import FileImageStore
    from storage.sharing import SharingStore
    from storage.types import GalleryView
    from storage.webdir import WebDirectory

    guild = seeded.guild_id
    db = Database(url)
    try:
        await WebDirectory(db).enable(guild, "Bench server", 0)
        first = await SharingStore(db).gallery(GalleryView.RECENT, guild, None)
    finally:
        await db.dispose()
    data_dir = Path(tempfile.mkdtemp(prefix="atelier-bench-web-"))
    owner = first.items[0].owner_id
    paths = (
        f"/s/{guild}",
        f"/s/{guild}?view=top&window=all",
        f"/s/{guild}?cursor={first.next_cursor}" if first.next_cursor else f"/s/{guild}",
        f"/s/{guild}/search?q=lighthouse",
        f"/s/{guild}/search?q=%22golden+hour%22",
        f"/s/{guild}/search?q=neo*",
        f"/s/{guild}/m/{owner}",
        *(f"/s/{guild}/i/{item.job_id}" for item in first.items[:3]),
    )

    async def factory() -> web.Application:
        served = Database(url)  # made on the server's own event loop
        app = build_app(Settings(data_dir=data_dir), served, FileImageStore(data_dir / "images"))

        async def close(_: web.Application) -> None:
            await served.dispose()

        app.on_cleanup.append(close)
        return app

    return WebTarget(factory, paths)


@dataclass
class BackendResult:
    report: GalleryBenchReport
    web: TtfbTimes | None = None
    web_alone: TtfbTimes | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GalleryBench:
    backends: tuple[BackendResult, ...]
    sheet: SheetTimes
    notes: tuple[str, ...]

    def table(self) -> str:
        lines: list[str] = []
        for result in self.backends:
            lines += _backend_table(result)
            lines.append("")
        lines += _sheet_lines(self.sheet)
        lines += list(self.notes)
        return "\n".join(lines)


async def bench_gallery(
    urls: Sequence[str],
    jobs: int = 100_000,
    *,
    samples: int = 200,
    naive_samples: int = 40,
    sheet_runs: int = 20,
    web_requests: int = 400,
    wiring: WebWiring | None = None,
    notes: Sequence[str] = (),
    clean: Callable[[str], bool] = lambda url: True,
) -> GalleryBench:
    """Run the whole bench on each database URL, then the contact sheet once. ``wiring``
    (None: no web row) builds the web gallery for each seeded database; ``clean(url)`` says
    whether to delete the seeded rows afterwards (a throwaway file need not be)."""
    results = []
    for url in urls:
        results.append(
            await _one_backend(url, jobs, samples, naive_samples, web_requests, wiring, clean(url))
        )
    sheet = await asyncio.to_thread(bench_contact_sheet, sheet_runs)
    return GalleryBench(tuple(results), sheet, tuple(notes))


async def _one_backend(
    url: str,
    jobs: int,
    samples: int,
    naive_samples: int,
    web_requests: int,
    wiring: WebWiring | None,
    clean: bool,
) -> BackendResult:
    measured: dict[str, TtfbTimes] = {}

    async def web_rows(url: str, seeded: SeedReport) -> None:
        if wiring is None:
            return
        target = await wiring(url, seeded)
        measured["alone"] = await measure_ttfb(
            target.factory, target.paths, clients=1, requests=max(20, web_requests // 4)
        )
        measured["loaded"] = await measure_ttfb(
            target.factory, target.paths, clients=CLIENTS, requests=web_requests
        )

    report = await bench_gallery_db(
        url, jobs, samples=samples, naive_samples=naive_samples, clean=clean, after=web_rows
    )
    return BackendResult(report, measured.get("loaded"), measured.get("alone"))


_HEAD = (
    f"{'operation':<36} {'p50':>7} {'p95':>7} {'max':>7} {'n':>4} | {'naive way':<14} "
    f"{'p50':>7} {'p95':>7} {'n':>4} {'ratio':>7} | target (p95)"
)


def _row(
    name: str,
    ours: Latency,
    n: int,
    naive: Latency | None = None,
    naive_n: int = 0,
    label: str = "",
    ratio: float | None = None,
    target: str = "",
) -> str:
    left = f"{name:<36} {ours.p50:7.2f} {ours.p95:7.2f} {ours.max:7.2f} {n:>4}"
    if naive is None:
        right = f"{'-':<14} {'':>7} {'':>7} {'':>4} {'':>7}"
    else:
        shown = f"{ratio:6.1f}x" if ratio is not None else "      -"
        right = f"{label:<14} {naive.p50:7.2f} {naive.p95:7.2f} {naive_n:>4} {shown:>7}"
    return f"{left} | {right} | {target}".rstrip()


def _target(row: OpRow) -> str:
    if row.target_ms is None:
        return ""
    return f"< {row.target_ms:g} ms: {'met' if row.meets_target else 'MISSED'}"


def _backend_table(result: BackendResult) -> list[str]:
    report, seeded = result.report, result.report.seeded
    lines = [
        f"gallery bench on {report.backend} ({report.url})",
        f"seeded {seeded.jobs:,} jobs in {seeded.seconds:.1f} s: {seeded.likes:,} likes, "
        f"{seeded.deliveries:,} deliveries, {seeded.members:,} members; "
        f"{seeded.public_jobs:,} public jobs in the measured server",
        "latencies in ms; ratio = the naive way's p50 / ours",
        _HEAD,
    ]
    for row in report.rows:
        lines.append(
            _row(
                row.operation,
                row.ours,
                row.samples,
                row.naive,
                row.naive_samples,
                row.naive_label,
                row.ratio,
                _target(row),
            )
        )
    for name, times in (
        (f"web TTFB, {CLIENTS} clients", result.web),
        ("web TTFB, 1 client", result.web_alone),
    ):
        if times is not None:
            lines.append(
                _row(name, Latency.of(times.first_byte), len(times.first_byte))
                + f"  ({times.requests_per_second:.0f} req/s, statuses {times.statuses})"
            )
    return lines


def _sheet_lines(sheet: SheetTimes) -> list[str]:
    ours, naive = Latency.of(sheet.ours), Latency.of(sheet.naive)
    ratio = naive.p50 / ours.p50 if ours.p50 else None
    return [
        f"contact sheet: {sheet.images} PNGs of {sheet.image_side}x{sheet.image_side} -> one "
        f"WebP ({sheet.sheet_bytes:,} bytes); the naive way resamples from full size",
        _HEAD,
        _row(
            "contact sheet render",
            ours,
            len(sheet.ours),
            naive,
            len(sheet.naive),
            "full LANCZOS",
            ratio,
        ),
    ]
