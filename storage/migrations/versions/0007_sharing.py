"""Community sharing (issue 12): visibility, owner deletion, likes, showcase publication, the
prompt search index and saved search queries.

Jobs gain ``visibility`` (DM jobs before this revision become stealth, every other job public),
``deleted_at``, ``like_count``, ``published_at``, and ``prompt``/``model``/``aspect`` columns
backfilled from the stored request's top-level keys of those names (strings only, else "").

The search index is not in the models (``storage.search``):

- SQLite: ``jobs_fts``, an FTS5 table over ``jobs.prompt`` with ``jobs`` as its external
  content (rowid = ``jobs.seq``), kept in sync by three triggers (insert, delete, update of
  ``prompt``) and rebuilt here from the backfilled rows.
- PostgreSQL: ``jobs.search_vector``, a stored generated ``tsvector`` column, with a GIN index.

Both use no stemming and no accent folding (``simple``; ``unicode61 remove_diacritics 0``) so the
two backends find the same jobs for the same query.

SQLite: ``jobs`` is altered only with ``ALTER TABLE ... ADD/DROP COLUMN``, never recreated
(batch mode's copy-and-drop): with foreign keys on, dropping ``jobs`` would cascade into
deliveries, copies and the ledger, and it would drop the FTS triggers. A later migration that
must recreate ``jobs`` has to drop and recreate the triggers around it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=False)
VISIBILITY_CHECK = "visibility IN ('public', 'stealth')"
#: ASCII punctuation and controls become spaces before PostgreSQL's parser sees the prompt, so
#: "cat,dog" or "a.b" split into words as FTS5's tokenizer splits them (the parser would keep
#: "a.b" as one host name).
PG_VECTOR = (
    "to_tsvector('simple'::regconfig, "
    r"regexp_replace(prompt, '[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+', ' ', 'g'))"
)
SQLITE_TRIGGERS = {
    "jobs_fts_insert": (
        "AFTER INSERT ON jobs BEGIN "
        "INSERT INTO jobs_fts(rowid, prompt) VALUES (new.seq, new.prompt); END"
    ),
    "jobs_fts_delete": (
        "AFTER DELETE ON jobs BEGIN "
        "INSERT INTO jobs_fts(jobs_fts, rowid, prompt) VALUES ('delete', old.seq, old.prompt); "
        "END"
    ),
    "jobs_fts_update": (
        "AFTER UPDATE OF prompt ON jobs BEGIN "
        "INSERT INTO jobs_fts(jobs_fts, rowid, prompt) VALUES ('delete', old.seq, old.prompt); "
        "INSERT INTO jobs_fts(rowid, prompt) VALUES (new.seq, new.prompt); END"
    ),
}
NEW_JOB_COLUMNS = (
    "aspect",
    "model",
    "prompt",
    "published_at",
    "like_count",
    "deleted_at",
    "visibility",
)


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    sqlite = _sqlite()
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("deleted_at", TIME, nullable=True))
        batch.add_column(sa.Column("published_at", TIME, nullable=True))
        batch.add_column(sa.Column("prompt", sa.Text(), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("model", sa.String(length=255), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("aspect", sa.String(length=32), nullable=False, server_default="")
        )
    if sqlite:
        # Column CHECKs in ADD COLUMN: SQLite cannot add a table constraint without
        # recreating the table (see the module's docstring).
        op.execute(
            "ALTER TABLE jobs ADD COLUMN visibility VARCHAR(16) DEFAULT 'public' NOT NULL "
            f"CONSTRAINT ck_jobs_visibility CHECK ({VISIBILITY_CHECK})"
        )
        op.execute(
            "ALTER TABLE jobs ADD COLUMN like_count INTEGER DEFAULT 0 NOT NULL "
            "CONSTRAINT ck_jobs_like_count CHECK (like_count >= 0)"
        )
    else:
        op.add_column(
            "jobs",
            sa.Column("visibility", sa.String(length=16), nullable=False, server_default="public"),
        )
        op.add_column(
            "jobs", sa.Column("like_count", sa.Integer(), nullable=False, server_default="0")
        )
        op.create_check_constraint("ck_jobs_visibility", "jobs", VISIBILITY_CHECK)
        op.create_check_constraint("ck_jobs_like_count", "jobs", "like_count >= 0")
    op.execute("UPDATE jobs SET visibility = 'stealth' WHERE guild_id IS NULL")
    _backfill(sqlite)
    op.create_index("ix_jobs_guild_id_seq", "jobs", ["guild_id", "seq"])
    op.create_index("ix_jobs_guild_id_like_count_seq", "jobs", ["guild_id", "like_count", "seq"])
    op.create_table(
        "likes",
        sa.Column("job_id", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_likes_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "user_id", name="pk_likes"),
    )
    op.create_index("ix_likes_user_id_created_at", "likes", ["user_id", "created_at"])
    op.create_table(
        "search_queries",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("filters", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_search_queries"),
    )
    op.create_index("ix_search_queries_expires_at", "search_queries", ["expires_at"])
    op.create_index(
        "ix_search_queries_user_id_created_at", "search_queries", ["user_id", "created_at"]
    )
    if sqlite:
        op.execute(
            "CREATE VIRTUAL TABLE jobs_fts USING fts5(prompt, content='jobs', "
            "content_rowid='seq', tokenize='unicode61 remove_diacritics 0')"
        )
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        op.execute("INSERT INTO jobs_fts(jobs_fts) VALUES ('rebuild')")
    else:
        op.execute(
            "ALTER TABLE jobs ADD COLUMN search_vector tsvector "
            f"GENERATED ALWAYS AS ({PG_VECTOR}) STORED"
        )
        op.execute("CREATE INDEX ix_jobs_search_vector ON jobs USING gin (search_vector)")


def _backfill(sqlite: bool) -> None:
    """The prompt, model and aspect of every existing job, from its stored request."""
    for column, limit in (("prompt", None), ("model", 255), ("aspect", 32)):
        if sqlite:
            value = f"json_extract(request, '$.{column}')"
            if limit:
                value = f"substr({value}, 1, {limit})"
            op.execute(
                f"UPDATE jobs SET {column} = {value} "
                f"WHERE json_valid(request) AND json_type(request, '$.{column}') = 'text'"
            )
        else:
            value = f"request ->> '{column}'"
            if limit:
                value = f"left({value}, {limit})"
            op.execute(
                f"UPDATE jobs SET {column} = {value} "
                f"WHERE jsonb_typeof(request -> '{column}') = 'string'"
            )


def downgrade() -> None:
    sqlite = _sqlite()
    if sqlite:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS jobs_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_jobs_search_vector")
        op.execute("ALTER TABLE jobs DROP COLUMN IF EXISTS search_vector")
    op.drop_index("ix_search_queries_user_id_created_at", table_name="search_queries")
    op.drop_index("ix_search_queries_expires_at", table_name="search_queries")
    op.drop_table("search_queries")
    op.drop_index("ix_likes_user_id_created_at", table_name="likes")
    op.drop_table("likes")
    op.drop_index("ix_jobs_guild_id_like_count_seq", table_name="jobs")
    op.drop_index("ix_jobs_guild_id_seq", table_name="jobs")
    if sqlite:
        # Native DROP COLUMN (SQLite 3.35+), never batch mode's recreate: see the docstring.
        for column in NEW_JOB_COLUMNS:
            op.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    else:
        op.drop_constraint("ck_jobs_like_count", "jobs", type_="check")
        op.drop_constraint("ck_jobs_visibility", "jobs", type_="check")
        for column in NEW_JOB_COLUMNS:
            op.drop_column("jobs", column)
