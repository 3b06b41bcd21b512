"""The emulated Discord world: users, guilds, channels, messages, and their JSON shapes.

Payloads carry the fields discord.py 2.7 reads (see ``discord/types``); optional fields are
filled with Discord's usual defaults so the real client parses them without special cases.
"""

from __future__ import annotations

import datetime as dt
import mimetypes
import struct
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock, iso_timestamp

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000

# Channel types
GUILD_TEXT = 0
DM = 1
PUBLIC_THREAD = 11
PRIVATE_THREAD = 12
THREAD_TYPES = frozenset({PUBLIC_THREAD, PRIVATE_THREAD})
# Thread auto-archive durations (minutes) Discord accepts
AUTO_ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)

# Message flags
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_HAS_THREAD = 1 << 5
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_COMPONENTS_V2 = 1 << 15

# Permission overwrite targets
OVERWRITE_ROLE = 0
OVERWRITE_MEMBER = 1

# Permission bits the emulator reasons about
PERM_ADMINISTRATOR = 1 << 3
PERM_ADD_REACTIONS = 1 << 6
PERM_MANAGE_GUILD = 1 << 5
PERM_VIEW_CHANNEL = 1 << 10
PERM_SEND_MESSAGES = 1 << 11
PERM_MANAGE_MESSAGES = 1 << 13
PERM_EMBED_LINKS = 1 << 14
PERM_ATTACH_FILES = 1 << 15
PERM_READ_MESSAGE_HISTORY = 1 << 16
PERM_USE_EXTERNAL_EMOJIS = 1 << 18
PERM_USE_APPLICATION_COMMANDS = 1 << 31
PERM_MANAGE_THREADS = 1 << 34
PERM_CREATE_PUBLIC_THREADS = 1 << 35
PERM_CREATE_PRIVATE_THREADS = 1 << 36
PERM_SEND_MESSAGES_IN_THREADS = 1 << 38
PERM_ALL = (1 << 51) - 1
DEFAULT_EVERYONE_PERMISSIONS = (
    PERM_ADD_REACTIONS
    | PERM_VIEW_CHANNEL
    | PERM_SEND_MESSAGES
    | PERM_EMBED_LINKS
    | PERM_ATTACH_FILES
    | PERM_READ_MESSAGE_HISTORY
    | PERM_USE_EXTERNAL_EMOJIS
    | PERM_USE_APPLICATION_COMMANDS
    | PERM_CREATE_PUBLIC_THREADS
    | PERM_CREATE_PRIVATE_THREADS
    | PERM_SEND_MESSAGES_IN_THREADS
)
SEND_PERMISSIONS = (
    PERM_SEND_MESSAGES | PERM_SEND_MESSAGES_IN_THREADS | PERM_ATTACH_FILES | PERM_EMBED_LINKS
)


