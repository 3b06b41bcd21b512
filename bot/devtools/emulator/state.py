"""The emulator's world model and the message/command rules that mutate it.

REST handlers and the test driver both go through ``EmulatorState``; it validates every
message against Discord's limits, keeps the message store, and emits gateway events through
the ``dispatch`` hook the gateway installs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .clock import Clock
from .errors import DiscordHTTPError, FieldError
from .models import (
    DEFAULT_EVERYONE_PERMISSIONS,
    DM,
    FLAG_COMPONENTS_V2,
    FLAG_EPHEMERAL,
    FLAG_HAS_THREAD,
    FLAG_LOADING,
    FLAG_SUPPRESS_EMBEDS,
    FLAG_SUPPRESS_NOTIFICATIONS,
    GUILD_TEXT,
    PERM_ALL,
    PERM_MANAGE_THREADS,
    PERM_SEND_MESSAGES_IN_THREADS,
    PRIVATE_THREAD,
    PUBLIC_THREAD,
    SEND_PERMISSIONS,
    EmuChannel,
    EmuGuild,
    EmuMember,
    EmuRole,
    EmuThreadMember,
    EmuUser,
    SnowflakeFactory,
    StoredAttachment,
    StoredMessage,
    guess_content_type,
)
from .recorder import RecordedFile, Recorder, Violation
from .validation import Limits, validate_commands, validate_message, validate_thread

JSON = dict[str, Any]

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12

NONCE_WINDOW = dt.timedelta(minutes=5)
NONCE_LENGTH = 25

CHANNEL_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_COMPONENTS_V2
INTERACTION_FLAGS = CHANNEL_FLAGS | FLAG_EPHEMERAL

Dispatcher = Callable[[str, JSON, int], None]
"""``(event name, data, intent bit that gates it)``; installed by the gateway."""


@dataclass(frozen=True)
class EmulatorConfig:
    """Fixed facts about the emulated application and Discord's timing rules."""

    token: str
    application_id: int
    bot_user_id: int
    bot_name: str = "Atelier"
    ack_timeout: float = 3.0
    token_lifetime: float = 15 * 60
    heartbeat_interval: float = 41.25
    allowed_privileged_intents: int = 0
    limits: Limits = field(default_factory=Limits)


@dataclass
class CommandScope:
    """The commands registered globally (``guild_id`` ``None``) or for one guild."""

    guild_id: int | None
    commands: list[JSON] = field(default_factory=list)


