"""The schema as SQLAlchemy models. Migrations (``storage/migrations``) create it; tests check
that the two agree.

Services query the tables with Core statements and return frozen dataclasses (``storage.types``):
async sessions cannot lazy-load, and ORM objects must never leak past a unit of work.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.types import (
    CopyKind,
    Decision,
    EntryState,
    HoldState,
    JobStatus,
    LedgerKind,
    ModAction,
    PoolKind,
    ReviewKind,
    ReviewState,
    SessionPhase,
    SessionStatus,
    Visibility,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database (SQLite has no time zones).

    SQLite stores them as fixed-width ISO text, so comparisons in SQL stay chronological.
    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


#: Portable JSON: JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")
#: 64-bit autoincrement keys; SQLite only autoincrements INTEGER PRIMARY KEY.
BigKey = BigInteger().with_variant(Integer(), "sqlite")


def _in(column: str, values: Iterable[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


#: The longest model name and aspect ratio the jobs table keeps.
MODEL_LENGTH = 255
ASPECT_LENGTH = 32


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Job(Base):
    """One job: its request, scheduling, lease, cost and result. Generation state only."""

    __tablename__ = "jobs"

    #: Insertion order: FIFO within a user, and a cheap stable tiebreak.
    seq: Mapped[int] = mapped_column(BigKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(16), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[str | None] = mapped_column(
        String(16), ForeignKey("jobs.id", ondelete="SET NULL")
    )
    owner_id: Mapped[int] = mapped_column(BigInteger)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    mode: Mapped[str] = mapped_column(String(16))
    batch_key: Mapped[str] = mapped_column(String(255), default="")
    priority: Mapped[int] = mapped_column(SmallInteger, default=0)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    #: Not claimable before this (retry backoff).
    available_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    estimated_ms: Mapped[int] = mapped_column(BigInteger)
    #: Held against the quota while the job is queued or running.
    reserved_ms: Mapped[int] = mapped_column(BigInteger)
    #: The owner's allowance when the job was accepted: settling caps the charge against it.
    allowance_ms: Mapped[int | None] = mapped_column(BigInteger)
    gpu_ms: Mapped[int | None] = mapped_column(BigInteger)
    charged_ms: Mapped[int | None] = mapped_column(BigInteger)
    result_refs: Mapped[list[str]] = mapped_column(JSONType, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    progress_step: Mapped[int | None] = mapped_column(Integer)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    preview_ref: Mapped[str | None] = mapped_column(String(255))
    progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Sampler work (images x steps x megapixels x guidance passes): scales the reservation.
    work_units: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    #: A blocked job's images are kept (never served) until then, for an appeal; None after.
    purge_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Within one owner, jobs are claimed in this order: the interaction's snowflake (when
    #: Discord received the command), whatever order the handlers committed in.
    order_key: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: Times a stopping worker gave the job back (not attempts; bounded all the same).
    releases: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: When retention deleted its images (the row stays for the ledger and /show's answer).
    pruned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Asked in an age-restricted channel (Discord's NSFW flag, or marked by an admin): the
    #: output classifier's loose thresholds apply.
    age_restricted: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    #: The output classifier's scores of each result image (label -> probability), if it ran.
    scores: Mapped[list[dict[str, float]] | None] = mapped_column(JSONType)
    # Sharing (issue 12). The full-text index over ``prompt`` is not modelled: an FTS5 table
    # kept by triggers on SQLite, a generated ``search_vector`` column on PostgreSQL (migration
    # 0007, ``storage.search``); the schema test leaves those objects out by name.
    #: public or stealth (``storage.visibility``); DM jobs are always stealth.
    visibility: Mapped[str] = mapped_column(
        String(16), default=Visibility.PUBLIC.value, server_default=Visibility.PUBLIC.value
    )
    #: When its owner deleted it: hidden everywhere, images gone, ledger untouched.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: ``likes`` rows of the job, kept exact in the transaction that adds or removes one.
    like_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: When it was posted to the showcase channel (at most once).
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The request's prompt, model and aspect as plain columns, for search and its filters.
    prompt: Mapped[str] = mapped_column(Text, default="", server_default="")
    model: Mapped[str] = mapped_column(String(MODEL_LENGTH), default="", server_default="")
    aspect: Mapped[str] = mapped_column(String(ASPECT_LENGTH), default="", server_default="")
    # Group sessions (issue 13). No foreign key: the tag stays when retention deletes an ended
    # session (and SQLite adds the column natively, without recreating the table).
    #: The session whose entry this job is (``storage.sessions``).
    session_id: Mapped[str | None] = mapped_column(String(16))
    #: Billed to the server (a session's pool): its ledger lines carry ``SERVER_PAYER`` as the
    #: user, and it never counts against its owner's allowance (``storage.quota``).
    guild_paid: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")

    __table_args__ = (
        CheckConstraint(_in("status", JobStatus), name="status"),
        CheckConstraint(_in("visibility", Visibility), name="visibility"),
        CheckConstraint("like_count >= 0", name="like_count"),
        CheckConstraint("attempts >= 0", name="attempts"),
        CheckConstraint("reserved_ms >= 0 AND estimated_ms >= 0", name="amounts"),
        # The scheduler scans queued jobs in priority/FIFO order.
        Index("ix_jobs_status_priority_seq", "status", "priority", "seq"),
        # Per-user counts (caps, running jobs, quota reservations) and /info listings.
        Index("ix_jobs_owner_id_status", "owner_id", "status"),
        Index("ix_jobs_guild_id_status", "guild_id", "status"),
        Index("ix_jobs_owner_id_seq", "owner_id", "seq"),
        # Reclaiming expired leases.
        Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
        # Finding batch partners.
        Index("ix_jobs_status_batch_key_seq", "status", "batch_key", "seq"),
        Index("ix_jobs_parent_id", "parent_id"),
        Index("ix_jobs_owner_id_order_key", "owner_id", "order_key"),
        # Galleries: a server's recent jobs, and its top jobs by likes.
        Index("ix_jobs_guild_id_seq", "guild_id", "seq"),
        Index("ix_jobs_guild_id_like_count_seq", "guild_id", "like_count", "seq"),
        Index("ix_jobs_session_id", "session_id"),
    )


class DeliveryRecord(Base):
    """Posting state of a job's message, apart from its generation state."""

    __tablename__ = "deliveries"

    job_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    attachment_limit: Mapped[int | None] = mapped_column(BigInteger)
    interaction_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Set when the final result is on Discord; cleared only when a moderator blocks a posted
    #: job, so its message is edited once more (to say it was removed).
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    post_attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The interaction this job answers, kept by the bot only (workers never read deliveries):
    #: a restarted bot finishes its response while the token lives; the token is cleared after.
    interaction_id: Mapped[int | None] = mapped_column(BigInteger)
    interaction_token: Mapped[str | None] = mapped_column(Text)
    #: Transient failures back off until then.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Set when delivery was given up for good (permanent errors after the fallbacks).
    given_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    give_up_reason: Mapped[str | None] = mapped_column(Text)
    #: Review: held (generated, never shown in public), approved or rejected; None if never held.
    review: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        Index("ix_deliveries_posted_at", "posted_at"),
        # A report from a message's context menu finds the job the message shows.
        Index("ix_deliveries_message_id", "message_id"),
        CheckConstraint(f"review IS NULL OR {_in('review', HoldState)}", name="review"),
    )


