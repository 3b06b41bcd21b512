"""Thumbnails and images: WebP made once and cached on disk under a bound, strong ETags and
304s, and visibility checked on every request, cached or not."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from PIL import Image

from bot.web.images import ImageCache, Rendition
from generation.grid import thumbnail
from storage import FileImageStore
from storage.types import Visibility
from tests.storage.sharefixtures import GUILD, set_columns, set_review
from tests.web.conftest import Web, png


def cached_files(root: Path) -> list[Path]:
    return sorted(root.glob("*/*/*.webp"))


async def test_thumbnail_is_webp_made_once_with_etag_and_304(web: Web) -> None:
    job = await web.job()
    path = f"/s/{GUILD}/t/{job}.webp"
    async with web.client.get(path) as response:
        assert response.status == 200 and response.content_type == "image/webp"
        etag = response.headers["ETag"]
        assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
        assert response.headers["Cache-Control"] == "public, max-age=3600"
        body = await response.read()
    with Image.open(io.BytesIO(body)) as image:
        assert image.format == "WEBP" and image.size == (64, 48)  # never enlarged
    files = cached_files(web.cache.root)
    assert len(files) == 1
    made = files[0].stat().st_mtime_ns
    async with web.client.get(path) as again:
        assert again.status == 200 and await again.read() == body
        assert again.headers["ETag"] == etag
    assert files[0].stat().st_mtime_ns == made  # served from the cache, not made again
    for header in (etag, f'"other", {etag}', "*", f"W/{etag}"):
        async with web.client.get(path, headers={"If-None-Match": header}) as response:
            assert response.status == 304, header
            assert response.headers["ETag"] == etag
            assert await response.read() == b""
    async with web.client.get(path, headers={"If-None-Match": '"stale"'}) as response:
        assert response.status == 200
    async with web.client.head(path) as response:
        assert response.status == 200 and response.headers["ETag"] == etag
    # Each image of a grid has its own rendition and ETag; the page-sized one differs in size.
    async with web.client.get(f"/s/{GUILD}/img/{job}/0.webp") as response:
        assert response.status == 200 and response.headers["ETag"] != etag
    async with web.client.get(f"/s/{GUILD}/img/{job}/4.webp") as response:
        grid_etag = response.headers["ETag"]
    assert grid_etag != etag  # same ref as the thumbnail, another size
    assert len(cached_files(web.cache.root)) == 3


async def test_a_job_hidden_after_caching_is_404_and_its_files_go(web: Web) -> None:
    jobs = {name: await web.job() for name in ("stealth", "held", "deleted", "blocked")}
    for job in jobs.values():
        for path in (f"/s/{GUILD}/t/{job}.webp", f"/s/{GUILD}/img/{job}/2.webp"):
            async with web.client.get(path) as response:
                assert response.status == 200
    assert len(cached_files(web.cache.root)) == 8
    await set_columns(web.s, jobs["stealth"], visibility=Visibility.STEALTH.value)
    await set_review(web.s, jobs["held"], "held")
    await web.sharing.delete_job(jobs["deleted"], 1)
    await web.s.queue.block(jobs["blocked"], "rule 1")
    for name, job in jobs.items():
        path = f"/s/{GUILD}/t/{job}.webp"
        async with web.client.get(path) as response:
            assert response.status == 404, name
        etag = Rendition(job, f"{job}/grid.png", 384).etag
        async with web.client.get(path, headers={"If-None-Match": etag}) as response:
            assert response.status == 404, name  # never a 304 that says it exists
        assert not (web.cache.root / job[:2] / job).exists(), name
    assert cached_files(web.cache.root) == []
    assert web.cache.total_bytes == 0


async def test_server_turning_the_gallery_off_hides_its_images(web: Web) -> None:
    job = await web.job()
    async with web.client.get(f"/s/{GUILD}/t/{job}.webp") as response:
        assert response.status == 200
    await web.directory.disable(GUILD)
    async with web.client.get(f"/s/{GUILD}/t/{job}.webp") as response:
        assert response.status == 404


async def test_missing_image_file_is_404(web: Web) -> None:
    job = await web.job()
    await web.images.delete_job(job)
    async with web.client.get(f"/s/{GUILD}/t/{job}.webp") as response:
        assert response.status == 404


async def test_cache_is_bounded_least_recently_served_first(tmp_path: Path) -> None:
    images = FileImageStore(tmp_path / "images")
    refs = [await images.put(f"job{n:08d}", "grid.png", png((0, 0, 0))) for n in range(6)]
    one = len(thumbnail(png((0, 0, 0)), 64))
    cache = ImageCache(tmp_path / "cache", 3 * one + one // 2, images, thumbnail)
    await cache.load()
    items = [Rendition(ref.split("/")[0], ref, 64) for ref in refs]
    for item in items[:3]:
        await cache.get(item)
    assert len(cached_files(cache.root)) == 3
    await cache.get(items[0])  # served again: now the most recent
    await cache.get(items[3])  # over the bound: items[1] (least recently served) goes
    kept = {p.parent.name for p in cached_files(cache.root)}
    assert kept == {items[0].job_id, items[2].job_id, items[3].job_id}
    assert cache.total_bytes <= cache.limit_bytes
    for item in items[4:]:
        await cache.get(item)
    assert len(cached_files(cache.root)) == 3 and cache.total_bytes <= cache.limit_bytes
    # A restart indexes what is on disk, oldest first, and trims to a smaller bound.
    again = ImageCache(tmp_path / "cache", one + one // 2, images, thumbnail)
    await again.load()
    assert len(cached_files(cache.root)) == 1 and again.total_bytes <= again.limit_bytes


async def test_concurrent_requests_make_a_rendition_once(tmp_path: Path) -> None:
    images = FileImageStore(tmp_path / "images")
    ref = await images.put("job00000001", "grid.png", png((1, 2, 3)))
    made: list[int] = []

    def counting(data: bytes, side: int) -> bytes:
        made.append(side)
        return thumbnail(data, side)

    cache = ImageCache(tmp_path / "cache", 10**6, images, counting)
    item = Rendition("job00000001", ref, 32)
    results = await asyncio.gather(*(cache.get(item) for _ in range(8)))
    assert made == [32] and len(set(results)) == 1
    # A file removed behind the cache's back is made again, not a 500.
    for path in cached_files(cache.root):
        path.unlink()
    assert await cache.get(item) == results[0] and made == [32, 32]
