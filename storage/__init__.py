"""The durable job ledger: SQLAlchemy models, migrations, the fair queue, quotas and images.

Public entry points (the composition root wires them; nothing here imports ``generation``):

- ``Database`` (engine and units of work) and ``upgrade``/``upgrade_sync`` (migrations);
- ``JobQueue`` (every job transition), ``QuotaService``, ``DeliveryLedger``, ``PreferenceStore``,
  ``ModerationLog`` (the moderation audit log);
- ``SharingStore`` (likes, owner deletion, visibility, gallery pages, prompt search, saved
  searches), ``WebDirectory`` (the web gallery's servers, member names and image pages)
  and the one visibility rule, ``visible_clause``/``visible``, with the one anonymity rule
  of session entries, ``author_hidden_clause``/``author_hidden`` (``storage.visibility``);
- ``SessionStore`` (group sessions: rounds, entries, votes, host controls, results) on
  durable timers (``TimerStore``), with its card and boards (``SessionPosts``);
- ``ImageStore``/``FileImageStore``; ``audit``; the frozen types in ``storage.types``;
- ``RequestCodec``: how the queue and the delivery ledger store the caller's request type
  (``JSON_CODEC``, the default, keeps plain JSON objects);
- errors under ``StorageError``.
"""

from storage.audit import audit
from storage.db import Database
from storage.delivery_ledger import DeliveryLedger
from storage.errors import (
    BadSearchQuery,
    DeliveryClaimLost,
    EntryNotFound,
    GuildLeftError,
    IllegalTransition,
    ImageNotFound,
    InvalidImageRef,
    JobNotFound,
    JobUnavailable,
    LeaseLost,
    QueueFullError,
    QuotaExceededError,
    SavedQueryGone,
    SessionNotFound,
    SessionRefused,
    SharingRefused,
    StorageError,
    UndecodableRequest,
)
from storage.images import FileImageStore, ImageStore
from storage.migrate import current_revision, head_revision, upgrade, upgrade_sync
from storage.modlog import ModerationLog
from storage.preferences import PreferenceStore
from storage.queue import JobQueue
from storage.quota import QuotaService
from storage.quota_policy import estimate_seconds
from storage.session_posts import SessionPosts
from storage.sessions import SessionStore
from storage.sharing import SharingStore
from storage.timers import TimerStore
from storage.types import (
    JSON_CODEC,
    AuditReport,
    ClaimedJob,
    DeletedJob,
    EntryDecision,
    EntryState,
    EntryView,
    FireOutcome,
    GalleryItem,
    GalleryPage,
    GalleryView,
    Heartbeat,
    JobKind,
    JobStatus,
    JobView,
    LedgerEntry,
    LedgerKind,
    LikeResult,
    ModAction,
    ModLogEntry,
    ModLogPage,
    NewJob,
    Owner,
    PendingBoard,
    PoolKind,
    PoolStatus,
    QueuePlace,
    QueueStats,
    QuotaOverride,
    QuotaReadout,
    RankedEntry,
    RequestCodec,
    RoundResult,
    SavedQuery,
    SearchFilters,
    SearchPage,
    SessionCounts,
    SessionPhase,
    SessionResults,
    SessionSpec,
    SessionStatus,
    SessionTimer,
    SessionView,
    SharedMessage,
    Timer,
    Visibility,
    VoteResult,
    WebGallery,
    WebJob,
)
from storage.visibility import author_hidden, author_hidden_clause, visible, visible_clause
from storage.webdir import WebDirectory

__all__ = [
    "JSON_CODEC",
    "AuditReport",
    "BadSearchQuery",
    "ClaimedJob",
    "Database",
    "DeletedJob",
    "DeliveryClaimLost",
    "DeliveryLedger",
    "EntryDecision",
    "EntryNotFound",
    "EntryState",
    "EntryView",
    "FileImageStore",
    "FireOutcome",
    "GalleryItem",
    "GalleryPage",
    "GalleryView",
    "GuildLeftError",
    "Heartbeat",
    "IllegalTransition",
    "ImageNotFound",
    "ImageStore",
    "InvalidImageRef",
    "JobKind",
    "JobNotFound",
    "JobQueue",
    "JobStatus",
    "JobUnavailable",
    "JobView",
    "LeaseLost",
    "LedgerEntry",
    "LedgerKind",
    "LikeResult",
    "ModAction",
    "ModLogEntry",
    "ModLogPage",
    "ModerationLog",
    "NewJob",
    "Owner",
    "PendingBoard",
    "PoolKind",
    "PoolStatus",
    "PreferenceStore",
    "QueueFullError",
    "QueuePlace",
    "QueueStats",
    "QuotaExceededError",
    "QuotaOverride",
    "QuotaReadout",
    "QuotaService",
    "RankedEntry",
    "RequestCodec",
    "RoundResult",
    "SavedQuery",
    "SavedQueryGone",
    "SearchFilters",
    "SearchPage",
    "SessionCounts",
    "SessionNotFound",
    "SessionPhase",
    "SessionPosts",
    "SessionRefused",
    "SessionResults",
    "SessionSpec",
    "SessionStatus",
    "SessionStore",
    "SessionTimer",
    "SessionView",
    "SharedMessage",
    "SharingRefused",
    "SharingStore",
    "StorageError",
    "Timer",
    "TimerStore",
    "UndecodableRequest",
    "Visibility",
    "VoteResult",
    "WebDirectory",
    "WebGallery",
    "WebJob",
    "audit",
    "author_hidden",
    "author_hidden_clause",
    "current_revision",
    "estimate_seconds",
    "head_revision",
    "upgrade",
    "upgrade_sync",
    "visible",
    "visible_clause",
]
