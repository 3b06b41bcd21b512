"""The discord.py client: connection settings, features, command sync, the button router and
owned background tasks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket

from bot.errors import install_error_handler
from bot.features.base import Feature
from bot.publisher import Publisher
from bot.router import ButtonRouter
from config.settings import Settings

log = logging.getLogger(__name__)

COMMANDS_HASH_KEY = "discord.commands_hash"


class MetaStore(Protocol):
    """Small key-value facts the bot keeps in the database (the last command sync's hash)."""

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str) -> None: ...


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
    ) -> None:
        apply_discord_endpoints(settings)
        intents = discord.Intents.none()
        intents.guilds = True  # no privileged intents
        super().__init__(
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            max_messages=None,
            chunk_guilds_at_startup=False,
            # Counts every request and 429 for the edit budget (discord.py retries silently).
            http_trace=publisher.edits.trace(),
        )
        self.settings = settings
        self.meta = meta
        self.publisher = publisher
        self.router = router
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
        for name, factory, _ in self._background:
            self.start_task(name, factory)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """Modal submits go to the router (discord.py holds none of our modals: they are
        stateless, see ``ButtonRouter.send_modal``). Commands and buttons are dispatched by
        discord.py itself."""
        if interaction.type is discord.InteractionType.modal_submit:
            await self.router.dispatch_modal(interaction)

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
