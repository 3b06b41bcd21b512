"""The storage layer's error root and its subclasses.

Messages of the user-facing errors are written for the person who caused them: they say what
happened, the limit involved and, where there is one, when things get better. ``user_facing`` is
False for the errors that only a worker or an operator should ever see.
"""

from __future__ import annotations

import math
from datetime import datetime


class StorageError(Exception):
    """Root of every error this package raises on purpose."""

    #: Whether the message may be shown to a Discord user as it is.
    user_facing: bool = True


class QueueFullError(StorageError):
    """The user already has as many waiting jobs as allowed. Nothing was queued or charged."""

    def __init__(self, *, cap: int, waiting: int, adding: int = 1) -> None:
        self.cap = cap
        self.waiting = waiting
        self.adding = adding
        what = "this job" if adding == 1 else f"these {adding} jobs"
        super().__init__(
            f"you already have {waiting} job(s) waiting and the limit is {cap}; "
            f"{what} would go over it. Nothing was queued or charged: wait for some to "
            "start or cancel one."
        )


class RateLimitedError(StorageError):
    """The user is starting jobs faster than the new-jobs limit. Nothing was queued or charged."""

    def __init__(self, *, per_window: int, window_seconds: float, burst: int, wait: float) -> None:
        self.wait_seconds = wait
        limit = f"at most {per_window} new jobs per {_duration(window_seconds)}, {burst} at once"
        if wait == float("inf"):
            advice = f"ask for at most {burst} jobs at once"
        else:
            advice = f"try again in {_duration(math.ceil(wait))}"
        super().__init__(
            f"you are starting jobs too fast ({limit}). Nothing was queued or charged; {advice}."
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    return f"{seconds / 60:g} min"


class QuotaExceededError(StorageError):
    """The job's estimated cost does not fit in the rolling quota. Nothing was queued or charged.

    Amounts are GPU-seconds. ``scope`` is ``"user"`` or ``"guild"``; ``resets_at`` is when enough
    of the window's charges will have aged out for this request to fit (None when waiting alone
    is not enough, e.g. because reservations of running jobs hold the room).
    """

    def __init__(
        self,
        *,
        scope: str,
        allowance: float,
        used: float,
        reserved: float,
        needed: float,
        resets_at: datetime | None,
    ) -> None:
        self.scope = scope
        self.allowance = allowance
        self.used = used
        self.reserved = reserved
        self.needed = needed
        self.remaining = max(0.0, allowance - used - reserved)
        self.resets_at = resets_at
        whose = "your" if scope == "user" else "this server's"
        when = (
            f" Enough frees up at {resets_at:%Y-%m-%d %H:%M} UTC."
            if resets_at is not None
            else " Room frees up as your running jobs finish or age out of the window."
        )
        super().__init__(
            f"this needs {needed:.1f} GPU-seconds but {whose} quota has {self.remaining:.1f} left "
            f"({used:.1f} used and {reserved:.1f} reserved of {allowance:.1f}). "
            f"Nothing was queued or charged.{when}"
        )


class JobNotFound(StorageError):
    """No job has this id."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"there is no job `{job_id}`")


class IllegalTransition(StorageError):
    """The job is not in a state that allows this action (e.g. cancelling a finished job)."""

    def __init__(self, job_id: str, action: str, status: str) -> None:
        self.job_id = job_id
        self.action = action
        self.status = status
        super().__init__(f"job `{job_id}` cannot be {action}: it is {status}")


class LeaseLost(StorageError):
    """The caller no longer holds the job's lease; nothing was changed.

    A worker sees this when its lease expired and the job was reclaimed (and perhaps taken by
    another worker), or when the job was blocked or cancelled under it.
    """

    user_facing = False

    def __init__(self, job_id: str, detail: str) -> None:
        self.job_id = job_id
        super().__init__(f"lease on job {job_id} lost: {detail}")


class UndecodableRequest(StorageError):
    """A job's stored request cannot be decoded by the service's codec (a corrupt row, or a
    format older than the code). Claiming such a job fails it, refunded, instead of running it;
    reading it by id raises this; listings leave it out."""

    def __init__(self, job_id: str, detail: str) -> None:
        self.job_id = job_id
        self.detail = detail
        super().__init__(f"job `{job_id}` has a stored request this version cannot read")


class DeliveryClaimLost(StorageError):
    """Another bot process claimed this result's delivery; this one must not post it."""

    user_facing = False

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"delivery of job {job_id} is claimed by another process")


class GuildLeftError(StorageError):
    """The bot was removed from the server the job would run for. Nothing was queued or charged.

    The bot gets no interactions from a server it left, so this is a race (a command that
    arrived just before the removal) or a record the bot has not cleared yet."""

    def __init__(self, guild_id: int) -> None:
        self.guild_id = guild_id
        super().__init__(
            "the bot was removed from this server; nothing was queued or charged. "
            "Ask an admin to add it back."
        )


class ImageNotFound(StorageError):
    """An image reference points at nothing (deleted, or never written)."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"image {ref!r} is gone")


class InvalidImageRef(StorageError):
    """An image reference or name is malformed (it never came from an ImageStore)."""

    user_facing = False


class DatabaseUnavailable(StorageError):
    """The database URL cannot be used or the database cannot be reached.

    The message is one line that names the database with its password masked; it never carries
    the password.
    """

    user_facing = False


class ReviewRefused(StorageError):
    """A review queue action that cannot be done (already decided, claimed by another
    moderator, reported twice, too many reports, no appeal allowed): the message says why."""


class ItemNotFound(StorageError):
    """No review item with this id in this server."""

    def __init__(self, item_id: int) -> None:
        self.item_id = item_id
        super().__init__(f"there is no review item #{item_id} in this server")


class SharingRefused(StorageError):
    """A sharing action that cannot be done (not the owner, a job still running or under
    moderation, a DM job made public): the message says why."""


class JobUnavailable(SharingRefused):
    """The job cannot be liked, shown or deleted by this member: it does not exist, or it is
    not visible to them (``storage.visibility``). One message for both, so the answer never
    reveals that a stealth, held or deleted job exists."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job `{job_id}` is not available")


class BadSearchQuery(SharingRefused):
    """Search text or filters that cannot be searched (too long, too many words, a bad page
    size); the message names the limit."""


class SavedQueryGone(SharingRefused):
    """A stored search that expired, was pruned, or belongs to someone else."""

    def __init__(self, query_id: str) -> None:
        self.query_id = query_id
        super().__init__("this search has expired; run /search again")


class SessionRefused(StorageError):
    """A group session action that cannot be done now (the session is paused or ended, the
    round's submissions or voting are closed, an entry limit, a vote for one's own entry, a
    pool too small): the message says why, for the member who asked."""


class SessionNotFound(SessionRefused):
    """No group session has this id."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"there is no session `{session_id}`")


class EntryNotFound(SessionRefused):
    """No session entry has this id."""

    def __init__(self, entry_id: str) -> None:
        self.entry_id = entry_id
        super().__init__(f"there is no entry `{entry_id}`")
