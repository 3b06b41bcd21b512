"""The servers the bot is in: what happens when it is removed from one, or added back. No
discord.py.

A removal is final until the bot is added back: the server's queued jobs are cancelled and
refunded, its running ones stop (charged the GPU time they used, like any cancel), and no result
is delivered there any more. The record is in the database, so a restart finds the same state.
An outage (Discord says the server is unavailable) is not a removal, and changes nothing. A
removal while the bot was not running is found at its next start, when Discord's READY does not
list the server.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from generation.request import GenerationRequest
from storage.queue import JobQueue

log = logging.getLogger(__name__)

#: What the owner of a job in a server that removed the bot reads in /info and /show.
LEFT_REASON = "the bot was removed from the server"


class GuildPresence:
    """Records removals and returns, over the queue (which owns every job transition)."""

    def __init__(self, queue: JobQueue[GenerationRequest]) -> None:
        self.queue = queue

    async def removed(self, guild_id: int) -> int:
        """The bot was removed from ``guild_id``; how many of its jobs were stopped."""
        stopped = await self.queue.cancel_for_guild(guild_id, LEFT_REASON)
        log.info("removed from guild %s: %d queued or running job(s) cancelled", guild_id, stopped)
        return stopped

    async def present(self, guild_ids: Sequence[int]) -> None:
        """The bot is in these guilds (it was added back, or found them at start)."""
        if await self.queue.rejoin_guilds(guild_ids):
            log.info("back in guild(s) %s", ", ".join(map(str, guild_ids)))

    async def reconcile(self, guild_ids: Sequence[int]) -> list[int]:
        """At start, ``guild_ids`` are all the guilds the bot is in (READY lists every one,
        available or not). Records of those are dropped (added back while this process was
        away); a guild with work that is not among them removed the bot meanwhile, and is
        handled as a removal. Returns those guilds."""
        await self.present(guild_ids)
        here = set(guild_ids)
        gone = [g for g in await self.queue.guilds_with_work() if g not in here]
        for guild_id in gone:
            await self.removed(guild_id)
        return gone
