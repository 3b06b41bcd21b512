"""The group sessions' loop: fires due timers, starts voting once a round's entries are
posted, keeps each session's card up to date, and posts the results boards.

Timers are rows (``storage.timers``): each pass claims the due ones and fires each through
``SessionStore.fire``, which marks it fired in the same transaction as the session's
transition, so a restart or a second bot process never fires one twice nor skips one. Between
passes the loop sleeps until the next timer is due, a change wakes it, or ``poll_seconds``
pass (the entries' jobs finish in another loop), never longer: no polling storm.

A board follows the publisher's rule: claim -> post with the board's nonce (Discord drops a
repeat after a crash between the post and the record) -> ``mark_board_posted``. The card is
edited only when the session's ``version`` moved past what it shows, within the publisher's
edit budget; its time left is a relative timestamp, so no edit is needed as time passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import discord

from bot.edit_budget import EditBudget
from bot.pass_loop import PassLoop
from bot.render import message_link
from bot.render_sessions import (
    TIE_RULE,
    render_best_of_text,
    render_board_text,
    round_title,
)
from bot.router import ButtonRouter
from bot.services.sessions import SessionService
from bot.session_ids import submit_id
from generation.board import BoardCell, render_board
from storage.images import ImageStore
from storage.sessions import SessionStore
from storage.types import BEST_OF_ROUND, EntryView, PendingBoard, RankedEntry, SessionView, Timer

log = logging.getLogger(__name__)
_NONE = discord.AllowedMentions.none()
#: A round's board shows its top entries.
BOARD_TOP = 5
#: How long after an entry is taken the loop posts its host panel if the command's own post
#: did not (it failed, or the process died before it).
PANEL_GRACE = timedelta(seconds=30)
#: The longest wait between two retries of one entry's panel.
PANEL_RETRY_MAX = timedelta(minutes=10)


@dataclass
class SessionRunner(PassLoop):
    """Fires session timers, advances generating rounds, edits cards, posts boards."""

    service: SessionService
    router: ButtonRouter
    images: ImageStore
    edits: EditBudget
    poll_seconds: float = 5.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    #: Timers this process fired (for tests and logs): (kind, session, round).
    fired: list[tuple[str, str, int]] = field(default_factory=list)
    #: Re-renders a posted job's own message (the publisher's ``refresh``): a round's entries
    #: name their authors, and lose their Vote button, once its board is posted.
    refresh: Callable[[str], Awaitable[bool]] | None = None
    #: Posts an entry's host panel (the sessions feature's); the loop retries the panels whose
    #: post failed or never happened, ``PANEL_GRACE`` after the entry was taken.
    post_panel: Callable[[SessionView, EntryView], Awaitable[None]] | None = None
    #: Board images this process rendered, by (session, round) (for tests: the last ones).
    boards: dict[tuple[str, int], bytes] = field(default_factory=dict)
    passes: int = 0
    _client: discord.Client | None = None
    #: Panels retried by this process: entry -> (tries, not before).
    _panel_retry: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _passed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _stopping: bool = False

    @property
    def store(self) -> SessionStore:
        return self.service.store

    def bind(self, client: discord.Client) -> None:
        self._client = client

    def client(self) -> discord.Client:
        if self._client is None:
            raise RuntimeError("SessionRunner used before bind()")
        return self._client

    def wake(self) -> None:
        self._wake.set()

    def entries_changed(self) -> None:
        """An entry or a decision changed a card's counts: the next pass edits it."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    pass_name = "session"

    async def _sleep_seconds(self) -> float:
        """Until the next timer is due, at most ``poll_seconds``."""
        try:
            due = await self.store.next_due()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reading the next session timer failed")
            return self.poll_seconds
        if due is None:
            return self.poll_seconds
        return max(0.0, min(self.poll_seconds, (due - self.clock()).total_seconds()))

    async def wait_passes(self, count: int) -> None:
        """Until ``count`` more passes have run (for tests)."""
        self.wake()
        async with self._passed:
            target = self.passes + count
            await self._passed.wait_for(lambda: self.passes >= target)

    async def pass_once(self) -> None:
        for timer in await self.store.claim_due():
            await self._fire(timer)
        for session_id in await self.store.generating():
            await self.store.generated(session_id)
        for session in await self.store.posts.stale_cards():
            await self._show_card(session)
        for board in await self.store.posts.pending_boards():
            await self._post_board(board)
        # A board posted by a process that died before its follow-up: finish it now.
        for session_id, round_ in await self.store.posts.pending_reveals():
            await self._after_board(session_id, round_)
        if self.post_panel is not None:
            await self._post_owed_panels(self.post_panel)

    async def _fire(self, timer: Timer) -> None:
        outcome = await self.store.fire(timer)
        if outcome.fired:
            self.fired.append((timer.kind, timer.subject, timer.round))
            log.info("session %s: %s of round %s fired", timer.subject, timer.kind, timer.round)

    async def _post_owed_panels(
        self, post: Callable[[SessionView, EntryView], Awaitable[None]]
    ) -> None:
        """Post the host panels owed (see ``PANEL_GRACE``). An entry whose panel keeps failing
        (the panel channel is gone, the bot lost access) waits twice as long before each
        retry, up to ``PANEL_RETRY_MAX``, and its retries end when the entry expires with its
        round: no request storm towards Discord."""
        now = self.clock()
        owed = await self.store.posts.panels_owed(now - PANEL_GRACE)
        ids = {entry.id for entry in owed}
        self._panel_retry = {k: v for k, v in self._panel_retry.items() if k in ids}
        for entry in owed:
            tries, not_before = self._panel_retry.get(entry.id, (0, now))
            if now < not_before:
                continue
            await post(await self.store.get(entry.session_id), entry)
            delay = min(PANEL_RETRY_MAX, PANEL_GRACE * 2**tries)
            self._panel_retry[entry.id] = (tries + 1, now + delay)

    # -- the card ------------------------------------------------------------------------

    async def _show_card(self, session: SessionView, *, last: bool = False) -> None:
        """Edit the card within the edit budget; ``last``: the final edit before the thread
        closes (an archived thread takes no edits), made whatever the budget says. The version
        is recorded as shown before the edit: of two processes, the one that records it edits
        (a failed edit waits for the session's next change, as it would anyway)."""
        channel_id = session.thread_id or session.channel_id
        card_id = session.card_message_id
        if card_id is None:
            return
        if not last and not self.edits.allows(channel_id):
            self.edits.refuse()
            return  # the next pass renders it afresh
        session, text = await self.service.card(session.id)
        view = (
            self.router.view([[("Submit an entry", submit_id(session.id))]])
            if session.live
            else discord.ui.View()
        )
        if not await self.store.posts.mark_card_shown(session.id, session.version) and not last:
            return
        self.edits.take(channel_id)
        message = self.client().get_partial_messageable(channel_id).get_partial_message(card_id)
        try:
            await message.edit(content=text, view=view, allowed_mentions=_NONE)
        except discord.HTTPException as exc:
            log.info("card of session %s not edited: %s", session.id, exc)

    # -- boards --------------------------------------------------------------------------

    async def _post_board(self, board: PendingBoard) -> None:
        if not await self.store.posts.claim_board(board.session_id, board.round):
            return
        session = await self.store.get(board.session_id)
        results = await self.store.results(board.session_id)
        names = await self._names(session)
        links = await self._links(session)
        if board.round == BEST_OF_ROUND:
            cells = [
                await self._cell(place, f"{names.get(place.member_id, '?')}", f"round {n}")
                for n, place in results.best_of[:10]
            ]
            title = f"Best of {session.theme[:80]}"
            text = render_best_of_text(session, results.rounds, names, links)
        else:
            (result,) = [r for r in results.rounds if r.round == board.round]
            cells = [
                await self._cell(place, names.get(place.member_id, "?"), "")
                for place in result.entries[:BOARD_TOP]
            ]
            title = round_title(session, result)
            text = render_board_text(session, result, names, links)
        image = await asyncio.to_thread(render_board, title, cells, TIE_RULE)
        self.boards[(board.session_id, board.round)] = image
        channel = self.client().get_partial_messageable(board.channel_id)
        try:
            sent = await channel.send(
                text,
                file=discord.File(io.BytesIO(image), filename=f"board-{board.round}.png"),
                allowed_mentions=_NONE,
                nonce=board.nonce,
            )
        except discord.HTTPException as exc:
            log.warning("board %s of session %s not posted: %s", board.round, session.id, exc)
            return  # the claim lapses; a later pass tries again with the same nonce
        await self.store.posts.mark_board_posted(board.session_id, board.round, sent.id)
        await self._after_board(board.session_id, board.round)

    async def _after_board(self, session_id: str, round_: int) -> None:
        """What follows a posted board: the entries it ends anonymity for are re-rendered
        (authors named, no Vote button) and, after the best-of, the card's last edit and the
        thread closed; then it is recorded (``mark_revealed``). A crash in between leaves the
        board in ``pending_reveals``, and a later pass (of this or another process) does it
        again: each step re-renders as things now are, so repeating one changes nothing."""
        if self.refresh is not None:
            for number in await self.store.posts.reveal_rounds(session_id, round_):
                for entry in await self.store.entries(session_id, number):
                    if entry.job_id is not None:
                        await self.refresh(entry.job_id)
        if round_ == BEST_OF_ROUND:
            session = await self.store.get(session_id)
            await self._show_card(session, last=True)
            await self._close_thread(session)
        await self.store.posts.mark_revealed(session_id, round_)

    async def _cell(self, place: RankedEntry, caption: str, detail: str) -> BoardCell:
        picture: bytes | None = None
        if place.job_id is not None:
            job = await self.service.store.queue.get(place.job_id)
            if job is not None and job.showable and job.result_refs:
                try:
                    picture = await self.images.get(job.result_refs[0])
                except (OSError, KeyError, ValueError) as exc:
                    log.info("board picture of job %s missing: %s", place.job_id, exc)
        return BoardCell(picture, place.rank, caption, place.votes, detail)

    async def _names(self, session: SessionView) -> dict[int, str]:
        """Authors' names, as recorded with their entries (a board's rounds are over)."""
        members = sorted({entry.member_id for entry in await self.store.entries(session.id)})
        return await self.service.display_names(session.guild_id, members)

    async def _links(self, session: SessionView) -> dict[str, str]:
        links: dict[str, str] = {}
        for entry in await self.store.entries(session.id):
            if entry.job_id is None:
                continue
            job = await self.service.store.queue.get(entry.job_id)
            if job is not None and job.message_id is not None:
                links[entry.id] = message_link(session.guild_id, job.channel_id, job.message_id)
        return links

    async def _close_thread(self, session: SessionView) -> None:
        if session.thread_id is None:
            return
        thread = self.client().get_channel(session.thread_id)
        if not isinstance(thread, discord.Thread):
            try:
                fetched = await self.client().fetch_channel(session.thread_id)
            except discord.HTTPException as exc:
                log.info("thread of session %s not found to close: %s", session.id, exc)
                return
            if not isinstance(fetched, discord.Thread):
                return
            thread = fetched
        try:
            await thread.edit(archived=True, locked=True)
        except discord.HTTPException as exc:
            # Locking needs Manage Threads; archiving alone still closes it for posting.
            log.info("thread of session %s not locked (%s); archiving it", session.id, exc)
            with contextlib.suppress(discord.HTTPException):
                await thread.edit(archived=True)
