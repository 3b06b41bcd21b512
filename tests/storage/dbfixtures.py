"""Fresh migrated databases for each test, on SQLite and (when available) PostgreSQL.

Migrating once per session and copying is much faster than migrating per test: SQLite copies a
migrated template file; PostgreSQL clones a migrated template database (``CREATE DATABASE ...
TEMPLATE``). Each test gets its own database either way.

Import the fixtures (``db_url``, ``services``...) into a test module or conftest to use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from config.settings import QueueSettings, QuotaSettings
from storage import (
    Database,
    DeliveryLedger,
    JobKind,
    JobQueue,
    NewJob,
    Owner,
    PreferenceStore,
    QuotaService,
    upgrade,
)

PG_ENV = "ATELIER_TEST_POSTGRES_URL"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


async def _pg_admin(sql: str) -> None:
    engine = create_async_engine(os.environ[PG_ENV], isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


def _pg_url(name: str) -> str:
    return make_url(os.environ[PG_ENV]).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "atelier.db"
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    if not os.environ.get(PG_ENV):
        yield None
        return
    name = f"atelier_tmpl_{secrets.token_hex(4)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    asyncio.run(upgrade(_pg_url(name)))
    yield name
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
async def db_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_template: Path,
    pg_template: str | None,
) -> AsyncIterator[str]:
    """The URL of a fresh, migrated database of each backend."""
    if request.param == "sqlite":
        target = tmp_path / "atelier.db"
        shutil.copyfile(sqlite_template, target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    if pg_template is None:
        pytest.skip(f"{PG_ENV} is not set (run the tests through tests/postgres.sh)")
    async with pg_database(pg_template) as url:
        yield url


@contextlib.asynccontextmanager
async def pg_database(template: str) -> AsyncIterator[str]:
    """The URL of a fresh PostgreSQL database cloned from the migrated ``template``; dropped
    after."""
    name = f"atelier_t_{secrets.token_hex(5)}"
    await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _pg_url(name)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pg_url(pg_template: str | None) -> AsyncIterator[str]:
    """The URL of a fresh, migrated PostgreSQL database, for tests of PostgreSQL only (mark
    them ``postgres``): skipped without a server, but a failure under CI (CI=true), which must
    run them (tests/postgres.sh provides the server)."""
    if pg_template is None:
        reason = f"{PG_ENV} is not set (run the tests through tests/postgres.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    async with pg_database(pg_template) as url:
        yield url


class FakeClock:
    """A clock tests move by hand: leases and quota windows expire without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Services:
    db: Database
    queue: JobQueue
    quota: QuotaService
    deliveries: DeliveryLedger
    prefs: PreferenceStore
    clock: FakeClock
    woken: list[int] = field(default_factory=list)


def queue_settings(**overrides: Any) -> QueueSettings:
    # The new-jobs rate limit is off here: these tests are about other rules (test_rate_limit
    # turns it on).
    base: dict[str, Any] = {
        "lease_seconds": 30.0,
        "retry_delay_seconds": 0.0,
        "new_jobs_per_window": 0,
    }
    return QueueSettings(**{**base, **overrides})


def quota_settings(**overrides: Any) -> QuotaSettings:
    return QuotaSettings(**{"user_daily_gpu_seconds": 1000.0, **overrides})


async def make_services(
    url: str,
    *,
    queue: QueueSettings | None = None,
    quota: QuotaSettings | None = None,
    clock: FakeClock | None = None,
    pool_size: int = 5,
) -> Services:
    clock = clock or FakeClock()
    db = Database(url, pool_size=pool_size)
    quota_service = QuotaService(db, quota or quota_settings(), clock=clock)
    woken: list[int] = []
    job_queue = JobQueue(
        db,
        queue or queue_settings(),
        quota_service,
        clock=clock,
        on_new_work=lambda: woken.append(1),
    )
    return Services(
        db=db,
        queue=job_queue,
        quota=quota_service,
        deliveries=DeliveryLedger(db, clock=clock, claimer_id="bot-a"),
        prefs=PreferenceStore(db, clock=clock),
        clock=clock,
        woken=woken,
    )


@pytest.fixture
async def services(db_url: str) -> AsyncIterator[Services]:
    """Queue, quota, deliveries and preferences on a fresh database, with a fake clock."""
    built = await make_services(db_url)
    try:
        yield built
    finally:
        await built.db.dispose()


def new_job(
    kind: JobKind = JobKind.IMAGINE,
    *,
    mode: str = "fast",
    cost: float = 1.0,
    batch_key: str = "",
    parent_id: str | None = None,
    prompt: str = "a cat",
    work_units: float = 0.0,
) -> NewJob[dict[str, Any]]:
    return NewJob(
        kind=kind,
        request={"prompt": prompt, "mode": mode},
        mode=mode,
        estimated_cost=cost,
        batch_key=batch_key,
        parent_id=parent_id,
        work_units=work_units,
    )


def owner(user_id: int = 1, guild_id: int | None = 100) -> Owner:
    return Owner(user_id=user_id, guild_id=guild_id, channel_id=555)
