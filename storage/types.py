"""What the storage services take and return: enums and frozen dataclasses, never ORM objects.

GPU-seconds cross this boundary as floats; inside the database they are whole milliseconds so the
quota ledger adds up exactly.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Generic, NamedTuple, Protocol

from typing_extensions import TypeVar


class JobStatus(StrEnum):
    """Generation state of a job. Delivery state is kept apart (see ``DeliveryLedger``)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a non-retryable error (e.g. an invalid request)
    CANCELLED = "cancelled"
    BLOCKED = "blocked"  # stopped by moderation
    DEAD = "dead"  # retried max_attempts times (poison job)

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


TERMINAL_STATUSES = tuple(s for s in JobStatus if s.terminal)
ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


class JobKind(StrEnum):
    """What made the job; follow-ups name their parent job."""

    IMAGINE = "imagine"
    VARIATION = "variation"
    UPSCALE = "upscale"
    REROLL = "reroll"
    SELECT = "select"

    @property
    def default_priority(self) -> int:
        """Cheap follow-ups (select, upscale) run before new grids: the user is waiting on them."""
        return PRIORITY_FOLLOW_UP if self in (JobKind.SELECT, JobKind.UPSCALE) else PRIORITY_NORMAL


PRIORITY_NORMAL = 0
PRIORITY_FOLLOW_UP = 1
#: Round 0 of a session's boards: the best-of (a round's own board has its round, from 1).
BEST_OF_ROUND = 0
#: A group session round's entries near its end (``SessionSpec.lane_seconds``): ahead of the
#: grids, level with the cheap follow-ups, and still in the fair order among them.
PRIORITY_SESSION_LANE = PRIORITY_FOLLOW_UP


class Visibility(StrEnum):
    """Who may find a job beyond the message it was posted in (``storage.visibility``).

    ``public``: its server's members may list, search, like, remix and show it. ``stealth``: only
    its owner and the server's moderators; it is never listed for others, searched, shown by
    ``/show`` or remixed by others, and never on the web. DM jobs are always stealth."""

    PUBLIC = "public"
    STEALTH = "stealth"


class CopyKind(StrEnum):
    """What a recorded copy of a job's message is: a ``/show`` (or opened) repost, with the
    job's own buttons, or its showcase post (its ❤ and Unpublish)."""

    SHOW = "show"
    SHOWCASE = "showcase"


class LedgerKind(StrEnum):
    """One quota ledger entry. Every job has one RESERVE, then CHARGE+RELEASE (GPU time used:
    it succeeded, or was cancelled or blocked after running) or one REFUND (nothing used, or not
    the user's fault); a moderator's block of a finished job may add one CREDIT."""

    RESERVE = "reserve"  # the estimate, held while the job is queued or running
    CHARGE = "charge"  # the measured cost of a succeeded job (counts against the window)
    RELEASE = "release"  # the reservation of a succeeded job, replaced by its charge
    REFUND = "refund"  # the reservation of a job that did not succeed, given back in full
    WAIVE = "waive"  # measured cost beyond the allowed overdraft: not charged
    CREDIT = "credit"  # a settled charge given back later (a finished job blocked, refunded)


ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32, lower case
JOB_ID_LENGTH = 12


def new_job_id() -> str:
    """A 12-character base32 id (60 random bits): short enough for Discord custom_ids."""
    bits = secrets.randbits(5 * JOB_ID_LENGTH)
    return "".join(ALPHABET[(bits >> (5 * i)) & 31] for i in range(JOB_ID_LENGTH))


#: Discord's epoch (2015-01-01) in Unix milliseconds: snowflakes count from it.
DISCORD_EPOCH_MS = 1_420_070_400_000


def snowflake_at(moment: datetime) -> int:
    """The smallest Discord snowflake of ``moment``: comparable with interaction ids."""
    return max(0, int(moment.timestamp() * 1000) - DISCORD_EPOCH_MS) << 22


def to_ms(seconds: float) -> int:
    """GPU-seconds to the whole milliseconds the ledger stores."""
    if seconds < 0:
        raise ValueError(f"a GPU-second amount cannot be negative (got {seconds})")
    return round(seconds * 1000)


