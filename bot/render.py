"""Message text and button layouts for a job, from plain values. No I/O.

Everything a user typed is escaped before it is echoed, and every message is sent with
``allowed_mentions`` set to none, so a prompt can never ping anyone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.customid import Action, ButtonRef
from config.settings import GenerationSettings
from generation.options import options_help

CONTENT_LIMIT = 2000
_MARKDOWN = re.compile(r"([\\*_~`|>\[\]()#:-])")
_MENTION = re.compile(r"@(everyone|here|[!&]?[0-9]{15,21})")


def escape(text: str) -> str:
    """Neutralise markdown and mentions in user text (``@everyone`` loses its power)."""
    text = _MARKDOWN.sub(r"\\\1", text)
    text = text.replace("<", "<\u200b")
    return _MENTION.sub("@\u200b\\1", text)


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "\u2026"


@dataclass(frozen=True)
class JobCard:
    """What a job message shows."""

    job_id: str
    owner_id: int
    prompt: str
    label: str  # "imagine", "Upscale (Subtle) of image 2", ...
    options: str  # "--ar 3:2 --seed 7 --fast"
    status: str  # queued, running, succeeded, failed, cancelled, blocked, dead
    position: int | None = None
    eta_seconds: float | None = None
    step: int | None = None
    total_steps: int | None = None
    error: str | None = None


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 90:
        return f", about {max(1, round(seconds))} s"
    return f", about {round(seconds / 60)} min"


def render_card(card: JobCard) -> str:
    """The content line of a job message for any status."""
    head = f"**{escape(shorten(card.prompt, 900))}** {escape(card.options)}".rstrip()
    who = f"<@{card.owner_id}>"
    job = f"job `{card.job_id}`"
    if card.label != "imagine":
        head = f"{card.label}: {head}"
    if card.status == "queued":
        where = f"position {card.position}" if card.position else "next"
        tail = f"queued ({where}{_eta(card.eta_seconds)})"
    elif card.status == "running":
        if card.step is not None and card.total_steps:
            percent = round(100 * card.step / card.total_steps)
            tail = f"running ({percent}%)"
        else:
            tail = "running"
    elif card.status == "succeeded":
        tail = "done"
    elif card.status == "cancelled":
        tail = "cancelled; nothing was charged"
    elif card.status == "blocked":
        reason = escape(shorten(card.error or "blocked by moderation", 300))
        tail = f"{reason}; nothing was charged"
    else:
        reason = f": {escape(shorten(card.error or 'unknown error', 300))}" if card.error else ""
        tail = f"failed{reason}; nothing was charged"
    return shorten(f"{head} - {who} - {job} - {tail}", CONTENT_LIMIT)


def grid_buttons(job_id: str) -> list[list[tuple[str, ButtonRef]]]:
    """U1-U4 on one row, V1-V4 and re-roll on the next."""
    upscale = [(f"U{i}", ButtonRef(Action.SELECT, job_id, i)) for i in range(1, 5)]
    vary = [(f"V{i}", ButtonRef(Action.VARY, job_id, i)) for i in range(1, 5)]
    vary.append(("\U0001f504", ButtonRef(Action.REROLL, job_id, 0)))
    return [upscale, vary]


def single_buttons(job_id: str) -> list[list[tuple[str, ButtonRef]]]:
    """Under one image: upscale and vary, each subtle or not."""
    return [
        [
            ("Upscale (Subtle)", ButtonRef(Action.UPSCALE_SUBTLE, job_id, 1)),
            ("Upscale (Creative)", ButtonRef(Action.UPSCALE_CREATIVE, job_id, 1)),
            ("Vary (Subtle)", ButtonRef(Action.VARY_SUBTLE, job_id, 1)),
            ("Vary (Strong)", ButtonRef(Action.VARY_STRONG, job_id, 1)),
        ]
    ]


def render_help(settings: GenerationSettings) -> str:
    """The /help text: options with this server's bounds, then what the buttons do."""
    return "\n".join(
        [
            "**/imagine** `prompt` followed by any of:",
            *(f"- {line}" for line in options_help(settings)),
            "**Buttons**: U1-U4 post one image (then Upscale/Vary it), V1-V4 make four "
            "variations, \U0001f504 re-rolls with a new seed.",
            "**Also**: /info (quota), /queue, /cancel, /show job, /settings. "
            "Moderators: /block job, /filter (terms this server refuses in prompts).",
        ]
    )


def options_summary(
    aspect: str, seed: int, mode: str, steps: int, guidance: float, chaos: int, negative: str
) -> str:
    """The options worth echoing, in the flag syntax users type."""
    parts = []
    if aspect != "1:1":
        parts.append(f"--ar {aspect}")
    if negative:
        parts.append(f"--no {shorten(negative, 200)}")
    parts += [f"--seed {seed}", f"--{mode}", f"--steps {steps}", f"--cfg {guidance:g}"]
    if chaos:
        parts.append(f"--chaos {chaos}")
    return " ".join(parts)
