"""Group sessions (issue 13): sessions, their rounds, entries, votes, participants and results
boards; a generic table of durable timers; jobs tagged with their session
(``jobs.session_id``) and, for a session's pool, billed to their server (``jobs.guild_paid``);
the audit log gains the session actions.

Nothing before this revision was part of a session: every new table starts empty, every job
is untagged and billed to its owner.

SQLite: ``jobs`` gains its columns with native ``ALTER TABLE ... ADD COLUMN`` (never batch
mode's recreate; see 0007). ``moderation_log`` is recreated to widen its action check, as 0006
did.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGKEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=False)
OLD_ACTIONS = (
    "'refused', 'held', 'classified', 'approved', 'rejected', 'banned', 'unbanned', "
    "'filter_added', 'filter_removed', 'blocked', 'published', 'unpublished', "
    "'reported', 'appealed', 'appeal_granted', 'appeal_denied', 'expired'"
)
SESSION_ACTIONS = "'session_started', 'session_ended', 'entry_removed', 'member_removed'"
NEW_ACTIONS = f"{OLD_ACTIONS}, {SESSION_ACTIONS}"
LIVE_SESSION = "status IN ('running', 'paused')"


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _session_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["session_id"],
        ["group_sessions.id"],
        name=f"fk_{table}_session_id_group_sessions",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    if _sqlite():
        op.execute("ALTER TABLE jobs ADD COLUMN session_id VARCHAR(16)")
        op.execute("ALTER TABLE jobs ADD COLUMN guild_paid BOOLEAN DEFAULT 0 NOT NULL")
    else:
        op.add_column("jobs", sa.Column("session_id", sa.String(length=16), nullable=True))
        op.add_column(
            "jobs", sa.Column("guild_paid", sa.Boolean(), nullable=False, server_default="0")
        )
    op.create_index("ix_jobs_session_id", "jobs", ["session_id"])
    with op.batch_alter_table("moderation_log", recreate="always") as batch:
        batch.drop_constraint("ck_moderation_log_action", type_="check")
        batch.create_check_constraint("ck_moderation_log_action", f"action IN ({NEW_ACTIONS})")
    op.create_table(
        "group_sessions",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=True),
        sa.Column("host_id", sa.BigInteger(), nullable=False),
        sa.Column("theme", sa.Text(), nullable=False),
        sa.Column("themes", JSON, nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("round_seconds", sa.Integer(), nullable=False),
        sa.Column("voting_seconds", sa.Integer(), nullable=False),
        sa.Column("voting_wait_seconds", sa.Integer(), nullable=False),
        sa.Column("entries_per_member", sa.Integer(), nullable=False),
        sa.Column("votes_per_member", sa.Integer(), nullable=False),
        sa.Column("approval", sa.Boolean(), nullable=False),
        sa.Column("anonymous", sa.Boolean(), nullable=False),
        sa.Column("pool", sa.String(length=16), nullable=False),
        sa.Column("pool_ms", sa.BigInteger(), nullable=False),
        sa.Column("limits", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("phase_ends_at", TIME, nullable=True),
        sa.Column("paused_remaining_ms", sa.BigInteger(), nullable=True),
        sa.Column("card_message_id", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("card_version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("ended_at", TIME, nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'paused', 'ended')", name="ck_group_sessions_status"
        ),
        sa.CheckConstraint(
            "phase IN ('submit', 'generate', 'vote', 'ended')", name="ck_group_sessions_phase"
        ),
        sa.CheckConstraint("pool IN ('members', 'server')", name="ck_group_sessions_pool"),
        sa.CheckConstraint("pool_ms >= 0", name="ck_group_sessions_pool_ms"),
        sa.CheckConstraint("round >= 1 AND round <= rounds", name="ck_group_sessions_round"),
        sa.PrimaryKeyConstraint("id", name="pk_group_sessions"),
    )
    op.create_index("ix_group_sessions_guild_id_status", "group_sessions", ["guild_id", "status"])
    op.create_index(
        "ix_group_sessions_channel_id_live",
        "group_sessions",
        ["channel_id"],
        unique=True,
        sqlite_where=sa.text(LIVE_SESSION),
        postgresql_where=sa.text(LIVE_SESSION),
    )
    op.create_index("ix_group_sessions_thread_id", "group_sessions", ["thread_id"])
    op.create_index("ix_group_sessions_status_ended_at", "group_sessions", ["status", "ended_at"])
    op.create_table(
        "session_rounds",
        sa.Column("session_id", sa.String(length=16), nullable=False),
        sa.Column("round", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("theme", sa.Text(), nullable=False),
        sa.Column("opened_at", TIME, nullable=False),
        sa.Column("closed_at", TIME, nullable=True),
        sa.Column("voting_started_at", TIME, nullable=True),
        sa.Column("voting_ends_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("results", JSON, nullable=True),
        _session_fk("session_rounds"),
        sa.PrimaryKeyConstraint("session_id", "round", name="pk_session_rounds"),
    )
    op.create_table(
        "session_entries",
        sa.Column("seq", BIGKEY, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=16), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("job_spec", JSON, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("submitted_at", TIME, nullable=False),
        sa.Column("decided_by", sa.BigInteger(), nullable=True),
        sa.Column("decided_at", TIME, nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("panel_message_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'approved', 'rejected', 'expired', 'removed')",
            name="ck_session_entries_state",
        ),
        _session_fk("session_entries"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_session_entries_job_id_jobs", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_session_entries"),
        sa.UniqueConstraint("id", name="uq_session_entries_id"),
        sa.UniqueConstraint("job_id", name="uq_session_entries_job_id"),
    )
    op.create_index(
        "ix_session_entries_session_id_round_member_id",
        "session_entries",
        ["session_id", "round", "member_id"],
    )
    op.create_index(
        "ix_session_entries_session_id_state", "session_entries", ["session_id", "state"]
    )
    op.create_table(
        "session_votes",
        sa.Column("entry_id", sa.String(length=16), nullable=False),
        sa.Column("voter_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("session_id", sa.String(length=16), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["session_entries.id"],
            name="fk_session_votes_entry_id_session_entries",
            ondelete="CASCADE",
        ),
        _session_fk("session_votes"),
        sa.PrimaryKeyConstraint("entry_id", "voter_id", name="pk_session_votes"),
    )
    op.create_index(
        "ix_session_votes_session_id_round_voter_id",
        "session_votes",
        ["session_id", "round", "voter_id"],
    )
    op.create_table(
        "session_members",
        sa.Column("session_id", sa.String(length=16), nullable=False),
        sa.Column("member_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("joined_at", TIME, nullable=False),
        sa.Column("removed_at", TIME, nullable=True),
        sa.Column("removed_by", sa.BigInteger(), nullable=True),
        _session_fk("session_members"),
        sa.PrimaryKeyConstraint("session_id", "member_id", name="pk_session_members"),
    )
    op.create_table(
        "session_boards",
        sa.Column("session_id", sa.String(length=16), nullable=False),
        sa.Column("round", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claim_until", TIME, nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("posted_at", TIME, nullable=True),
        _session_fk("session_boards"),
        sa.PrimaryKeyConstraint("session_id", "round", name="pk_session_boards"),
    )
    op.create_index("ix_session_boards_posted_at", "session_boards", ["posted_at"])
    op.create_table(
        "timers",
        sa.Column("id", BIGKEY, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=32), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("due_at", TIME, nullable=False),
        sa.Column("fired_at", TIME, nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claim_until", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_timers"),
        sa.UniqueConstraint("kind", "subject", "round", name="uq_timers_kind_subject_round"),
    )
    op.create_index("ix_timers_fired_at_due_at", "timers", ["fired_at", "due_at"])
    op.create_index("ix_timers_subject", "timers", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_timers_subject", table_name="timers")
    op.drop_index("ix_timers_fired_at_due_at", table_name="timers")
    op.drop_table("timers")
    op.drop_index("ix_session_boards_posted_at", table_name="session_boards")
    op.drop_table("session_boards")
    op.drop_table("session_members")
    op.drop_index("ix_session_votes_session_id_round_voter_id", table_name="session_votes")
    op.drop_table("session_votes")
    op.drop_index("ix_session_entries_session_id_state", table_name="session_entries")
    op.drop_index("ix_session_entries_session_id_round_member_id", table_name="session_entries")
    op.drop_table("session_entries")
    op.drop_table("session_rounds")
    for index in (
        "ix_group_sessions_status_ended_at",
        "ix_group_sessions_thread_id",
        "ix_group_sessions_channel_id_live",
        "ix_group_sessions_guild_id_status",
    ):
        op.drop_index(index, table_name="group_sessions")
    op.drop_table("group_sessions")
    op.execute(f"DELETE FROM moderation_log WHERE action IN ({SESSION_ACTIONS})")
    with op.batch_alter_table("moderation_log", recreate="always") as batch:
        batch.drop_constraint("ck_moderation_log_action", type_="check")
        batch.create_check_constraint("ck_moderation_log_action", f"action IN ({OLD_ACTIONS})")
    op.drop_index("ix_jobs_session_id", table_name="jobs")
    if _sqlite():
        op.execute("ALTER TABLE jobs DROP COLUMN guild_paid")
        op.execute("ALTER TABLE jobs DROP COLUMN session_id")
    else:
        op.drop_column("jobs", "guild_paid")
        op.drop_column("jobs", "session_id")
