"""Group sessions' custom_ids. Pure.

- ``atl:1:ss:<session>``: the card's Submit button (opens the entry form ``se:<session>``);
- ``atl:1:sv:<entry>``: the vote button on an entry's message;
- ``atl:1:sp:<a|r>:<entry>``: the host panel's Approve / Reject (Reject opens ``sr:<entry>``).

Session and entry ids are storage's 12-character ids. Parsing accepts exactly what the
helpers make; whether the session or entry exists, belongs to the clicker's server and may be
used by the clicker is checked by ``bot.services.sessions`` at each click.
"""

from __future__ import annotations

import re

from bot.customid import CustomIdError, join

SUBMIT_CODE = "ss"
SUBMIT_FORM = "se"
VOTE_CODE = "sv"
PANEL_CODE = "sp"
REJECT_FORM = "sr"
PROMPT_FIELD = "prompt"
REASON_FIELD = "reason"

_ID = re.compile(r"[0-9a-hjkmnp-tv-z]{12}")
_PANEL = re.compile(r"(?P<action>[ar]):(?P<entry>[0-9a-hjkmnp-tv-z]{12})")
_REFUSED = "this button was not made by this version of Atelier"


def submit_id(session_id: str) -> str:
    return join(SUBMIT_CODE, decode_id(session_id))


def vote_id(entry_id: str) -> str:
    return join(VOTE_CODE, decode_id(entry_id))


def panel_id(action: str, entry_id: str) -> str:
    return join(PANEL_CODE, f"{action}:{decode_id(entry_id)}")


def decode_id(payload: str) -> str:
    """A session's or entry's id, exactly; CustomIdError for anything else."""
    if not _ID.fullmatch(payload):
        raise CustomIdError(_REFUSED)
    return payload


def decode_panel(payload: str) -> tuple[str, str]:
    """``(action, entry id)`` of a panel button: ``a`` approve or ``r`` reject."""
    match = _PANEL.fullmatch(payload)
    if not match:
        raise CustomIdError(_REFUSED)
    return match.group("action"), match.group("entry")