def to_seconds(ms: int | None) -> float:
    return (ms or 0) / 1000


#: The type a caller's job requests have once decoded (plain JSON objects unless a codec says).
RequestT = TypeVar("RequestT", default=dict[str, Any])


class RequestCodec(Protocol[RequestT]):
    """Turns the caller's request model into the JSON object the ledger stores, and back.

    Storage never knows the request's type: the composition root hands ``JobQueue`` and
    ``DeliveryLedger`` a codec, and the views they return carry decoded requests. ``decode``
    raises ``ValueError`` (pydantic's ``ValidationError`` is one) or ``TypeError`` for data it
    cannot read; storage turns that into ``UndecodableRequest``.
    """

    def encode(self, request: RequestT, /) -> dict[str, Any]: ...

    def decode(self, data: Mapping[str, Any], /) -> RequestT: ...


class JsonCodec:
    """The identity codec: requests are the JSON objects themselves (storage's own tests)."""

    def encode(self, request: dict[str, Any], /) -> dict[str, Any]:
        return dict(request)

    def decode(self, data: Mapping[str, Any], /) -> dict[str, Any]:
        return dict(data)


JSON_CODEC: Final = JsonCodec()


@dataclass(frozen=True, slots=True)
class Owner:
    """Who asked for a job and where: Discord snowflakes."""

    user_id: int
    guild_id: int | None = None
    channel_id: int | None = None
    #: Their display name in that server, to record with the job (the web gallery credits
    #: members by it); None: leave the recorded name as it is.
    name: str | None = None


@dataclass(frozen=True, slots=True)
class NewJob(Generic[RequestT]):
    """One job to enqueue. ``request`` is the caller's request, stored through the queue's codec.

    ``mode`` and ``batch_key`` come from the request (storage does not parse it); jobs with equal
    non-empty batch keys may run together in one batched call. ``priority`` defaults from the kind
    (higher runs first). The reservation against the quota is ``work_units`` (see
    ``GenerationRequest.work_units``) at the measured GPU-seconds per unit of its kind and mode,
    and never less than ``estimated_cost``, the floor.
    """

    kind: JobKind
    request: RequestT
    mode: str
    estimated_cost: float
    batch_key: str = ""
    parent_id: str | None = None
    #: How much sampler work the job is (images x steps x megapixels x guidance passes).
    work_units: float = 0.0
    #: Within one owner, jobs are claimed in this order (then insertion order): the snowflake
    #: of the interaction that asked for it, i.e. when Discord received it. None: now.
    order_key: int | None = None
    #: The interaction this job answers, kept in its delivery record (never on the job row
    #: workers claim) so a restarted bot can finish the response while the token lives.
    interaction_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)
    priority: int | None = None
    #: When the interaction token the bot holds for this job's message stops working.
    interaction_expires_at: datetime | None = None
    #: Hold the result for review (a review term matched): why, shown to moderators. Only a
    #: server's jobs can be held.
    hold_reason: str | None = None
    hold_details: Mapping[str, Any] | None = None
    #: Asked in an age-restricted channel: the output classifier's loose thresholds apply.
    age_restricted: bool = False
    #: Public or stealth (``storage.visibility``); a DM job (no guild) is stored stealth
    #: whatever this says.
    visibility: Visibility = Visibility.PUBLIC
    #: What search indexes and galleries show, kept in plain columns next to the request.
    #: None: taken from the encoded request's top-level ``"prompt"``, ``"model"`` and
    #: ``"aspect"`` keys when they are strings (what migration 0007 backfilled from), else "".
    prompt: str | None = None
    model: str | None = None
    aspect: str | None = None


