"""Database fixtures for the storage tests (shared with tests/generation/test_worker.py)."""

from tests.storage.dbfixtures import db_url, pg_template, services, sqlite_template

__all__ = ["db_url", "pg_template", "services", "sqlite_template"]
