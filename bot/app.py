"""The discord.py client: connection settings, features, command sync, the button router,
owned background tasks, the servers it is in, and the count of Discord's invalid answers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import SimpleNamespace
from typing import Any, Protocol

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket

from bot.delivery_policy import InvalidRequestBudget
from bot.errors import install_error_handler
from bot.features.base import Feature
from bot.publisher import Publisher
from bot.review_poster import ReviewPoster
from bot.router import ButtonRouter
from bot.session_runner import SessionRunner
from config.settings import Settings

log = logging.getLogger(__name__)

COMMANDS_HASH_KEY = "discord.commands_hash"


class MetaStore(Protocol):
    """Small key-value facts the bot keeps in the database (the last command sync's hash)."""

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str) -> None: ...


class GuildMembership(Protocol):
    """What the bot does when it is removed from a server or is (again) in one."""

    async def removed(self, guild_id: int) -> int: ...

    async def present(self, guild_ids: Sequence[int]) -> None: ...

    async def reconcile(self, guild_ids: Sequence[int]) -> list[int]: ...


def budget_trace(budget: InvalidRequestBudget) -> aiohttp.TraceConfig:
    """An aiohttp trace that records every REST answer's status in ``budget``: discord.py's own
    429 retries included, which no exception ever shows."""
    trace = aiohttp.TraceConfig()

    async def on_request_end(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        budget.record(params.response.status)

    trace.on_request_end.append(on_request_end)
    return trace


def combined_trace(*traces: aiohttp.TraceConfig) -> aiohttp.TraceConfig:
    """One aiohttp trace (discord.py takes one) that runs every given trace's handlers."""
    combined = aiohttp.TraceConfig()
    for trace in traces:
        for handler in trace.on_request_end:
            combined.on_request_end.append(handler)
    return combined


def apply_discord_endpoints(settings: Settings) -> None:
    """Point discord.py at the configured REST base and gateway (Discord, or an emulator).

    discord.py keeps both as class attributes; a plain ``Client`` connects to
    ``DiscordWebSocket.DEFAULT_GATEWAY`` and resumes at the ``resume_gateway_url`` READY names.
    """
    discord.http.Route.BASE = settings.discord.api_base_url.rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord.gateway_url)


