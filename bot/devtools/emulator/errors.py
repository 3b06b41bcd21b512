"""Discord-style API errors and the emulator's own usage errors.

Discord answers a rejected request with an HTTP status and a JSON body ``{"code", "message"}``
(plus ``errors`` for form validation). ``DiscordHTTPError`` carries exactly that, and names the
rule the bot broke (``violation``) so the emulator can list it in ``emu.violations``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

JSON = dict[str, Any]


def json_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response with Discord's exact ``Content-Type: application/json``.

    discord.py parses a body as JSON only when the header is exactly that (no charset), so
    aiohttp's ``json_response`` (which adds ``; charset=utf-8``) would reach it as text.
    """
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


class EmulatorUsageError(Exception):
    """The test drove the emulator into something a real Discord user could not do.

    For example: clicking a button that is not on the message, invoking a command that was never
    synced, or omitting a required option. These are bugs in the test, not in the bot.
    """


@dataclass(frozen=True)
class FieldError:
    """One entry of an ``Invalid Form Body`` error, at ``path`` inside the JSON payload."""

    path: tuple[str | int, ...]
    code: str
    message: str


class DiscordHTTPError(Exception):
    """A response Discord would send for a rejected request.

    ``violation`` names the Discord rule the bot broke (recorded in ``emu.violations``); it is
    ``None`` for rejections that are not the bot's fault.
    """

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        violation: str | None = None,
        errors: JSON | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.violation = violation
        self.errors = errors

    def body(self) -> JSON:
        body: JSON = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def form_errors_tree(errors: Iterable[FieldError]) -> JSON:
    """Nest field errors the way Discord does: ``{"content": {"_errors": [...]}}``."""
    tree: JSON = {}
    for error in errors:
        node = tree
        for part in error.path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": error.code, "message": error.message})
    return tree


def invalid_form_body(errors: list[FieldError], *, violation: str) -> DiscordHTTPError:
    return DiscordHTTPError(
        400, 50035, "Invalid Form Body", violation=violation, errors=form_errors_tree(errors)
    )


def unauthorized() -> DiscordHTTPError:
    return DiscordHTTPError(401, 0, "401: Unauthorized", violation="unauthorized")


def unknown_channel() -> DiscordHTTPError:
    return DiscordHTTPError(404, 10003, "Unknown Channel", violation="unknown_channel")


def unknown_guild() -> DiscordHTTPError:
    return DiscordHTTPError(404, 10004, "Unknown Guild", violation="unknown_guild")


def unknown_message() -> DiscordHTTPError:
    return DiscordHTTPError(404, 10008, "Unknown Message", violation="unknown_message")


def unknown_user() -> DiscordHTTPError:
    return DiscordHTTPError(404, 10013, "Unknown User", violation="unknown_user")


def unknown_member() -> DiscordHTTPError:
    return DiscordHTTPError(404, 10007, "Unknown Member", violation="unknown_member")


def unknown_webhook() -> DiscordHTTPError:
    return DiscordHTTPError(404, 10015, "Unknown Webhook", violation="unknown_webhook")


def unknown_interaction(violation: str) -> DiscordHTTPError:
    return DiscordHTTPError(404, 10062, "Unknown interaction", violation=violation)


def unknown_command() -> DiscordHTTPError:
    return DiscordHTTPError(404, 10063, "Unknown application command", violation="unknown_command")


def already_acknowledged() -> DiscordHTTPError:
    return DiscordHTTPError(
        400,
        40060,
        "Interaction has already been acknowledged.",
        violation="double_acknowledgement",
    )


def invalid_webhook_token(violation: str) -> DiscordHTTPError:
    return DiscordHTTPError(401, 50027, "Invalid Webhook Token", violation=violation)


def missing_access() -> DiscordHTTPError:
    """A channel of a guild the bot is not in (it was removed), or one it cannot see."""
    return DiscordHTTPError(403, 50001, "Missing Access", violation="missing_access")


def missing_permissions() -> DiscordHTTPError:
    return DiscordHTTPError(403, 50013, "Missing Permissions", violation="missing_permissions")


def cannot_message_user() -> DiscordHTTPError:
    return DiscordHTTPError(
        403, 50007, "Cannot send messages to this user", violation="cannot_message_user"
    )


def cannot_edit_foreign_message() -> DiscordHTTPError:
    return DiscordHTTPError(
        403,
        50005,
        "Cannot edit a message authored by another user",
        violation="foreign_message_edit",
    )


def empty_message() -> DiscordHTTPError:
    return DiscordHTTPError(400, 50006, "Cannot send an empty message", violation="empty_message")


def entity_too_large() -> DiscordHTTPError:
    return DiscordHTTPError(
        413, 40005, "Request entity too large", violation="attachment_too_large"
    )


def not_found() -> DiscordHTTPError:
    return DiscordHTTPError(404, 0, "404: Not Found", violation="unknown_route")


def method_not_allowed() -> DiscordHTTPError:
    return DiscordHTTPError(405, 0, "405: Method Not Allowed", violation="unknown_route")


def bad_request(message: str, *, violation: str, code: int = 50035) -> DiscordHTTPError:
    return DiscordHTTPError(400, code, message, violation=violation)


def unknown_application() -> DiscordHTTPError:
    return DiscordHTTPError(404, 10002, "Unknown Application", violation="unknown_application")


def invalid_json() -> DiscordHTTPError:
    return DiscordHTTPError(
        400, 50109, "The request body contains invalid JSON.", violation="invalid_json"
    )


def thread_archived(status: int = 400) -> DiscordHTTPError:
    """An operation on an archived thread (editing a message, adding a member, changing any
    field but ``archived``). Discord answers a non-moderator's post or edit in a *locked*
    thread with the same code, as 403."""
    return DiscordHTTPError(status, 50083, "Thread is archived", violation="thread_archived")


def thread_already_created() -> DiscordHTTPError:
    return DiscordHTTPError(
        400,
        160004,
        "A thread has already been created for this message",
        violation="thread_already_created",
    )


def wrong_channel_type() -> DiscordHTTPError:
    return DiscordHTTPError(
        400, 50024, "Cannot execute action on this channel type", violation="wrong_channel_type"
    )


def cannot_act_on_dm() -> DiscordHTTPError:
    return DiscordHTTPError(
        400, 50003, "Cannot execute action on a DM channel", violation="wrong_channel_type"
    )