@dataclass(frozen=True, slots=True)
class JobView(Generic[RequestT]):
    """A job as the bot and admins see it: generation state plus its delivery columns."""

    id: str
    kind: JobKind
    parent_id: str | None
    owner_id: int
    guild_id: int | None
    channel_id: int | None
    #: The request, decoded by the service's codec.
    request: RequestT
    mode: str
    batch_key: str
    priority: int
    status: JobStatus
    attempts: int
    max_attempts: int
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    estimated_cost: float
    reserved: float
    gpu_seconds: float | None
    charged: float | None
    result_refs: tuple[str, ...]
    error: str | None
    cancel_requested: bool
    progress_step: int | None
    progress_total: int | None
    preview_ref: str | None
    progress_at: datetime | None
    lease_expires_at: datetime | None
    # Delivery (None until the bot attaches its message).
    message_id: int | None = None
    attachment_limit: int | None = None
    interaction_expires_at: datetime | None = None
    posted_at: datetime | None = None
    post_attempts: int = 0
    #: The interaction the job answers (its token is never in a view).
    interaction_id: int | None = None
    work_units: float = 0.0
    #: A blocked job's images are deleted after this (the appeal period); None once deleted.
    purge_after: datetime | None = None
    order_key: int = 0
    #: Times a stopping worker gave the job back (bounded by ``queue.max_releases``).
    releases: int = 0
    #: When retention deleted the job's images (``storage.retention``); None while kept.
    pruned_at: datetime | None = None
    #: Delivery backs off until then after a transient failure (5xx, 429).
    next_attempt_at: datetime | None = None
    #: When delivery was given up for good, and why (shown to the owner in /info and /show).
    given_up_at: datetime | None = None
    give_up_reason: str | None = None
    #: Review: held (never shown in public), approved or rejected; None if never held.
    hold: HoldState | None = None
    age_restricted: bool = False
    # Sharing (``storage.sharing``).
    visibility: Visibility = Visibility.PUBLIC
    #: When its owner deleted it (images gone, hidden everywhere); None while it stands.
    deleted_at: datetime | None = None
    like_count: int = 0
    #: When it was posted to the showcase channel (at most once); None if never.
    published_at: datetime | None = None
    #: The prompt, model and aspect as stored for search ("" when unknown).
    prompt: str = ""
    model: str = ""
    aspect: str = ""
    #: The group session whose entry this job is (``storage.sessions``); None for others.
    session_id: str | None = None
    #: Billed to its server's allowance (a session's pool), not its owner's.
    guild_paid: bool = False

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def showable(self) -> bool:
        """Whether its images may be shown at all: it succeeded, is not held for review (or
        was approved) and was not deleted by its owner. Who may find it beyond its own message
        is ``storage.visibility``'s question."""
        return (
            self.status is JobStatus.SUCCEEDED
            and self.hold in (None, HoldState.APPROVED)
            and self.deleted_at is None
        )


@dataclass(frozen=True, slots=True)
class ClaimedJob(Generic[RequestT]):
    """A job handed to a worker. Only the holder of ``lease_token`` may finish it."""

    id: str
    lease_token: str
    lease_expires_at: datetime
    kind: JobKind
    mode: str
    batch_key: str
    request: RequestT
    attempts: int
    max_attempts: int
    owner_id: int
    parent_id: str | None
    #: GPU-seconds reserved for the job: what the worker's time limit is derived from.
    reserved: float = 0.0
    #: Asked in an age-restricted channel: the output classifier's loose thresholds apply.
    age_restricted: bool = False


@dataclass(frozen=True, slots=True)
class OpenInteraction:
    """A stored job whose interaction token still lives: what a restarted bot needs to finish
    the response (the token is a credential: never logged)."""

    job_id: str
    interaction_id: int
    token: str = field(repr=False)
    expires_at: datetime
    channel_id: int | None
    message_id: int | None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The reply to a heartbeat or progress update: the lease holds until ``lease_expires_at``."""

    cancel_requested: bool
    lease_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class QueuePlace:
    """Where a job stands: ``position`` is 1 for the next job to start, 0 once it has started."""

    job_id: str
    status: JobStatus
    position: int
    eta_seconds: float


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts per status, workers seen holding leases, and throughput per mode."""

    counts: Mapping[JobStatus, int]
    active_workers: int
    avg_gpu_seconds: Mapping[str, float]
    oldest_queued_at: datetime | None

    @property
    def queued(self) -> int:
        return self.counts.get(JobStatus.QUEUED, 0)

    @property
    def running(self) -> int:
        return self.counts.get(JobStatus.RUNNING, 0)


