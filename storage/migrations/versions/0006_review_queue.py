"""The moderation workflow (issue 11): held deliveries, the review queue, reports, bans and the
direct messages owed to members about their jobs; jobs record the classifier's scores and
whether they were asked in an age-restricted channel; the audit log gains the actions these add.

Nothing before this revision was held, reported or banned: every table starts empty.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGKEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
OLD_ACTIONS = (
    "'refused', 'held', 'classified', 'approved', 'rejected', 'banned', 'unbanned', "
    "'filter_added', 'filter_removed', 'blocked', 'published', 'unpublished'"
)
NEW_ACTIONS = OLD_ACTIONS + ", 'reported', 'appealed', 'appeal_granted', 'appeal_denied', 'expired'"
TIME = sa.DateTime(timezone=False)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("age_restricted", sa.Boolean(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("scores", JSON, nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("review", sa.String(length=16), nullable=True))
        batch.create_check_constraint(
            "ck_deliveries_review", "review IS NULL OR review IN ('held', 'approved', 'rejected')"
        )
    with op.batch_alter_table("moderation_log", recreate="always") as batch:
        batch.drop_constraint("ck_moderation_log_action", type_="check")
        batch.create_check_constraint("ck_moderation_log_action", f"action IN ({NEW_ACTIONS})")
    op.create_index("ix_deliveries_message_id", "deliveries", ["message_id"])
    op.create_index("ix_job_copies_message_id", "job_copies", ["message_id"])
    op.create_table(
        "review_items",
        sa.Column("id", BIGKEY, primary_key=True, autoincrement=True),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.Column("reports", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("appeal_of", BIGKEY, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("claimed_by", sa.BigInteger(), nullable=True),
        sa.Column("claim_expires_at", TIME, nullable=True),
        sa.Column("decided_by", sa.BigInteger(), nullable=True),
        sa.Column("decided_at", TIME, nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("shown_version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("post_claimed_by", sa.String(length=64), nullable=True),
        sa.Column("post_claim_expires_at", TIME, nullable=True),
        sa.CheckConstraint("kind IN ('hold', 'report', 'appeal')", name="ck_review_items_kind"),
        sa.CheckConstraint("state IN ('open', 'decided')", name="ck_review_items_state"),
        sa.CheckConstraint(
            "decision IS NULL OR decision IN "
            "('approve', 'reject', 'expire', 'grant', 'deny', 'superseded')",
            name="ck_review_items_decision",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_review_items_job_id_jobs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["appeal_of"],
            ["review_items.id"],
            name="fk_review_items_appeal_of_review_items",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_review_items"),
        sa.UniqueConstraint("appeal_of", name="uq_review_items_appeal_of"),
    )
    op.create_index(
        "ix_review_items_job_id_kind_open",
        "review_items",
        ["job_id", "kind"],
        unique=True,
        sqlite_where=sa.text("state = 'open'"),
        postgresql_where=sa.text("state = 'open'"),
    )
    op.create_index(
        "ix_review_items_guild_id_state_id", "review_items", ["guild_id", "state", "id"]
    )
    op.create_index("ix_review_items_job_id", "review_items", ["job_id"])
    op.create_index("ix_review_items_stale", "review_items", ["shown_version", "version"])
    op.create_table(
        "reports",
        sa.Column("id", BIGKEY, primary_key=True, autoincrement=True),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.String(length=16), nullable=False),
        sa.Column("reporter_id", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_reports_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.UniqueConstraint("job_id", "reporter_id", name="uq_reports_job_id_reporter_id"),
    )
    op.create_index("ix_reports_reporter_id_created_at", "reports", ["reporter_id", "created_at"])
    op.create_table(
        "bans",
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("until", TIME, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("banned_by", sa.BigInteger(), nullable=True),
        sa.Column("auto", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("guild_id", "user_id", name="pk_bans"),
    )
    op.create_table(
        "notices",
        sa.Column("id", BIGKEY, primary_key=True, autoincrement=True),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.String(length=16), nullable=True),
        sa.Column("item_id", BIGKEY, nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIME, nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claim_expires_at", TIME, nullable=True),
        sa.Column("sent_at", TIME, nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("failed_at", TIME, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_notices_job_id_jobs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["review_items.id"],
            name="fk_notices_item_id_review_items",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_notices"),
    )
    op.create_index("ix_notices_sent_at_failed_at_id", "notices", ["sent_at", "failed_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_notices_sent_at_failed_at_id", table_name="notices")
    op.drop_table("notices")
    op.drop_table("bans")
    op.drop_index("ix_reports_reporter_id_created_at", table_name="reports")
    op.drop_table("reports")
    for index in (
        "ix_review_items_stale",
        "ix_review_items_job_id",
        "ix_review_items_guild_id_state_id",
        "ix_review_items_job_id_kind_open",
    ):
        op.drop_index(index, table_name="review_items")
    op.drop_table("review_items")
    op.drop_index("ix_job_copies_message_id", table_name="job_copies")
    op.drop_index("ix_deliveries_message_id", table_name="deliveries")
    op.execute(
        "DELETE FROM moderation_log WHERE action IN "
        "('reported', 'appealed', 'appeal_granted', 'appeal_denied', 'expired')"
    )
    with op.batch_alter_table("moderation_log", recreate="always") as batch:
        batch.drop_constraint("ck_moderation_log_action", type_="check")
        batch.create_check_constraint("ck_moderation_log_action", f"action IN ({OLD_ACTIONS})")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint("ck_deliveries_review", type_="check")
        batch.drop_column("review")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("scores")
        batch.drop_column("age_restricted")
