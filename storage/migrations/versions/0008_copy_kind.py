"""Copies know what they are: ``job_copies.kind`` (``show`` or ``showcase``).

A like edits every message that shows the job's count: its own post, each ``/show`` repost
(the job's buttons) and its showcase post (its ❤ and Unpublish). The kind says which buttons an
edit rebuilds, whatever the server's showcase channel is by then. Existing copies were made by
``/show`` or by a publish; the showcase posts among them are not told apart here and keep
their posted count, as before.

SQLite: a native ``ALTER TABLE ... ADD COLUMN`` with a column CHECK (no table rebuild).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KIND_CHECK = "kind IN ('show', 'showcase')"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE job_copies ADD COLUMN kind VARCHAR(16) DEFAULT 'show' NOT NULL "
            f"CONSTRAINT ck_job_copies_kind CHECK ({KIND_CHECK})"
        )
        return
    op.add_column(
        "job_copies",
        sa.Column("kind", sa.String(length=16), nullable=False, server_default="show"),
    )
    op.create_check_constraint("ck_job_copies_kind", "job_copies", KIND_CHECK)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE job_copies DROP COLUMN kind")
        return
    op.drop_constraint("ck_job_copies_kind", "job_copies", type_="check")
    op.drop_column("job_copies", "kind")
