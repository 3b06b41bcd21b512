"""Alembic environment: runs on the connection ``storage.migrate`` hands over.

``storage.migrate.upgrade`` opens the (async) engine, takes the migration lock and passes its
connection in ``config.attributes["connection"]``. Run from the ``alembic`` command instead
(``alembic -c storage/alembic.ini upgrade head``), the URL comes from ``ATELIER_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from storage.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode recreates tables instead.
        render_as_batch=True,
        compare_type=True,
    )


def run_on(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone(url: str) -> None:
    from storage.db import Database
    from storage.migrate import migrate_on_connection

    db = Database(url)
    try:
        async with db.engine.execution_options(atelier_write=True).begin() as conn:
            await migrate_on_connection(conn, lambda sync_conn: run_on(sync_conn))
    finally:
        await db.dispose()


def _main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("ATELIER_DATABASE_URL")
    if not url:
        raise RuntimeError("set ATELIER_DATABASE_URL (or sqlalchemy.url) to migrate")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_standalone(url))


_main()
