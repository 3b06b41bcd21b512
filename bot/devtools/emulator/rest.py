"""The REST half of the emulator: one aiohttp handler that routes, records and answers.

Every request under ``/api/v10`` (and the ``/attachments/...`` CDN) goes through
``RestApi.handle``: match a route template, parse the JSON or multipart body, check the bot
token, apply any injected fault, run the handler, and record the whole exchange. Handlers
raise ``DiscordHTTPError`` for Discord's rejections; a rejection that names a violation is
added to ``emu.violations``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from . import errors
from .callbacks import InteractionService
from .errors import DiscordHTTPError, json_response
from .faults import FaultInjector
from .models import (
    PERM_CREATE_PRIVATE_THREADS,
    PERM_CREATE_PUBLIC_THREADS,
    PERM_MANAGE_THREADS,
    PERM_SEND_MESSAGES,
    PERM_SEND_MESSAGES_IN_THREADS,
    PRIVATE_THREAD,
    EmuChannel,
    StoredMessage,
)
from .ratelimits import RateLimiter, RateLimits
from .recorder import AuthState, RecordedFile, RecordedRequest, Recorder
from .state import EmulatorState, describe_form_errors

JSON = dict[str, Any]

API_PREFIX = "/api/v10"

_log = logging.getLogger(__name__)


@dataclass
class Reply:
    """A handler's answer: JSON ``body``, raw bytes (the CDN), or nothing (204)."""

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    content_type: str = "application/json"

    def to_response(self) -> web.Response:
        if self.raw is not None:
            return web.Response(body=self.raw, status=self.status, content_type=self.content_type)
        if self.body is None:
            return web.Response(status=self.status)
        return json_response(self.body, status=self.status)


@dataclass
class RestContext:
    """What a handler sees: path parameters, query, parsed body and uploaded files."""

    params: dict[str, str]
    query: Mapping[str, str]
    body: Any
    files: list[RecordedFile]

    def int_param(self, name: str, error: Callable[[], DiscordHTTPError]) -> int:
        try:
            return int(self.params[name])
        except ValueError:
            raise error() from None

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true")

    def json_object(self) -> JSON:
        if self.body is None:
            return {}
        if not isinstance(self.body, dict):
            raise errors.invalid_json()
        return self.body


Handler = Callable[[RestContext], Reply]


@dataclass(frozen=True)
class RouteSpec:
    method: str
    template: str
    name: str
    handler: Handler
    needs_bot_token: bool = True
    under_api: bool = True

    @property
    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"(\{\w+\})", self.template)
        regex = "".join(
            f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts
        )
        return re.compile(regex)


