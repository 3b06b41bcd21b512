"""The read-only web gallery (issue 12): which servers turned it on, and members' display names.

- ``web_galleries``: one row per server whose admins turned the web gallery on (its name then).
- ``member_names``: the display name the bot last saw for a member of a server, so web pages can
  credit members without Discord.

New tables only: ``jobs`` is not touched (recreating it on SQLite would drop the search
triggers of 0007).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=False)
NAME_LENGTH = 100


def upgrade() -> None:
    op.create_table(
        "web_galleries",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=NAME_LENGTH), nullable=False),
        sa.Column("enabled_by", sa.BigInteger(), nullable=False),
        sa.Column("enabled_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("guild_id", name="pk_web_galleries"),
    )
    op.create_table(
        "member_names",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=NAME_LENGTH), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("guild_id", "user_id", name="pk_member_names"),
    )


def downgrade() -> None:
    op.drop_table("member_names")
    op.drop_table("web_galleries")
