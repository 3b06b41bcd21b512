"""Interactions: what the emulator dispatches, and the handle a test holds on each one.

The builders (``base_payload``, ``build_options``, ``message_command_data``,
``modal_submission``) turn a test's intent ("user X runs /imagine prompt:cat", "user X picks
Apps > Report on a message") into the INTERACTION_CREATE body Discord would send, checking
what Discord's client would check (the command is registered, required options are present
and in range, the modal input exists). ``InteractionHandle`` lets the test await and inspect
what the bot did with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import EmulatorUsageError
from .models import EmuChannel, EmuGuild, EmuRole, EmuUser, StoredAttachment, StoredMessage
from .recorder import RecordedRequest, Violation
from .state import EmulatorState
from .validation import CHAT_INPUT, COMMAND_TYPE_NAMES, MESSAGE_COMMAND

JSON = dict[str, Any]

APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
AUTOCOMPLETE = 4
MODAL_SUBMIT = 5

SUB_COMMAND = 1
SUB_COMMAND_GROUP = 2
STRING = 3
INTEGER = 4
BOOLEAN = 5
USER = 6
CHANNEL = 7
ROLE = 8
MENTIONABLE = 9
NUMBER = 10
ATTACHMENT = 11


@dataclass(frozen=True)
class Upload:
    """A file a user attaches to an ATTACHMENT command option."""

    filename: str
    data: bytes
    content_type: str | None = None


@dataclass
class InteractionState:
    """Everything the emulator knows about one dispatched interaction."""

    id: int
    token: str
    type: int
    payload: JSON
    created_at: float
    user: EmuUser
    channel: EmuChannel
    guild: EmuGuild | None
    source_message_id: int | None = None
    callback_type: int | None = None
    callback_data: JSON | None = None
    acknowledged_at: float | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    modal: JSON | None = None
    choices: list[JSON] | None = None
    timed_out: bool = False


class InteractionHandle:
    """A test's view of one interaction: await the bot's answer, then inspect it."""

    def __init__(self, interaction: InteractionState, state: EmulatorState) -> None:
        self._interaction = interaction
        self._state = state

    def __repr__(self) -> str:
        return (
            f"<InteractionHandle id={self.id} type={self.type} "
            f"callback_type={self.callback_type} followups={len(self._interaction.followup_ids)}>"
        )

    @property
    def id(self) -> int:
        return self._interaction.id

    @property
    def token(self) -> str:
        return self._interaction.token

    @property
    def type(self) -> int:
        return self._interaction.type

    @property
    def payload(self) -> JSON:
        """The INTERACTION_CREATE body as dispatched."""
        return self._interaction.payload

    @property
    def user(self) -> EmuUser:
        return self._interaction.user

    @property
    def channel_id(self) -> int:
        return self._interaction.channel.id

    @property
    def acknowledged(self) -> bool:
        return self._interaction.callback_type is not None

    @property
    def callback_type(self) -> int | None:
        """4 message, 5 deferred message, 6 deferred update, 7 update, 8 choices, 9 modal."""
        return self._interaction.callback_type

    @property
    def callback_data(self) -> JSON | None:
        return self._interaction.callback_data

    @property
    def original(self) -> StoredMessage | None:
        """The ``@original`` message as it stands now (for 6/7: the message clicked on)."""
        message_id = self._interaction.original_message_id
        return self._state.messages.get(message_id) if message_id is not None else None

    @property
    def followups(self) -> list[StoredMessage]:
        """Messages sent through the follow-up webhook, in order (a first follow-up after a
        deferral fills the deferred message, so it is both ``original`` and a follow-up)."""
        return [self._state.messages[i] for i in self._interaction.followup_ids]

    @property
    def modal(self) -> JSON | None:
        """The modal the bot answered with (callback type 9), as sent."""
        return self._interaction.modal

    @property
    def choices(self) -> list[JSON] | None:
        """Autocomplete choices the bot answered with (callback type 8)."""
        return self._interaction.choices

    def requests(self) -> list[RecordedRequest]:
        """Every recorded request that used this interaction's id or token."""
        token, ident = self.token, str(self.id)
        return [
            r
            for r in self._state.recorder.requests
            if r.params.get("interaction_token") == token or r.params.get("interaction_id") == ident
        ]

    def rejected_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests() if r.status >= 400]

    def violations(self) -> list[Violation]:
        return [v for v in self._state.recorder.violations if v.interaction_id == self.id]

    async def wait_until(
        self,
        predicate: Callable[[InteractionHandle], bool],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
        what: str = "a condition on the interaction",
    ) -> None:
        def probe() -> bool | None:
            return True if predicate(self) else None

        await self._state.recorder.signal.wait_for(probe, timeout, lambda: f"{what}: {self!r}")

    async def wait_for_ack(self, *, timeout: float = 5.0) -> int:  # noqa: ASYNC109
        """Wait for the interaction callback; return its type."""
        await self.wait_until(lambda h: h.acknowledged, timeout=timeout, what="the acknowledgement")
        assert self.callback_type is not None
        return self.callback_type

    async def wait_for_followups(
        self,
        count: int = 1,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[StoredMessage]:
        await self.wait_until(
            lambda h: len(h.followups) >= count,
            timeout=timeout,
            what=f"{count} follow-up message(s)",
        )
        return self.followups

    async def wait_for_original(
        self,
        predicate: Callable[[StoredMessage], bool] | None = None,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> StoredMessage:
        """Wait until ``@original`` exists, is no longer "thinking", and matches ``predicate``."""

        def ready(handle: InteractionHandle) -> bool:
            message = handle.original
            return (
                message is not None
                and not message.loading
                and (predicate is None or predicate(message))
            )

        await self.wait_until(ready, timeout=timeout, what="the original response")
        original = self.original
        assert original is not None
        return original


# -- payload builders ------------------------------------------------------------------------


def _member_payload(
    state: EmulatorState, guild: EmuGuild, user: EmuUser, channel: EmuChannel
) -> JSON:
    member = guild.members.get(user.id) or state.add_member(guild, user, [])
    # Discord sends the member's permissions in the interaction's channel, overwrites included.
    return member.payload(permissions=guild.channel_permissions_of(user.id, channel))


def base_payload(
    state: EmulatorState,
    *,
    interaction_id: int,
    token: str,
    interaction_type: int,
    data: JSON,
    user: EmuUser,
    channel: EmuChannel,
    locale: str,
    message: StoredMessage | None = None,
) -> JSON:
    """The fields every INTERACTION_CREATE carries, for a guild channel or a DM."""
    guild = state.guild_of(channel)
    channel_data = channel.payload()
    permissions = guild.channel_permissions_of(user.id, channel) if guild is not None else 0
    channel_data["permissions"] = str(permissions)
    payload: JSON = {
        "id": str(interaction_id),
        "application_id": str(state.config.application_id),
        "type": interaction_type,
        "data": data,
        "token": token,
        "version": 1,
        "channel_id": str(channel.id),
        "channel": channel_data,
        "locale": locale,
        "app_permissions": str(state.bot_permissions(channel)),
        "entitlements": [],
        "attachment_size_limit": state.config.limits.attachment_size,
    }
    if guild is not None:
        payload["guild_id"] = str(guild.id)
        payload["guild"] = guild.partial_payload()
        payload["guild_locale"] = "en-US"
        payload["member"] = _member_payload(state, guild, user, channel)
        payload["authorizing_integration_owners"] = {"0": str(guild.id)}
        payload["context"] = 0
    else:
        payload["user"] = user.payload()
        payload["authorizing_integration_owners"] = {"0": "0"}
        payload["context"] = 1
    if message is not None:
        payload["message"] = message.payload()
    return payload


def find_command(
    state: EmulatorState, name: str, guild: EmuGuild | None, *, kind: int = CHAT_INPUT
) -> JSON:
    """A registered command of ``kind`` (a slash command unless told), guild-scoped first, as
    Discord's client resolves it. Names are matched exactly: a context-menu name keeps its
    case, and Discord's client lists each kind only where it belongs (slash commands in the
    chat input, MESSAGE commands under a message's "Apps")."""
    scopes = [guild.id] if guild is not None else []
    for scope_id in [*scopes, None]:
        scope = state.scopes.get(scope_id)
        if scope is None:
            continue
        for command in scope.commands:
            if command["name"] == name and command.get("type", CHAT_INPUT) == kind:
                return command
    what = f"/{name}" if kind == CHAT_INPUT else f"{COMMAND_TYPE_NAMES[kind]} command {name!r}"
    raise EmulatorUsageError(
        f"{what} is not registered (globally or for this guild): sync the command tree first"
    )


@dataclass
class _Resolver:
    """Collects the ``resolved`` map for user/role/channel/attachment options."""

    state: EmulatorState
    guild: EmuGuild | None
    where: EmuChannel
    resolved: JSON = field(default_factory=dict)

    def add(self, kind: str, key: int, value: JSON) -> None:
        self.resolved.setdefault(kind, {})[str(key)] = value

    def user(self, user: EmuUser) -> str:
        self.add("users", user.id, user.payload())
        if self.guild is not None and user.id in self.guild.members:
            member = self.guild.members[user.id]
            permissions = self.guild.channel_permissions_of(user.id, self.where)
            data = member.payload(permissions=permissions, with_user=False)
            self.add("members", user.id, data)
        return str(user.id)

    def role(self, role: EmuRole) -> str:
        self.add("roles", role.id, role.payload())
        return str(role.id)

    def channel(self, channel: EmuChannel) -> str:
        data = channel.payload()
        data["permissions"] = str(self.state.bot_permissions(channel))
        self.add("channels", channel.id, data)
        return str(channel.id)

    def attachment(self, upload: Upload, channel: EmuChannel) -> str:
        attachment_id = self.state.ids.next()
        stored = StoredAttachment(
            id=attachment_id,
            filename=upload.filename,
            data=upload.data,
            url=self.state.attachment_url(channel.id, attachment_id, upload.filename),
            content_type=upload.content_type,
            ephemeral=True,
        )
        self.state.uploads[attachment_id] = stored
        self.add("attachments", attachment_id, stored.payload())
        return str(attachment_id)


def _convert(
    schema: JSON, value: Any, resolver: _Resolver, channel: EmuChannel, *, focused: bool
) -> Any:
    """A test-supplied option value as Discord puts it on the wire, checked like the client."""
    name, kind = schema["name"], schema["type"]
    state = resolver.state

    def bad(reason: str) -> EmulatorUsageError:
        return EmulatorUsageError(f"option {name!r}: {reason} (got {value!r})")

    if focused:
        return str(value)
    if kind == STRING:
        if not isinstance(value, str):
            raise bad("expected a string")
        if not schema.get("min_length", 0) <= len(value) <= schema.get("max_length", 6000):
            raise bad("length out of range")
    elif kind == INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("expected an integer")
    elif kind == NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("expected a number")
    elif kind == BOOLEAN:
        if not isinstance(value, bool):
            raise bad("expected a boolean")
    elif kind in (USER, MENTIONABLE) and isinstance(value, EmuUser):
        return resolver.user(value)
    elif kind in (ROLE, MENTIONABLE) and isinstance(value, EmuRole):
        return resolver.role(value)
    elif kind == USER and isinstance(value, int) and value in state.users:
        return resolver.user(state.users[value])
    elif kind == CHANNEL and isinstance(value, EmuChannel):
        return resolver.channel(value)
    elif kind == CHANNEL and isinstance(value, int) and value in state.channels:
        return resolver.channel(state.channels[value])
    elif kind == ATTACHMENT and isinstance(value, Upload):
        return resolver.attachment(value, channel)
    else:
        raise bad(f"cannot be given for an option of type {kind}")
    if kind in (INTEGER, NUMBER):
        low, high = schema.get("min_value"), schema.get("max_value")
        if (low is not None and value < low) or (high is not None and value > high):
            raise bad(f"must be within [{low}, {high}]")
    choices = schema.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise bad("not one of the declared choices")
    return value


def build_options(
    state: EmulatorState,
    command: JSON,
    subcommands: Sequence[str],
    values: Mapping[str, Any],
    channel: EmuChannel,
    *,
    focused: str | None = None,
) -> tuple[list[JSON], JSON]:
    """``options`` (nested under any subcommand path) and ``resolved`` for a command."""
    resolver = _Resolver(state, state.guild_of(channel), channel)
    schemas: list[JSON] = command.get("options") or []
    chain: list[JSON] = []
    for sub in subcommands:
        match = next(
            (o for o in schemas if o["name"] == sub and o["type"] in (1, 2)),
            None,
        )
        if match is None:
            raise EmulatorUsageError(f"/{command['name']} has no subcommand {sub!r}")
        chain.append(match)
        schemas = match.get("options") or []
    if any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in schemas):
        raise EmulatorUsageError(f"/{command['name']} needs a subcommand; name it: 'cmd sub'")
    by_name = {o["name"]: o for o in schemas}
    unknown = set(values) - set(by_name)
    if unknown:
        raise EmulatorUsageError(f"/{command['name']} has no option(s) {sorted(unknown)}")
    missing = [o["name"] for o in schemas if o.get("required") and o["name"] not in values]
    if missing and focused is None:
        raise EmulatorUsageError(f"/{command['name']} is missing required option(s) {missing}")
    leaf: list[JSON] = []
    for name, value in values.items():
        schema = by_name[name]
        is_focused = name == focused
        item: JSON = {
            "name": name,
            "type": schema["type"],
            "value": _convert(schema, value, resolver, channel, focused=is_focused),
        }
        if is_focused:
            item["focused"] = True
        leaf.append(item)
    options = leaf
    for parent in reversed(chain):
        options = [{"name": parent["name"], "type": parent["type"], "options": options}]
    return options, resolver.resolved


def command_data(command: JSON, options: list[JSON], resolved: JSON) -> JSON:
    data: JSON = {
        "id": command["id"],
        "name": command["name"],
        "type": command.get("type", 1),
        "options": options,
    }
    if "guild_id" in command:
        data["guild_id"] = command["guild_id"]
    if resolved:
        data["resolved"] = resolved
    return data


def message_command_data(command: JSON, message: StoredMessage) -> JSON:
    """``data`` of a MESSAGE command run on ``message``: Discord names the message in
    ``target_id`` and sends all of it under ``resolved.messages`` (there are no options)."""
    data: JSON = {
        "id": command["id"],
        "name": command["name"],
        "type": MESSAGE_COMMAND,
        "target_id": str(message.id),
        "resolved": {"messages": {str(message.id): message.payload()}},
    }
    if "guild_id" in command:
        data["guild_id"] = command["guild_id"]
    return data


def modal_submission(modal: JSON, values: Mapping[str, Any]) -> list[JSON]:
    """What Discord sends back for a modal the user filled in with ``values`` by custom_id."""
    used: set[str] = set()

    def convert(component: JSON) -> JSON:
        kind = component.get("type")
        if kind == 1:
            return {"type": 1, "components": [convert(c) for c in component["components"]]}
        if kind == 18:
            return {
                "type": 18,
                "id": component.get("id"),
                "component": convert(component["component"]),
            }
        custom_id = component.get("custom_id")
        if custom_id is None:
            return {"type": kind, "id": component.get("id")}
        used.add(custom_id)
        if kind == 4:
            value = values.get(custom_id, component.get("value") or "")
            if not isinstance(value, str):
                raise EmulatorUsageError(f"text input {custom_id!r} takes a string")
            if component.get("required", True) and not value:
                raise EmulatorUsageError(f"text input {custom_id!r} is required")
            low, high = component.get("min_length", 0), component.get("max_length", 4000)
            if value and not low <= len(value) <= high:
                raise EmulatorUsageError(f"text input {custom_id!r} must be {low}-{high} chars")
            return {"type": 4, "id": component.get("id"), "custom_id": custom_id, "value": value}
        selected = values.get(custom_id, [])
        if isinstance(selected, str):
            selected = [selected]
        return {"type": kind, "id": component.get("id"), "custom_id": custom_id, "values": selected}

    submitted = [convert(c) for c in modal.get("components", [])]
    unknown = set(values) - used
    if unknown:
        raise EmulatorUsageError(f"the modal has no input(s) {sorted(unknown)}")
    return submitted
