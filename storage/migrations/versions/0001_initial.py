"""The job ledger: jobs, deliveries, quota ledger, accounts, settings and meta.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGKEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STATUSES = "'queued', 'running', 'succeeded', 'failed', 'cancelled', 'blocked', 'dead'"
LEDGER_KINDS = "'reserve', 'charge', 'release', 'refund', 'waive'"


def _ts(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=False), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("seq", BIGKEY, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.String(16), nullable=True),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("request", JSON, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("batch_key", sa.String(255), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        _ts("available_at", nullable=False),
        sa.Column("lease_token", sa.String(32), nullable=True),
        _ts("lease_expires_at"),
        sa.Column("worker_id", sa.String(64), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        sa.Column("estimated_ms", sa.BigInteger(), nullable=False),
        sa.Column("reserved_ms", sa.BigInteger(), nullable=False),
        sa.Column("allowance_ms", sa.BigInteger(), nullable=True),
        sa.Column("gpu_ms", sa.BigInteger(), nullable=True),
        sa.Column("charged_ms", sa.BigInteger(), nullable=True),
        sa.Column("result_refs", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("progress_step", sa.Integer(), nullable=True),
        sa.Column("progress_total", sa.Integer(), nullable=True),
        sa.Column("preview_ref", sa.String(255), nullable=True),
        _ts("progress_at"),
        sa.PrimaryKeyConstraint("seq", name="pk_jobs"),
        sa.UniqueConstraint("id", name="uq_jobs_id"),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["jobs.id"], name="fk_jobs_parent_id_jobs", ondelete="SET NULL"
        ),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="ck_jobs_status"),
        sa.CheckConstraint("attempts >= 0", name="ck_jobs_attempts"),
        sa.CheckConstraint("reserved_ms >= 0 AND estimated_ms >= 0", name="ck_jobs_amounts"),
    )
    op.create_index("ix_jobs_status_priority_seq", "jobs", ["status", "priority", "seq"])
    op.create_index("ix_jobs_owner_id_status", "jobs", ["owner_id", "status"])
    op.create_index("ix_jobs_guild_id_status", "jobs", ["guild_id", "status"])
    op.create_index("ix_jobs_owner_id_seq", "jobs", ["owner_id", "seq"])
    op.create_index("ix_jobs_status_lease_expires_at", "jobs", ["status", "lease_expires_at"])
    op.create_index("ix_jobs_status_batch_key_seq", "jobs", ["status", "batch_key", "seq"])
    op.create_index("ix_jobs_parent_id", "jobs", ["parent_id"])

    op.create_table(
        "deliveries",
        sa.Column("job_id", sa.String(16), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("attachment_limit", sa.BigInteger(), nullable=True),
        _ts("interaction_expires_at"),
        _ts("posted_at"),
        sa.Column("post_attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        _ts("claim_expires_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_deliveries"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_deliveries_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_deliveries_posted_at", "deliveries", ["posted_at"])

    op.create_table(
        "user_accounts",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        _ts("last_started_at"),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_accounts"),
    )
    op.create_table(
        "guild_accounts",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("guild_id", name="pk_guild_accounts"),
    )
    op.create_table(
        "quota_overrides",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("allowance_ms", sa.BigInteger(), nullable=False),
        sa.Column("set_by", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_quota_overrides"),
        sa.CheckConstraint("allowance_ms >= 0", name="ck_quota_overrides_allowance"),
    )
    op.create_table(
        "quota_ledger",
        sa.Column("id", BIGKEY, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(16), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount_ms", sa.BigInteger(), nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("note", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_quota_ledger"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_quota_ledger_job_id_jobs", ondelete="SET NULL"
        ),
        sa.CheckConstraint(f"kind IN ({LEDGER_KINDS})", name="ck_quota_ledger_kind"),
        sa.CheckConstraint("amount_ms >= 0", name="ck_quota_ledger_amount"),
    )
    op.create_index(
        "ix_quota_ledger_user_id_kind_created_at", "quota_ledger", ["user_id", "kind", "created_at"]
    )
    op.create_index(
        "ix_quota_ledger_guild_id_kind_created_at",
        "quota_ledger",
        ["guild_id", "kind", "created_at"],
    )
    op.create_index("ix_quota_ledger_job_id", "quota_ledger", ["job_id"])

    op.create_table(
        "mode_stats",
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("avg_gpu_seconds", sa.Float(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("mode", name="pk_mode_stats"),
    )
    for table, key in (("user_settings", "user_id"), ("guild_settings", "guild_id")):
        op.create_table(
            table,
            sa.Column(key, sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("data", JSON, nullable=False),
            _ts("updated_at", nullable=False),
            sa.PrimaryKeyConstraint(key, name=f"pk_{table}"),
        )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )


def downgrade() -> None:
    for table in (
        "meta",
        "guild_settings",
        "user_settings",
        "mode_stats",
        "quota_ledger",
        "quota_overrides",
        "guild_accounts",
        "user_accounts",
        "deliveries",
        "jobs",
    ):
        op.drop_table(table)
