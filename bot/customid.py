"""Button custom_ids: short, versioned, strictly parsed.

Format: ``atl:1:<action>:<job id>:<image index>``. A custom_id comes back from Discord as
untrusted input, so parsing accepts exactly what ``encode`` produces and nothing else; whether the
job exists, belongs to the guild and may be used by the clicker is checked against the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

PREFIX = "atl"
VERSION = 1
#: Matches every custom_id of ours, for discord.ui.DynamicItem's template.
TEMPLATE = (
    r"atl:(?P<version>\d{1,3}):(?P<action>[a-z]{1,3}):(?P<job>[A-Za-z0-9]{1,32}):(?P<index>\d)"
)
_STRICT = re.compile(
    rf"^{PREFIX}:{VERSION}:(?P<action>[a-z]{{1,3}}):(?P<job>[a-z0-9]{{6,32}}):(?P<index>[0-4])$"
)


class Action(StrEnum):
    """What a button asks for."""

    SELECT = "u"  # U1-U4: post one image alone
    VARY = "v"  # V1-V4: variations, strength from the clicker's settings
    REROLL = "r"
    UPSCALE_SUBTLE = "us"
    UPSCALE_CREATIVE = "uc"
    VARY_SUBTLE = "vs"
    VARY_STRONG = "vg"


class CustomIdError(ValueError):
    """The custom_id was not made by this version of Atelier."""


@dataclass(frozen=True)
class ButtonRef:
    action: Action
    job_id: str
    index: int

    def encode(self) -> str:
        value = f"{PREFIX}:{VERSION}:{self.action.value}:{self.job_id}:{self.index}"
        if not _STRICT.match(value):
            raise CustomIdError(f"cannot encode button {self!r}")
        return value


def decode(custom_id: str) -> ButtonRef:
    """Parse a custom_id, raising CustomIdError for anything ``encode`` would not produce."""
    match = _STRICT.match(custom_id)
    if not match:
        raise CustomIdError("this button was not made by this version of Atelier")
    try:
        action = Action(match.group("action"))
    except ValueError:
        raise CustomIdError("this button asks for an action Atelier does not know") from None
    index = int(match.group("index"))
    if (action is Action.REROLL) != (index == 0):
        raise CustomIdError("this button names an image that does not fit its action")
    return ButtonRef(action=action, job_id=match.group("job"), index=index)
