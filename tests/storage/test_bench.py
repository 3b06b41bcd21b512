"""The queue bench runs on both backends, cleans up after itself and refuses a live database."""

from __future__ import annotations

import pytest

from storage import Database, audit
from storage.bench import bench_queue
from tests.storage.dbfixtures import make_services, new_job, owner


async def test_bench_reports_and_cleans_up(db_url: str) -> None:
    report = await bench_queue(db_url, jobs=20, workers=(1, 3), users=4)
    assert [row.workers for row in report.rows] == [1, 3]
    assert all(row.jobs == 20 and row.jobs_per_second > 0 for row in report.rows)
    table = report.table()
    assert "jobs/s" in table and "enqueue" in table and len(table.splitlines()) == 5
    db = Database(db_url)
    try:
        assert (await audit(db)).jobs == 0
    finally:
        await db.dispose()


async def test_bench_refuses_a_database_with_jobs(db_url: str) -> None:
    s = await make_services(db_url)
    try:
        await s.queue.enqueue(owner(), new_job())
    finally:
        await s.db.dispose()
    with pytest.raises(ValueError, match="empty scratch database"):
        await bench_queue(db_url, jobs=5)
