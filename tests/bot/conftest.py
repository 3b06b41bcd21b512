"""End-to-end harness: the real discord.py client, wired by ``atelier``'s own composition root,
against the Discord API emulator, with the tiny model and a real SQLite ledger."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.devtools.emulator import DiscordEmulator
from bot.devtools.emulator.models import StoredMessage
from bot.runtime import Runtime, atelier_runtime, open_worker
from config.settings import (
    BotSettings,
    DiscordSettings,
    QueueSettings,
    QuotaSettings,
    Settings,
)

# The storage fixtures (a fresh database per test, both backends), for the bot's service tests.
from tests.storage.dbfixtures import db_url, pg_template, pg_url, services, sqlite_template

__all__ = ["db_url", "pg_template", "pg_url", "services", "sqlite_template"]

TOKEN = "MTIz.emulated.bot-token-secret"
APP_ID = 900_000_000_000_000_001
GUILD_ID = 800_000_000_000_000_001
CHANNEL_ID = 700_000_000_000_000_001
OTHER_CHANNEL_ID = 700_000_000_000_000_002


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator(
        token=TOKEN,
        application_id=APP_ID,
        guild_id=GUILD_ID,
        channel_ids=[CHANNEL_ID, OTHER_CHANNEL_ID],
    ) as emulator:
        yield emulator


@pytest.fixture
def data_dir(tiny_data_dir: Path, tmp_path: Path) -> Path:
    """A fresh data dir per test that reuses the session's built tiny model."""
    target = tmp_path / "data"
    (target / "models").mkdir(parents=True)
    (target / "models" / "tiny").symlink_to(tiny_data_dir / "models" / "tiny")
    return target


@dataclass
class Atelier:
    """Start, stop and restart the bot process-equivalent against one emulator and data dir."""

    emu: DiscordEmulator
    data_dir: Path
    overrides: dict[str, Any]
    runtime: Runtime | None = None
    #: The group sessions' clock (None: real time); it survives restarts, like the database.
    clock: Callable[[], datetime] | None = None
    _stack: contextlib.AsyncExitStack | None = None

    def settings(self, **extra: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": self.data_dir,
            "model": "tiny",
            "discord": DiscordSettings(
                token=SecretStr(TOKEN),
                api_base_url=self.emu.api_base_url,
                gateway_url=self.emu.gateway_url,
                guild_id=GUILD_ID,
            ),
            "queue": QueueSettings(
                poll_seconds=0.2,
                lease_seconds=30,
                heartbeat_seconds=1,
                progress_interval_seconds=0.05,
            ),
            "bot": BotSettings(progress_interval_seconds=0.2, delivery_retry_seconds=0.2),
            "quota": QuotaSettings(),
        }
        values.update(self.overrides)
        values.update(extra)
        return Settings(**values)

    async def start(self, **extra: Any) -> Runtime:
        assert self._stack is None, "already running"
        known = len(self.emu.gateway_connections())
        stack = contextlib.AsyncExitStack()
        runtime = await stack.enter_async_context(
            atelier_runtime(self.settings(**extra), clock=self.clock)
        )
        connection = asyncio.create_task(runtime.bot.start(TOKEN), name="bot-connection")

        async def stop_connection() -> None:
            await runtime.bot.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(connection, timeout=10)

        stack.push_async_callback(stop_connection)
        self._stack, self.runtime = stack, runtime
        # This client's own connection, not just any: with a second harness's bot connected to
        # the same emulator (two bot processes), the emulator is "connected" before this one
        # identifies. Once it has, the emulator routes interactions to it (the newest session).
        await self.emu.recorder.signal.wait_for(
            lambda: True if any(c.ready for c in self.emu.gateway_connections()[known:]) else None,
            10.0,
            lambda: "the bot to connect to the gateway",
        )
        return runtime

    async def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack, self.runtime = self._stack, None, None
            await stack.aclose()

    @contextlib.asynccontextmanager
    async def worker(self, **extra: Any) -> AsyncIterator[None]:
        """A worker in this process beside a bot started with its own worker off."""
        assert self.runtime is not None
        async with open_worker(self.settings(**extra), self.runtime.ledger) as worker:
            task = asyncio.create_task(worker.run(), name="test-worker")
            try:
                yield
            finally:
                worker.stop()
                await asyncio.wait_for(task, timeout=30)

    async def restart(self, **extra: Any) -> Runtime:
        await self.stop()
        await self.emu.disconnect_clients()
        return await self.start(**extra)


@pytest.fixture
async def atelier(emu: DiscordEmulator, data_dir: Path) -> AsyncIterator[Atelier]:
    harness = Atelier(emu=emu, data_dir=data_dir, overrides={})
    try:
        yield harness
    finally:
        await harness.stop()


def custom_ids(message: StoredMessage) -> list[str]:
    return [c["custom_id"] for c in message.walk_components() if c.get("custom_id")]


def labels(message: StoredMessage) -> list[str]:
    return [c.get("label", "") for c in message.walk_components() if c.get("type") == 2]


async def wait_final(
    emu: DiscordEmulator,
    predicate: Callable[[StoredMessage], bool],
    timeout: float = 60.0,  # noqa: ASYNC109 - passed on to the emulator's wait
) -> StoredMessage:
    """The first finished job message (its result attached) that matches ``predicate``.

    The wait is generous: it bounds a failure, and a fresh runtime's first grid (the model
    loaded, then generated) can take tens of seconds on a starved two-core machine."""
    return await emu.wait_for_message(
        lambda m: bool(m.attachments) and m.content.endswith(" - done") and predicate(m),
        timeout=timeout,
    )


def job_id_of(message: StoredMessage) -> str:
    match = re.search(r"job `([0-9a-z]+)`", message.content)
    assert match, message.content
    return match.group(1)
