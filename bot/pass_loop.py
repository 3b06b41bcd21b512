"""The loop behind the bot's background posters (review items, group sessions): wait for a wake
or a timeout, skip while the client is not ready, run one pass, log a failed pass and go on,
count passes for tests. No discord.py at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import discord

log = logging.getLogger(__name__)


class PassLoop:
    """Mixin: a dataclass that declares these attributes gets ``run`` and ``wait_passes``."""

    #: What a pass does, for the log line of a failed one.
    pass_name: ClassVar[str]
    passes: int
    _stopping: bool
    _wake: asyncio.Event
    _passed: asyncio.Condition
    _client: discord.Client | None

    async def pass_once(self) -> None:
        raise NotImplementedError

    async def _sleep_seconds(self) -> float:
        raise NotImplementedError

    async def run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(await self._sleep_seconds()):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            if self._client is not None and not self._client.is_ready():
                continue
            try:
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("a %s pass failed; the next one tries again", self.pass_name)
            async with self._passed:
                self.passes += 1
                self._passed.notify_all()