class SnowflakeFactory:
    """Discord ids: milliseconds since the Discord epoch in the top bits, strictly increasing."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last = 0

    def next(self) -> int:
        ms = int(self._clock.now().timestamp() * 1000) - DISCORD_EPOCH_MS
        candidate = ms << 22
        self._last = max(self._last + 1, candidate)
        return self._last


@dataclass
class EmuUser:
    """A Discord user; the test's stand-in for a person (or the bot itself)."""

    id: int
    name: str
    global_name: str | None = None
    bot: bool = False
    accepts_dms: bool = True

    def payload(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
        }
        if self.bot:
            data["bot"] = True
        return data

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass
class EmuRole:
    id: int
    guild_id: int
    name: str
    permissions: int = 0
    position: int = 1

    def payload(self) -> JSON:
        return {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class EmuMember:
    user: EmuUser
    role_ids: list[int]
    joined_at: dt.datetime
    nick: str | None = None

    def payload(self, *, permissions: int | None = None, with_user: bool = True) -> JSON:
        data: JSON = {
            "roles": [str(r) for r in self.role_ids],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": iso_timestamp(self.joined_at),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.payload()
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass
class EmuOverwrite:
    """A channel's permission overwrite for one role (``OVERWRITE_ROLE``, the guild's id for
    @everyone) or one member (``OVERWRITE_MEMBER``)."""

    id: int
    type: int
    allow: int = 0
    deny: int = 0

    def payload(self) -> JSON:
        return {
            "id": str(self.id),
            "type": self.type,
            "allow": str(self.allow),
            "deny": str(self.deny),
        }


@dataclass
class EmuThreadMember:
    """A user's membership of a thread (Discord's thread member object)."""

    user_id: int
    joined_at: dt.datetime
    flags: int = 0

    def payload(self, thread_id: int | None = None) -> JSON:
        """With ``thread_id`` the full object; without, the short form GUILD_CREATE nests in
        each thread (no ``id`` or ``user_id``)."""
        data: JSON = {"join_timestamp": iso_timestamp(self.joined_at), "flags": self.flags}
        if thread_id is not None:
            data = {"id": str(thread_id), "user_id": str(self.user_id), **data}
        return data


@dataclass
class EmuChannel:
    """A guild text channel, a DM channel (``guild_id`` ``None``, ``recipient`` set), or a
    thread (type 11 public, 12 private) inside a guild text channel (``parent_id``).

    ``nsfw`` is Discord's age-restricted flag (a guild channel setting; DMs have none, threads
    inherit their parent's). The thread fields (``owner_id`` to ``thread_members``) are only
    meaningful for threads.
    """

    id: int
    name: str
    guild_id: int | None = None
    type: int = GUILD_TEXT
    position: int = 0
    recipient: EmuUser | None = None
    overwrites: dict[int, EmuOverwrite] = field(default_factory=dict)
    nsfw: bool = False
    parent_id: int | None = None
    owner_id: int | None = None
    archived: bool = False
    locked: bool = False
    invitable: bool = True
    auto_archive_duration: int = 1440
    archive_timestamp: dt.datetime | None = None
    create_timestamp: dt.datetime | None = None
    rate_limit_per_user: int = 0
    message_count: int = 0
    total_message_sent: int = 0
    last_message_id: int | None = None
    thread_members: dict[int, EmuThreadMember] = field(default_factory=dict)

    @property
    def is_dm(self) -> bool:
        return self.type == DM

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES

    @property
    def is_private_thread(self) -> bool:
        return self.type == PRIVATE_THREAD

    @property
    def member_count(self) -> int:
        """Discord's approximate count: it stops at 50."""
        return min(len(self.thread_members), 50)

    def thread_metadata(self) -> JSON:
        created = self.create_timestamp or self.archive_timestamp
        archived_at = self.archive_timestamp or created
        data: JSON = {
            "archived": self.archived,
            "auto_archive_duration": self.auto_archive_duration,
            "archive_timestamp": iso_timestamp(archived_at) if archived_at else None,
            "locked": self.locked,
            "create_timestamp": iso_timestamp(created) if created else None,
        }
        if self.is_private_thread:
            data["invitable"] = self.invitable
        return data

    def payload(self, *, member_id: int | None = None) -> JSON:
        """The channel object. For a thread, ``member_id`` (the bot's id) adds the ``member``
        field when that user has joined, as Discord does on GET /channels/{id}."""
        if self.is_dm:
            assert self.recipient is not None
            return {
                "id": str(self.id),
                "type": DM,
                "last_message_id": None,
                "flags": 0,
                "recipients": [self.recipient.payload()],
            }
        if self.is_thread:
            data: JSON = {
                "id": str(self.id),
                "type": self.type,
                "guild_id": str(self.guild_id),
                "parent_id": str(self.parent_id),
                "owner_id": str(self.owner_id),
                "name": self.name,
                "last_message_id": str(self.last_message_id) if self.last_message_id else None,
                "rate_limit_per_user": self.rate_limit_per_user,
                "message_count": self.message_count,
                "member_count": self.member_count,
                "total_message_sent": self.total_message_sent,
                "thread_metadata": self.thread_metadata(),
                "flags": 0,
            }
            member = self.thread_members.get(member_id) if member_id is not None else None
            if member is not None:
                data["member"] = member.payload(self.id)
            return data
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [o.payload() for o in self.overwrites.values()],
            "nsfw": self.nsfw,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }


@dataclass
class EmuGuild:
    id: int
    name: str
    owner_id: int
    joined_at: dt.datetime
    channels: dict[int, EmuChannel] = field(default_factory=dict)
    roles: dict[int, EmuRole] = field(default_factory=dict)
    members: dict[int, EmuMember] = field(default_factory=dict)
    #: Threads (active and archived) by id; GUILD_CREATE lists only the active ones.
    threads: dict[int, EmuChannel] = field(default_factory=dict)

    @property
    def everyone(self) -> EmuRole:
        return self.roles[self.id]

    def permissions_of(self, user_id: int) -> int:
        """Guild-level permissions: @everyone plus the member's roles; owners and admins get all."""
        member = self.members.get(user_id)
        value = self.everyone.permissions
        if member is not None:
            for role_id in member.role_ids:
                role = self.roles.get(role_id)
                if role is not None:
                    value |= role.permissions
        if user_id == self.owner_id or value & PERM_ADMINISTRATOR:
            return PERM_ALL
        return value

    def channel_permissions_of(self, user_id: int, channel: EmuChannel) -> int:
        """Permissions in ``channel``, by Discord's documented algorithm: the guild-level value
        (owners and admins get all and skip overwrites), then the @everyone overwrite, then
        every role overwrite of the member (denies OR-ed, then allows OR-ed), then the
        member's own overwrite. A thread has no overwrites of its own: it inherits its parent
        channel's permissions, as on Discord."""
        value = self.permissions_of(user_id)
        if value & PERM_ADMINISTRATOR:
            return PERM_ALL
        if channel.is_thread and channel.parent_id is not None:
            parent = self.channels.get(channel.parent_id)
            if parent is not None:
                channel = parent
        overwrites = channel.overwrites

        def apply(allow: int, deny: int) -> None:
            nonlocal value
            value = (value & ~deny) | allow

        everyone = overwrites.get(self.id)
        if everyone is not None:
            apply(everyone.allow, everyone.deny)
        member = self.members.get(user_id)
        role_ids = set(member.role_ids) if member is not None else set()
        allow = deny = 0
        for overwrite in overwrites.values():
            if overwrite.type == OVERWRITE_ROLE and overwrite.id in role_ids:
                allow |= overwrite.allow
                deny |= overwrite.deny
        apply(allow, deny)
        own = overwrites.get(user_id)
        if own is not None and own.type == OVERWRITE_MEMBER:
            apply(own.allow, own.deny)
        return value

    def can_view_thread(self, user_id: int, thread: EmuChannel) -> bool:
        """Whether ``user_id`` sees ``thread``: a public one with its parent channel (View
        Channel there), a private one only as a member of it or with Manage Threads."""
        value = self.channel_permissions_of(user_id, thread)
        if not value & PERM_VIEW_CHANNEL:
            return False
        return (
            not thread.is_private_thread
            or user_id in thread.thread_members
            or bool(value & PERM_MANAGE_THREADS)
        )

    def active_threads(self, user_id: int) -> list[EmuChannel]:
        """The unarchived threads ``user_id`` can see, oldest first."""
        return [
            t for t in self.threads.values() if not t.archived and self.can_view_thread(user_id, t)
        ]

    def create_payload(self, bot_id: int) -> JSON:
        """The GUILD_CREATE body a bot without the GUILD_MEMBERS intent receives: its active
        threads carry the bot's short thread member object (no ids) where it has joined."""
        members = [m.payload() for m in self.members.values() if m.user.id == bot_id]
        threads: list[JSON] = []
        for thread in self.active_threads(bot_id):
            data = thread.payload()
            own = thread.thread_members.get(bot_id)
            if own is not None:
                data["member"] = own.payload()
            threads.append(data)
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "region": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "features": [],
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "max_members": 500000,
            "premium_progress_bar_enabled": False,
            "joined_at": iso_timestamp(self.joined_at),
            "large": False,
            "unavailable": False,
            "member_count": len(self.members),
            "roles": [r.payload() for r in self.roles.values()],
            "channels": [c.payload() for c in self.channels.values()],
            "members": members,
            "threads": threads,
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "emojis": [],
            "stickers": [],
        }

    def partial_payload(self) -> JSON:
        """The ``guild`` object inside an interaction."""
        return {"id": str(self.id), "locale": "en-US", "features": []}


