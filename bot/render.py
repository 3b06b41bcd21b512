"""Message text and button layouts, from plain values. No I/O.

All Discord markup lives here: mentions, relative timestamps, message links, escaping. Everything a
user typed is escaped before it is echoed, and every message is sent with ``allowed_mentions`` set
to none, so a prompt can never ping anyone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.actions import Action, Layout
from bot.customid import ButtonRef
from config.settings import GenerationSettings
from generation.options import options_help
from generation.request import Operation
from storage.types import (
    GalleryItem,
    HoldState,
    JobKind,
    JobStatus,
    ModAction,
    ModLogEntry,
    ModLogPage,
    QuotaReadout,
)

CONTENT_LIMIT = 2000
_MARKDOWN = re.compile(r"([\\*_~`|>\[\]()#:-])")
_MENTION = re.compile(r"@(everyone|here|[!&]?[0-9]{15,21})")

#: What a job is called on its card, by the operation it runs ("imagine" shows no title).
OPERATION_TITLES = {
    Operation.IMAGINE: "imagine",
    Operation.SELECT: "Image {index}",
    Operation.UPSCALE_SUBTLE: "Upscale (Subtle)",
    Operation.UPSCALE_CREATIVE: "Upscale (Creative)",
    Operation.VARY_SUBTLE: "Vary (Subtle) of image {index}",
    Operation.VARY_STRONG: "Vary (Strong) of image {index}",
}


def escape(text: str) -> str:
    """Neutralise markdown and mentions in user text (``@everyone`` loses its power)."""
    text = _MARKDOWN.sub(r"\\\1", text)
    text = text.replace("<", "<\u200b")
    return _MENTION.sub("@\u200b\\1", text)


def shorten(text: str, limit: int = CONTENT_LIMIT) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "\u2026"


def mention(user_id: int) -> str:
    """A user mention; messages are sent with mentions disabled, so it never pings."""
    return f"<@{user_id}>"


#: What stands for the author of an anonymous session entry until its round ends
#: (``storage.visibility.author_hidden``).
ANONYMOUS_ENTRY = "anonymous entry"


def credit(owner_id: int | None) -> str:
    """Who made a job: "by <mention>", or ``ANONYMOUS_ENTRY`` when its author is hidden
    (``owner_id`` None, as ``GalleryItem`` carries it)."""
    return ANONYMOUS_ENTRY if owner_id is None else f"by {mention(owner_id)}"


def relative_time(moment: datetime) -> str:
    """Discord's relative timestamp ("in 3 hours"), rendered by each reader's client."""
    return f"<t:{int(moment.timestamp())}:R>"


def message_link(guild_id: int | None, channel_id: int | None, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def link_after(guild_id: int | None, channel_id: int | None, message_id: int | None) -> str:
    """A space and the message's link, or nothing for a job with no message."""
    return "" if not message_id else " " + message_link(guild_id, channel_id, message_id)


def operation_title(operation: Operation, index: int) -> str:
    return OPERATION_TITLES[operation].format(index=index)


@dataclass(frozen=True)
class JobCard:
    """What a job message shows."""

    job_id: str
    owner_id: int
    prompt: str
    label: str  # "imagine", "Upscale (Subtle) of image 2", ...
    options: str  # "--ar 3:2 --seed 7 --fast"
    status: JobStatus
    position: int | None = None
    eta_seconds: float | None = None
    step: int | None = None
    total_steps: int | None = None
    error: str | None = None
    #: GPU-seconds charged (None or 0: nothing).
    charged: float | None = None
    #: Why its result could not be delivered, once the bot gave up (None: not given up).
    undeliverable: str | None = None
    #: Generated, but held for a moderator's review: nothing of it is shown.
    held: bool = False
    #: Deleted by its owner: nothing of it is shown.
    deleted: bool = False
    #: An anonymous session entry whose round is on: the card names no one.
    author_hidden: bool = False


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 90:
        return f", about {max(1, round(seconds))} s"
    return f", about {round(seconds / 60)} min"


