"""Columns for acknowledged-means-kept delivery (issue 10): the order Discord saw, bounded
releases, the interaction a delivery answers, delivery backoff and giving up, pruning, and the
guilds the bot has left.

Jobs made before this revision get order key 0, so they keep their insertion order ahead of
newer ones; their deliveries have no interaction recorded.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("order_key", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("releases", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("pruned_at", sa.DateTime(timezone=False), nullable=True))
    op.create_index("ix_jobs_owner_id_order_key", "jobs", ["owner_id", "order_key"])
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("interaction_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("interaction_token", sa.Text(), nullable=True))
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=False), nullable=True))
        batch.add_column(sa.Column("given_up_at", sa.DateTime(timezone=False), nullable=True))
        batch.add_column(sa.Column("give_up_reason", sa.Text(), nullable=True))
    op.create_table(
        "left_guilds",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("guild_id", name="pk_left_guilds"),
    )


def downgrade() -> None:
    op.drop_table("left_guilds")
    with op.batch_alter_table("deliveries") as batch:
        for column in (
            "give_up_reason",
            "given_up_at",
            "next_attempt_at",
            "interaction_token",
            "interaction_id",
        ):
            batch.drop_column(column)
    op.drop_index("ix_jobs_owner_id_order_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("pruned_at")
        batch.drop_column("releases")
        batch.drop_column("order_key")
