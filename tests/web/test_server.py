"""Serving the gallery for real: ``atelier web`` as a process, and ``web_server`` beside an open
database (what ``atelier run`` does with ``web.enabled``)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp

from bot.runtime import atelier_runtime
from bot.web import CSP, web_server
from config.settings import QueueSettings, Settings, WebSettings
from storage import FileImageStore, WebDirectory
from tests.storage.dbfixtures import Services
from tests.storage.sharefixtures import GUILD


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def fetch(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text(), response.headers["Content-Security-Policy"]


async def test_web_server_beside_an_open_database(services: Services, tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(data_dir=tmp_path, web=WebSettings(enabled=True, port=port))
    await WebDirectory(services.db).enable(GUILD, "Club", 9)
    images = FileImageStore(tmp_path / "images")
    async with web_server(settings, services.db, images):
        status, html, csp = await fetch(f"http://127.0.0.1:{port}/")
        assert status == 200 and "Club" in html and csp == CSP
    with socket.socket() as again:  # closed with the block
        again.bind(("127.0.0.1", port))


async def test_atelier_web_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "ATELIER_DATA_DIR": str(tmp_path),
        "ATELIER_WEB_PORT": str(port),
        "ATELIER_WEB_PUBLIC_BASE_URL": "https://gallery.example.org",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from bot.cli import main; raise SystemExit(main())",
        "web",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, html, _ = await fetch(f"http://127.0.0.1:{port}/")
                break
            except aiohttp.ClientConnectionError:
                assert process.returncode is None, "atelier web exited"
                assert time.monotonic() < deadline, "atelier web did not start"
                await asyncio.sleep(0.2)
        assert status == 200 and "No server has turned its web gallery on yet." in html
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert f"web gallery listening on 127.0.0.1:{port}" in log
    assert "visitors reach it at https://gallery.example.org" in log
    assert (tmp_path / "atelier.db").is_file()


async def test_atelier_run_serves_the_gallery_when_enabled(tmp_path: Path) -> None:
    """The composition root starts it beside the bot (no worker here: no model to load)."""
    port = free_port()
    settings = Settings(
        data_dir=tmp_path,
        web=WebSettings(enabled=True, port=port),
        queue=QueueSettings(run_worker_in_process=False),
    )
    async with atelier_runtime(settings) as runtime:
        await WebDirectory(runtime.ledger.db).enable(GUILD, "Club", 9)
        status, html, _ = await fetch(f"http://127.0.0.1:{port}/")
        assert status == 200 and "Club" in html
    with socket.socket() as again:  # stopped with the runtime
        again.bind(("127.0.0.1", port))