class EmulatorState:
    """Users, guilds, channels, messages and commands, plus the rules that guard them."""

    def __init__(self, config: EmulatorConfig, clock: Clock, recorder: Recorder) -> None:
        self.config = config
        self.clock = clock
        self.recorder = recorder
        self.ids = SnowflakeFactory(clock)
        self.base_url = ""
        self.gateway_url = ""
        self.resume_gateway_url = ""
        self.users: dict[int, EmuUser] = {}
        self.guilds: dict[int, EmuGuild] = {}
        self.channels: dict[int, EmuChannel] = {}
        self.dm_channels: dict[int, EmuChannel] = {}
        self.messages: dict[int, StoredMessage] = {}
        self.scopes: dict[int | None, CommandScope] = {None: CommandScope(None)}
        self.denied_channels: set[int] = set()
        self.uploads: dict[int, StoredAttachment] = {}
        self.dispatch: Dispatcher = lambda event, data, intent: None
        self.bot_user = EmuUser(config.bot_user_id, config.bot_name, bot=True)
        self.users[self.bot_user.id] = self.bot_user
        self.owner = self.add_user(name="owner")

    # -- world building ----------------------------------------------------------------------

    def add_user(
        self, user_id: int | None = None, name: str = "user", *, bot: bool = False
    ) -> EmuUser:
        user = EmuUser(user_id or self.ids.next(), name, global_name=name.title(), bot=bot)
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        guild_id: int,
        channel_ids: Sequence[int],
        name: str,
        *,
        nsfw_channel_ids: Collection[int] = (),
    ) -> EmuGuild:
        """A guild with text channels ``channel_ids``; those in ``nsfw_channel_ids`` are
        age-restricted from the start."""
        strays = set(nsfw_channel_ids) - set(channel_ids)
        if strays:
            raise errors.EmulatorUsageError(
                f"nsfw_channel_ids {sorted(strays)} are not among the channel_ids"
            )
        now = self.clock.now()
        guild = EmuGuild(guild_id, name, owner_id=self.owner.id, joined_at=now)
        guild.roles[guild_id] = EmuRole(
            guild_id, guild_id, "@everyone", permissions=DEFAULT_EVERYONE_PERMISSIONS
        )
        for position, channel_id in enumerate(channel_ids):
            channel = EmuChannel(
                channel_id,
                f"channel-{position}",
                guild_id,
                position=position,
                nsfw=channel_id in nsfw_channel_ids,
            )
            guild.channels[channel_id] = channel
            self.channels[channel_id] = channel
        for user in (self.bot_user, self.owner):
            guild.members[user.id] = EmuMember(user, [], now)
        self.guilds[guild_id] = guild
        return guild

    def add_member(self, guild: EmuGuild, user: EmuUser, role_ids: Sequence[int]) -> EmuMember:
        for role_id in role_ids:
            if role_id not in guild.roles:
                raise errors.EmulatorUsageError(f"guild {guild.id} has no role {role_id}")
        member = EmuMember(user, list(role_ids), self.clock.now())
        guild.members[user.id] = member
        return member

    def dm_channel(self, user: EmuUser) -> EmuChannel:
        """The DM channel between the bot and ``user``, created on first use."""
        channel = self.dm_channels.get(user.id)
        if channel is None:
            channel = EmuChannel(self.ids.next(), "", None, type=DM, recipient=user)
            self.dm_channels[user.id] = channel
            self.channels[channel.id] = channel
        return channel

    def bot_is_member(self, guild: EmuGuild) -> bool:
        """Whether the bot is in ``guild`` (it may have been removed, and added back)."""
        return self.bot_user.id in guild.members

    def guild_of(self, channel: EmuChannel) -> EmuGuild | None:
        return self.guilds.get(channel.guild_id) if channel.guild_id is not None else None

    def permissions_in(self, user: EmuUser, channel: EmuChannel) -> int:
        """``user``'s permissions in ``channel``, overwrites included (all of them in a DM)."""
        guild = self.guild_of(channel)
        return guild.channel_permissions_of(user.id, channel) if guild is not None else PERM_ALL

    def bot_permissions(self, channel: EmuChannel) -> int:
        """The bot's permissions in ``channel``; ``deny_channel`` on a thread or on its parent
        takes its send permissions (Send Messages in Threads included) there."""
        value = self.permissions_in(self.bot_user, channel)
        if channel.id in self.denied_channels or channel.parent_id in self.denied_channels:
            value &= ~SEND_PERMISSIONS
        return value

    def can_view(self, user: EmuUser, channel: EmuChannel) -> bool:
        """Whether ``user`` sees ``channel``; only threads are checked (a private thread is
        seen by its members and by those with Manage Threads)."""
        guild = self.guild_of(channel)
        if guild is None or not channel.is_thread:
            return True
        return guild.can_view_thread(user.id, channel)

    def attachment_url(self, channel_id: int, attachment_id: int, filename: str) -> str:
        return f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{filename}"

    def violation(
        self,
        kind: str,
        message: str,
        *,
        code: int | None = None,
        request_seq: int | None = None,
        interaction_id: int | None = None,
    ) -> None:
        self.recorder.add_violation(Violation(kind, message, code, request_seq, interaction_id))

    # -- messages ----------------------------------------------------------------------------

    def create_message(
        self,
        channel: EmuChannel,
        payload: JSON,
        files: Sequence[RecordedFile],
        *,
        message_type: int = 0,
        allowed_flags: int = CHANNEL_FLAGS,
        forced_flags: int = 0,
        interaction_id: int | None = None,
        interaction_metadata: JSON | None = None,
        author: EmuUser | None = None,
    ) -> StoredMessage:
        """Validate and store a message (the bot's unless ``author``), then announce it.

        With ``enforce_nonce`` (discord.py sets it whenever a nonce is given), a repeat of a
        nonce the same author used in the channel within a few minutes returns the earlier
        message instead of posting a second one, as Discord does.
        """
        author = author or self.bot_user
        nonce = payload.get("nonce")
        if nonce is not None:
            nonce = str(nonce)
            if len(nonce) > NONCE_LENGTH:
                _raise_if_invalid(
                    [
                        FieldError(
                            ("nonce",),
                            "BASE_TYPE_MAX_LENGTH",
                            f"Must be {NONCE_LENGTH} or fewer in length.",
                        )
                    ]
                )
            if payload.get("enforce_nonce"):
                earlier = self._find_by_nonce(channel, author, nonce)
                if earlier is not None:
                    return earlier
        flags = ((payload.get("flags") or 0) & allowed_flags) | forced_flags
        _raise_if_invalid(validate_message({**payload, "flags": flags}, self.config.limits))
        message = StoredMessage(
            id=self.ids.next(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=author,
            created_at=self.clock.now(),
            content=payload.get("content") or "",
            embeds=list(payload.get("embeds") or []),
            components=list(payload.get("components") or []),
            flags=flags,
            type=19 if payload.get("message_reference") else message_type,
            interaction_id=interaction_id,
            interaction_payload=interaction_metadata,
            message_reference=payload.get("message_reference"),
            nonce=nonce,
        )
        if interaction_id is not None:
            message.webhook_id = self.config.application_id
            message.application_id = self.config.application_id
        message.attachments = self._resolve_attachments(message, [], payload, files, creating=True)
        if not (flags & FLAG_LOADING) and _is_empty(message):
            raise errors.empty_message()
        self._finish(message)
        self.messages[message.id] = message
        if channel.is_thread and not message.ephemeral:
            channel.message_count += 1
            channel.total_message_sent += 1
            channel.last_message_id = message.id
        self.announce("MESSAGE_CREATE", message)
        return message

    def _find_by_nonce(
        self, channel: EmuChannel, author: EmuUser, nonce: str
    ) -> StoredMessage | None:
        since = self.clock.now() - NONCE_WINDOW
        for message in self.messages.values():
            if (
                message.nonce == nonce
                and message.channel_id == channel.id
                and message.author.id == author.id
                and message.created_at >= since
                and not message.deleted
            ):
                return message
        return None

    def edit_message(
        self, message: StoredMessage, payload: JSON, files: Sequence[RecordedFile]
    ) -> StoredMessage:
        """Apply a PATCH body: given fields replace, files append unless ``attachments`` lists."""
        flags = message.flags & ~FLAG_LOADING
        if "flags" in payload and payload["flags"] is not None:
            requested = payload["flags"]
            flags = (flags & ~FLAG_SUPPRESS_EMBEDS) | (requested & FLAG_SUPPRESS_EMBEDS)
            flags |= requested & FLAG_COMPONENTS_V2
        candidate = {
            "content": payload.get("content", message.content),
            "embeds": payload.get("embeds", message.embeds),
            "components": payload.get("components", message.components),
            "flags": flags,
        }
        _raise_if_invalid(validate_message(candidate, self.config.limits))
        attachments = self._resolve_attachments(
            message, message.attachments, payload, files, creating=False
        )
        if "content" in payload:
            message.content = payload["content"] or ""
        if "embeds" in payload:
            message.embeds = list(payload["embeds"] or [])
        if "components" in payload:
            message.components = list(payload["components"] or [])
        message.attachments = attachments
        message.flags = flags
        if _is_empty(message):
            raise errors.empty_message()
        message.edited_at = self.clock.now()
        self._finish(message)
        self.announce("MESSAGE_UPDATE", message)
        return message

    def delete_message(self, message: StoredMessage) -> None:
        message.deleted = True
        channel = self.channels.get(message.channel_id)
        if channel is not None and channel.is_thread and not message.ephemeral:
            channel.message_count = max(0, channel.message_count - 1)
        if not message.ephemeral and self._bot_sees(message.channel_id):
            data: JSON = {"id": str(message.id), "channel_id": str(message.channel_id)}
            if message.guild_id is not None:
                data["guild_id"] = str(message.guild_id)
            self.dispatch("MESSAGE_DELETE", data, _intent_for(message))
        self.recorder.signal.changed()

    def announce(self, event: str, message: StoredMessage) -> None:
        """Gateway MESSAGE_* events; Discord sends none for ephemeral messages, nor any from
        a private thread the bot cannot see."""
        if not message.ephemeral and self._bot_sees(message.channel_id):
            self.dispatch(event, message.payload(include_guild_id=True), _intent_for(message))
        self.recorder.signal.changed()

    def _bot_sees(self, channel_id: int) -> bool:
        channel = self.channels.get(channel_id)
        return channel is None or self.can_view(self.bot_user, channel)

    def _finish(self, message: StoredMessage) -> None:
        for attachment in message.attachments:
            attachment.ephemeral = message.ephemeral
        message.embeds = [self._normalise_embed(message, e) for e in message.embeds]
        message.snapshot()

    def _normalise_embed(self, message: StoredMessage, embed: JSON) -> JSON:
        """Discord types embeds and swaps ``attachment://name`` for the attachment's URL."""
        result = {"type": "rich", **embed}
        for key in ("image", "thumbnail"):
            media = result.get(key)
            if isinstance(media, dict):
                url = media.get("url") or ""
                if url.startswith("attachment://"):
                    name = url.removeprefix("attachment://")
                    found = next((a for a in message.attachments if a.filename == name), None)
                    if found is not None:
                        result[key] = {**media, "url": found.url, "proxy_url": found.url}
        return result

    def _resolve_attachments(
        self,
        message: StoredMessage,
        existing: list[StoredAttachment],
        payload: JSON,
        files: Sequence[RecordedFile],
        *,
        creating: bool,
    ) -> list[StoredAttachment]:
        limits = self.config.limits
        for upload in files:
            if upload.size > limits.attachment_size:
                raise errors.entity_too_large()
        by_index = {
            (upload.index if upload.index is not None else position): upload
            for position, upload in enumerate(files)
        }
        listed = payload.get("attachments")
        result: list[StoredAttachment] = []
        used: set[int] = set()
        if listed is None:
            result = [] if creating else list(existing)
        else:
            kept = {a.id: a for a in existing}
            for position, entry in enumerate(listed):
                ref = int(entry.get("id", -1))
                if ref in kept:
                    result.append(kept[ref])
                elif ref in by_index:
                    used.add(ref)
                    result.append(self._store_upload(message, by_index[ref], entry))
                else:
                    _raise_if_invalid(
                        [FieldError(("attachments", position), "ATTACHMENT_NOT_FOUND", "Unknown")]
                    )
        for index, upload in sorted(by_index.items()):
            if index not in used:
                result.append(self._store_upload(message, upload, {}))
        if len(result) > limits.attachments_per_message:
            _raise_if_invalid(
                [
                    FieldError(
                        ("attachments",),
                        "BASE_TYPE_MAX_LENGTH",
                        f"Must be {limits.attachments_per_message} or fewer in length.",
                    )
                ]
            )
        return result

    def _store_upload(
        self, message: StoredMessage, upload: RecordedFile, entry: JSON
    ) -> StoredAttachment:
        attachment_id = self.ids.next()
        filename = entry.get("filename") or upload.filename
        stored = StoredAttachment(
            id=attachment_id,
            filename=filename,
            data=upload.data,
            url=self.attachment_url(message.channel_id, attachment_id, filename),
            content_type=guess_content_type(filename) or upload.content_type,
            description=entry.get("description"),
        )
        self.uploads[attachment_id] = stored
        return stored

    # -- threads -----------------------------------------------------------------------------

    def create_thread(
        self,
        parent: EmuChannel,
        body: JSON,
        *,
        owner: EmuUser,
        message: StoredMessage | None = None,
    ) -> EmuChannel:
        """Validate a Start Thread body and create the thread (permissions are the caller's
        to check). From ``message``: a public thread whose id is the message's id, the message
        gaining ``thread`` and the HAS_THREAD flag (MESSAGE_UPDATE). Without: ``type`` 11 or 12
        (Discord's default is 12, private). The owner joins it. THREAD_CREATE carries
        ``newly_created``; THREAD_MEMBERS_UPDATE follows for the owner's joining."""
        guild = self.guild_of(parent)
        if guild is None:
            raise errors.cannot_act_on_dm()
        if parent.type != GUILD_TEXT:
            raise errors.wrong_channel_type()
        _raise_if_invalid(
            validate_thread(body, self.config.limits, creating=True, with_type=message is None),
            violation="invalid_thread",
        )
        if message is not None:
            if message.thread is not None or message.id in self.channels:
                raise errors.thread_already_created()
            kind, thread_id = PUBLIC_THREAD, message.id
        else:
            kind, thread_id = body.get("type") or PRIVATE_THREAD, self.ids.next()
        now = self.clock.now()
        invitable = body.get("invitable")
        thread = EmuChannel(
            thread_id,
            body["name"],
            guild.id,
            type=kind,
            parent_id=parent.id,
            owner_id=owner.id,
            invitable=True if invitable is None or kind == PUBLIC_THREAD else invitable,
            auto_archive_duration=body.get("auto_archive_duration") or 1440,
            archive_timestamp=now,
            create_timestamp=now,
            rate_limit_per_user=body.get("rate_limit_per_user") or 0,
        )
        owner_member = EmuThreadMember(owner.id, now)
        thread.thread_members[owner.id] = owner_member
        guild.threads[thread.id] = thread
        self.channels[thread.id] = thread
        if self.can_view(self.bot_user, thread):
            self.dispatch(
                "THREAD_CREATE", {**thread.payload(), "newly_created": True}, INTENT_GUILDS
            )
        if message is not None:
            message.thread = thread
            message.flags |= FLAG_HAS_THREAD
            self.announce("MESSAGE_UPDATE", message)
        self._thread_members_update(thread, added=[owner_member])
        self.recorder.signal.changed()
        return thread

    def add_thread_member(self, thread: EmuChannel, user: EmuUser) -> bool:
        """Add ``user`` to ``thread`` (False if already there). Discord sends the added user
        THREAD_CREATE (with their thread member object) and THREAD_MEMBERS_UPDATE; others
        see the latter only with the GUILD_MEMBERS intent."""
        if user.id in thread.thread_members:
            return False
        member = EmuThreadMember(user.id, self.clock.now())
        thread.thread_members[user.id] = member
        if user.id == self.bot_user.id:
            self.dispatch("THREAD_CREATE", thread.payload(member_id=user.id), INTENT_GUILDS)
        self._thread_members_update(thread, added=[member])
        self.recorder.signal.changed()
        return True

    def remove_thread_member(self, thread: EmuChannel, user_id: int) -> bool:
        """Remove ``user_id`` from ``thread`` (False if not a member): THREAD_MEMBERS_UPDATE."""
        if thread.thread_members.pop(user_id, None) is None:
            return False
        self._thread_members_update(thread, removed=[user_id])
        self.recorder.signal.changed()
        return True

    def _thread_members_update(
        self,
        thread: EmuChannel,
        *,
        added: Sequence[EmuThreadMember] = (),
        removed: Sequence[int] = (),
    ) -> None:
        """THREAD_MEMBERS_UPDATE: always sent when the bot itself joins or leaves (GUILDS
        intent); about other users only to a bot with the GUILD_MEMBERS intent that sees the
        thread."""
        guild = self.guilds[thread.guild_id] if thread.guild_id is not None else None
        if guild is None:
            return
        data: JSON = {
            "id": str(thread.id),
            "guild_id": str(guild.id),
            "member_count": thread.member_count,
        }
        if added:
            entries: list[JSON] = []
            for member in added:
                entry = member.payload(thread.id)
                guild_member = guild.members.get(member.user_id)
                if guild_member is not None:
                    entry["member"] = guild_member.payload()
                entry["presence"] = None
                entries.append(entry)
            data["added_members"] = entries
        if removed:
            data["removed_member_ids"] = [str(user_id) for user_id in removed]
        bot_id = self.bot_user.id
        if bot_id in removed or any(m.user_id == bot_id for m in added):
            self.dispatch("THREAD_MEMBERS_UPDATE", data, INTENT_GUILDS)
        elif self.can_view(self.bot_user, thread):
            self.dispatch("THREAD_MEMBERS_UPDATE", data, INTENT_GUILD_MEMBERS)

    def update_thread(self, thread: EmuChannel, changes: JSON) -> EmuChannel:
        """Apply a validated Modify Channel body to ``thread`` (permissions are the caller's):
        THREAD_UPDATE with the whole thread; on unarchiving, THREAD_MEMBER_UPDATE to the bot
        if it is a member, as Discord does. ``archive_timestamp`` moves when ``archived`` or
        ``auto_archive_duration`` changes."""
        _raise_if_invalid(
            validate_thread(changes, self.config.limits, creating=False),
            violation="invalid_thread",
        )
        was_archived = thread.archived
        if changes.get("name") is not None:
            thread.name = changes["name"]
        for key in ("archived", "locked", "invitable"):
            if changes.get(key) is not None:
                setattr(thread, key, bool(changes[key]))
        if not thread.is_private_thread:
            thread.invitable = True
        if "rate_limit_per_user" in changes:
            thread.rate_limit_per_user = changes["rate_limit_per_user"] or 0
        duration = changes.get("auto_archive_duration")
        if duration is not None and duration != thread.auto_archive_duration:
            thread.auto_archive_duration = duration
            thread.archive_timestamp = self.clock.now()
        if thread.archived != was_archived:
            thread.archive_timestamp = self.clock.now()
        if self.can_view(self.bot_user, thread):
            self.dispatch("THREAD_UPDATE", thread.payload(), INTENT_GUILDS)
            own = thread.thread_members.get(self.bot_user.id)
            if was_archived and not thread.archived and own is not None:
                data = {**own.payload(thread.id), "guild_id": str(thread.guild_id)}
                self.dispatch("THREAD_MEMBER_UPDATE", data, INTENT_GUILDS)
        self.recorder.signal.changed()
        return thread

    def delete_thread(self, thread: EmuChannel) -> None:
        """Delete ``thread``: its id answers 404 Unknown Channel from then on; THREAD_DELETE."""
        guild = self.guilds.get(thread.guild_id) if thread.guild_id is not None else None
        visible = self.can_view(self.bot_user, thread)
        if guild is not None:
            guild.threads.pop(thread.id, None)
        self.channels.pop(thread.id, None)
        self.denied_channels.discard(thread.id)
        starter = self.messages.get(thread.id)
        if starter is not None and starter.thread is thread:
            starter.thread = None
            starter.flags &= ~FLAG_HAS_THREAD
        if visible:
            data = {
                "id": str(thread.id),
                "guild_id": str(thread.guild_id),
                "parent_id": str(thread.parent_id),
                "type": thread.type,
            }
            self.dispatch("THREAD_DELETE", data, INTENT_GUILDS)
        self.recorder.signal.changed()

    def check_thread_post(self, user: EmuUser, thread: EmuChannel, permissions: int) -> None:
        """Discord's rules for posting in a thread: the poster must see it (a private thread:
        a member or Manage Threads; 403 50001 otherwise), have Send Messages in Threads (Send
        Messages has no effect there; 403 50013), and, if it is locked, Manage Threads (403
        50083 "Thread is archived", as Discord answers)."""
        if not self.can_view(user, thread):
            raise errors.missing_access()
        if not permissions & PERM_SEND_MESSAGES_IN_THREADS:
            raise errors.missing_permissions()
        if thread.locked and not permissions & PERM_MANAGE_THREADS:
            raise errors.thread_archived(403)

    def check_thread_edit(self, thread: EmuChannel, permissions: int) -> None:
        """Editing a message: not in an archived thread (400 50083), and in a locked one only
        with Manage Threads (403 50083)."""
        if thread.archived:
            raise errors.thread_archived()
        if thread.locked and not permissions & PERM_MANAGE_THREADS:
            raise errors.thread_archived(403)

    def before_thread_post(self, author: EmuUser, thread: EmuChannel) -> None:
        """A post unarchives an archived (unlocked, or posted by a moderator) thread first,
        as Discord does (THREAD_UPDATE)."""
        if thread.archived:
            self.update_thread(thread, {"archived": False})

    def after_thread_post(self, author: EmuUser, thread: EmuChannel) -> None:
        """Sending a message in a thread makes the author a member of it."""
        self.add_thread_member(thread, author)

    # -- application commands ----------------------------------------------------------------

    def scope(self, guild_id: int | None) -> CommandScope:
        if guild_id is not None and guild_id not in self.guilds:
            raise errors.unknown_guild()
        return self.scopes.setdefault(guild_id, CommandScope(guild_id))

    def overwrite_commands(self, guild_id: int | None, body: Any) -> list[JSON]:
        """Bulk overwrite: keep ids of commands whose (type, name) survive, as Discord does."""
        if not isinstance(body, list):
            _raise_if_invalid([FieldError((), "LIST_TYPE_CONVERT", "Must be a list.")])
        _raise_if_invalid(validate_commands(body, self.config.limits), violation="invalid_command")
        scope = self.scope(guild_id)
        previous = {(c.get("type", 1), c["name"]): c for c in scope.commands}
        scope.commands = [
            self._full_command(guild_id, c, previous.get((c.get("type", 1), c["name"])))
            for c in body
        ]
        self.recorder.signal.changed()
        return scope.commands

    def upsert_command(self, guild_id: int | None, body: JSON) -> JSON:
        _raise_if_invalid(
            validate_commands([body], self.config.limits), violation="invalid_command"
        )
        scope = self.scope(guild_id)
        key = (body.get("type", 1), body.get("name"))
        old = next((c for c in scope.commands if (c.get("type", 1), c["name"]) == key), None)
        command = self._full_command(guild_id, body, old)
        scope.commands = [c for c in scope.commands if c is not old] + [command]
        self.recorder.signal.changed()
        return command

    def find_command(self, guild_id: int | None, command_id: int) -> JSON:
        for command in self.scope(guild_id).commands:
            if int(command["id"]) == command_id:
                return command
        raise errors.unknown_command()

    def _full_command(self, guild_id: int | None, body: JSON, old: JSON | None) -> JSON:
        command: JSON = {
            "type": 1,
            "name_localizations": None,
            "description": "",
            "description_localizations": None,
            "options": [],
            "default_member_permissions": None,
            "nsfw": False,
            "integration_types": [0],
            "contexts": None,
            **body,
            "id": old["id"] if old else str(self.ids.next()),
            "application_id": str(self.config.application_id),
            "version": str(self.ids.next()),
        }
        if guild_id is not None:
            command["guild_id"] = str(guild_id)
        return command


def _intent_for(message: StoredMessage) -> int:
    return INTENT_GUILD_MESSAGES if message.guild_id is not None else INTENT_DIRECT_MESSAGES


def _is_empty(message: StoredMessage) -> bool:
    return not (message.content or message.embeds or message.components or message.attachments)


def _raise_if_invalid(found: list[FieldError], *, violation: str = "invalid_message") -> None:
    if found:
        raise errors.invalid_form_body(found, violation=violation)


def describe_form_errors(error: DiscordHTTPError) -> str:
    """``content: Must be 2000 or fewer in length.``-style text for violation messages."""
    if not error.errors:
        return error.message
    parts: list[str] = []

    def visit(node: JSON, path: list[str]) -> None:
        for key, value in node.items():
            if key == "_errors":
                for item in value:
                    parts.append(f"{'.'.join(path) or '(body)'}: {item['message']}")
            elif isinstance(value, dict):
                visit(value, [*path, key])

    visit(error.errors, [])
    return f"{error.message}: " + "; ".join(parts)