class JobCopy(Base):
    """A message that shows a job again (``/show``), so taking the job down reaches it too."""

    __tablename__ = "job_copies"

    id: Mapped[int] = mapped_column(BigKey, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(16), ForeignKey("jobs.id", ondelete="CASCADE"))
    channel_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: A /show repost or the showcase post (``CopyKind``): which buttons its edits rebuild.
    kind: Mapped[str] = mapped_column(
        String(16), default=CopyKind.SHOW.value, server_default=CopyKind.SHOW.value
    )

    __table_args__ = (
        CheckConstraint(_in("kind", CopyKind), name="kind"),
        Index("ix_job_copies_job_id", "job_id"),
        Index("ix_job_copies_message_id", "message_id"),
    )


class LeftGuild(Base):
    """A guild the bot was removed from: nothing is queued or delivered there any more."""

    __tablename__ = "left_guilds"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    left_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UserAccount(Base):
    """Per-user scheduling state; its row is also the lock that serialises a user's enqueues."""

    __tablename__ = "user_accounts"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class GuildAccount(Base):
    """The lock row that serialises quota checks against one guild's allowance."""

    __tablename__ = "guild_accounts"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


#: ``quota_overrides.guild_id`` of an override the operator set for every server.
EVERYWHERE = 0
#: ``quota_ledger.user_id`` of the lines of a job its server pays for (a session's pool).
SERVER_PAYER = 0