@dataclass(frozen=True, slots=True)
class QuotaReadout:
    """One user's (or guild's) standing in the rolling window, in GPU-seconds."""

    scope: str
    allowance: float
    used: float
    reserved: float
    remaining: float
    #: When the oldest charge in the window ages out (None when nothing is charged).
    resets_at: datetime | None
    window_seconds: float
    #: The guild's readout when the guild has an allowance of its own.
    guild: QuotaReadout | None = None


@dataclass(frozen=True, slots=True)
class QuotaOverride:
    """An allowance for one user, replacing the settings and role tiers: in one server
    (``guild_id``, set by its admins) or in all (``guild_id`` None, set by the operator, and
    then final)."""

    user_id: int
    guild_id: int | None
    allowance: float
    set_by: int | None
    reason: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One line of the quota ledger."""

    id: int
    job_id: str | None
    user_id: int
    guild_id: int | None
    kind: LedgerKind
    amount: float
    created_at: datetime
    note: str | None


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What one retention pass deleted (or, with ``dry_run``, would delete)."""

    dry_run: bool
    #: Jobs whose images were deleted while their rows stay (``pruned_at`` set).
    image_jobs: int = 0
    #: Image files deleted, and their bytes: of the jobs above and of the deleted rows.
    image_files: int = 0
    image_bytes: int = 0
    #: Job rows deleted (their deliveries and /show copies went with them).
    jobs: int = 0
    #: Quota ledger lines of the deleted jobs (all older than the quota window).
    ledger_lines: int = 0
    #: Blocked jobs whose images were deleted because their appeal period is over.
    blocked: int = 0
    #: Moderation audit log rows older than ``retention.modlog_days``.
    modlog_rows: int = 0
    #: Saved search queries (``search_queries``) past their expiry.
    saved_queries: int = 0
    #: Group sessions ended more than ``retention.sessions_days`` ago (their rounds, entries,
    #: votes, boards and timers went with them; their jobs stay).
    sessions: int = 0
    #: True when a pass stopped at its batch limit: the next pass takes the rest.
    more: bool = False


class ModAction(StrEnum):
    """What one row of the moderation audit log records: a moderator's action or an automated
    decision. Stored by value; new members need a migration (the table checks the list)."""

    REFUSED = "refused"  # a prompt with a refused term; nothing was queued
    HELD = "held"
    CLASSIFIED = "classified"
    APPROVED = "approved"
    REJECTED = "rejected"
    BANNED = "banned"
    UNBANNED = "unbanned"
    FILTER_ADDED = "filter_added"
    FILTER_REMOVED = "filter_removed"
    BLOCKED = "blocked"
    PUBLISHED = "published"
    UNPUBLISHED = "unpublished"
    REPORTED = "reported"
    APPEALED = "appealed"
    APPEAL_GRANTED = "appeal_granted"
    APPEAL_DENIED = "appeal_denied"
    EXPIRED = "expired"  # a hold no moderator decided in time: rejected, refunded
    # Group sessions (``storage.sessions``).
    SESSION_STARTED = "session_started"
    SESSION_ENDED = "session_ended"
    ENTRY_REMOVED = "entry_removed"
    PARTICIPANT_REMOVED = "member_removed"  # a participant removed from a session


@dataclass(frozen=True, slots=True)
class ModLogEntry:
    """One row of a server's moderation audit log. ``actor_id`` None: the bot itself."""

    id: int
    guild_id: int
    created_at: datetime
    actor_id: int | None
    action: ModAction
    target_user_id: int | None
    target_job_id: str | None
    reason: str
    details: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ModLogPage:
    """Up to a page of audit log rows, newest first, and whether older or newer ones exist."""

    entries: tuple[ModLogEntry, ...]
    older: bool
    newer: bool


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What ``audit`` found: counts, and one line per broken invariant (empty when all hold)."""

    jobs: int
    by_status: Mapping[JobStatus, int]
    charged: float
    refunded: float
    violations: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.violations


class ReviewKind(StrEnum):
    """Why an item is in a server's review queue."""

    HOLD = "hold"  # a review term or the classifier held the job's result
    REPORT = "report"  # members reported a posted result (grouped: one open item per job)
    APPEAL = "appeal"  # the owner appealed a rejection (one per rejection)


