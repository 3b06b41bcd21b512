"""Group sessions' priority lane and durable reveals (issue 13): how long before a round's
submissions close its entries jump the queue (``group_sessions.lane_seconds``, the server's
setting when the session started; 0: none), when a round's lane opened
(``session_rounds.lane_opened_at``), and when a posted board's entries were re-rendered with
their authors (``session_boards.revealed_at``).

Sessions started before this revision have no lane; boards posted before it count as revealed
(their entries were re-rendered right after the post, as the bot did then). Only columns are
added, with native ``ALTER TABLE ... ADD COLUMN`` on SQLite (nothing is recreated; see 0007).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "group_sessions",
        sa.Column("lane_seconds", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "session_rounds",
        sa.Column("lane_opened_at", sa.DateTime(timezone=False), nullable=True),
    )
    op.add_column(
        "session_boards",
        sa.Column("revealed_at", sa.DateTime(timezone=False), nullable=True),
    )
    op.execute("UPDATE session_boards SET revealed_at = posted_at WHERE posted_at IS NOT NULL")


def downgrade() -> None:
    op.drop_column("session_boards", "revealed_at")
    op.drop_column("session_rounds", "lane_opened_at")
    op.drop_column("group_sessions", "lane_seconds")
