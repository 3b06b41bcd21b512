"""Small per-user and per-guild settings (JSON documents) and the ``meta`` key/value table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.models import GUILD_SETTINGS, META, USER_SETTINGS
from storage.sql import insert_ignore, upsert, utc_now

Clock = Callable[[], datetime]


class PreferenceStore:
    """User defaults (mode, aspect, variation...), guild settings (who may click buttons...)
    and meta facts (e.g. the hash of the last synced command set).

    Values are JSON documents; ``update_*`` merges keys atomically (a ``None`` value removes the
    key), so two concurrent updates of different keys both survive.
    """

    def __init__(self, db: Database, *, clock: Clock = utc_now) -> None:
        self.db = db
        self.clock = clock

    async def get_user_settings(self, user_id: int) -> dict[str, Any]:
        return await self._get(USER_SETTINGS, "user_id", user_id)

    async def update_user_settings(
        self, user_id: int, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._merge(USER_SETTINGS, "user_id", user_id, changes)

    async def get_guild_settings(self, guild_id: int) -> dict[str, Any]:
        return await self._get(GUILD_SETTINGS, "guild_id", guild_id)

    async def update_guild_settings(
        self, guild_id: int, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._merge(GUILD_SETTINGS, "guild_id", guild_id, changes)

    async def edit_guild_settings(
        self, guild_id: int, edit: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Replace the guild's settings with ``edit(current)``, atomically.

        For values that must be read to be changed (a list of terms): two concurrent edits are
        serialised, so neither is lost. ``edit`` may raise to abandon the change.
        """
        return await self._edit(GUILD_SETTINGS, "guild_id", guild_id, edit)

    async def get_meta(self, key: str) -> str | None:
        async def work(session: AsyncSession) -> str | None:
            stmt = select(META.c.value).where(META.c.key == key)
            return (await session.execute(stmt)).scalar()

        return await self.db.read(work)

    async def set_meta(self, key: str, value: str) -> None:
        row = {"key": key, "value": value, "updated_at": self.clock()}

        async def work(session: AsyncSession) -> None:
            await session.execute(upsert(session, META, row, ["key"]))

        await self.db.write(work)

    async def delete_meta(self, key: str) -> bool:
        async def work(session: AsyncSession) -> bool:
            result = await session.execute(delete(META).where(META.c.key == key))
            return bool(getattr(result, "rowcount", 0))

        return await self.db.write(work)

    async def _get(self, table: Table, key: str, subject: int) -> dict[str, Any]:
        async def work(session: AsyncSession) -> dict[str, Any]:
            stmt = select(table.c.data).where(table.c[key] == subject)
            return dict((await session.execute(stmt)).scalar() or {})

        return await self.db.read(work)

    async def _merge(
        self, table: Table, key: str, subject: int, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        def merge(current: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in {**current, **changes}.items() if v is not None}

        return await self._edit(table, key, subject, merge)

    async def _edit(
        self,
        table: Table,
        key: str,
        subject: int,
        edit: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> dict[str, Any]:
        now = self.clock()

        async def work(session: AsyncSession) -> dict[str, Any]:
            # Create, then lock (PostgreSQL) the row: the read-edit-write below is then
            # serialised with any concurrent update of the same subject.
            await session.execute(
                insert_ignore(session, table, {key: subject, "data": {}, "updated_at": now}, [key])
            )
            current = (
                await session.execute(
                    select(table.c.data).where(table.c[key] == subject).with_for_update()
                )
            ).scalar_one()
            edited = edit(dict(current))
            await session.execute(
                update(table).where(table.c[key] == subject).values(data=edited, updated_at=now)
            )
            return edited

        return await self.db.write(work)