def _status_tail(card: JobCard) -> str:
    status = card.status
    if status is JobStatus.QUEUED:
        where = f"position {card.position}" if card.position else "next"
        return f"queued ({where}{_eta(card.eta_seconds)})"
    if status is JobStatus.RUNNING:
        if card.step is not None and card.total_steps:
            return f"running ({round(100 * card.step / card.total_steps)}%)"
        return "running"
    if card.deleted:
        return "deleted by its owner"
    if status is JobStatus.SUCCEEDED and card.held:
        return "held for review by the server's moderators; its owner is told when they decide"
    if status is JobStatus.SUCCEEDED:
        return "done"
    if status is JobStatus.CANCELLED:
        if card.charged:
            return f"cancelled; charged {card.charged:.1f} GPU-seconds for the time it ran"
        return "cancelled; nothing was charged"
    if status is JobStatus.BLOCKED:
        # The public message names no cost; the owner sees it in /info.
        return f"removed by a moderator: {escape(shorten(card.error or 'no reason given', 300))}"
    reason = f": {escape(shorten(card.error or 'unknown error', 300))}" if card.error else ""
    return f"failed{reason}; nothing was charged"


def render_card(card: JobCard) -> str:
    """The content line of a job message for any status."""
    head = f"**{escape(shorten(card.prompt, 900))}** {escape(card.options)}".rstrip()
    if card.label != OPERATION_TITLES[Operation.IMAGINE]:
        head = f"{card.label}: {head}"
    job = f"job `{card.job_id}`"
    tail = _status_tail(card)
    if card.undeliverable:
        tail += f" ({_undeliverable(card.undeliverable)})"
    who = ANONYMOUS_ENTRY if card.author_hidden else mention(card.owner_id)
    return shorten(f"{head} - {who} - {job} - {tail}")


def _undeliverable(reason: str) -> str:
    return f"could not be delivered: {escape(shorten(reason, 300))}"


def job_buttons(job_id: str, layout: Layout) -> list[list[tuple[str, ButtonRef]]]:
    """A job message's buttons, row by row, in the action table's order."""
    rows: dict[int, list[tuple[str, ButtonRef]]] = {}
    for action in Action:
        if action.spec.layout is layout:
            row = rows.setdefault(action.spec.row, [])
            row.extend((action.label(i), ButtonRef(action, job_id, i)) for i in action.indexes)
    return [rows[row] for row in sorted(rows)]


def grid_buttons(job_id: str) -> list[list[tuple[str, ButtonRef]]]:
    """U1-U4 on one row, V1-V4 and re-roll on the next."""
    return job_buttons(job_id, Layout.GRID)


def single_buttons(job_id: str) -> list[list[tuple[str, ButtonRef]]]:
    """Under one image: upscale and vary, each subtle or not."""
    return job_buttons(job_id, Layout.SINGLE)