class AtelierBot(discord.Client):
    """The features' slash commands and persistent buttons, and the publisher's loop."""

    def __init__(
        self,
        settings: Settings,
        meta: MetaStore,
        publisher: Publisher,
        router: ButtonRouter,
        guilds: GuildMembership,
    ) -> None:
        apply_discord_endpoints(settings)
        intents = discord.Intents.none()
        intents.guilds = True  # no privileged intents
        super().__init__(
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            max_messages=None,
            chunk_guilds_at_startup=False,
            # Counts every answer for the invalid-request budget and every request and 429 for
            # the edit budget (discord.py retries 429s silently).
            http_trace=combined_trace(budget_trace(publisher.budget), publisher.edits.trace()),
        )
        self.settings = settings
        self.meta = meta
        self.publisher = publisher
        #: The review queue's poster, when the review feature is wired (tests wait on it).
        self.review_poster: ReviewPoster | None = None
        #: The group sessions' loop, when wired (tests wait on it and read what it fired).
        self.session_runner: SessionRunner | None = None
        self.router = router
        self.guilds_presence = guilds
        #: Set once the guilds READY listed were compared with the ledger (see ``_settle``).
        self.guilds_settled = asyncio.Event()
        self.tree: app_commands.CommandTree[AtelierBot] = app_commands.CommandTree(self)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: list[tuple[str, Callable[[], Awaitable[None]], Callable[[], None]]] = []
        install_error_handler(self.tree)

    def add_feature(self, feature: Feature) -> None:
        """Register a feature's slash commands and buttons (before the bot starts)."""
        feature.register(self.tree, self.router)

    async def setup_hook(self) -> None:
        # The router's one DynamicItem makes every button we ever posted work after a restart.
        self.add_dynamic_items(self.router.item_class)
        await self.sync_commands_if_changed()
        self.publisher.bind(self)
        self.start_task("publisher", self.publisher.run)
        self.start_task("guilds", self._settle_guilds)
        for name, factory, _ in self._background:
            self.start_task(name, factory)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """Modal submits go to the router (discord.py holds none of our modals: they are
        stateless, see ``ButtonRouter.send_modal``). Commands and buttons are dispatched by
        discord.py itself."""
        if interaction.type is discord.InteractionType.modal_submit:
            await self.router.dispatch_modal(interaction)

    async def _settle_guilds(self) -> None:
        """Once connected: READY lists every guild the bot is in, so the ledger learns of
        removals and returns that happened while this process was not running."""
        await self.wait_until_ready()
        gone = await self.guilds_presence.reconcile([guild.id for guild in self.guilds])
        if gone:
            log.info("removed from guild(s) %s while away", ", ".join(map(str, gone)))
            self.publisher.wake()
        self.guilds_settled.set()

    async def on_guild_available(self, guild: discord.Guild) -> None:
        # A guild that is (again) available is one the bot is in.
        await self.guilds_presence.present([guild.id])

    async def on_guild_remove(self, guild: discord.Guild) -> None:
        # discord.py calls this only for a GUILD_DELETE without "unavailable": a removal (kick,
        # ban, the server deleted). An outage is on_guild_unavailable, and changes nothing.
        await self.guilds_presence.removed(guild.id)
        self.publisher.wake()

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self.guilds_presence.present([guild.id])

    def add_background(
        self, name: str, factory: Callable[[], Awaitable[None]], *, stop: Callable[[], None]
    ) -> None:
        """Run ``factory`` beside the bot (e.g. the in-process worker); ``stop`` asks it to end
        gracefully when the bot closes."""
        self._background.append((name, factory, stop))

    def start_task(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run an owned background task: referenced, logged on failure, cancelled on close."""

        async def runner() -> None:
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s crashed", name)
                raise

        self._tasks.append(asyncio.create_task(runner(), name=name))

    async def close(self) -> None:
        for _, _, stop in self._background:
            stop()  # the worker finishes or releases its job within its grace period
        grace = self.settings.queue.shutdown_grace_seconds + 5
        graceful = [task for task in self._tasks if task.get_name() != "publisher"]
        if graceful:
            await asyncio.wait(graceful, timeout=grace)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # asyncio.wait, not ``await task``: a CancelledError caught there could be close()'s
            # own, and swallowing it would let a caller's timeout pass unnoticed.
            await asyncio.wait(self._tasks)
        for task in self._tasks:
            if not task.cancelled():
                task.exception()  # already logged by the runner; retrieved so asyncio is quiet
        self._tasks.clear()
        await super().close()

    def command_payload(self) -> list[dict[str, Any]]:
        guild = self._sync_guild()
        return [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]

    def _sync_guild(self) -> discord.Object | None:
        guild_id = self.settings.discord.guild_id
        return discord.Object(id=guild_id) if guild_id else None

    async def sync_commands_if_changed(self) -> bool:
        """Sync slash commands only when their definition changed since the last sync.

        The hash covers the target (one guild or global) so switching targets syncs again.
        Reconnects never come here: setup_hook runs once per process.
        """
        guild = self._sync_guild()
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        payload = {"guild": guild.id if guild else None, "commands": self.command_payload()}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        if await self.meta.get_meta(COMMANDS_HASH_KEY) == digest:
            log.info("slash commands unchanged; not syncing")
            return False
        await self.tree.sync(guild=guild)
        await self.meta.set_meta(COMMANDS_HASH_KEY, digest)
        log.info("slash commands synced to %s", f"guild {guild.id}" if guild else "all guilds")
        return True