class RestApi:
    """Routes, records and answers the bot's HTTP requests."""

    def __init__(
        self,
        state: EmulatorState,
        interactions: InteractionService,
        faults: FaultInjector,
        recorder: Recorder,
    ) -> None:
        self.state = state
        self.interactions = interactions
        self.faults = faults
        self.recorder = recorder
        #: Discord's per-route rate limits, when set (off by default; see ratelimits.py).
        self.limiter: RateLimiter | None = None
        self.routes = self._routes()
        self._patterns = [(spec, spec.pattern) for spec in self.routes]

    @property
    def rate_limits(self) -> RateLimits | None:
        return None if self.limiter is None else self.limiter.limits

    @rate_limits.setter
    def rate_limits(self, limits: RateLimits | None) -> None:
        self.limiter = None if limits is None else RateLimiter(limits)

    # -- infrastructure ----------------------------------------------------------------------

    def _match(self, path: str) -> list[tuple[RouteSpec, dict[str, str]]]:
        under_api = path.startswith(API_PREFIX + "/")
        relative = path[len(API_PREFIX) :] if under_api else path
        return [
            (spec, match.groupdict())
            for spec, pattern in self._patterns
            if spec.under_api == under_api and (match := pattern.fullmatch(relative))
        ]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        seq = self.recorder.next_request_seq()
        candidates = self._match(request.path)
        chosen = next((c for c in candidates if c[0].method == request.method), None)
        spec, params = chosen if chosen else (None, candidates[0][1] if candidates else {})
        record = RecordedRequest(
            seq=seq,
            at=self.state.clock.monotonic(),
            method=request.method,
            path=request.path,
            query=dict(request.query),
            route=spec.name if spec else None,
            template=spec.template if spec else None,
            params=params,
            headers=_redacted_headers(request),
            auth=self._auth_state(request),
            json=None,
            files=[],
        )
        self.interactions.check_deadlines()
        limit_headers: dict[str, str] = {}
        try:
            record.json, record.files = await _parse_body(request)
            if spec is None:
                raise errors.method_not_allowed() if candidates else errors.not_found()
            if spec.needs_bot_token and not record.authorized:
                raise errors.unauthorized()
            rule = self.faults.take(record)
            if rule is not None:
                response, body = rule.response(record)
                record.status, record.response, record.fault_injected = response.status, body, True
                return response
            if self.limiter is not None:
                verdict = self.limiter.check(spec.name, params, self.state.clock.monotonic())
                if verdict is not None:
                    limit_headers = verdict.headers
                    if verdict.refused is not None:
                        record.status, record.response = 429, verdict.body
                        record.rate_limited = True
                        return verdict.refused
            reply = spec.handler(RestContext(params, request.query, record.json, record.files))
            record.status, record.response = reply.status, reply.body
            answer = reply.to_response()
            answer.headers.update(limit_headers)
            return answer
        except DiscordHTTPError as error:
            self._note_violation(record, error)
            record.status, record.response = error.status, error.body()
            return json_response(error.body(), status=error.status, headers=limit_headers)
        except Exception as error:  # noqa: BLE001 - logged and recorded as a violation
            # An emulator bug. Answer 400 (a 5xx would make discord.py retry for ~25 s) and
            # list it with the violations so the test fails loudly.
            _log.exception("emulator error answering %s %s", record.method, record.path)
            body = {"message": f"Discord emulator internal error: {error!r}", "code": -1}
            self.state.violation("emulator_error", f"{record.method} {record.path}: {error!r}")
            record.status, record.response = 400, body
            return json_response(body, status=400)
        finally:
            self.recorder.add_request(record)

    def _auth_state(self, request: web.Request) -> AuthState:
        header = request.headers.get("Authorization")
        if header is None:
            return "missing"
        return "valid" if header == f"Bot {self.state.config.token}" else "invalid"

    def _note_violation(self, record: RecordedRequest, error: DiscordHTTPError) -> None:
        if error.violation is None:
            return
        interaction_id: int | None = None
        if "interaction_id" in record.params and record.params["interaction_id"].isdigit():
            interaction_id = int(record.params["interaction_id"])
        elif "interaction_token" in record.params:
            found = self.interactions.interaction_for_token(record.params["interaction_token"])
            interaction_id = found.id if found else None
        self.state.violation(
            error.violation,
            f"{record.method} {record.template or record.path}: {describe_form_errors(error)}",
            code=error.code,
            request_seq=record.seq,
            interaction_id=interaction_id,
        )

    def _routes(self) -> list[RouteSpec]:
        s = self
        app = "/applications/{application_id}"
        hook = "/webhooks/{application_id}/{interaction_token}"
        msg = "/channels/{channel_id}/messages/{message_id}"
        members = "/channels/{channel_id}/thread-members"
        return [
            RouteSpec("GET", "/users/@me", "get_current_user", s.get_current_user),
            RouteSpec("POST", "/users/@me/channels", "create_dm", s.create_dm),
            RouteSpec("GET", "/users/{user_id}", "get_user", s.get_user),
            RouteSpec("GET", "/oauth2/applications/@me", "get_application", s.get_application),
            RouteSpec("GET", "/applications/@me", "get_current_application", s.get_application),
            RouteSpec("GET", "/gateway", "get_gateway", s.get_gateway, needs_bot_token=False),
            RouteSpec("GET", "/gateway/bot", "get_gateway_bot", s.get_gateway_bot),
            RouteSpec("GET", f"{app}/commands", "get_global_commands", s.get_commands),
            RouteSpec("PUT", f"{app}/commands", "bulk_overwrite_global_commands", s.put_commands),
            RouteSpec("POST", f"{app}/commands", "create_global_command", s.post_command),
            RouteSpec("GET", f"{app}/commands/{{command_id}}", "get_global_command", s.get_command),
            RouteSpec(
                "PATCH", f"{app}/commands/{{command_id}}", "edit_global_command", s.patch_command
            ),
            RouteSpec(
                "DELETE", f"{app}/commands/{{command_id}}", "delete_global_command", s.del_command
            ),
            RouteSpec(
                "GET", f"{app}/guilds/{{guild_id}}/commands", "get_guild_commands", s.get_commands
            ),
            RouteSpec(
                "PUT",
                f"{app}/guilds/{{guild_id}}/commands",
                "bulk_overwrite_guild_commands",
                s.put_commands,
            ),
            RouteSpec(
                "POST",
                f"{app}/guilds/{{guild_id}}/commands",
                "create_guild_command",
                s.post_command,
            ),
            RouteSpec(
                "GET",
                f"{app}/guilds/{{guild_id}}/commands/{{command_id}}",
                "get_guild_command",
                s.get_command,
            ),
            RouteSpec(
                "PATCH",
                f"{app}/guilds/{{guild_id}}/commands/{{command_id}}",
                "edit_guild_command",
                s.patch_command,
            ),
            RouteSpec(
                "DELETE",
                f"{app}/guilds/{{guild_id}}/commands/{{command_id}}",
                "delete_guild_command",
                s.del_command,
            ),
            RouteSpec(
                "POST",
                "/interactions/{interaction_id}/{interaction_token}/callback",
                "interaction_callback",
                s.interaction_callback,
                needs_bot_token=False,
            ),
            RouteSpec("POST", hook, "create_followup_message", s.followup, needs_bot_token=False),
            RouteSpec(
                "GET",
                f"{hook}/messages/@original",
                "get_original_response",
                s.get_hook_message,
                needs_bot_token=False,
            ),
            RouteSpec(
                "PATCH",
                f"{hook}/messages/@original",
                "edit_original_response",
                s.edit_hook_message,
                needs_bot_token=False,
            ),
            RouteSpec(
                "DELETE",
                f"{hook}/messages/@original",
                "delete_original_response",
                s.delete_hook_message,
                needs_bot_token=False,
            ),
            RouteSpec(
                "GET",
                f"{hook}/messages/{{message_id}}",
                "get_followup_message",
                s.get_hook_message,
                needs_bot_token=False,
            ),
            RouteSpec(
                "PATCH",
                f"{hook}/messages/{{message_id}}",
                "edit_followup_message",
                s.edit_hook_message,
                needs_bot_token=False,
            ),
            RouteSpec(
                "DELETE",
                f"{hook}/messages/{{message_id}}",
                "delete_followup_message",
                s.delete_hook_message,
                needs_bot_token=False,
            ),
            RouteSpec("GET", "/channels/{channel_id}", "get_channel", s.get_channel),
            RouteSpec("PATCH", "/channels/{channel_id}", "edit_channel", s.edit_channel),
            RouteSpec("DELETE", "/channels/{channel_id}", "delete_channel", s.delete_channel),
            RouteSpec(
                "POST",
                "/channels/{channel_id}/threads",
                "start_thread_without_message",
                s.start_thread,
            ),
            RouteSpec(
                "POST", f"{msg}/threads", "start_thread_with_message", s.start_thread_from_message
            ),
            RouteSpec("PUT", f"{members}/@me", "join_thread", s.join_thread),
            RouteSpec("DELETE", f"{members}/@me", "leave_thread", s.leave_thread),
            RouteSpec("PUT", f"{members}/{{user_id}}", "add_thread_member", s.add_thread_member),
            RouteSpec(
                "DELETE", f"{members}/{{user_id}}", "remove_thread_member", s.remove_thread_member
            ),
            RouteSpec("GET", f"{members}/{{user_id}}", "get_thread_member", s.get_thread_member),
            RouteSpec("GET", members, "get_thread_members", s.get_thread_members),
            RouteSpec("GET", "/channels/{channel_id}/messages", "list_messages", s.list_messages),
            RouteSpec(
                "POST", "/channels/{channel_id}/messages", "create_message", s.create_message
            ),
            RouteSpec("GET", msg, "get_message", s.get_message),
            RouteSpec("PATCH", msg, "edit_message", s.edit_message),
            RouteSpec("DELETE", msg, "delete_message", s.delete_message),
            RouteSpec("POST", "/channels/{channel_id}/typing", "trigger_typing", s.typing),
            RouteSpec("PUT", f"{msg}/reactions/{{emoji}}/@me", "add_reaction", s.reaction),
            RouteSpec("DELETE", f"{msg}/reactions/{{emoji}}/@me", "remove_reaction", s.reaction),
            RouteSpec("GET", "/guilds/{guild_id}", "get_guild", s.get_guild),
            RouteSpec("GET", "/guilds/{guild_id}/channels", "get_guild_channels", s.get_channels),
            RouteSpec("GET", "/guilds/{guild_id}/roles", "get_guild_roles", s.get_roles),
            RouteSpec(
                "GET", "/guilds/{guild_id}/threads/active", "get_active_threads", s.active_threads
            ),
            RouteSpec(
                "GET", "/guilds/{guild_id}/members/{user_id}", "get_guild_member", s.get_member
            ),
            RouteSpec(
                "GET",
                "/attachments/{channel_id}/{attachment_id}/{filename}",
                "cdn_attachment",
                s.cdn_attachment,
                needs_bot_token=False,
                under_api=False,
            ),
        ]

    # -- identity, application, gateway -----------------------------------------------------

    def get_current_user(self, ctx: RestContext) -> Reply:
        user = self.state.bot_user.payload()
        user.update(verified=True, mfa_enabled=False, email=None, locale="en-US", premium_type=0)
        return Reply(body=user)

    def get_user(self, ctx: RestContext) -> Reply:
        user = self.state.users.get(ctx.int_param("user_id", errors.unknown_user))
        if user is None:
            raise errors.unknown_user()
        return Reply(body=user.payload())

    def get_application(self, ctx: RestContext) -> Reply:
        config = self.state.config
        return Reply(
            body={
                "id": str(config.application_id),
                "name": config.bot_name,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": self.state.owner.payload(),
                "team": None,
                "flags": 0,
                "bot": self.state.bot_user.payload(),
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "tags": [],
                "approximate_guild_count": len(self.state.guilds),
                "integration_types_config": {"0": {}},
            }
        )

    def get_gateway(self, ctx: RestContext) -> Reply:
        return Reply(body={"url": self.state.gateway_url})

    def get_gateway_bot(self, ctx: RestContext) -> Reply:
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return Reply(
            body={"url": self.state.gateway_url, "shards": 1, "session_start_limit": limit}
        )

    # -- application commands ----------------------------------------------------------------

    def _command_scope(self, ctx: RestContext) -> int | None:
        if ctx.int_param("application_id", errors.unknown_application) != (
            self.state.config.application_id
        ):
            raise errors.unknown_application()
        if "guild_id" in ctx.params:
            return ctx.int_param("guild_id", errors.unknown_guild)
        return None

    def get_commands(self, ctx: RestContext) -> Reply:
        return Reply(body=self.state.scope(self._command_scope(ctx)).commands)

    def put_commands(self, ctx: RestContext) -> Reply:
        scope = self._command_scope(ctx)
        return Reply(body=self.state.overwrite_commands(scope, ctx.body))

    def post_command(self, ctx: RestContext) -> Reply:
        scope = self._command_scope(ctx)
        body = ctx.json_object()
        existed = any(c["name"] == body.get("name") for c in self.state.scope(scope).commands)
        command = self.state.upsert_command(scope, body)
        return Reply(status=200 if existed else 201, body=command)

    def get_command(self, ctx: RestContext) -> Reply:
        scope = self._command_scope(ctx)
        command_id = ctx.int_param("command_id", errors.unknown_command)
        return Reply(body=self.state.find_command(scope, command_id))

    def patch_command(self, ctx: RestContext) -> Reply:
        scope = self._command_scope(ctx)
        old = self.state.find_command(scope, ctx.int_param("command_id", errors.unknown_command))
        merged = {k: v for k, v in {**old, **ctx.json_object()}.items() if k != "version"}
        return Reply(body=self.state.upsert_command(scope, merged))

    def del_command(self, ctx: RestContext) -> Reply:
        scope_id = self._command_scope(ctx)
        command = self.state.find_command(
            scope_id, ctx.int_param("command_id", errors.unknown_command)
        )
        scope = self.state.scope(scope_id)
        scope.commands = [c for c in scope.commands if c is not command]
        return Reply(status=204)

    # -- interactions and their webhook ------------------------------------------------------

    def interaction_callback(self, ctx: RestContext) -> Reply:
        body = self.interactions.callback(
            ctx.int_param(
                "interaction_id", lambda: errors.unknown_interaction("unknown_interaction")
            ),
            ctx.params["interaction_token"],
            ctx.body,
            ctx.files,
            with_response=ctx.flag("with_response"),
        )
        return Reply(status=204) if body is None else Reply(body=body)

    def _app_id(self, ctx: RestContext) -> int:
        return ctx.int_param("application_id", errors.unknown_webhook)

    def followup(self, ctx: RestContext) -> Reply:
        message = self.interactions.create_followup(
            self._app_id(ctx), ctx.params["interaction_token"], ctx.json_object(), ctx.files
        )
        return Reply(body=message.payload()) if ctx.flag("wait") else Reply(status=204)

    def _hook_message(self, ctx: RestContext) -> StoredMessage:
        return self.interactions.webhook_message(
            self._app_id(ctx),
            ctx.params["interaction_token"],
            ctx.params.get("message_id", "@original"),
        )

    def get_hook_message(self, ctx: RestContext) -> Reply:
        return Reply(body=self._hook_message(ctx).payload())

    def edit_hook_message(self, ctx: RestContext) -> Reply:
        message = self._hook_message(ctx)
        self.state.edit_message(message, ctx.json_object(), ctx.files)
        return Reply(body=message.payload())

    def delete_hook_message(self, ctx: RestContext) -> Reply:
        self.state.delete_message(self._hook_message(ctx))
        return Reply(status=204)

    # -- channels and messages ---------------------------------------------------------------

    def _channel(self, ctx: RestContext) -> Any:
        channel = self.state.channels.get(ctx.int_param("channel_id", errors.unknown_channel))
        if channel is None:
            raise errors.unknown_channel()
        guild = self.state.guild_of(channel)
        if guild is not None and not self.state.bot_is_member(guild):
            raise errors.missing_access()
        if not self.state.can_view(self.state.bot_user, channel):
            raise errors.missing_access()
        return channel

    def _message(self, ctx: RestContext) -> StoredMessage:
        channel = self._channel(ctx)
        message = self.state.messages.get(ctx.int_param("message_id", errors.unknown_message))
        if (
            message is None
            or message.deleted
            or message.ephemeral
            or message.channel_id != channel.id
        ):
            raise errors.unknown_message()
        return message

    def get_channel(self, ctx: RestContext) -> Reply:
        return Reply(body=self._channel(ctx).payload(member_id=self.state.bot_user.id))

    def list_messages(self, ctx: RestContext) -> Reply:
        channel = self._channel(ctx)
        limit = max(1, min(100, int(ctx.query.get("limit", "50"))))
        before = int(ctx.query.get("before", str(1 << 63)))
        after = int(ctx.query.get("after", "0"))
        visible = [
            m
            for m in self.state.messages.values()
            if m.channel_id == channel.id
            and not m.deleted
            and not m.ephemeral
            and after < m.id < before
        ]
        visible.sort(key=lambda m: m.id, reverse=True)
        return Reply(body=[m.payload() for m in visible[:limit]])

    def create_message(self, ctx: RestContext) -> Reply:
        channel = self._channel(ctx)
        bot = self.state.bot_user
        if channel.is_dm:
            if channel.recipient is not None and not channel.recipient.accepts_dms:
                raise errors.cannot_message_user()
        elif channel.is_thread:
            self.state.check_thread_post(bot, channel, self.state.bot_permissions(channel))
        elif not self.state.bot_permissions(channel) & PERM_SEND_MESSAGES:
            raise errors.missing_permissions()
        if channel.is_thread:
            self.state.before_thread_post(bot, channel)
        message = self.state.create_message(channel, ctx.json_object(), ctx.files)
        if channel.is_thread:
            self.state.after_thread_post(bot, channel)
        return Reply(body=message.payload())

    def get_message(self, ctx: RestContext) -> Reply:
        return Reply(body=self._message(ctx).payload())

    def edit_message(self, ctx: RestContext) -> Reply:
        message = self._message(ctx)
        if message.author.id != self.state.bot_user.id:
            raise errors.cannot_edit_foreign_message()
        channel = self.state.channels[message.channel_id]
        if channel.is_thread:
            self.state.check_thread_edit(channel, self.state.bot_permissions(channel))
        self.state.edit_message(message, ctx.json_object(), ctx.files)
        return Reply(body=message.payload())

    def delete_message(self, ctx: RestContext) -> Reply:
        message = self._message(ctx)
        channel = self.state.channels[message.channel_id]
        if (
            channel.is_thread
            and channel.locked
            and channel.archived
            and not self.state.bot_permissions(channel) & PERM_MANAGE_THREADS
        ):
            # In a locked thread, deleting needs the thread active (or Manage Threads).
            raise errors.thread_archived(403)
        self.state.delete_message(message)
        return Reply(status=204)

    # -- threads -----------------------------------------------------------------------------

    def _thread(self, ctx: RestContext) -> EmuChannel:
        channel: EmuChannel = self._channel(ctx)
        if not channel.is_thread:
            raise errors.wrong_channel_type()
        return channel

    def start_thread(self, ctx: RestContext) -> Reply:
        """Start Thread without Message: type 11 needs Create Public Threads, type 12 (the
        default) Create Private Threads, both in the parent channel."""
        parent = self._channel(ctx)
        body = ctx.json_object()
        if not parent.is_dm and parent.type == 0:
            kind = body.get("type") or PRIVATE_THREAD
            private = kind == PRIVATE_THREAD
            needed = PERM_CREATE_PRIVATE_THREADS if private else PERM_CREATE_PUBLIC_THREADS
            if kind in (11, 12) and not self.state.bot_permissions(parent) & needed:
                raise errors.missing_permissions()
        thread = self.state.create_thread(parent, body, owner=self.state.bot_user)
        return Reply(status=201, body=thread.payload(member_id=self.state.bot_user.id))

    def start_thread_from_message(self, ctx: RestContext) -> Reply:
        """Start Thread from Message: a public thread with the message's id (Create Public
        Threads); a message has at most one (400 160004)."""
        message = self._message(ctx)
        parent = self.state.channels[message.channel_id]
        allowed = self.state.bot_permissions(parent) & PERM_CREATE_PUBLIC_THREADS
        if not parent.is_dm and parent.type == 0 and not allowed:
            raise errors.missing_permissions()
        thread = self.state.create_thread(
            parent, ctx.json_object(), owner=self.state.bot_user, message=message
        )
        return Reply(status=201, body=thread.payload(member_id=self.state.bot_user.id))

    def edit_channel(self, ctx: RestContext) -> Reply:
        """Modify Channel, for threads (Discord's rules): ``name``, ``archived`` and
        ``auto_archive_duration`` need Manage Threads or being the thread's creator (any
        member may unarchive an unlocked thread); ``locked``, ``invitable`` and
        ``rate_limit_per_user`` need Manage Threads. A locked thread takes no change from a
        non-moderator but unarchiving by its creator; an
        archived one only changes along with ``archived: false`` (400 50083 otherwise)."""
        channel = self._channel(ctx)
        if not channel.is_thread:
            raise NotImplementedError("PATCH /channels/{id} is only emulated for threads")
        body = ctx.json_object()
        permissions = self.state.bot_permissions(channel)
        moderator = bool(permissions & PERM_MANAGE_THREADS)
        creator = channel.owner_id == self.state.bot_user.id
        changing = {k for k, v in body.items() if v is not None}
        if not moderator:
            member = self.state.bot_user.id in channel.thread_members
            if changing & {"locked", "invitable", "rate_limit_per_user"}:
                raise errors.missing_permissions()
            if changing & {"name", "auto_archive_duration"} and not creator:
                raise errors.missing_permissions()
            if "archived" in changing:
                unarchiving = body["archived"] is False
                allowed = creator or (unarchiving and member and not channel.locked)
                if not allowed:
                    raise errors.missing_permissions()
            if channel.locked and changing - {"archived"}:
                raise errors.missing_permissions()
        if channel.archived and body.get("archived") is not False and changing - {"archived"}:
            raise errors.thread_archived()
        self.state.update_thread(channel, body)
        return Reply(body=channel.payload(member_id=self.state.bot_user.id))

    def delete_channel(self, ctx: RestContext) -> Reply:
        """Delete Channel, for threads: needs Manage Threads (THREAD_DELETE)."""
        channel = self._channel(ctx)
        if not channel.is_thread:
            raise NotImplementedError("DELETE /channels/{id} is only emulated for threads")
        if not self.state.bot_permissions(channel) & PERM_MANAGE_THREADS:
            raise errors.missing_permissions()
        payload = channel.payload()
        self.state.delete_thread(channel)
        return Reply(body=payload)

    def join_thread(self, ctx: RestContext) -> Reply:
        """Join Thread: not archived (400 50083); a private thread only with Manage Threads or
        as a member already (403 50001 from ``_channel`` otherwise)."""
        thread = self._thread(ctx)
        if thread.archived:
            raise errors.thread_archived()
        self.state.add_thread_member(thread, self.state.bot_user)
        return Reply(status=204)

    def leave_thread(self, ctx: RestContext) -> Reply:
        thread = self._thread(ctx)
        if thread.archived:
            raise errors.thread_archived()
        self.state.remove_thread_member(thread, self.state.bot_user.id)
        return Reply(status=204)

    def _thread_user(self, ctx: RestContext, thread: EmuChannel) -> int:
        user_id = ctx.int_param("user_id", errors.unknown_user)
        guild = self.state.guild_of(thread)
        if user_id not in self.state.users:
            raise errors.unknown_user()
        if guild is None or user_id not in guild.members:
            raise errors.unknown_member()
        return user_id

    def add_thread_member(self, ctx: RestContext) -> Reply:
        """Add Thread Member: needs Send Messages in Threads, a thread that is not archived,
        and, for a private thread that is not ``invitable``, Manage Threads. 204 also when
        the user was a member already."""
        thread = self._thread(ctx)
        user_id = self._thread_user(ctx, thread)
        permissions = self.state.bot_permissions(thread)
        if not permissions & PERM_SEND_MESSAGES_IN_THREADS:
            raise errors.missing_permissions()
        if (
            thread.is_private_thread
            and not thread.invitable
            and not permissions & PERM_MANAGE_THREADS
            and thread.owner_id != self.state.bot_user.id
        ):
            raise errors.missing_permissions()
        if thread.archived:
            raise errors.thread_archived()
        self.state.add_thread_member(thread, self.state.users[user_id])
        return Reply(status=204)

    def remove_thread_member(self, ctx: RestContext) -> Reply:
        """Remove Thread Member: Manage Threads, or the creator of a private thread; the
        thread not archived."""
        thread = self._thread(ctx)
        user_id = self._thread_user(ctx, thread)
        moderator = self.state.bot_permissions(thread) & PERM_MANAGE_THREADS
        creator = thread.is_private_thread and thread.owner_id == self.state.bot_user.id
        if not (moderator or creator):
            raise errors.missing_permissions()
        if thread.archived:
            raise errors.thread_archived()
        self.state.remove_thread_member(thread, user_id)
        return Reply(status=204)

    def _thread_member_payload(self, ctx: RestContext, thread: EmuChannel, user_id: int) -> Any:
        data = thread.thread_members[user_id].payload(thread.id)
        guild = self.state.guild_of(thread)
        if ctx.flag("with_member") and guild is not None and user_id in guild.members:
            data["member"] = guild.members[user_id].payload()
        return data

    def get_thread_member(self, ctx: RestContext) -> Reply:
        thread = self._thread(ctx)
        user_id = ctx.int_param("user_id", errors.unknown_member)
        if user_id not in thread.thread_members:
            raise errors.unknown_member()
        return Reply(body=self._thread_member_payload(ctx, thread, user_id))

    def get_thread_members(self, ctx: RestContext) -> Reply:
        thread = self._thread(ctx)
        return Reply(
            body=[self._thread_member_payload(ctx, thread, u) for u in thread.thread_members]
        )

    def typing(self, ctx: RestContext) -> Reply:
        self._channel(ctx)
        return Reply(status=204)

    def reaction(self, ctx: RestContext) -> Reply:
        self._message(ctx)
        return Reply(status=204)

    def create_dm(self, ctx: RestContext) -> Reply:
        recipient = str(ctx.json_object().get("recipient_id"))
        user = self.state.users.get(int(recipient)) if recipient.isdigit() else None
        if user is None:
            raise errors.unknown_user()
        return Reply(body=self.state.dm_channel(user).payload())

    # -- guilds ------------------------------------------------------------------------------

    def _guild(self, ctx: RestContext) -> Any:
        guild = self.state.guilds.get(ctx.int_param("guild_id", errors.unknown_guild))
        if guild is None:
            raise errors.unknown_guild()
        return guild

    def get_guild(self, ctx: RestContext) -> Reply:
        data = self._guild(ctx).create_payload(self.state.bot_user.id)
        for key in ("channels", "members", "threads", "presences", "voice_states"):
            data.pop(key, None)
        return Reply(body=data)

    def get_channels(self, ctx: RestContext) -> Reply:
        return Reply(body=[c.payload() for c in self._guild(ctx).channels.values()])

    def get_roles(self, ctx: RestContext) -> Reply:
        return Reply(body=[r.payload() for r in self._guild(ctx).roles.values()])

    def active_threads(self, ctx: RestContext) -> Reply:
        """List Active Guild Threads: those the bot can see, with its own thread members."""
        guild = self._guild(ctx)
        bot_id = self.state.bot_user.id
        threads = guild.active_threads(bot_id)
        members = [
            t.thread_members[bot_id].payload(t.id) for t in threads if bot_id in t.thread_members
        ]
        return Reply(body={"threads": [t.payload() for t in threads], "members": members})

    def get_member(self, ctx: RestContext) -> Reply:
        guild = self._guild(ctx)
        member = guild.members.get(ctx.int_param("user_id", errors.unknown_member))
        if member is None:
            raise errors.unknown_member()
        return Reply(body=member.payload())

    # -- CDN ---------------------------------------------------------------------------------

    def cdn_attachment(self, ctx: RestContext) -> Reply:
        attachment_id = ctx.params["attachment_id"]
        stored = self.state.uploads.get(int(attachment_id)) if attachment_id.isdigit() else None
        if stored is None or stored.filename != ctx.params["filename"]:
            raise errors.DiscordHTTPError(404, 0, "404: Not Found")
        return Reply(
            raw=stored.data, content_type=stored.content_type or "application/octet-stream"
        )


def _redacted_headers(request: web.Request) -> dict[str, str]:
    return {
        key: ("<redacted>" if key.lower() == "authorization" else value)
        for key, value in request.headers.items()
    }


async def _parse_body(request: web.Request) -> tuple[Any, list[RecordedFile]]:
    """The JSON body (or multipart ``payload_json``) and any uploaded files."""
    if request.content_type.startswith("multipart/"):
        payload: Any = None
        files: list[RecordedFile] = []
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            name = part.name or ""
            data = bytes(await part.read(decode=False))
            if name == "payload_json":
                try:
                    payload = json.loads(data.decode("utf-8"))
                except ValueError:
                    raise errors.invalid_json() from None
            else:
                filename = part.filename or name
                content_type = part.headers.get("Content-Type")
                files.append(RecordedFile(name, filename, content_type, data))
        return payload, files
    raw = await request.read()
    if not raw:
        return None, []
    try:
        return json.loads(raw), []
    except ValueError:
        raise errors.invalid_json() from None