class ReviewState(StrEnum):
    OPEN = "open"
    DECIDED = "decided"


class Decision(StrEnum):
    """What a moderator (or the hold's expiry) decided about a review item."""

    APPROVE = "approve"  # a hold: post it; a report: keep it up
    REJECT = "reject"  # remove it (refunded unless the charge is kept)
    EXPIRE = "expire"  # a hold nobody decided in time: as a rejection, by the bot
    GRANT = "grant"  # an appeal: the job is restored
    DENY = "deny"  # an appeal: the rejection stands (final)
    SUPERSEDED = "superseded"  # closed because the job was decided through another item


class HoldState(StrEnum):
    """A job's delivery with respect to review: held (never shown in public), then approved or
    rejected. None (not stored) for a job nobody held."""

    HELD = "held"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """One item of a server's review queue, with what a reviewer needs of its job."""

    id: int
    guild_id: int
    job_id: str
    kind: ReviewKind
    state: ReviewState
    reason: str
    details: Mapping[str, Any]
    reports: int
    appeal_of: int | None
    created_at: datetime
    claimed_by: int | None
    claim_expires_at: datetime | None
    decided_by: int | None
    decided_at: datetime | None
    decision: Decision | None
    decision_reason: str | None
    channel_id: int | None
    message_id: int | None
    version: int
    shown_version: int
    # The job, as the reviewer sees it.
    owner_id: int
    prompt: str
    job_status: JobStatus
    hold: HoldState | None
    result_refs: tuple[str, ...]
    #: The moderator whose rejection an appeal contests (None for other items).
    rejected_by: int | None = None

    @property
    def open(self) -> bool:
        return self.state is ReviewState.OPEN


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """What one decision did: the item as it now stands, and whether this call decided it
    (False: someone else had, and ``item`` says who and what)."""

    item: ReviewItem
    decided: bool
    #: Set when the decision (reject and ban) also banned the owner.
    banned_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Ban:
    """A member who may not create jobs or click job buttons in one server until ``until``
    (None: until unbanned)."""

    guild_id: int
    user_id: int
    until: datetime | None
    reason: str
    banned_by: int | None
    auto: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Notice:
    """A direct message owed to a member about their job (held, decided): posted once."""

    id: int
    guild_id: int | None
    user_id: int
    job_id: str | None
    item_id: int | None
    kind: str
    text: str
    attempts: int


# -- sharing (issue 12) ------------------------------------------------------------------------


class GalleryView(StrEnum):
    """The gallery's lists (``SharingStore.gallery``)."""

    TOP_WEEK = "top_week"  # liked jobs of the last 7 days, most likes first
    TOP_MONTH = "top_month"  # the same over 30 days
    TOP_ALL = "top_all"  # every liked job, most likes first
    RECENT = "recent"  # newest first
    MINE = "mine"  # the viewer's own jobs, stealth ones included, newest first
    LIKED = "liked"  # jobs the viewer liked, most recent like first
    MEMBER = "member"  # one member's jobs, newest first (others see only the public ones)
    SESSION = "session"  # one group session's entries, newest first (host-removed ones left out)


@dataclass(frozen=True, slots=True)
class GalleryItem:
    """One job on a contact sheet or a search page: what a thumbnail, its caption and its
    buttons need. ``image_ref`` is the image to show: a grid's last ref (the grid itself),
    a single image's only one."""

    job_id: str
    #: None while the job is an anonymous session entry whose round is on
    #: (``storage.visibility.author_hidden``): nothing shown may name its author.
    owner_id: int | None
    guild_id: int
    channel_id: int | None
    message_id: int | None
    prompt: str
    #: None only for a job that stored no images.
    image_ref: str | None
    like_count: int
    created_at: datetime
    visibility: Visibility
    kind: JobKind
    mode: str
    model: str
    aspect: str
    parent_id: str | None
    published_at: datetime | None
    #: The group session whose entry it is (None for other jobs).
    session_id: str | None = None

    @property
    def author_hidden(self) -> bool:
        return self.owner_id is None