class QuotaOverrideRow(Base):
    """An allowance for one user (GPU-seconds per window, in milliseconds): in one server (set by
    its admins) or, with ``guild_id`` = EVERYWHERE, in all of them (set by the operator)."""

    __tablename__ = "quota_overrides"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    guild_id: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, autoincrement=False, server_default="0"
    )
    allowance_ms: Mapped[int] = mapped_column(BigInteger)
    set_by: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("allowance_ms >= 0", name="allowance"),)


class LedgerRow(Base):
    """Append-only record of every reservation, charge and refund, for audits."""

    __tablename__ = "quota_ledger"

    id: Mapped[int] = mapped_column(BigKey, primary_key=True, autoincrement=True)
    job_id: Mapped[str | None] = mapped_column(
        String(16), ForeignKey("jobs.id", ondelete="SET NULL")
    )
    user_id: Mapped[int] = mapped_column(BigInteger)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    amount_ms: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        CheckConstraint(_in("kind", LedgerKind), name="kind"),
        CheckConstraint("amount_ms >= 0", name="amount"),
        Index("ix_quota_ledger_user_id_kind_created_at", "user_id", "kind", "created_at"),
        Index("ix_quota_ledger_guild_id_kind_created_at", "guild_id", "kind", "created_at"),
        Index("ix_quota_ledger_job_id", "job_id"),
    )


class ModeStats(Base):
    """Moving average of measured GPU-seconds per job, per mode: the ETA's throughput."""

    __tablename__ = "mode_stats"

    mode: Mapped[str] = mapped_column(String(16), primary_key=True)
    avg_gpu_seconds: Mapped[float] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkRate(Base):
    """Moving average of measured GPU-seconds per unit of work, per kind of work (e.g.
    ``quality``, ``fast/upscale``): what turns a job's work units into its reservation."""

    __tablename__ = "work_rates"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    seconds_per_unit: Mapped[float] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UserSettingsRow(Base):
    """A user's defaults (JSON), e.g. mode, aspect, variation strength."""

    __tablename__ = "user_settings"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class GuildSettingsRow(Base):
    """A guild's settings (JSON), e.g. who may click other people's buttons."""

    __tablename__ = "guild_settings"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


#: The longest reason a moderation log row keeps (longer ones are shortened).
MODLOG_REASON_LENGTH = 500


class ModerationLogRow(Base):
    """One moderator action or automated decision in a server: the audit log (``/modlog``).

    No foreign key to ``jobs``: the log outlives the jobs it names (retention deletes job rows
    sooner than log rows)."""

    __tablename__ = "moderation_log"

    id: Mapped[int] = mapped_column(BigKey, primary_key=True, autoincrement=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The moderator; None: the bot decided (a refused prompt, a classifier).
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(16))
    target_user_id: Mapped[int | None] = mapped_column(BigInteger)
    target_job_id: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(MODLOG_REASON_LENGTH), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    __table_args__ = (
        CheckConstraint(_in("action", ModAction), name="action"),
        # Paging a server's log newest first, whole or by member or by job.
        Index("ix_moderation_log_guild_id_id", "guild_id", "id"),
        Index("ix_moderation_log_guild_id_target_user_id_id", "guild_id", "target_user_id", "id"),
        Index("ix_moderation_log_guild_id_target_job_id_id", "guild_id", "target_job_id", "id"),
        # Retention.
        Index("ix_moderation_log_created_at", "created_at"),
    )


#: The longest reason or decision text a review item keeps.
REVIEW_TEXT_LENGTH = 1000


