"""Migrations: they build exactly the models' schema, on both backends, and can run concurrently."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from storage import Database, current_revision, head_revision, upgrade
from storage.models import Base
from storage.search import UNMODELLED_COLUMNS, UNMODELLED_INDEXES, UNMODELLED_TABLE_PREFIX
from tests.storage.dbfixtures import BACKENDS, PG_ENV, _pg_admin, _pg_url


def _modelled(obj: object, name: str | None, type_: str, reflected: bool, other: object) -> bool:
    """Leave out the search index, which the models do not describe (``storage.search``)."""
    if not reflected or name is None:
        return True
    if type_ == "table":
        return not name.startswith(UNMODELLED_TABLE_PREFIX)
    if type_ == "column":
        return name not in UNMODELLED_COLUMNS
    if type_ == "index":
        return name not in UNMODELLED_INDEXES
    return True


def _diff(conn: Connection) -> list[object]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "include_object": _modelled}
    )
    return list(compare_metadata(context, Base.metadata))


async def test_migrated_schema_matches_the_models(db_url: str) -> None:
    assert await current_revision(db_url) == head_revision()
    db = Database(db_url)
    try:
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await db.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_concurrent_upgrades_of_an_empty_database(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.db'}"  # a plain URL gets the async driver
    else:
        if not os.environ.get(PG_ENV):
            pytest.skip(f"{PG_ENV} is not set")
        name = f"atelier_m_{secrets.token_hex(4)}"
        await _pg_admin(f'CREATE DATABASE "{name}"')
        url = _pg_url(name)
    try:
        assert await current_revision(url) is None
        results = await asyncio.gather(*(upgrade(url) for _ in range(3)))
        assert results == [head_revision()] * 3
        assert await upgrade(url) == head_revision()  # idempotent
    finally:
        if backend != "sqlite":
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ValueError, match="file path"):
        Database("sqlite+aiosqlite:///:memory:")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_older_quota_overrides_become_the_operators(backend: str, tmp_path: Path) -> None:
    """0002 scopes overrides to a server; those made before it (server unknown) keep applying
    everywhere, as operator overrides."""
    from sqlalchemy import text

    from storage import QuotaService
    from tests.storage.dbfixtures import quota_settings

    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    else:
        if not os.environ.get(PG_ENV):
            pytest.skip(f"{PG_ENV} is not set")
        name = f"atelier_m_{secrets.token_hex(4)}"
        await _pg_admin(f'CREATE DATABASE "{name}"')
        url = _pg_url(name)
    try:
        assert await upgrade(url, "0001") == "0001"
        db = Database(url)
        try:
            async with db.engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO quota_overrides (user_id, allowance_ms, set_by, reason, "
                        "updated_at) VALUES (42, 5000, 1, 'old', '2026-01-01 00:00:00')"
                    )
                )
        finally:
            await db.dispose()
        assert await upgrade(url) == head_revision()
        db = Database(url)
        try:
            quota = QuotaService(db, quota_settings())
            (override,) = await quota.list_overrides()
            assert (override.user_id, override.guild_id, override.allowance) == (42, None, 5.0)
            assert (await quota.readout(42, guild_id=7)).allowance == 5.0
        finally:
            await db.dispose()
    finally:
        if backend != "sqlite":
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("backend", BACKENDS)
async def test_group_sessions_migrate_down_and_up_with_jobs_kept(
    backend: str, tmp_path: Path
) -> None:
    """0009 adds its columns to ``jobs`` in place: jobs made before it (or kept through a
    downgrade) come back untagged and billed to their owners, and the schema matches again."""
    from storage import JobQueue, QuotaService
    from storage.migrate import downgrade
    from storage.sessions import SessionStore
    from storage.types import SessionSpec
    from tests.storage.dbfixtures import new_job, owner, queue_settings, quota_settings

    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
    else:
        if not os.environ.get(PG_ENV):
            pytest.skip(f"{PG_ENV} is not set")
        name = f"atelier_m_{secrets.token_hex(4)}"
        await _pg_admin(f'CREATE DATABASE "{name}"')
        url = _pg_url(name)
    try:
        await upgrade(url)
        db = Database(url)
        try:
            queue = JobQueue(db, queue_settings(), QuotaService(db, quota_settings()))
            job = await queue.enqueue(owner(), new_job())
            store = SessionStore(db, queue)
            await store.start(SessionSpec(guild_id=100, channel_id=1, host_id=2, theme="sea"))
        finally:
            await db.dispose()
        assert await downgrade(url, "0009") == "0009"
        assert await upgrade(url) == head_revision()
        db = Database(url)
        try:
            queue = JobQueue(db, queue_settings(), QuotaService(db, quota_settings()))
            view = await queue.require(job.id)
            assert view.session_id is None and not view.guild_paid
            async with db.engine.connect() as conn:
                assert await conn.run_sync(_diff) == []
        finally:
            await db.dispose()
    finally:
        if backend != "sqlite":
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