@dataclass(frozen=True, slots=True)
class GalleryPage:
    """One page of a gallery list. Paging is keyset-based: ``next_cursor``/``prev_cursor``
    are short opaque strings (at most ``CURSOR_MAX_CHARS``) for a custom_id, None when there is
    no such page."""

    view: GalleryView
    items: tuple[GalleryItem, ...]
    next_cursor: str | None
    prev_cursor: str | None

    @property
    def has_next(self) -> bool:
        return self.next_cursor is not None

    @property
    def has_prev(self) -> bool:
        return self.prev_cursor is not None


#: The longest gallery cursor (two base-36 numbers and a separator).
CURSOR_MAX_CHARS = 32


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """What a search is narrowed to besides its text. Datetimes are aware UTC; ``since`` is
    inclusive and ``until`` exclusive (of ``created_at``)."""

    member_id: int | None = None
    model: str | None = None
    mode: str | None = None
    aspect: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of search results (offset paging: ``page`` counts from 0), best first."""

    items: tuple[GalleryItem, ...]
    page: int
    has_next: bool

    @property
    def has_prev(self) -> bool:
        return self.page > 0


@dataclass(frozen=True, slots=True)
class SavedQuery:
    """A search stored server-side so its pages fit in a custom_id (``id`` is short)."""

    id: str
    guild_id: int
    user_id: int
    text: str
    filters: SearchFilters
    created_at: datetime
    expires_at: datetime


class LikeResult(NamedTuple):
    """After a toggle: whether the member now likes the job, and its like count (a tuple, so
    ``liked, count = await store.toggle_like(...)`` works)."""

    liked: bool
    like_count: int


@dataclass(frozen=True, slots=True)
class MemberProfile:
    """A member's shared work as one viewer may see it (``SharingStore.profile``)."""

    member_id: int
    #: Their jobs the viewer may find, and the likes those received.
    jobs: int
    likes: int
    #: Their most liked of those, most likes first (then newest).
    top: tuple[GalleryItem, ...]


@dataclass(frozen=True, slots=True)
class SharedMessage:
    """A Discord message that shows a job: its own post, a ``/show`` copy."""

    channel_id: int
    message_id: int


@dataclass(frozen=True, slots=True)
class DeletedJob:
    """What deleting a job did, and what the caller still has to remove from Discord.

    ``refs`` are the image refs the job had (empty on a repeat: they are gone); ``messages``
    are every message known to show it (its post and ``/show`` copies), given on every call so
    a caller that failed to delete some can call again. ``already`` is True when an earlier
    call deleted it."""

    job_id: str
    refs: tuple[str, ...]
    messages: tuple[SharedMessage, ...]
    already: bool
    #: When it went to the showcase channel (that post goes too); None if never.
    published_at: datetime | None = None


# -- the web gallery (issue 12) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebGallery:
    """A server whose admins turned the read-only web gallery on (``storage.webdir``)."""

    guild_id: int
    #: The server's name when it was turned on (or last renamed through ``enable``).
    name: str
    enabled_by: int
    enabled_at: datetime


@dataclass(frozen=True, slots=True)
class WebJob:
    """One job as the web's image page shows it to an anonymous viewer: the job, every image
    it stored (a grid: its four images, then the grid), its stored request (JSON, for the
    parameters), and its lineage as far as it is public: the parent, when visible, and the
    visible children (follow-ups made from it), oldest first."""

    item: GalleryItem
    refs: tuple[str, ...]
    request: Mapping[str, Any]
    parent: GalleryItem | None
    children: tuple[GalleryItem, ...]


# -- group sessions (issue 13) -----------------------------------------------------------------