def render_help(settings: GenerationSettings) -> str:
    """The /help text: options with this server's bounds, then what the buttons do."""
    return shorten(
        "\n".join(
            [
                "**/imagine** `prompt` followed by any of:",
                *(f"- {line}" for line in options_help(settings)),
                "**Buttons**: U1-U4 post one image (then Upscale/Vary it), V1-V4 make four "
                "variations, \U0001f504 re-rolls with a new seed.",
                "**Also**: /info (quota), /queue, /cancel, /show job, /settings me (your "
                "defaults: mode, aspect, variation, remix). "
                "Moderators: /block job, /filter (terms this server refuses in prompts), "
                "/modlog (the audit log), /settings server (this server's settings; admins "
                "change them).",
            ]
        )
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


@dataclass(frozen=True)
class JobLine:
    """One of the user's jobs, as /info and /queue list it."""

    job_id: str
    kind: JobKind
    status: JobStatus
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    position: int | None = None
    eta_seconds: float | None = None
    #: GPU-seconds: held while it waits or runs, then measured and charged.
    reserved: float = 0.0
    gpu_seconds: float | None = None
    charged: float | None = None
    #: Why its result could not be delivered, once the bot gave up.
    undeliverable: str | None = None
    #: Review: held, approved or rejected (None: never held).
    hold: HoldState | None = None
    #: Why it failed or was removed.
    error: str | None = None


def _review(job: JobLine) -> str:
    """Where a job stands in review, for its owner."""
    if job.hold is HoldState.HELD and job.status is JobStatus.SUCCEEDED:
        return "; held for review: not shown until a moderator decides"
    if job.hold is HoldState.HELD:
        return "; will be held for review when it finishes"
    if job.hold is HoldState.REJECTED:
        reason = escape(shorten(job.error or "no reason given", 200))
        return f"; rejected in review ({reason}): appeal once with /appeal job:{job.job_id}"
    if job.hold is HoldState.APPROVED and job.status is JobStatus.SUCCEEDED:
        return "; approved in review"
    return ""


def _cost(job: JobLine) -> str:
    """What a job cost its owner, in the billing table's words."""
    if not job.status.terminal:
        return f"holds {job.reserved:.1f}"
    if job.charged:
        used = f" of {job.gpu_seconds:.1f} used" if job.gpu_seconds != job.charged else ""
        return f"charged {job.charged:.1f}{used}"
    if job.gpu_seconds and job.status is JobStatus.BLOCKED:
        return f"refunded {job.gpu_seconds:.1f}"
    if job.gpu_seconds:
        return f"charged 0.0 of {job.gpu_seconds:.1f} used"
    return "refunded" if job.status is not JobStatus.SUCCEEDED else "charged 0.0"


def render_info(
    readout: QuotaReadout, jobs: Sequence[JobLine], recent: Sequence[JobLine] = ()
) -> str:
    """/info: the quota in the rolling window, the user's queued and running jobs, then what
    their recent finished jobs cost (GPU-seconds)."""
    reset = f", next reset {relative_time(readout.resets_at)}" if readout.resets_at else ""
    lines = [
        f"**Quota** (GPU-seconds per {readout.window_seconds / 3600:g} h): "
        f"used {readout.used:.1f}, reserved {readout.reserved:.1f}, "
        f"remaining {readout.remaining:.1f} of {readout.allowance:.1f}{reset}"
    ]
    if not jobs:
        lines.append("No queued or running jobs.")
    for job in jobs:
        link = (
            message_link(job.guild_id, job.channel_id, job.message_id)
            if job.message_id
            else "(message pending)"
        )
        lines.append(
            f"- `{job.job_id}` {job.kind} {job.status} ({_cost(job)}){_review(job)} {link}"
        )
    if recent:
        lines.append("**Recent jobs** (GPU-seconds):")
        lines.extend(
            f"- `{j.job_id}` {j.kind} {j.status}: {_cost(j)}{_review(j)}"
            + (f"; {_undeliverable(j.undeliverable)}" if j.undeliverable else "")
            for j in recent
        )
    return shorten("\n".join(lines))


def render_queue(
    counts: Mapping[JobStatus, int], jobs: Sequence[JobLine], *, worker_hung: bool = False
) -> str:
    """/queue: the queue's depth, then the user's positions and ETAs. ``worker_hung``: the
    bot's own worker stopped after a job hung."""
    queued, running = counts.get(JobStatus.QUEUED, 0), counts.get(JobStatus.RUNNING, 0)
    lines = [f"Queue: {queued} waiting, {running} running."]
    if worker_hung:
        lines.append(
            "The worker inside this bot stopped after a job hung, and runs nothing until the "
            "bot's operator restarts the bot. Waiting jobs keep their place; other workers, if "
            "any, still run them."
        )
    for job in jobs:
        if job.status is JobStatus.QUEUED:
            lines.append(
                f"- `{job.job_id}` position {job.position}, about {job.eta_seconds or 0:.0f} s"
            )
        else:
            lines.append(f"- `{job.job_id}` running")
    if not jobs:
        lines.append("You have no queued or running jobs.")
    return shorten("\n".join(lines))


def render_quota_override(user_id: int, seconds: float | None) -> str:
    if seconds is None:
        return f"{mention(user_id)} is back on the default allowance."
    return f"{mention(user_id)} now has {seconds:g} GPU-seconds per rolling window."


def render_cancelled(count: int) -> str:
    if not count:
        return "You have no queued or running jobs."
    return (
        f"Cancelled {count} job(s). Waiting ones are refunded; running ones stop within a step "
        "and are charged only the GPU time they used."
    )


def render_images_expired(job_id: str, days: float) -> str:
    """Why a job whose images retention deleted cannot be shown or worked from."""
    if not days:  # pruned under an earlier setting; images are kept forever now
        return f"the images of job `{job_id}` have expired and were deleted"
    unit = "day" if days == 1 else "days"
    return f"the images of job `{job_id}` expired after {days:g} {unit} and were deleted"


#: How each audit log action reads on a /modlog line.
MODLOG_VERBS = {
    ModAction.REFUSED: "refused a prompt",
    ModAction.HELD: "held",
    ModAction.CLASSIFIED: "classified",
    ModAction.APPROVED: "approved",
    ModAction.REJECTED: "rejected",
    ModAction.BANNED: "banned",
    ModAction.UNBANNED: "unbanned",
    ModAction.FILTER_ADDED: "added a refused term",
    ModAction.FILTER_REMOVED: "removed a refused term",
    ModAction.BLOCKED: "blocked",
    ModAction.PUBLISHED: "published",
    ModAction.UNPUBLISHED: "unpublished",
    ModAction.REPORTED: "reported",
    ModAction.APPEALED: "appealed the rejection of",
    ModAction.APPEAL_GRANTED: "granted the appeal of",
    ModAction.APPEAL_DENIED: "denied the appeal of",
    ModAction.EXPIRED: "let a hold expire (rejected, refunded):",
    ModAction.SESSION_STARTED: "started a group session",
    ModAction.SESSION_ENDED: "ended a group session",
    ModAction.ENTRY_REMOVED: "removed the session entry",
    ModAction.PARTICIPANT_REMOVED: "removed from a group session",
}


#: Actions whose reason is a refused term.
TERM_ACTIONS = (ModAction.REFUSED, ModAction.FILTER_ADDED, ModAction.FILTER_REMOVED)


def render_modlog_line(entry: ModLogEntry) -> str:
    """One audit log row: when, who, what, to whom, why. User text is escaped; the mentions
    never ping (messages go out with mentions disabled)."""
    actor = "the bot" if entry.actor_id is None else mention(entry.actor_id)
    parts = [
        f"`#{entry.id}` {relative_time(entry.created_at)} {actor} {MODLOG_VERBS[entry.action]}"
    ]
    if entry.target_job_id:
        parts.append(f"job `{entry.target_job_id}`")
    if entry.target_user_id is not None:
        parts.append(
            ("of " if entry.target_job_id or entry.action is ModAction.REFUSED else "")
            + mention(entry.target_user_id)
        )
    line = " ".join(parts)
    if entry.action in TERM_ACTIONS and entry.reason:
        # The reason is a refused term, parsed when it was added: shown as code, like /filter.
        line += ": `" + entry.reason.replace("`", "'") + "`"
    elif entry.reason:
        line += f": {escape(shorten(entry.reason, 200))}"
    prompt = entry.details.get("prompt")
    if entry.action is ModAction.REFUSED and isinstance(prompt, str):
        line += f" (prompt: {escape(shorten(prompt, 80))})"
    if entry.action is ModAction.BLOCKED and entry.details.get("keep_charge"):
        line += " (charge kept)"
    return line


def render_modlog(page: ModLogPage, *, member: int | None, job: str | None) -> str:
    """/modlog: one page of the server's audit log, newest first."""
    scope = []
    if member is not None:
        scope.append(f"about {mention(member)}")
    if job is not None:
        scope.append(f"about job `{job}`")
    head = "**Audit log**" + (" " + " and ".join(scope) if scope else "")
    if not page.entries:
        return f"{head}: nothing recorded."
    lines = [f"{head} (newest first):", *(f"- {render_modlog_line(e)}" for e in page.entries)]
    return shorten("\n".join(lines))


def found_line(prefix: str, item: GalleryItem, prompt_chars: int) -> str:
    """One found job (a search result, a gallery page, a profile's best): prompt, owner (or
    "anonymous entry"), likes, id and link."""
    link = link_after(item.guild_id, item.channel_id, item.message_id)
    return (
        f"{prefix} **{escape(shorten(item.prompt, prompt_chars))}** {credit(item.owner_id)}"
        f" \u00b7 \u2764 {item.like_count} \u00b7 job `{item.job_id}`{link}"
    )
