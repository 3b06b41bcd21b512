"""Billing by work done: jobs record their sampler work, reservations scale with it at a measured
rate per kind of work, a finished job blocked by a moderator can be credited back, and a blocked
job's images are kept for an appeal period before they are deleted. Messages that show a job
again (``/show``) are recorded, so taking a job down reaches them too.

Jobs made before this revision have no recorded work (0 units): their reservations stand as they
were, and they do not feed the measured rates.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: 64-bit autoincrement keys; SQLite only autoincrements INTEGER PRIMARY KEY.
BIGKEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OLD_KINDS = "'reserve', 'charge', 'release', 'refund', 'waive'"
NEW_KINDS = "'reserve', 'charge', 'release', 'refund', 'waive', 'credit'"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("work_units", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("purge_after", sa.DateTime(timezone=False), nullable=True))
    with op.batch_alter_table("quota_ledger", recreate="always") as batch:
        batch.drop_constraint("ck_quota_ledger_kind", type_="check")
        batch.create_check_constraint("ck_quota_ledger_kind", f"kind IN ({NEW_KINDS})")
    op.create_table(
        "work_rates",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("seconds_per_unit", sa.Float(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_work_rates"),
    )
    op.create_table(
        "job_copies",
        sa.Column("id", BIGKEY, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(length=16), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_copies_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_job_copies"),
    )
    op.create_index("ix_job_copies_job_id", "job_copies", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_job_copies_job_id", table_name="job_copies")
    op.drop_table("job_copies")
    op.drop_table("work_rates")
    op.execute("DELETE FROM quota_ledger WHERE kind = 'credit'")
    with op.batch_alter_table("quota_ledger", recreate="always") as batch:
        batch.drop_constraint("ck_quota_ledger_kind", type_="check")
        batch.create_check_constraint("ck_quota_ledger_kind", f"kind IN ({OLD_KINDS})")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("purge_after")
        batch.drop_column("work_units")