class ReviewItemRow(Base):
    """One item of a server's review queue: a held job, a job's reports (grouped), or an appeal.

    At most one open item per job and kind (a partial unique index), so concurrent reports
    group into one item; at most one appeal per rejected item (``appeal_of`` is unique). The
    item's message in the moderators' channel is posted once (``message_id``, a nonce, and a
    posting claim) and edited whenever ``version`` passes ``shown_version``."""

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(BigKey, primary_key=True, autoincrement=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[str] = mapped_column(String(16), ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    reports: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    appeal_of: Mapped[int | None] = mapped_column(
        BigKey, ForeignKey("review_items.id", ondelete="CASCADE"), unique=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[int | None] = mapped_column(BigInteger)
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by: Mapped[int | None] = mapped_column(BigInteger)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision: Mapped[str | None] = mapped_column(String(16))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    shown_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    post_claimed_by: Mapped[str | None] = mapped_column(String(64))
    post_claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_in("kind", ReviewKind), name="kind"),
        CheckConstraint(_in("state", ReviewState), name="state"),
        CheckConstraint(f"decision IS NULL OR {_in('decision', Decision)}", name="decision"),
        Index(
            "ix_review_items_job_id_kind_open",
            "job_id",
            "kind",
            unique=True,
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
        Index("ix_review_items_guild_id_state_id", "guild_id", "state", "id"),
        Index("ix_review_items_job_id", "job_id"),
        Index("ix_review_items_stale", "shown_version", "version"),
    )


class ReportRow(Base):
    """One member's report of one job (once per member and job)."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(BigKey, primary_key=True, autoincrement=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[str] = mapped_column(String(16), ForeignKey("jobs.id", ondelete="CASCADE"))
    reporter_id: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("job_id", "reporter_id"),
        # The per-member rate limit.
        Index("ix_reports_reporter_id_created_at", "reporter_id", "created_at"),
    )


class BanRow(Base):
    """A member banned from Atelier in one server (not a Discord ban): no new jobs, no job
    buttons, until ``until`` (None: until /unban)."""

    __tablename__ = "bans"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text, default="")
    #: The moderator; None: the automatic ban (repeated rejections or refusals).
    banned_by: Mapped[int | None] = mapped_column(BigInteger)
    auto: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class NoticeRow(Base):
    """A direct message owed to a member about their job (held, approved, rejected, appeal
    decided), written in the transaction that decided it and posted once (a claim and a
    nonce). DMs a member refuses are given up, not retried."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(BigKey, primary_key=True, autoincrement=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[str | None] = mapped_column(
        String(16), ForeignKey("jobs.id", ondelete="CASCADE")
    )
    item_id: Mapped[int | None] = mapped_column(
        BigKey, ForeignKey("review_items.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Posted (the DM's id), or given up (the member takes no DMs): either ends it.
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_notices_sent_at_failed_at_id", "sent_at", "failed_at", "id"),)


class LikeRow(Base):
    """One member's like of one job (once per member and job). ``jobs.like_count`` counts
    them, updated in the same transaction. Rows go with their job (ON DELETE CASCADE)."""

    __tablename__ = "likes"

    job_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # "Liked by me", newest like first.
        Index("ix_likes_user_id_created_at", "user_id", "created_at"),
    )


#: The longest search text a saved query keeps.
SEARCH_TEXT_LENGTH = 1000


class SearchQueryRow(Base):
    """A search's parameters, stored so result pages fit in a 100-character custom_id: only
    its creator may load it, only until ``expires_at``; retention deletes expired rows and
    each member keeps a bounded number (``storage.sharing``)."""

    __tablename__ = "search_queries"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    query: Mapped[str] = mapped_column(Text)
    filters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_search_queries_expires_at", "expires_at"),
        Index("ix_search_queries_user_id_created_at", "user_id", "created_at"),
    )


#: The longest server name and member name the web gallery keeps (Discord's are at most 100
#: and 32 characters; longer ones are shortened).
WEB_NAME_LENGTH = 100


class WebGalleryRow(Base):
    """A server whose admins turned the read-only web gallery on (``storage.webdir``). No row:
    the web shows nothing of that server."""

    __tablename__ = "web_galleries"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    #: The server's name when it was turned on (the web has no Discord to ask).
    name: Mapped[str] = mapped_column(String(WEB_NAME_LENGTH))
    enabled_by: Mapped[int] = mapped_column(BigInteger)
    enabled_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MemberNameRow(Base):
    """A member's display name in a server, as the bot last saw it, so web pages can credit
    members without asking Discord."""

    __tablename__ = "member_names"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(WEB_NAME_LENGTH))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