class SessionStatus(StrEnum):
    """Whether a group session's clock runs: running, paused by its host, or ended."""

    RUNNING = "running"
    PAUSED = "paused"
    ENDED = "ended"


class SessionPhase(StrEnum):
    """Where the current round stands: members submit; submissions closed and the approved
    entries generate; members vote; or the session ended. Each phase but the last ends at a
    timer (``SessionTimer``)."""

    SUBMIT = "submit"
    GENERATE = "generate"
    VOTE = "vote"
    ENDED = "ended"


class PoolKind(StrEnum):
    """Who pays for a session's entries: each member from their own quota, or a pool of
    GPU-seconds its host set aside from the server's allowance."""

    MEMBERS = "members"
    SERVER = "server"


class EntryState(StrEnum):
    """An entry: waiting for the host (approval on), in the contest, turned down by the host,
    still pending when its round closed, or removed by the host."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    REMOVED = "removed"


class SessionTimer(StrEnum):
    """The kinds of ``timers`` rows a session schedules (subject: the session id)."""

    ROUND_END = "session.round_end"  # submissions close
    LANE = "session.lane"  # the round's entries take the priority lane (its last minutes)
    VOTING_WAIT = "session.voting_wait"  # the longest wait for entries to generate
    VOTING_END = "session.voting_end"  # voting closes; the round's results

    @classmethod
    def of(cls, phase: SessionPhase) -> SessionTimer:
        """The timer that ends ``phase``."""
        return {
            SessionPhase.SUBMIT: cls.ROUND_END,
            SessionPhase.GENERATE: cls.VOTING_WAIT,
            SessionPhase.VOTE: cls.VOTING_END,
        }[phase]


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """A session as its host asked for it (``/session start``); ``SessionStore.start`` checks
    every bound (``storage.session_rules``). ``themes`` has one theme per round (empty: every
    round has ``theme``). ``limits`` is the bot's, stored as given (e.g. allowed modes)."""

    guild_id: int
    channel_id: int
    host_id: int
    theme: str
    rounds: int = 1
    themes: tuple[str, ...] = ()
    round_seconds: int = 600
    voting_seconds: int = 300
    voting_wait_seconds: int = 300
    entries_per_member: int = 1
    votes_per_member: int = 1
    approval: bool = False
    anonymous: bool = False
    pool: PoolKind = PoolKind.MEMBERS
    pool_seconds: float = 0.0
    limits: Mapping[str, Any] = field(default_factory=dict)
    #: The priority lane (the server's setting when the session started): this many seconds
    #: before a round's submissions close, its queued entries jump the queue's other jobs,
    #: and they keep the lane until generated. 0: no lane.
    lane_seconds: int = 0


@dataclass(frozen=True, slots=True)
class SessionView:
    """A group session as it stands. ``version`` grows with every change: the bot edits the
    session's card only when it passed the version the card shows."""

    id: str
    guild_id: int
    channel_id: int
    thread_id: int | None
    host_id: int
    theme: str
    themes: tuple[str, ...]
    rounds: int
    round_seconds: int
    voting_seconds: int
    voting_wait_seconds: int
    entries_per_member: int
    votes_per_member: int
    approval: bool
    anonymous: bool
    pool: PoolKind
    pool_seconds: float
    limits: Mapping[str, Any]
    status: SessionStatus
    round: int
    phase: SessionPhase
    #: When the current phase's timer is due (None while paused or ended).
    phase_ends_at: datetime | None
    #: What was left of the current phase when it was paused.
    paused_remaining_seconds: float | None
    card_message_id: int | None
    version: int
    created_at: datetime
    ended_at: datetime | None
    #: See ``SessionSpec.lane_seconds``.
    lane_seconds: int = 0

    @property
    def round_theme(self) -> str:
        return self.theme_of(self.round)

    def theme_of(self, round_: int) -> str:
        """The theme of round ``round_`` (the session's theme without a list of themes)."""
        if self.themes and 1 <= round_ <= len(self.themes):
            return self.themes[round_ - 1]
        return self.theme

    @property
    def live(self) -> bool:
        """Running or paused: not ended."""
        return self.status is not SessionStatus.ENDED


