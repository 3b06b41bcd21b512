"""Reading group sessions: the session, its entries, counts, results and pool, for the bot's
card, panels and boards. Every read is one read unit of work; votes and counts come from the
database, never from a cache."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import session_flow as flow
from storage.db import Database
from storage.errors import EntryNotFound
from storage.models import (
    GROUP_SESSIONS,
    SESSION_ENTRIES,
    SESSION_MEMBERS,
    SESSION_ROUNDS,
    SESSION_VOTES,
)
from storage.pools import pool_usage
from storage.session_rules import results_from_json
from storage.types import (
    EntryState,
    EntryView,
    PoolKind,
    PoolStatus,
    RoundResult,
    SessionCounts,
    SessionPhase,
    SessionResults,
    SessionStatus,
    SessionView,
    to_seconds,
)


class SessionReads:
    """The read side of ``SessionStore`` (which extends it)."""

    db: Database

    async def find(self, session_id: str) -> SessionView | None:
        """The session, or None (e.g. deleted by retention)."""

        async def work(session: AsyncSession) -> SessionView | None:
            row = (
                (
                    await session.execute(
                        select(GROUP_SESSIONS).where(GROUP_SESSIONS.c.id == session_id)
                    )
                )
                .mappings()
                .first()
            )
            return None if row is None else flow.session_view(row)

        return await self.db.read(work)

    async def get(self, session_id: str) -> SessionView:
        """The session; SessionNotFound."""

        async def work(session: AsyncSession) -> SessionView:
            return flow.session_view(await flow.session_row(session, session_id))

        return await self.db.read(work)

    async def running_in(self, channel_id: int) -> SessionView | None:
        """The live (running or paused) session of a channel or of its thread."""

        async def work(session: AsyncSession) -> SessionView | None:
            found = await self._live_in(session, channel_id)
            return None if found is None else flow.session_view(found)

        return await self.db.read(work)

    async def latest_in(self, channel_id: int) -> SessionView | None:
        """The session of a channel or of its thread: the live one, else the latest that ended
        (a member may look back at their entries once a session is over)."""

        async def work(session: AsyncSession) -> SessionView | None:
            ended = case((GROUP_SESSIONS.c.status == SessionStatus.ENDED.value, 1), else_=0)
            stmt = (
                select(GROUP_SESSIONS)
                .where(
                    or_(
                        GROUP_SESSIONS.c.channel_id == channel_id,
                        GROUP_SESSIONS.c.thread_id == channel_id,
                    )
                )
                .order_by(ended, GROUP_SESSIONS.c.created_at.desc(), GROUP_SESSIONS.c.id.desc())
                .limit(1)
            )
            found = (await session.execute(stmt)).mappings().first()
            return None if found is None else flow.session_view(found)

        return await self.db.read(work)

    async def live_in_guild(self, guild_id: int) -> list[SessionView]:
        """The server's live sessions, oldest first."""

        async def work(session: AsyncSession) -> list[SessionView]:
            rows = await session.execute(
                select(GROUP_SESSIONS)
                .where(
                    GROUP_SESSIONS.c.guild_id == guild_id,
                    GROUP_SESSIONS.c.status != SessionStatus.ENDED.value,
                )
                .order_by(GROUP_SESSIONS.c.created_at)
            )
            return [flow.session_view(row) for row in rows.mappings()]

        return await self.db.read(work)

    async def entry(self, entry_id: str) -> EntryView:
        """One entry; EntryNotFound."""

        async def work(session: AsyncSession) -> list[EntryView]:
            return await flow.entry_rows(session, SESSION_ENTRIES.c.id == entry_id)

        found = await self.db.read(work)
        if not found:
            raise EntryNotFound(entry_id)
        return found[0]

    async def entry_of_job(self, job_id: str) -> EntryView | None:
        """The entry whose job is ``job_id``, or None (an ordinary job)."""

        async def work(session: AsyncSession) -> list[EntryView]:
            return await flow.entry_rows(session, SESSION_ENTRIES.c.job_id == job_id)

        found = await self.db.read(work)
        return found[0] if found else None

    async def entries(
        self, session_id: str, round_: int | None = None, *, member_id: int | None = None
    ) -> list[EntryView]:
        """A session's entries (of one round, of one member), in submission order."""
        where = [SESSION_ENTRIES.c.session_id == session_id]
        if round_ is not None:
            where.append(SESSION_ENTRIES.c.round == round_)
        if member_id is not None:
            where.append(SESSION_ENTRIES.c.member_id == member_id)

        async def work(session: AsyncSession) -> list[EntryView]:
            return await flow.entry_rows(session, *where)

        return await self.db.read(work)

    async def counts(self, session_id: str) -> SessionCounts:
        """The current round's entries by state, the session's participants (not removed),
        and the approved entries still outstanding."""

        async def work(session: AsyncSession) -> SessionCounts:
            row = await flow.session_row(session, session_id)
            by_state: dict[str, int] = dict(
                (
                    await session.execute(
                        select(SESSION_ENTRIES.c.state, func.count())
                        .where(flow.of_round(session_id, row["round"]))
                        .group_by(SESSION_ENTRIES.c.state)
                    )
                ).all()
            )
            participants = await count(
                session,
                SESSION_MEMBERS,
                SESSION_MEMBERS.c.session_id == session_id,
                SESSION_MEMBERS.c.removed_at.is_(None),
            )
            return SessionCounts(
                entries={state: int(by_state.get(state.value, 0)) for state in EntryState},
                participants=participants,
                outstanding=await flow.outstanding(session, session_id, row["round"]),
            )

        return await self.db.read(work)

    async def results(self, session_id: str) -> SessionResults:
        """Every finished round's ranked results (the boards), in round order; the best-of is
        ``SessionResults.best_of``."""

        async def work(session: AsyncSession) -> SessionResults:
            await flow.session_row(session, session_id)
            rows = await session.execute(
                select(SESSION_ROUNDS)
                .where(
                    SESSION_ROUNDS.c.session_id == session_id,
                    SESSION_ROUNDS.c.finished_at.is_not(None),
                )
                .order_by(SESSION_ROUNDS.c.round)
            )
            return SessionResults(
                session_id,
                tuple(
                    RoundResult(
                        r["round"], r["theme"], results_from_json(r["results"]), r["finished_at"]
                    )
                    for r in rows.mappings()
                ),
            )

        return await self.db.read(work)

    async def pool(self, session_id: str) -> PoolStatus | None:
        """A server-pool session's pool (None for pool:members)."""

        async def work(session: AsyncSession) -> PoolStatus | None:
            row = await flow.session_row(session, session_id)
            if PoolKind(row["pool"]) is not PoolKind.SERVER:
                return None
            spent, reserved = await pool_usage(session, session_id)
            left = max(0, row["pool_ms"] - spent - reserved)
            return PoolStatus(
                to_seconds(row["pool_ms"]),
                to_seconds(spent),
                to_seconds(reserved),
                to_seconds(left),
            )

        return await self.db.read(work)

    async def votes_of(self, session_id: str, voter_id: int) -> list[str]:
        """The entries ``voter_id`` votes for in the current round."""

        async def work(session: AsyncSession) -> list[str]:
            row = await flow.session_row(session, session_id)
            rows = await session.execute(
                select(SESSION_VOTES.c.entry_id)
                .where(
                    SESSION_VOTES.c.session_id == session_id,
                    SESSION_VOTES.c.round == row["round"],
                    SESSION_VOTES.c.voter_id == voter_id,
                )
                .order_by(SESSION_VOTES.c.created_at)
            )
            return list(rows.scalars())

        return await self.db.read(work)

    async def generating(self) -> list[str]:
        """Running sessions waiting for their entries to generate: the loop calls
        ``generated`` for each now and then, in case a post's own call was lost."""

        async def work(session: AsyncSession) -> list[str]:
            rows = await session.execute(
                select(GROUP_SESSIONS.c.id).where(
                    GROUP_SESSIONS.c.status == SessionStatus.RUNNING.value,
                    GROUP_SESSIONS.c.phase == SessionPhase.GENERATE.value,
                )
            )
            return list(rows.scalars())

        return await self.db.read(work)

    @staticmethod
    async def _live_in(session: AsyncSession, channel_id: int) -> Any:
        stmt = select(GROUP_SESSIONS).where(
            GROUP_SESSIONS.c.status != SessionStatus.ENDED.value,
            or_(
                GROUP_SESSIONS.c.channel_id == channel_id,
                GROUP_SESSIONS.c.thread_id == channel_id,
            ),
        )
        return (await session.execute(stmt)).mappings().first()


async def count(session: AsyncSession, table: Any, *where: Any) -> int:
    stmt = select(func.count()).select_from(table).where(*where)
    return int((await session.execute(stmt)).scalar_one())