#: The longest theme, entry prompt or host reason a session keeps.
SESSION_TEXT_LENGTH = 1000
#: At most one live (running or paused) session per parent channel.
LIVE_SESSION = "status IN ('running', 'paused')"


class GroupSessionRow(Base):
    """A group session (issue 13): rounds of submissions, generation and voting in a thread.

    ``phase_ends_at`` is the due time of the current phase's timer (``timers``); ``version``
    grows with every change, so the bot edits the session's card only when it changed."""

    __tablename__ = "group_sessions"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(BigInteger)
    host_id: Mapped[int] = mapped_column(BigInteger)
    theme: Mapped[str] = mapped_column(Text)
    themes: Mapped[list[str]] = mapped_column(JSONType)
    rounds: Mapped[int] = mapped_column(Integer)
    round_seconds: Mapped[int] = mapped_column(Integer)
    voting_seconds: Mapped[int] = mapped_column(Integer)
    voting_wait_seconds: Mapped[int] = mapped_column(Integer)
    entries_per_member: Mapped[int] = mapped_column(Integer)
    votes_per_member: Mapped[int] = mapped_column(Integer)
    approval: Mapped[bool] = mapped_column(Boolean)
    anonymous: Mapped[bool] = mapped_column(Boolean)
    pool: Mapped[str] = mapped_column(String(16))
    pool_ms: Mapped[int] = mapped_column(BigInteger)
    limits: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16))
    round: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(16))
    phase_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_remaining_ms: Mapped[int | None] = mapped_column(BigInteger)
    card_message_id: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer)
    #: The version the card shows (``SessionStore.mark_card_shown``).
    card_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The priority lane's length (``SessionSpec.lane_seconds``; migration 0011).
    lane_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

    __table_args__ = (
        CheckConstraint(_in("status", SessionStatus), name="status"),
        CheckConstraint(_in("phase", SessionPhase), name="phase"),
        CheckConstraint(_in("pool", PoolKind), name="pool"),
        CheckConstraint("pool_ms >= 0", name="pool_ms"),
        CheckConstraint("round >= 1 AND round <= rounds", name="round"),
        Index("ix_group_sessions_guild_id_status", "guild_id", "status"),
        Index(
            "ix_group_sessions_channel_id_live",
            "channel_id",
            unique=True,
            sqlite_where=text(LIVE_SESSION),
            postgresql_where=text(LIVE_SESSION),
        ),
        Index("ix_group_sessions_thread_id", "thread_id"),
        # Retention: ended sessions, oldest first.
        Index("ix_group_sessions_status_ended_at", "status", "ended_at"),
    )


class SessionRoundRow(Base):
    """One round of a session: its theme, its phase times and, once finished, its results
    (the ranked entries, ``storage.session_rules.rank``)."""

    __tablename__ = "session_rounds"

    session_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("group_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    round: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    theme: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    voting_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    voting_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    results: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    #: When the round's entries took the priority lane (its LANE timer, or submissions
    #: closing); None: not (yet), or the session has no lane.
    lane_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SessionEntryRow(Base):
    """One member's entry in a round: its prompt, the job to enqueue (``job_spec``: the
    encoded request and the job's fields, never an interaction token), then its job."""

    __tablename__ = "session_entries"

    #: Submission order: the tie-break of the results.
    seq: Mapped[int] = mapped_column(BigKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(16), unique=True)
    session_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("group_sessions.id", ondelete="CASCADE")
    )
    round: Mapped[int] = mapped_column(Integer)
    member_id: Mapped[int] = mapped_column(BigInteger)
    prompt: Mapped[str] = mapped_column(Text)
    job_spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(16))
    #: Enqueued once: unique, so no entry ever has two jobs.
    job_id: Mapped[str | None] = mapped_column(
        String(16), ForeignKey("jobs.id", ondelete="SET NULL"), unique=True
    )
    reason: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[int | None] = mapped_column(BigInteger)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    panel_message_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint(_in("state", EntryState), name="state"),
        Index("ix_session_entries_session_id_round_member_id", "session_id", "round", "member_id"),
        Index("ix_session_entries_session_id_state", "session_id", "state"),
    )


