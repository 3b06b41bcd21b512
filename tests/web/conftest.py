"""The web gallery's tests: a real database (both backends), real PNGs in a FileImageStore, and
the aiohttp application under aiohttp's test client."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from bot.web import build_app
from bot.web.app import PARTS
from bot.web.images import ImageCache
from config.settings import Settings, WebSettings
from storage import FileImageStore, SharingStore, WebDirectory
from tests.storage.dbfixtures import Services, db_url, pg_template, services, sqlite_template
from tests.storage.sharefixtures import GUILD, finished

__all__ = ["db_url", "pg_template", "services", "sqlite_template"]

ADMIN = 9
NAMES = ("0.png", "1.png", "2.png", "3.png", "grid.png")


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Web:
    """The application over one database, and what the tests seed it with."""

    s: Services
    client: TestClient[Any, Any]
    images: FileImageStore
    directory: WebDirectory
    sharing: SharingStore
    cache: ImageCache

    async def job(self, *, guild: int | None = GUILD, **fields: Any) -> str:
        """A finished public grid job whose five images are real PNGs."""
        job_id = await finished(self.s, guild=guild, **fields)
        for n, name in enumerate(NAMES):
            await self.images.put(job_id, name, png((40 * n, 100, 200)))
        return job_id

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        async with self.client.get(path, **kwargs) as response:
            return response.status, await response.text()


def jobs_listed(html: str) -> list[str]:
    """The job ids of the gallery items (``a.item``) on a page, in order."""
    return re.findall(r'<a class="item" href="[^"]*" data-job="([0-9a-z]+)"', html)


def link(html: str, element_id: str) -> str | None:
    found = re.search(rf'id="{element_id}"[^>]*href="([^"]+)"', html) or re.search(
        rf'href="([^"]+)"[^>]*id="{element_id}"', html
    )
    return None if found is None else found.group(1).replace("&amp;", "&")


async def open_web(
    s: Services, tmp_path: Path, *, web: WebSettings | None = None
) -> AsyncIterator[Web]:
    images = FileImageStore(tmp_path / "images")
    settings = Settings(data_dir=tmp_path, web=web or WebSettings())
    sharing = SharingStore(s.db, images=images, clock=s.clock)
    directory = WebDirectory(s.db, clock=s.clock)
    app = build_app(settings, s.db, images, sharing=sharing, directory=directory)
    async with TestClient(TestServer(app)) as client:
        yield Web(s, client, images, directory, sharing, app[PARTS].cache)


@pytest.fixture
async def web(services: Services, tmp_path: Path) -> AsyncIterator[Web]:
    """The gallery with GUILD turned on."""
    async for opened in open_web(services, tmp_path):
        await opened.directory.enable(GUILD, "The <b>Club</b>", ADMIN)
        yield opened