@dataclass(frozen=True, slots=True)
class EntryView:
    """One entry of a session round, with its job's state and its votes (counted from the
    ``session_votes`` rows)."""

    id: str
    seq: int
    session_id: str
    round: int
    member_id: int
    prompt: str
    state: EntryState
    job_id: str | None
    reason: str | None
    submitted_at: datetime
    decided_by: int | None
    decided_at: datetime | None
    message_id: int | None
    panel_message_id: int | None
    votes: int
    job_status: JobStatus | None = None
    #: Its job's result is on Discord (or its delivery was given up).
    delivered: bool = False
    #: Its job succeeded and may be shown (not held or deleted): members may vote for it.
    showable: bool = False
    #: Where its result is on Discord (its job's channel and message), once it is posted.
    posted_channel_id: int | None = None
    posted_message_id: int | None = None
    #: Why its job failed (its error), or why its delivery was given up.
    job_error: str | None = None
    undeliverable: str | None = None
    #: Its job's result and review (held: generated, not shown until a moderator decides).
    review: HoldState | None = None
    job_deleted: bool = False


@dataclass(frozen=True, slots=True)
class EntryDecision:
    """What one approve/reject did: the entry as it now stands, and whether this call decided
    it (False: it was decided before, and ``entry`` says by whom and how)."""

    entry: EntryView
    decided: bool


class VoteResult(NamedTuple):
    """After a vote toggle: whether the voter now votes for the entry, the entry's votes, and
    the voter's votes this round (counted from the database)."""

    voted: bool
    votes: int
    used: int


@dataclass(frozen=True, slots=True)
class Timer:
    """A durable timer (``timers`` row): fires once, at or after ``due_at``."""

    id: int
    kind: str
    subject: str
    round: int
    due_at: datetime
    fired_at: datetime | None
    claimed_by: str | None
    claim_until: datetime | None


@dataclass(frozen=True, slots=True)
class FireOutcome:
    """What firing a timer did: ``fired`` False when it was not this caller's to fire
    (already fired, cancelled, moved later, or claimed by another process). ``changed``: the
    session moved (a fired timer whose session had moved on already changes nothing)."""

    timer: Timer
    fired: bool
    changed: bool
    session: SessionView | None = None


@dataclass(frozen=True, slots=True)
class RankedEntry:
    """One place of a round's results: ranked by votes, ties broken by the earlier entry."""

    rank: int
    entry_id: str
    member_id: int
    job_id: str | None
    votes: int
    seq: int


@dataclass(frozen=True, slots=True)
class RoundResult:
    """A finished round: its theme and its ranked entries (those that generated)."""

    round: int
    theme: str
    entries: tuple[RankedEntry, ...]
    finished_at: datetime

    @property
    def winner(self) -> RankedEntry | None:
        """The first place, if anyone voted for it."""
        return self.entries[0] if self.entries and self.entries[0].votes > 0 else None


@dataclass(frozen=True, slots=True)
class SessionResults:
    """Every finished round's results, and the best-of: each round's winner, by round."""

    session_id: str
    rounds: tuple[RoundResult, ...]

    @property
    def best_of(self) -> tuple[tuple[int, RankedEntry], ...]:
        return tuple((r.round, r.winner) for r in self.rounds if r.winner is not None)


@dataclass(frozen=True, slots=True)
class SessionCounts:
    """The current round's entries by state, its participants, and approved entries still
    generating or not yet posted (``outstanding``)."""

    entries: Mapping[EntryState, int]
    participants: int
    outstanding: int


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """A server-pool session's pool, in GPU-seconds: ``spent`` (finished entries, at most each
    one's estimate), ``reserved`` (entries waiting or running) and ``left``."""

    pool: float
    spent: float
    reserved: float
    left: float


@dataclass(frozen=True, slots=True)
class PendingBoard:
    """A results board owed to a session's thread: a round's (``round`` >= 1) or the
    best-of (``round`` 0), posted once (claim it, post with ``nonce``, record the message)."""

    session_id: str
    round: int
    channel_id: int
    nonce: str
