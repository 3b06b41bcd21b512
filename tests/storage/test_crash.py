"""Crash test with real worker processes: kill -9, freezes and restarts under a stream of jobs.

See ``tests/storage/chaos.py`` for the scenario and its invariant checks. The second test runs
the same scenario against a queue that skips the lease check on completion, and requires the
checks to catch it: a test that cannot fail proves nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_socket import socket_allow_hosts

from storage.types import JobStatus
from tests.storage.chaos import ChaosConfig, run_chaos

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def unix_sockets(request: pytest.FixtureRequest) -> None:
    """Worker processes start through multiprocessing's fork server, which listens on a Unix
    socket; allow those, keeping every other network restriction of the suite."""
    hosts = request.config.getoption("--allow-hosts")
    socket_allow_hosts(hosts.split(",") if hosts else None, allow_unix_socket=True)


async def test_every_job_ends_exactly_once_despite_crashes(db_url: str, tmp_path: Path) -> None:
    cfg = ChaosConfig()
    report = await run_chaos(db_url, tmp_path, cfg)
    assert report.violations == [], report
    assert report.kills >= 20 and report.stale >= cfg.stale_freezes, report
    assert sum(report.by_status.values()) == report.jobs >= cfg.jobs >= 200
    # The crash jobs kill their worker every time and end dead; most others succeed.
    assert report.by_status.get(JobStatus.DEAD, 0) >= cfg.crash_jobs, report
    assert report.by_status.get(JobStatus.SUCCEEDED, 0) >= report.jobs - cfg.cancels - 20, report


async def test_the_checks_catch_completions_without_a_lease(db_url: str, tmp_path: Path) -> None:
    cfg = ChaosConfig(unsafe=True, seed=7)
    report = await run_chaos(db_url, tmp_path, cfg)
    assert report.stale >= cfg.stale_freezes, report
    doubles = [v for v in report.violations if "charge line(s), expected 1" in v]
    assert doubles, f"a stale worker's completion went unnoticed: {report}"