class SessionVoteRow(Base):
    """One member's vote for one entry (once per member and entry)."""

    __tablename__ = "session_votes"

    entry_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("session_entries.id", ondelete="CASCADE"), primary_key=True
    )
    voter_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    session_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("group_sessions.id", ondelete="CASCADE")
    )
    round: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_session_votes_session_id_round_voter_id", "session_id", "round", "voter_id"),
    )


class SessionMemberRow(Base):
    """A session's participant (a member who submitted), or one its host removed."""

    __tablename__ = "session_members"

    session_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("group_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    removed_by: Mapped[int | None] = mapped_column(BigInteger)


class SessionBoardRow(Base):
    """A results board owed to a session's thread, written when its round finished (round 0:
    the best-of, written when the session ended). Posted once: a claim, the nonce
    ``PendingBoard.nonce``, then its message id."""

    __tablename__ = "session_boards"

    session_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("group_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    round: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claim_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the entries the board ends anonymity for were re-rendered (their authors named,
    #: their Vote buttons gone): ``SessionPosts.pending_reveals`` (migration 0011).
    revealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_session_boards_posted_at", "posted_at"),)


class TimerRow(Base):
    """A durable timer: fires once at or after ``due_at`` (``storage.timers``). One per kind,
    subject and round; firing sets ``fired_at`` in the transaction of what it causes."""

    __tablename__ = "timers"

    id: Mapped[int] = mapped_column(BigKey, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(32))
    round: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claim_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("kind", "subject", "round"),
        Index("ix_timers_fired_at_due_at", "fired_at", "due_at"),
        Index("ix_timers_subject", "subject"),
    )


class Meta(Base):
    """Small key/value facts, e.g. the hash of the command set last synced to Discord."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


JOBS = cast(Table, Job.__table__)
DELIVERIES = cast(Table, DeliveryRecord.__table__)
JOB_COPIES = cast(Table, JobCopy.__table__)
LEFT_GUILDS = cast(Table, LeftGuild.__table__)
USER_ACCOUNTS = cast(Table, UserAccount.__table__)
GUILD_ACCOUNTS = cast(Table, GuildAccount.__table__)
QUOTA_OVERRIDES = cast(Table, QuotaOverrideRow.__table__)
LEDGER = cast(Table, LedgerRow.__table__)
MODE_STATS = cast(Table, ModeStats.__table__)
WORK_RATES = cast(Table, WorkRate.__table__)
USER_SETTINGS = cast(Table, UserSettingsRow.__table__)
GUILD_SETTINGS = cast(Table, GuildSettingsRow.__table__)
META = cast(Table, Meta.__table__)
MODERATION_LOG = cast(Table, ModerationLogRow.__table__)
REVIEW_ITEMS = cast(Table, ReviewItemRow.__table__)
REPORTS = cast(Table, ReportRow.__table__)
BANS = cast(Table, BanRow.__table__)
NOTICES = cast(Table, NoticeRow.__table__)
LIKES = cast(Table, LikeRow.__table__)
SEARCH_QUERIES = cast(Table, SearchQueryRow.__table__)
WEB_GALLERIES = cast(Table, WebGalleryRow.__table__)
MEMBER_NAMES = cast(Table, MemberNameRow.__table__)
GROUP_SESSIONS = cast(Table, GroupSessionRow.__table__)
SESSION_ROUNDS = cast(Table, SessionRoundRow.__table__)
SESSION_ENTRIES = cast(Table, SessionEntryRow.__table__)
SESSION_VOTES = cast(Table, SessionVoteRow.__table__)
SESSION_MEMBERS = cast(Table, SessionMemberRow.__table__)
SESSION_BOARDS = cast(Table, SessionBoardRow.__table__)
TIMERS = cast(Table, TimerRow.__table__)
