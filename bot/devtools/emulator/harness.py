"""Run a real discord.py client against a ``DiscordEmulator`` inside a test.

The emulator's own tests use this; the bot's end-to-end tests can too, or can let the bot's
composition root apply the two URLs itself (README.md shows the exact assignments).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import discord
import yarl
from discord.gateway import DiscordWebSocket

from .server import DiscordEmulator


@contextlib.contextmanager
def discord_pointed_at(emu: DiscordEmulator) -> Iterator[None]:
    """Point discord.py's REST base and default gateway at ``emu``; restore them after.

    These are process-wide class attributes, so tests using them must not run concurrently
    in one process (pytest runs them one at a time).
    """
    old_base, old_gateway = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = emu.api_base_url
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(emu.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = old_base, old_gateway


@contextlib.asynccontextmanager
async def running_client(
    client: discord.Client, emu: DiscordEmulator, *, wait_ready: bool = True
) -> AsyncIterator[discord.Client]:
    """Log ``client`` in, connect it in a background task, and close it on exit.

    Give the client a small ``guild_ready_timeout`` (e.g. 0.01): discord.py waits that long
    after the last GUILD_CREATE before firing ``on_ready``.
    """
    with discord_pointed_at(emu):
        await client.login(emu.token)
        connection = asyncio.create_task(client.connect(), name="discord-client-connect")
        try:
            connected = asyncio.create_task(emu.wait_until_connected())
            await asyncio.wait({connected, connection}, return_when=asyncio.FIRST_COMPLETED)
            if not connected.done():
                # connect() ended first: surface its error now instead of after a timeout.
                connected.cancel()
                connection.result()
                raise RuntimeError("the client stopped before it connected")
            connected.result()
            if wait_ready:
                async with asyncio.timeout(5.0):
                    await client.wait_until_ready()
            yield client
        finally:
            await client.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(connection, timeout=5.0)