@dataclass
class StoredAttachment:
    """An uploaded file as Discord keeps it; ``data`` holds the exact bytes the bot sent."""

    id: int
    filename: str
    data: bytes
    url: str
    content_type: str | None = None
    description: str | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    def payload(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        dims = png_dimensions(self.data)
        if dims is not None:
            data["width"], data["height"] = dims
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        return data


def guess_content_type(filename: str) -> str | None:
    guessed, _ = mimetypes.guess_type(filename)
    return guessed


def png_dimensions(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG header, as Discord reports them for images."""
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    return None


@dataclass
class MessageVersion:
    """A snapshot of a message's visible state, kept for each create and edit."""

    content: str
    embeds: list[JSON]
    components: list[JSON]
    attachment_ids: list[int]
    flags: int


@dataclass
class StoredMessage:
    """A message as it stands now; ``versions`` keeps every earlier state too."""

    id: int
    channel_id: int
    guild_id: int | None
    author: EmuUser
    created_at: dt.datetime
    content: str = ""
    embeds: list[JSON] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    attachments: list[StoredAttachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    edited_at: dt.datetime | None = None
    deleted: bool = False
    interaction_id: int | None = None
    interaction_payload: JSON | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    message_reference: JSON | None = None
    nonce: str | None = None
    #: The thread started from this message (its id is the message's id), if any.
    thread: EmuChannel | None = None
    versions: list[MessageVersion] = field(default_factory=list)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while this is a deferred "thinking" message nobody has filled in yet."""
        return bool(self.flags & FLAG_LOADING)

    def snapshot(self) -> None:
        self.versions.append(
            MessageVersion(
                content=self.content,
                embeds=[dict(e) for e in self.embeds],
                components=[dict(c) for c in self.components],
                attachment_ids=[a.id for a in self.attachments],
                flags=self.flags,
            )
        )

    def walk_components(self) -> list[JSON]:
        """Every component at any depth (rows, containers, sections, accessories)."""
        found: list[JSON] = []

        def visit(component: JSON) -> None:
            found.append(component)
            for child in component.get("components", []) or []:
                visit(child)
            for key in ("accessory", "component"):
                inner = component.get(key)
                if isinstance(inner, dict):
                    visit(inner)

        for component in self.components:
            visit(component)
        return found

    def buttons(self) -> list[JSON]:
        return [c for c in self.walk_components() if c.get("type") == 2]

    def find_component(self, custom_id: str) -> JSON | None:
        for component in self.walk_components():
            if component.get("custom_id") == custom_id:
                return component
        return None

    def attachment(self, filename: str) -> StoredAttachment:
        for attachment in self.attachments:
            if attachment.filename == filename:
                return attachment
        raise KeyError(f"message {self.id} has no attachment {filename!r}")

    def payload(self, *, include_guild_id: bool = False) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": iso_timestamp(self.created_at),
            "edited_timestamp": iso_timestamp(self.edited_at) if self.edited_at else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.payload() for a in self.attachments],
            "embeds": [dict(e) for e in self.embeds],
            "pinned": False,
            "type": self.type,
            "flags": self.flags,
            "components": [dict(c) for c in self.components],
        }
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            data["application_id"] = str(self.application_id)
        if self.interaction_payload is not None:
            data["interaction_metadata"] = self.interaction_payload
        if self.message_reference is not None:
            data["message_reference"] = self.message_reference
        if self.nonce is not None:
            data["nonce"] = self.nonce
        if self.thread is not None:
            data["thread"] = self.thread.payload()
        if include_guild_id and self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        return data
