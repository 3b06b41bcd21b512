"""What the bot posts about a group session, apart from the session's state (as deliveries are
apart from jobs): the card's shown version, and the results boards owed to its thread.

A host panel message (an entry waiting for approval) is posted when the entry is taken; one
whose post failed or never happened is owed (``panels_owed``) until its entry is decided or
expires.

The card is edited whenever the session's ``version`` passed the version it shows
(``stale_cards``, then ``mark_card_shown``). A board (a round's results, or round 0: the
best-of) is owed in the transaction that finished the round or ended the session, and posted
once: ``claim_board`` for a lease, post with ``PendingBoard.nonce`` (so Discord drops a repeat
after a crash between the post and the record), then ``mark_board_posted``.

A posted board ends its round's anonymity: the round's entries' own messages are re-rendered
(authors named, Vote buttons gone) and then ``mark_revealed``. Until then the board is in
``pending_reveals``, so a crash between the post and the edits only delays them. The edits are
idempotent (a message re-rendered as it now is), so two processes may both make them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import session_flow as flow
from storage.db import Database
from storage.models import GROUP_SESSIONS, SESSION_BOARDS, SESSION_ENTRIES, SESSION_ROUNDS
from storage.session_rules import board_nonce
from storage.sql import utc_now
from storage.types import EntryState, EntryView, PendingBoard, SessionStatus, SessionView

Clock = Callable[[], datetime]


class SessionPosts:
    """A session's card and results boards: what is due, claims, and what was posted."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock = utc_now,
        claimer_id: str | None = None,
        board_claim_seconds: float = 60.0,
    ) -> None:
        self.db = db
        self.clock = clock
        self.claimer_id = claimer_id or f"posts-{secrets.token_hex(6)}"
        self.board_claim = timedelta(seconds=board_claim_seconds)

    async def attach_card(self, session_id: str, message_id: int) -> SessionView:
        """Record the session's card message."""

        async def work(session: AsyncSession) -> SessionView:
            await flow.lock_session(session, session_id)
            await session.execute(
                update(GROUP_SESSIONS)
                .where(GROUP_SESSIONS.c.id == session_id)
                .values(card_message_id=message_id)
            )
            return flow.session_view(await flow.session_row(session, session_id))

        return await self.db.write(work)

    async def mark_card_shown(self, session_id: str, version: int) -> bool:
        """The card now shows ``version`` (it never goes back). False when it already showed
        that version or a later one: another process took that edit, so two bot processes do
        not both edit the card for one change."""

        async def work(session: AsyncSession) -> bool:
            result = await session.execute(
                update(GROUP_SESSIONS)
                .where(GROUP_SESSIONS.c.id == session_id, GROUP_SESSIONS.c.card_version < version)
                .values(card_version=version)
            )
            return bool(getattr(result, "rowcount", 0))

        return await self.db.write(work)

    async def stale_cards(self, limit: int = 50) -> list[SessionView]:
        """Sessions whose card shows an older version than the session's."""

        async def work(session: AsyncSession) -> list[SessionView]:
            rows = await session.execute(
                select(GROUP_SESSIONS)
                .where(
                    GROUP_SESSIONS.c.card_message_id.is_not(None),
                    GROUP_SESSIONS.c.card_version < GROUP_SESSIONS.c.version,
                )
                .order_by(GROUP_SESSIONS.c.created_at)
                .limit(limit)
            )
            return [flow.session_view(row) for row in rows.mappings()]

        return await self.db.read(work)

    async def pending_boards(self, limit: int = 20) -> list[PendingBoard]:
        """Boards owed and not posted (nor claimed by a live claim), oldest first."""
        now = self.clock()

        async def work(session: AsyncSession) -> list[PendingBoard]:
            rows = await session.execute(
                select(
                    SESSION_BOARDS.c.session_id,
                    SESSION_BOARDS.c.round,
                    GROUP_SESSIONS.c.thread_id,
                    GROUP_SESSIONS.c.channel_id,
                )
                .select_from(
                    SESSION_BOARDS.join(
                        GROUP_SESSIONS, GROUP_SESSIONS.c.id == SESSION_BOARDS.c.session_id
                    )
                )
                .where(
                    SESSION_BOARDS.c.posted_at.is_(None),
                    or_(
                        SESSION_BOARDS.c.claim_until.is_(None),
                        SESSION_BOARDS.c.claim_until < now,
                    ),
                )
                # A round's board before the best-of that the same transition owed.
                .order_by(
                    SESSION_BOARDS.c.created_at,
                    case((SESSION_BOARDS.c.round == flow.BEST_OF, 1), else_=0),
                    SESSION_BOARDS.c.round,
                )
                .limit(limit)
            )
            return [
                PendingBoard(
                    sid,
                    round_,
                    thread_id or channel_id,
                    board_nonce(sid, round_),
                )
                for sid, round_, thread_id, channel_id in rows.all()
            ]

        return await self.db.read(work)

    async def claim_board(self, session_id: str, round_: int) -> bool:
        """Claim a board's posting for ``board_claim_seconds``: False when it was posted or
        another process holds a live claim. Post it with its nonce, then ``mark_board_posted``."""
        now = self.clock()
        unclaimed = or_(
            SESSION_BOARDS.c.claimed_by.is_(None),
            SESSION_BOARDS.c.claimed_by == self.claimer_id,
            SESSION_BOARDS.c.claim_until < now,
        )
        return await self._update_board(
            session_id,
            round_,
            [SESSION_BOARDS.c.posted_at.is_(None), unclaimed],
            claimed_by=self.claimer_id,
            claim_until=now + self.board_claim,
        )

    async def panels_owed(self, submitted_before: datetime, limit: int = 50) -> list[EntryView]:
        """Entries waiting for the host whose panel message was never recorded (its post failed,
        or the process died before it), submitted before ``submitted_before`` (the bot posts
        each panel as it takes the entry; this sweep is the fallback), in live sessions. A
        pending entry expires when its round's submissions close, which bounds the retries."""

        async def work(session: AsyncSession) -> list[EntryView]:
            live = select(GROUP_SESSIONS.c.id).where(
                GROUP_SESSIONS.c.status != SessionStatus.ENDED.value
            )
            stmt = (
                flow.entry_select()
                .where(
                    SESSION_ENTRIES.c.state == EntryState.PENDING.value,
                    SESSION_ENTRIES.c.panel_message_id.is_(None),
                    SESSION_ENTRIES.c.submitted_at <= submitted_before,
                    SESSION_ENTRIES.c.session_id.in_(live),
                )
                .order_by(SESSION_ENTRIES.c.seq)
                .limit(limit)
            )
            return [flow.entry_view(row) for row in (await session.execute(stmt)).mappings()]

        return await self.db.read(work)

    async def pending_reveals(self, limit: int = 20) -> list[tuple[str, int]]:
        """Posted boards whose entries were not yet re-rendered: (session, round), oldest
        first. Round 0 (the best-of) stands for the rounds that got no board of their own."""

        async def work(session: AsyncSession) -> list[tuple[str, int]]:
            rows = await session.execute(
                select(SESSION_BOARDS.c.session_id, SESSION_BOARDS.c.round)
                .where(
                    SESSION_BOARDS.c.posted_at.is_not(None),
                    SESSION_BOARDS.c.revealed_at.is_(None),
                )
                .order_by(SESSION_BOARDS.c.posted_at, SESSION_BOARDS.c.round)
                .limit(limit)
            )
            return [(sid, round_) for sid, round_ in rows.all()]

        return await self.db.read(work)

    async def reveal_rounds(self, session_id: str, round_: int) -> list[int]:
        """The rounds a posted board reveals: its own, or for the best-of (round 0) every round
        without a board of its own (a round the host's end cut short)."""
        if round_ != flow.BEST_OF:
            return [round_]

        async def work(session: AsyncSession) -> list[int]:
            boards = select(SESSION_BOARDS.c.round).where(SESSION_BOARDS.c.session_id == session_id)
            rows = await session.execute(
                select(SESSION_ROUNDS.c.round)
                .where(
                    SESSION_ROUNDS.c.session_id == session_id,
                    SESSION_ROUNDS.c.round.not_in(boards),
                )
                .order_by(SESSION_ROUNDS.c.round)
            )
            return [int(r) for r in rows.scalars()]

        return await self.db.read(work)

    async def mark_revealed(self, session_id: str, round_: int) -> bool:
        """Record that a posted board's entries were re-rendered, once."""
        guard = [SESSION_BOARDS.c.posted_at.is_not(None), SESSION_BOARDS.c.revealed_at.is_(None)]
        return await self._update_board(session_id, round_, guard, revealed_at=self.clock())

    async def mark_board_posted(self, session_id: str, round_: int, message_id: int) -> bool:
        """Record a posted board, once: False when it was recorded before."""
        return await self._update_board(
            session_id,
            round_,
            [SESSION_BOARDS.c.posted_at.is_(None)],
            posted_at=self.clock(),
            message_id=message_id,
            claimed_by=None,
            claim_until=None,
        )

    async def _update_board(
        self,
        session_id: str,
        round_: int,
        guard: Sequence[ColumnElement[bool]],
        **values: Any,
    ) -> bool:
        """One guarded change of a board's row; False when the guard no longer holds."""

        async def work(session: AsyncSession) -> bool:
            result = await session.execute(
                update(SESSION_BOARDS)
                .where(
                    SESSION_BOARDS.c.session_id == session_id,
                    SESSION_BOARDS.c.round == round_,
                    *guard,
                )
                .values(**values)
            )
            return bool(getattr(result, "rowcount", 0))

        return await self.db.write(work)
