"""``DiscordEmulator``: a local Discord (REST + gateway) for end-to-end tests of a real bot.

Start it, point discord.py at ``api_base_url`` and ``gateway_url`` (see README.md), and drive
it like a user would: run slash commands, click buttons, submit modals. Everything the bot
sends is recorded and checked against Discord's rules.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable, Collection, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from .callbacks import InteractionService
from .clock import Clock, EmulatorClock
from .errors import DiscordHTTPError, EmulatorUsageError
from .faults import FaultInjector, FaultRule
from .gateway import Gateway, GatewayConnection
from .interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    InteractionHandle,
    InteractionState,
    base_payload,
    build_options,
    command_data,
    find_command,
    message_command_data,
    modal_submission,
)
from .models import (
    AUTO_ARCHIVE_DURATIONS,
    OVERWRITE_MEMBER,
    OVERWRITE_ROLE,
    PERM_CREATE_PRIVATE_THREADS,
    PERM_CREATE_PUBLIC_THREADS,
    PRIVATE_THREAD,
    PUBLIC_THREAD,
    EmuChannel,
    EmuGuild,
    EmuMember,
    EmuOverwrite,
    EmuRole,
    EmuUser,
    StoredMessage,
)
from .ratelimits import RateLimits
from .recorder import Direction, GatewayFrame, RecordedRequest, Recorder, Violation
from .rest import RestApi
from .state import INTENT_GUILDS, EmulatorConfig, EmulatorState
from .validation import MESSAGE_COMMAND, Limits

JSON = dict[str, Any]

DEFAULT_TOKEN = "emulator.bot.token"
DEFAULT_APPLICATION_ID = 1_100_000_000_000_000_001
DEFAULT_GUILD_ID = 1_100_000_000_000_000_100
DEFAULT_CHANNEL_ID = 1_100_000_000_000_000_200


class DiscordEmulator:
    """A Discord API and gateway on 127.0.0.1, with a driver API for tests.

    Use as ``async with DiscordEmulator(...) as emu:``. The bot user's id defaults to the
    application id, as it is for applications created in recent years. The default guild has
    the text channels ``channel_ids``; those also in ``nsfw_channel_ids`` are age-restricted.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        application_id: int = DEFAULT_APPLICATION_ID,
        guild_id: int = DEFAULT_GUILD_ID,
        channel_ids: Sequence[int] = (DEFAULT_CHANNEL_ID,),
        nsfw_channel_ids: Collection[int] = (),
        bot_user_id: int | None = None,
        bot_name: str = "Atelier",
        guild_name: str = "Emulated Guild",
        ack_timeout: float = 3.0,
        token_lifetime: float = 15 * 60,
        heartbeat_interval: float = 41.25,
        allowed_privileged_intents: int = 0,
        limits: Limits | None = None,
        clock: Clock | None = None,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self.config = EmulatorConfig(
            token=token,
            application_id=application_id,
            bot_user_id=bot_user_id or application_id,
            bot_name=bot_name,
            ack_timeout=ack_timeout,
            token_lifetime=token_lifetime,
            heartbeat_interval=heartbeat_interval,
            allowed_privileged_intents=allowed_privileged_intents,
            limits=limits or Limits(),
        )
        self.clock: Clock = clock or EmulatorClock()
        self.recorder = Recorder()
        self.state = EmulatorState(self.config, self.clock, self.recorder)
        self.interactions = InteractionService(self.state)
        self.faults = FaultInjector()
        self.gateway = Gateway(self.state, self.recorder)
        self.rest = RestApi(self.state, self.interactions, self.faults, self.recorder)
        self.rest.rate_limits = rate_limits
        self.guild_id = guild_id
        self.channel_ids = list(channel_ids)
        self.state.add_guild(guild_id, channel_ids, guild_name, nsfw_channel_ids=nsfw_channel_ids)
        self.default_user = self.make_user(name="tester")
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=512 * 1024 * 1024)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/resume-gateway", self.gateway.handle)
        app.router.add_route("*", "/{tail:.*}", self.rest.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self.state.base_url = f"http://127.0.0.1:{self._port}"
        self.state.gateway_url = f"ws://127.0.0.1:{self._port}/gateway"
        # READY's resume_gateway_url differs from the first URL, as on Discord, so a test can
        # see that the bot resumes where it was told to.
        self.state.resume_gateway_url = f"ws://127.0.0.1:{self._port}/resume-gateway"

    async def close(self) -> None:
        self.interactions.close()
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- where the bot connects --------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.state.base_url

    @property
    def api_base_url(self) -> str:
        """Assign to ``discord.http.Route.BASE``."""
        return f"{self.state.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """Assign ``yarl.URL(gateway_url)`` to ``DiscordWebSocket.DEFAULT_GATEWAY``."""
        return self.state.gateway_url

    @property
    def token(self) -> str:
        return self.config.token

    @property
    def application_id(self) -> int:
        return self.config.application_id

    @property
    def bot_user(self) -> EmuUser:
        return self.state.bot_user

    @property
    def is_connected(self) -> bool:
        return self.gateway.is_connected()

    async def wait_until_connected(self, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the bot's session is identified (or resumed) on a live connection."""
        await self.recorder.signal.wait_for(
            lambda: True if self.gateway.is_connected() else None,
            timeout,
            lambda: "the bot to connect to the gateway",
        )

    def gateway_connections(self) -> list[GatewayConnection]:
        """Every websocket the bot opened, oldest first (``.url`` shows path and query)."""
        return list(self.gateway.connections)

    # -- the emulated world ------------------------------------------------------------------

    def make_user(
        self,
        id: int | None = None,
        name: str = "user",
        *,
        roles: Sequence[EmuRole | int] = (),
        guild_id: int | None = None,
        accepts_dms: bool = True,
    ) -> EmuUser:
        """A user who is a member of the guild (the default one unless ``guild_id``)."""
        user = self.state.add_user(id, name)
        user.accepts_dms = accepts_dms
        guild = self._guild(guild_id)
        role_ids = [r.id if isinstance(r, EmuRole) else r for r in roles]
        self.state.add_member(guild, user, role_ids)
        return user

    def make_role(
        self, name: str, permissions: int = 0, *, id: int | None = None, guild_id: int | None = None
    ) -> EmuRole:
        """A role; a connected bot receives GUILD_ROLE_CREATE, so its role cache stays true."""
        guild = self._guild(guild_id)
        role = EmuRole(id or self.state.ids.next(), guild.id, name, permissions, len(guild.roles))
        guild.roles[role.id] = role
        event = {"guild_id": str(guild.id), "role": role.payload()}
        self.gateway.dispatch_event("GUILD_ROLE_CREATE", event, INTENT_GUILDS)
        return role

    def set_overwrite(
        self, channel_id: int, target: EmuRole | EmuUser, *, allow: int = 0, deny: int = 0
    ) -> None:
        """Set the channel's permission overwrite for a role (``emu.guild().everyone`` for
        @everyone) or a member, replacing any earlier one for it. Connected bots receive
        CHANNEL_UPDATE."""
        channel, guild = self._guild_channel(channel_id)
        if channel.is_thread:
            raise EmulatorUsageError("threads have no overwrites: they follow their parent's")
        if isinstance(target, EmuRole):
            if target.id not in guild.roles:
                raise EmulatorUsageError(f"role {target.id} is not in guild {guild.id}")
            kind = OVERWRITE_ROLE
        else:
            if target.id not in guild.members:
                raise EmulatorUsageError(f"user {target.id} is not a member of guild {guild.id}")
            kind = OVERWRITE_MEMBER
        channel.overwrites[target.id] = EmuOverwrite(target.id, kind, allow, deny)
        self.gateway.dispatch_event("CHANNEL_UPDATE", channel.payload(), INTENT_GUILDS)

    def remove_overwrite(self, channel_id: int, target: EmuRole | EmuUser) -> None:
        """Drop the channel's overwrite for ``target`` (CHANNEL_UPDATE to connected bots)."""
        channel, _ = self._guild_channel(channel_id)
        channel.overwrites.pop(target.id, None)
        self.gateway.dispatch_event("CHANNEL_UPDATE", channel.payload(), INTENT_GUILDS)

    def set_nsfw(self, channel_id: int, nsfw: bool = True) -> None:
        """Turn a guild channel's age-restricted (NSFW) setting on or off, as a moderator does
        in the channel's settings. Discord then sends CHANNEL_UPDATE with the whole channel,
        so a connected discord.py client's cached ``TextChannel.nsfw`` follows (and with it
        ``interaction.channel.nsfw``, which discord.py takes from that cache); interactions
        there carry the flag in their ``channel`` too. DM channels have no such setting."""
        channel, _ = self._guild_channel(channel_id)
        if channel.is_thread:
            raise EmulatorUsageError("threads inherit their parent's age restriction")
        channel.nsfw = nsfw
        self.gateway.dispatch_event("CHANNEL_UPDATE", channel.payload(), INTENT_GUILDS)

    def permissions_in(self, user: EmuUser, channel_id: int) -> int:
        """``user``'s permissions in the channel as Discord computes them, overwrites included."""
        return self.state.permissions_in(user, self._channel(channel_id))

    def set_roles(
        self, user: EmuUser, roles: Sequence[EmuRole | int], *, guild_id: int | None = None
    ) -> None:
        guild = self._guild(guild_id)
        self.state.add_member(guild, user, [r.id if isinstance(r, EmuRole) else r for r in roles])

    def add_guild(
        self,
        guild_id: int,
        channel_ids: Sequence[int],
        *,
        name: str = "Another Guild",
        nsfw_channel_ids: Collection[int] = (),
    ) -> EmuGuild:
        """Add a guild (its channels in ``nsfw_channel_ids`` age-restricted); a connected bot
        receives GUILD_CREATE as if it had just joined."""
        guild = self.state.add_guild(guild_id, channel_ids, name, nsfw_channel_ids=nsfw_channel_ids)
        if self.gateway.current is not None:
            payload = guild.create_payload(self.bot_user.id)
            # A join carries no "unavailable" key; discord.py then fires on_guild_join.
            del payload["unavailable"]
            self.gateway.dispatch_to_bot("GUILD_CREATE", payload)
        return guild

    def remove_bot(self, guild_id: int | None = None) -> None:
        """The bot is removed from the guild (kicked, banned, or the guild deleted): a connected
        bot receives GUILD_DELETE without ``unavailable`` (discord.py's on_guild_remove). Its
        channels answer 403 Missing Access (50001) from then on, a new session's READY leaves
        the guild out, and its members can no longer reach the bot there."""
        guild = self._guild(guild_id)
        if not self.state.bot_is_member(guild):
            raise EmulatorUsageError(f"the bot is not in guild {guild.id}")
        del guild.members[self.bot_user.id]
        self.gateway.dispatch_event("GUILD_DELETE", {"id": str(guild.id)}, INTENT_GUILDS)

    def add_bot(self, guild_id: int | None = None) -> None:
        """The bot is added back to a guild it was removed from: GUILD_CREATE as a join."""
        guild = self._guild(guild_id)
        if self.state.bot_is_member(guild):
            raise EmulatorUsageError(f"the bot is already in guild {guild.id}")
        guild.members[self.bot_user.id] = EmuMember(self.bot_user, [], self.clock.now())
        payload = guild.create_payload(self.bot_user.id)
        del payload["unavailable"]  # a join, as in add_guild
        self.gateway.dispatch_event("GUILD_CREATE", payload, INTENT_GUILDS)

    def guild_outage(self, guild_id: int | None = None) -> None:
        """Discord loses the guild for a while: GUILD_DELETE with ``unavailable: true``
        (discord.py's on_guild_unavailable). The bot is still a member."""
        guild = self._guild(guild_id)
        event = {"id": str(guild.id), "unavailable": True}
        self.gateway.dispatch_event("GUILD_DELETE", event, INTENT_GUILDS)

    def end_guild_outage(self, guild_id: int | None = None) -> None:
        """The guild is back: GUILD_CREATE with ``unavailable: false`` (on_guild_available)."""
        guild = self._guild(guild_id)
        payload = guild.create_payload(self.bot_user.id)
        payload["unavailable"] = False
        self.gateway.dispatch_event("GUILD_CREATE", payload, INTENT_GUILDS)

    def delete_channel(self, channel_id: int) -> None:
        """Delete a guild channel: its REST routes answer 404 Unknown Channel (10003), and a
        connected bot receives CHANNEL_DELETE (its threads go with it). A thread's id deletes
        the thread (THREAD_DELETE)."""
        channel, guild = self._guild_channel(channel_id)
        if channel.is_thread:
            self.state.delete_thread(channel)
            return
        del guild.channels[channel_id]
        del self.state.channels[channel_id]
        self.state.denied_channels.discard(channel_id)
        # Its threads go with it; discord.py drops them from its cache on CHANNEL_DELETE.
        for thread in [t for t in guild.threads.values() if t.parent_id == channel_id]:
            del guild.threads[thread.id]
            del self.state.channels[thread.id]
        self.gateway.dispatch_event("CHANNEL_DELETE", channel.payload(), INTENT_GUILDS)

    def guild(self, guild_id: int | None = None) -> EmuGuild:
        return self._guild(guild_id)

    def dm_channel(self, user: EmuUser) -> EmuChannel:
        return self.state.dm_channel(user)

    def deny_channel(self, channel_id: int) -> None:
        """The bot loses Send Messages there: channel posts get 403 Missing Permissions (50013).

        Interaction responses still work, as on Discord.
        """
        self._channel(channel_id)
        self.state.denied_channels.add(channel_id)

    def allow_channel(self, channel_id: int) -> None:
        self.state.denied_channels.discard(channel_id)

    def block_dms(self, user: EmuUser) -> None:
        """DMs to ``user`` get 403 Cannot send messages to this user (50007)."""
        user.accepts_dms = False

    def post_message(
        self,
        channel_id: int,
        *,
        content: str = "",
        embeds: Sequence[JSON] = (),
        components: Sequence[JSON] = (),
        author: EmuUser | None = None,
    ) -> StoredMessage:
        """Put a message in a channel directly, e.g. one the bot posted before a restart.

        It is validated like any message and announced with MESSAGE_CREATE.
        """
        payload: JSON = {
            "content": content,
            "embeds": list(embeds),
            "components": list(components),
        }
        channel = self._channel(channel_id)
        who = author or self.bot_user
        if channel.is_thread:
            self._check_thread_post(who, channel)
            self.state.before_thread_post(who, channel)
        message = self.state.create_message(channel, payload, [], author=author)
        if channel.is_thread:
            self.state.after_thread_post(who, channel)
        return message

    def _check_thread_post(self, user: EmuUser, thread: EmuChannel) -> None:
        permissions = (
            self.state.bot_permissions(thread)
            if user.id == self.bot_user.id
            else self.state.permissions_in(user, thread)
        )
        try:
            self.state.check_thread_post(user, thread, permissions)
        except DiscordHTTPError as error:
            raise EmulatorUsageError(
                f"{user.name} cannot post in thread {thread.id}: Discord answers "
                f"{error.status} {error.code} {error.message}"
            ) from None

    # -- threads -----------------------------------------------------------------------------

    def create_thread(
        self,
        parent_id: int,
        name: str,
        *,
        private: bool = False,
        owner: EmuUser | None = None,
        message_id: int | None = None,
        auto_archive_duration: int = 1440,
        invitable: bool = True,
    ) -> EmuChannel:
        """``owner`` (the default user unless given) starts a thread in a text channel, as
        in Discord's client: public (type 11) or ``private`` (type 12), or, with
        ``message_id``, a public thread from that message (same id). The owner needs Create
        Public/Private Threads in the parent (``EmulatorUsageError`` otherwise) and joins it.
        A connected bot that can see it receives THREAD_CREATE with ``newly_created`` (and
        MESSAGE_UPDATE for a starter message); a private thread it is not in stays hidden."""
        owner = owner or self.default_user
        parent, guild = self._guild_channel(parent_id)
        if parent.is_thread:
            raise EmulatorUsageError("threads cannot be started inside a thread")
        if owner.id not in guild.members:
            raise EmulatorUsageError(f"{owner.name} is not a member of guild {guild.id}")
        if auto_archive_duration not in AUTO_ARCHIVE_DURATIONS:
            raise EmulatorUsageError(
                f"auto_archive_duration must be one of {AUTO_ARCHIVE_DURATIONS}"
            )
        needed = PERM_CREATE_PRIVATE_THREADS if private else PERM_CREATE_PUBLIC_THREADS
        if not self.state.permissions_in(owner, parent) & needed:
            kind = "Private" if private else "Public"
            raise EmulatorUsageError(f"{owner.name} lacks Create {kind} Threads in {parent_id}")
        message: StoredMessage | None = None
        body: JSON = {"name": name, "auto_archive_duration": auto_archive_duration}
        if message_id is not None:
            if private:
                raise EmulatorUsageError("a thread started from a message is public")
            message = self.state.messages.get(message_id)
            if (
                message is None
                or message.deleted
                or message.ephemeral
                or message.channel_id != parent.id
            ):
                raise EmulatorUsageError(f"no message {message_id} in channel {parent_id}")
        else:
            body["type"] = PRIVATE_THREAD if private else PUBLIC_THREAD
            body["invitable"] = invitable
        try:
            return self.state.create_thread(parent, body, owner=owner, message=message)
        except DiscordHTTPError as error:
            raise EmulatorUsageError(f"Discord refuses this thread: {error}") from None

    def thread(self, thread_id: int) -> EmuChannel:
        channel = self._channel(thread_id)
        if not channel.is_thread:
            raise EmulatorUsageError(f"channel {thread_id} is not a thread")
        return channel

    def threads(
        self, parent_id: int | None = None, *, include_archived: bool = True
    ) -> list[EmuChannel]:
        """Threads (oldest first), in one parent channel or in every guild."""
        return [
            t
            for guild in self.state.guilds.values()
            for t in guild.threads.values()
            if (parent_id is None or t.parent_id == parent_id)
            and (include_archived or not t.archived)
        ]

    def thread_members(self, thread_id: int) -> list[EmuUser]:
        """The thread's members, in the order they joined."""
        return [self.state.users[u] for u in self.thread(thread_id).thread_members]

    def add_thread_member(self, thread_id: int, user: EmuUser) -> None:
        """``user`` joins the thread (or is added by a moderator): THREAD_MEMBERS_UPDATE
        (about another user only to a bot with the GUILD_MEMBERS intent); the bot itself
        also gets THREAD_CREATE, as Discord sends to whoever is added."""
        thread = self.thread(thread_id)
        guild = self.state.guild_of(thread)
        if guild is None or user.id not in guild.members:
            raise EmulatorUsageError(f"{user.name} is not a member of the thread's guild")
        if thread.archived:
            raise EmulatorUsageError(f"thread {thread_id} is archived: nobody can join it")
        self.state.add_thread_member(thread, user)

    def remove_thread_member(self, thread_id: int, user: EmuUser) -> None:
        """``user`` leaves the thread (or is removed): THREAD_MEMBERS_UPDATE."""
        self.state.remove_thread_member(self.thread(thread_id), user.id)

    def update_thread(
        self,
        thread_id: int,
        *,
        name: str | None = None,
        archived: bool | None = None,
        locked: bool | None = None,
        auto_archive_duration: int | None = None,
        invitable: bool | None = None,
    ) -> EmuChannel:
        """A moderator (or Discord's auto-archive) changes the thread: THREAD_UPDATE to a bot
        that can see it (and THREAD_MEMBER_UPDATE to the bot on unarchiving, if a member)."""
        changes: JSON = {
            "name": name,
            "archived": archived,
            "locked": locked,
            "auto_archive_duration": auto_archive_duration,
            "invitable": invitable,
        }
        try:
            return self.state.update_thread(self.thread(thread_id), changes)
        except DiscordHTTPError as error:
            raise EmulatorUsageError(f"Discord refuses this change: {error}") from None

    def _guild(self, guild_id: int | None) -> EmuGuild:
        guild = self.state.guilds.get(guild_id or self.guild_id)
        if guild is None:
            raise EmulatorUsageError(f"unknown guild {guild_id}")
        return guild

    def _guild_channel(self, channel_id: int) -> tuple[EmuChannel, EmuGuild]:
        channel = self._channel(channel_id)
        guild = self.state.guild_of(channel)
        if guild is None:
            raise EmulatorUsageError(f"channel {channel_id} is not a guild channel")
        return channel, guild

    def _channel(self, channel_id: int) -> EmuChannel:
        channel = self.state.channels.get(channel_id)
        if channel is None:
            raise EmulatorUsageError(f"unknown channel {channel_id}")
        return channel

    # -- acting as a user --------------------------------------------------------------------

    def _dispatch(
        self,
        interaction_type: int,
        data: JSON,
        user: EmuUser,
        channel: EmuChannel,
        *,
        locale: str = "en-US",
        message: StoredMessage | None = None,
        source_message_id: int | None = None,
    ) -> InteractionHandle:
        guild = self.state.guild_of(channel)
        if guild is not None and not self.state.bot_is_member(guild):
            raise EmulatorUsageError(f"the bot is not in guild {guild.id}: no interaction there")
        interaction_id = self.state.ids.next()
        token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48)
        payload = base_payload(
            self.state,
            interaction_id=interaction_id,
            token=token,
            interaction_type=interaction_type,
            data=data,
            user=user,
            channel=channel,
            locale=locale,
            message=message,
        )
        interaction = InteractionState(
            id=interaction_id,
            token=token,
            type=interaction_type,
            payload=payload,
            created_at=self.clock.monotonic(),
            user=user,
            channel=channel,
            guild=self.state.guild_of(channel),
            source_message_id=source_message_id,
        )
        self.interactions.register(interaction)
        self.gateway.dispatch_to_bot("INTERACTION_CREATE", payload)
        return InteractionHandle(interaction, self.state)

    def _where(
        self, user: EmuUser, channel_id: int | None, guild_id: int | None, dm: bool
    ) -> EmuChannel:
        if dm:
            return self.state.dm_channel(user)
        if channel_id is not None:
            channel = self._channel(channel_id)
            self._check_thread_use(user, channel, commands=True)
            return channel
        guild = self._guild(guild_id)
        return next(iter(guild.channels.values()))

    def _check_thread_use(self, user: EmuUser, channel: EmuChannel, *, commands: bool) -> None:
        """What Discord's client allows in a thread: seeing it at all (a private thread: its
        members and those with Manage Threads), and no application commands in an archived
        one."""
        if not channel.is_thread:
            return
        if not self.state.can_view(user, channel):
            raise EmulatorUsageError(
                f"{user.name} cannot see private thread {channel.id} (not a member, no Manage "
                "Threads)"
            )
        if commands and channel.archived:
            raise EmulatorUsageError(
                f"thread {channel.id} is archived: Discord offers no application commands there"
            )

    async def send_slash_command(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user: EmuUser | None = None,
        channel_id: int | None = None,
        guild_id: int | None = None,
        dm: bool = False,
        locale: str = "en-US",
    ) -> InteractionHandle:
        """Run ``/name`` (``"group sub"`` for subcommands) as ``user``; return its handle.

        Options are plain values (``str``, ``int``, ``float``, ``bool``), ``EmuUser``,
        ``EmuRole``, ``EmuChannel`` or ``Upload``; they are typed and checked against the
        registered command, as Discord's client does.
        """
        user = user or self.default_user
        channel = self._where(user, channel_id, guild_id, dm)
        top, *subcommands = name.split()
        command = find_command(self.state, top, self.state.guild_of(channel))
        built, resolved = build_options(self.state, command, subcommands, options or {}, channel)
        data = command_data(command, built, resolved)
        return self._dispatch(APPLICATION_COMMAND, data, user, channel, locale=locale)

    async def send_message_command(
        self,
        name: str,
        target_message_id: int,
        *,
        user: EmuUser | None = None,
        locale: str = "en-US",
    ) -> InteractionHandle:
        """Pick "Apps > ``name``" on a stored message as ``user``; return the handle.

        Discord sends an APPLICATION_COMMAND interaction in the message's channel whose
        ``data`` has ``type`` 3, ``target_id`` and the whole message under
        ``resolved.messages`` (discord.py passes it to a ``ContextMenu`` callback as a
        ``discord.Message``). Its answer may be a message, a deferral or a modal. As in
        Discord's client, only a command registered as a MESSAGE command is offered (by its
        exact, case-kept name), and a deleted or ephemeral message has no Apps menu.
        """
        message = self.state.messages.get(target_message_id)
        if message is None or message.deleted:
            raise EmulatorUsageError(f"message {target_message_id} does not exist")
        if message.ephemeral:
            raise EmulatorUsageError(
                f"message {target_message_id} is ephemeral: Discord offers no Apps menu on it"
            )
        user = user or self.default_user
        channel = self._channel(message.channel_id)
        self._check_thread_use(user, channel, commands=True)
        if channel.recipient is not None and channel.recipient.id != user.id:
            raise EmulatorUsageError(
                f"message {target_message_id} is in a DM with another user: {user.name} "
                "cannot see it"
            )
        guild = self.state.guild_of(channel)
        command = find_command(self.state, name, guild, kind=MESSAGE_COMMAND)
        data = message_command_data(command, message)
        return self._dispatch(APPLICATION_COMMAND, data, user, channel, locale=locale)

    async def send_autocomplete(
        self,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        *,
        user: EmuUser | None = None,
        channel_id: int | None = None,
        guild_id: int | None = None,
    ) -> InteractionHandle:
        """Ask for autocomplete choices while ``focused`` is being typed."""
        user = user or self.default_user
        channel = self._where(user, channel_id, guild_id, False)
        top, *subcommands = name.split()
        command = find_command(self.state, top, self.state.guild_of(channel))
        built, resolved = build_options(
            self.state, command, subcommands, options, channel, focused=focused
        )
        data = command_data(command, built, resolved)
        return self._dispatch(AUTOCOMPLETE, data, user, channel)

    def _component_target(self, message_id: int, custom_id: str) -> tuple[StoredMessage, JSON]:
        message = self.state.messages.get(message_id)
        if message is None or message.deleted:
            raise EmulatorUsageError(f"message {message_id} does not exist")
        component = message.find_component(custom_id)
        if component is None:
            present = [c.get("custom_id") for c in message.walk_components() if c.get("custom_id")]
            raise EmulatorUsageError(
                f"message {message_id} has no component {custom_id!r} (it has {present})"
            )
        if component.get("disabled"):
            raise EmulatorUsageError(f"component {custom_id!r} is disabled")
        return message, component

    async def click_button(
        self, message_id: int, custom_id: str, *, user: EmuUser | None = None
    ) -> InteractionHandle:
        """Click the button ``custom_id`` on a stored message."""
        message, component = self._component_target(message_id, custom_id)
        if component.get("type") != 2:
            raise EmulatorUsageError(f"{custom_id!r} is not a button")
        data: JSON = {"custom_id": custom_id, "component_type": 2}
        if "id" in component:
            data["id"] = component["id"]
        return self._component(message, data, user)

    async def select_menu(
        self,
        message_id: int,
        custom_id: str,
        values: Sequence[str],
        *,
        user: EmuUser | None = None,
    ) -> InteractionHandle:
        """Pick ``values`` in the select menu ``custom_id`` on a stored message."""
        message, component = self._component_target(message_id, custom_id)
        kind = component.get("type")
        if kind not in (3, 5, 6, 7, 8):
            raise EmulatorUsageError(f"{custom_id!r} is not a select menu")
        if kind == 3:
            offered = {o["value"] for o in component.get("options", [])}
            if not set(values) <= offered:
                raise EmulatorUsageError(f"{sorted(set(values) - offered)} are not offered")
        data: JSON = {"custom_id": custom_id, "component_type": kind, "values": list(values)}
        return self._component(message, data, user)

    def _component(
        self, message: StoredMessage, data: JSON, user: EmuUser | None
    ) -> InteractionHandle:
        channel = self._channel(message.channel_id)
        who = user or self.default_user
        self._check_thread_use(who, channel, commands=False)
        return self._dispatch(
            MESSAGE_COMPONENT,
            data,
            user or self.default_user,
            channel,
            message=message,
            source_message_id=message.id,
        )

    async def submit_modal(
        self,
        source: InteractionHandle,
        values: Mapping[str, str | Sequence[str]],
        *,
        user: EmuUser | None = None,
    ) -> InteractionHandle:
        """Fill in and submit the modal the bot opened in answer to ``source``."""
        modal = source.modal
        if modal is None:
            raise EmulatorUsageError(f"the bot did not answer {source!r} with a modal")
        data: JSON = {
            "custom_id": modal["custom_id"],
            "components": modal_submission(modal, values),
        }
        origin = self.interactions.by_id[source.id]
        message = (
            self.state.messages.get(origin.source_message_id)
            if origin.source_message_id is not None
            else None
        )
        return self._dispatch(
            MODAL_SUBMIT,
            data,
            user or source.user,
            origin.channel,
            message=message,
            source_message_id=origin.source_message_id,
        )

    def submit_form(
        self,
        custom_id: str,
        values: Mapping[str, str],
        *,
        user: EmuUser | None = None,
        channel_id: int | None = None,
        dm: bool = False,
    ) -> InteractionHandle:
        """Submit a modal the bot never opened (or opened in another life): a forged or stale
        form, as a hostile client can send. ``values`` are text inputs by custom_id."""
        rows = [
            {"type": 1, "components": [{"type": 4, "custom_id": key, "value": value}]}
            for key, value in values.items()
        ]
        who = user or self.default_user
        return self._dispatch(
            MODAL_SUBMIT,
            {"custom_id": custom_id, "components": rows},
            who,
            self._where(who, channel_id, None, dm),
        )

    # -- time and faults ---------------------------------------------------------------------

    def advance_time(self, seconds: float) -> None:
        """Move the emulator's clock (not discord.py's) forward; deadlines are re-checked."""
        self.clock.advance(seconds)
        self.interactions.check_deadlines()
        self.recorder.signal.changed()

    def inject_failures(
        self,
        route: str | None = None,
        *,
        method: str | None = None,
        status: int = 429,
        count: int = 1,
        retry_after: float = 0.05,
        is_global: bool = False,
        via_header: bool = True,
        predicate: Callable[[RecordedRequest], bool] | None = None,
    ) -> FaultRule:
        """Answer the next ``count`` matching requests with ``status`` (429 or 5xx).

        ``route`` is a route name (``"create_message"``) or template; see faults.py for how
        discord.py reacts to each status.
        """
        rule = FaultRule(
            status=status,
            remaining=count,
            route=route,
            method=method,
            retry_after=retry_after,
            is_global=is_global,
            via_header=via_header,
            predicate=predicate,
        )
        return self.faults.add(rule)

    def clear_failures(self) -> None:
        self.faults.clear()

    @property
    def rate_limits(self) -> RateLimits | None:
        """Discord's per-route rate limits, enforced when set (``None``, the default: off).

        Setting it starts every bucket afresh. See ratelimits.py for what is limited.
        """
        return self.rest.rate_limits

    @rate_limits.setter
    def rate_limits(self, limits: RateLimits | None) -> None:
        self.rest.rate_limits = limits

    async def disconnect_clients(
        self,
        code: int = 4000,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> None:
        """Close every gateway connection with ``code``; the session stays resumable.

        With 4000 (or any code discord.py treats as resumable) the bot reconnects and RESUMEs;
        events dispatched meanwhile are replayed.
        """
        await self.gateway.disconnect(code, timeout)

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT to the bot."""
        self.gateway.request_reconnect()

    def invalidate_session(self, *, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION (note: discord.py waits 5 s before re-identifying)."""
        self.gateway.invalidate_session(resumable=resumable)

    @property
    def ack_heartbeats(self) -> bool:
        return self.gateway.ack_heartbeats

    @ack_heartbeats.setter
    def ack_heartbeats(self, value: bool) -> None:
        self.gateway.ack_heartbeats = value

    # -- what happened -----------------------------------------------------------------------

    def requests(
        self,
        route: str | None = None,
        *,
        method: str | None = None,
        status: int | None = None,
        since: int = 0,
        predicate: Callable[[RecordedRequest], bool] | None = None,
    ) -> list[RecordedRequest]:
        """Recorded requests matching every filter, in the order they were answered."""
        return self.recorder.find_requests(
            route=route, method=method, status=status, since=since, predicate=predicate
        )

    async def wait_for_request(
        self,
        predicate: Callable[[RecordedRequest], bool] | None = None,
        *,
        route: str | None = None,
        method: str | None = None,
        status: int | None = None,
        since: int = 0,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> RecordedRequest:
        """The first answered request (with ``seq > since``) that matches; waits if none yet."""

        def probe() -> RecordedRequest | None:
            found = self.requests(
                route, method=method, status=status, since=since, predicate=predicate
            )
            return found[0] if found else None

        return await self.recorder.signal.wait_for(
            probe, timeout, lambda: f"a request route={route} method={method} status={status}"
        )

    def mark(self) -> int:
        """A request sequence number to pass as ``since=`` to see only later requests."""
        return self.recorder.next_request_seq()

    def frames(
        self,
        *,
        direction: Direction | None = None,
        op: int | None = None,
        t: str | None = None,
        since: int = 0,
        predicate: Callable[[GatewayFrame], bool] | None = None,
    ) -> list[GatewayFrame]:
        """Recorded gateway frames (``sent`` = emulator to bot) matching every filter."""
        return self.recorder.find_frames(
            direction=direction, op=op, t=t, since=since, predicate=predicate
        )

    async def wait_for_frame(
        self,
        *,
        direction: Direction | None = None,
        op: int | None = None,
        t: str | None = None,
        since: int = 0,
        predicate: Callable[[GatewayFrame], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> GatewayFrame:
        def probe() -> GatewayFrame | None:
            found = self.recorder.find_frames(
                direction=direction, op=op, t=t, since=since, predicate=predicate
            )
            return found[0] if found else None

        return await self.recorder.signal.wait_for(
            probe, timeout, lambda: f"a gateway frame direction={direction} op={op} t={t}"
        )

    @property
    def violations(self) -> list[Violation]:
        return list(self.recorder.violations)

    async def wait_for_violation(
        self,
        kind: str | None = None,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> Violation:
        """The first recorded violation (of ``kind``, if given); waits if there is none yet."""

        def probe() -> Violation | None:
            return next((v for v in self.recorder.violations if kind in (None, v.kind)), None)

        return await self.recorder.signal.wait_for(probe, timeout, lambda: f"violation {kind}")

    def assert_no_violations(self, *, ignore: Sequence[str] = ()) -> None:
        """Fail with every broken rule listed, except kinds in ``ignore``."""
        found = [v for v in self.recorder.violations if v.kind not in ignore]
        if found:
            listing = "\n".join(f"  - [{v.kind}] {v.message}" for v in found)
            raise AssertionError(f"the bot broke {len(found)} Discord rule(s):\n{listing}")

    def messages(
        self,
        channel_id: int | None = None,
        *,
        include_ephemeral: bool = True,
        include_deleted: bool = False,
    ) -> list[StoredMessage]:
        """Stored messages (oldest first), in one channel or everywhere."""
        return [
            m
            for m in self.state.messages.values()
            if (channel_id is None or m.channel_id == channel_id)
            and (include_ephemeral or not m.ephemeral)
            and (include_deleted or not m.deleted)
        ]

    def message(self, message_id: int) -> StoredMessage:
        try:
            return self.state.messages[message_id]
        except KeyError:
            raise EmulatorUsageError(f"no message {message_id}") from None

    def dm_messages(self, user: EmuUser) -> list[StoredMessage]:
        channel = self.state.dm_channels.get(user.id)
        return [] if channel is None else self.messages(channel.id)

    async def wait_for_message(
        self,
        predicate: Callable[[StoredMessage], bool],
        *,
        channel_id: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> StoredMessage:
        """The first stored message (oldest first) that satisfies ``predicate``."""

        def probe() -> StoredMessage | None:
            return next((m for m in self.messages(channel_id) if predicate(m)), None)

        return await self.recorder.signal.wait_for(probe, timeout, lambda: "a matching message")

    def registered_commands(self, guild_id: int | None = None) -> list[JSON]:
        """Commands as last synced: global ones, or those of ``guild_id``."""
        scope = self.state.scopes.get(guild_id)
        return [dict(c) for c in scope.commands] if scope else []
