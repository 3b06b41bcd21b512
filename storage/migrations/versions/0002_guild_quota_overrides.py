"""Quota overrides belong to the server that set them (or, guild_id 0, to the operator).

Overrides made before this revision were set through Discord without a record of the server;
they become operator overrides (guild_id 0), which apply everywhere as before, so nothing changes
for a one-server bot. `atelier quota show` lists them for the operator to review.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("quota_overrides", recreate="always") as batch:
        batch.add_column(
            sa.Column(
                "guild_id",
                sa.BigInteger(),
                autoincrement=False,
                nullable=False,
                server_default="0",
            )
        )
        batch.drop_constraint("pk_quota_overrides", type_="primary")
        batch.create_primary_key("pk_quota_overrides", ["user_id", "guild_id"])


def downgrade() -> None:
    op.execute("DELETE FROM quota_overrides WHERE guild_id <> 0")
    with op.batch_alter_table("quota_overrides", recreate="always") as batch:
        batch.drop_constraint("pk_quota_overrides", type_="primary")
        batch.drop_column("guild_id")
        batch.create_primary_key("pk_quota_overrides", ["user_id"])
