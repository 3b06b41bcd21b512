"""The moderation audit log (issue 11): one row per moderator action or automated decision in a
server, paged by ``/modlog`` and exported by ``atelier modlog export``.

Nothing before this revision was recorded, so the log starts empty.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: 64-bit autoincrement keys; SQLite only autoincrements INTEGER PRIMARY KEY.
BIGKEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ACTIONS = (
    "'refused', 'held', 'classified', 'approved', 'rejected', 'banned', 'unbanned', "
    "'filter_added', 'filter_removed', 'blocked', 'published', 'unpublished'"
)


def upgrade() -> None:
    op.create_table(
        "moderation_log",
        sa.Column("id", BIGKEY, primary_key=True, autoincrement=True),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("target_user_id", sa.BigInteger(), nullable=True),
        sa.Column("target_job_id", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.CheckConstraint(f"action IN ({ACTIONS})", name="ck_moderation_log_action"),
        sa.PrimaryKeyConstraint("id", name="pk_moderation_log"),
    )
    op.create_index("ix_moderation_log_guild_id_id", "moderation_log", ["guild_id", "id"])
    op.create_index(
        "ix_moderation_log_guild_id_target_user_id_id",
        "moderation_log",
        ["guild_id", "target_user_id", "id"],
    )
    op.create_index(
        "ix_moderation_log_guild_id_target_job_id_id",
        "moderation_log",
        ["guild_id", "target_job_id", "id"],
    )
    op.create_index("ix_moderation_log_created_at", "moderation_log", ["created_at"])


def downgrade() -> None:
    for index in (
        "ix_moderation_log_created_at",
        "ix_moderation_log_guild_id_target_job_id_id",
        "ix_moderation_log_guild_id_target_user_id_id",
        "ix_moderation_log_guild_id_id",
    ):
        op.drop_index(index, table_name="moderation_log")
    op.drop_table("moderation_log")
