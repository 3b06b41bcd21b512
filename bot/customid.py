"""Custom_ids: short, versioned, strictly parsed. Pure.

Every component Atelier posts has a custom_id ``atl:<version>:<code>:<payload>``. The router
dispatches on ``<code>`` (see :mod:`bot.router`); each feature parses its own payload. A custom_id
comes back from Discord as untrusted input, so parsing accepts exactly what encoding produces and
nothing else; whether the job exists, belongs to the guild and may be used by the clicker is
checked against the database.

Job buttons: ``atl:1:<action code>:<job id>:<image index>`` (see :mod:`bot.actions`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.actions import Action

PREFIX = "atl"
VERSION = 1
MAX_LENGTH = 100  # Discord's limit for a custom_id

_HEAD = re.compile(rf"{PREFIX}:(?P<version>[0-9]{{1,3}}):(?P<code>[a-z]{{1,3}}):(?P<payload>.*)")
_CODE = re.compile(r"[a-z]{1,3}")
_JOB_PAYLOAD = re.compile(r"(?P<job>[a-z0-9]{6,32}):(?P<index>[0-9])")


class CustomIdError(ValueError):
    """The custom_id was not made by this version of Atelier."""


def split(custom_id: str) -> tuple[str, str]:
    """``(code, payload)`` of one of our custom_ids, or CustomIdError."""
    match = _HEAD.fullmatch(custom_id) if len(custom_id) <= MAX_LENGTH else None
    if not match or match.group("version") != str(VERSION):
        raise CustomIdError("this button was not made by this version of Atelier")
    return match.group("code"), match.group("payload")


def join(code: str, payload: str) -> str:
    """The custom_id for ``code`` and ``payload``; refuses what :func:`split` would not return."""
    value = f"{PREFIX}:{VERSION}:{code}:{payload}"
    if not _CODE.fullmatch(code) or len(value) > MAX_LENGTH or "\n" in payload:
        raise CustomIdError(f"cannot encode a custom_id for {code!r}")
    return value


@dataclass(frozen=True)
class ButtonRef:
    """A job button: which action, on which job, on which of its images (0 for the whole)."""

    action: Action
    job_id: str
    index: int

    def encode(self) -> str:
        value = join(self.action.code, f"{self.job_id}:{self.index}")
        if decode(value) != self:
            raise CustomIdError(f"cannot encode button {self!r}")
        return value


def decode(custom_id: str) -> ButtonRef:
    """Parse a job button's custom_id, raising CustomIdError for anything ``encode`` would not
    produce."""
    code, payload = split(custom_id)
    return decode_job_payload(code, payload)


def decode_job_payload(code: str, payload: str) -> ButtonRef:
    """The job button ``code`` + ``payload`` name, checked against the action table."""
    action = Action.by_code(code)
    if action is None:
        raise CustomIdError("this button asks for an action Atelier does not know")
    match = _JOB_PAYLOAD.fullmatch(payload)
    if not match:
        raise CustomIdError("this button was not made by this version of Atelier")
    index = int(match.group("index"))
    if index not in action.indexes:
        raise CustomIdError("this button names an image that does not fit its action")
    return ButtonRef(action=action, job_id=match.group("job"), index=index)


#: The /modlog page buttons: ``atl:1:ml:<guild>:<o|n>:<row id>:<member or empty>:<job or empty>``.
MODLOG_CODE = "ml"
_MODLOG_PAYLOAD = re.compile(
    r"(?P<guild>[1-9][0-9]{0,19}):(?P<direction>[on]):(?P<anchor>[1-9][0-9]{0,19})"
    r":(?P<member>(?:[1-9][0-9]{0,19})?):(?P<job>[a-z0-9]{0,16})"
)
#: A job filter as /modlog accepts it (and a page button carries it).
MODLOG_JOB = re.compile(r"[a-z0-9]{1,16}")


@dataclass(frozen=True)
class ModlogPageRef:
    """An Older (``older``) or Newer page button of a server's audit log: the rows just older or
    newer than row ``anchor``, with the page's filters. Which server it names is a claim the
    click handler checks, like everything else in a custom_id."""

    guild_id: int
    older: bool
    anchor: int
    member: int | None = None
    job: str | None = None

    def encode(self) -> str:
        member = "" if self.member is None else str(self.member)
        direction = "o" if self.older else "n"
        payload = f"{self.guild_id}:{direction}:{self.anchor}:{member}:{self.job or ''}"
        value = join(MODLOG_CODE, payload)
        if decode_modlog_page(MODLOG_CODE, payload) != self:
            raise CustomIdError(f"cannot encode page button {self!r}")
        return value


def decode_modlog_page(code: str, payload: str) -> ModlogPageRef:
    """A /modlog page button; CustomIdError for anything ``ModlogPageRef.encode`` would not make."""
    match = _MODLOG_PAYLOAD.fullmatch(payload) if code == MODLOG_CODE else None
    if not match or any(
        int(match.group(name) or 0) >= 2**63 for name in ("guild", "anchor", "member")
    ):
        raise CustomIdError("this button was not made by this version of Atelier")
    return ModlogPageRef(
        guild_id=int(match.group("guild")),
        older=match.group("direction") == "o",
        anchor=int(match.group("anchor")),
        member=int(match.group("member")) if match.group("member") else None,
        job=match.group("job") or None,
    )
