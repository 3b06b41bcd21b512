"""Serving the web gallery: on an open database beside the bot, or alone (``atelier web``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from bot.web.app import build_app
from config import Settings
from storage.db import Database
from storage.images import FileImageStore, ImageStore
from storage.migrate import upgrade

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def web_server(
    settings: Settings, db: Database, images: ImageStore
) -> AsyncIterator[web.AppRunner]:
    """The gallery listening on ``web.host``:``web.port`` until the block exits."""
    runner = web.AppRunner(build_app(settings, db, images), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.web.host, settings.web.port)
        await site.start()
        log.info(
            "web gallery listening on %s:%d; visitors reach it at %s",
            settings.web.host,
            settings.web.port,
            settings.web.base_url,
        )
        yield runner
    finally:
        await runner.cleanup()


async def serve_web(settings: Settings, stop: asyncio.Event) -> None:
    """``atelier web``: migrate, then serve the gallery alone (it needs only the database and
    the images directory) until ``stop`` is set."""
    url = settings.resolved_database_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade(url)
    db = Database(url)
    try:
        images = FileImageStore(settings.data_dir / "images")
        async with web_server(settings, db, images):
            await stop.wait()
    finally:
        await db.dispose()
