"""Getting jobs onto Discord: the job message, its progress edits and its final result.

Every job has one message. It is created when the job is accepted (the interaction's response or
a follow-up), then only ever edited: progress while it runs, the result when it ends. Editing is
idempotent, so a crash between "edited" and "marked posted" at worst edits the same message twice.
The database, not memory, says whether a result has been posted.

Interaction tokens live 15 minutes and only in memory. After that, or after a restart, the message
is edited through the ordinary channel endpoint; if the message is gone a new one is posted (with a
nonce Discord uses to drop duplicates), and if the bot may not post in the channel the owner gets a
DM.

Discord's answers are classified (``bot.delivery_policy``). A passing failure (429, 5xx, no
answer) releases the result with a stored backoff, doubled per try, with jitter; a lasting one
(403, 404 Unknown Channel) goes down the fallbacks once (a new message, then a DM), and when
those fail too the delivery is given up, with the reason its owner sees in /info and /show. Every
REST answer is counted against an invalid-request budget; while it is spent, no delivery or
progress edit is tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiohttp
import discord

from bot.delivery_policy import Failure, InvalidRequestBudget, backoff_seconds, classify, describe
from bot.edit_budget import EditBudget, most_behind_first
from bot.render import render_card
from bot.router import ButtonRouter
from bot.services.job_cards import JobCards, JobMessage, Ticket, showcase_row
from generation.request import GenerationRequest
from storage.types import CopyKind, JobStatus, JobView, OpenInteraction

log = logging.getLogger(__name__)

#: Stop using an interaction token this long before Discord expires it.
TOKEN_MARGIN = timedelta(seconds=60)
TOKEN_LIFETIME = timedelta(minutes=15)
INVALID_WEBHOOK_TOKEN = 50027
#: Discord's answers for an interaction that can no longer be answered: Unknown Webhook (it
#: was never acknowledged), Unknown Interaction (its 3 seconds passed).
UNANSWERABLE = (10015, 10062)
ORIGINAL = "@original"
POSTED_MEMORY = 10_000
#: How many messages after a job's interaction are searched for its unrecorded message.
HISTORY_SCAN = 100
#: How often expired interaction tokens are cleared from the delivery records.
TOKEN_SWEEP_SECONDS = 60.0
_NONE = discord.AllowedMentions.none()


@dataclass
class _Live:
    webhook: discord.Webhook
    message_id: int
    expires_at: datetime


@dataclass
class _Shown:
    content: str = ""
    at: float = 0.0
    step: int | None = None
    #: A progress edit met a lasting refusal: no more progress edits (the result still tries).
    closed: bool = False


class _Undeliverable(Exception):
    """Every way to post a result met a lasting refusal."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Failures that mean Discord never answered.
_NO_ANSWER = (aiohttp.ClientError, TimeoutError, OSError)


@dataclass
class Publisher:
    """Owns the job messages: announce, progress, result, retries and restart recovery."""

    cards: JobCards
    router: ButtonRouter
    progress_interval: float
    retry_seconds: float = 5.0
    retry_max_seconds: float = 900.0
    max_attempts: int = 12
    poll_seconds: float = 0.5
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    #: Invalid answers (401, 403, 429) received, and the limit of risky calls.
    budget: InvalidRequestBudget = field(default_factory=lambda: InvalidRequestBudget(1000))
    #: Backoff jitter in [0, 1).
    jitter: Callable[[], float] = random.random
    #: Progress edits fit in this budget; the naive way (no limit) by default.
    edits: EditBudget = field(default_factory=EditBudget.unlimited)
    _client: discord.Client | None = None
    _live: dict[str, _Live] = field(default_factory=dict)
    _shown: dict[str, _Shown] = field(default_factory=dict)
    #: In-memory pauses after an unexpected error (a database hiccup); Discord's refusals are
    #: backed off in the ledger instead (``next_attempt_at``), which a restart keeps.
    _backoff: dict[str, float] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Recently posted results (job id -> message id), for ``wait_posted``; bounded.
    _posted: OrderedDict[str, int] = field(default_factory=OrderedDict)
    _posted_changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _recovered: asyncio.Event = field(default_factory=asyncio.Event)
    _tokens_checked_at: float = 0.0
    #: Results given up by this process (job id -> reason), for ``wait_given_up``; bounded.
    _given_up: OrderedDict[str, str] = field(default_factory=OrderedDict)
    _holding: bool = False
    #: Sweeps stopped because the budget was spent (for ``wait_held``).
    held_passes: int = 0
    #: Messages found due for a progress edit in this pass, edited once the pass's results are.
    _due: list[JobView[GenerationRequest]] = field(default_factory=list)
    #: Jobs whose like count changed since their messages last showed it (bounded), each with
    #: the click that made it due (a counter) and the message ids still to edit (None: all).
    _likes_due: dict[str, tuple[int, set[int] | None]] = field(default_factory=dict)
    _like_clicks: int = 0

    def bind(self, client: discord.Client) -> None:
        """The connected client whose channels and DMs the publisher posts through."""
        self._client = client

    def wake(self) -> None:
        """Look at the ledger now (a job changed in this process)."""
        self._wake.set()

    # -- the moment a job is accepted -----------------------------------------------------

    async def announce(
        self, interaction: discord.Interaction[Any], tickets: list[Ticket], note: str
    ) -> None:
        """Answer for jobs that are already stored, then give each its public message.

        Not yet acknowledged (the fast path): ``note`` is the interaction's first and final
        response, sent only now that the jobs are stored, so the answer proves it. Deferred (the
        ledger was slow): ``note`` replaces "thinking...". Then each job gets a public message,
        a follow-up. If Discord refuses the answer because the interaction is gone (the user saw
        "This interaction failed"), the jobs are withdrawn: cancelled and refunded.
        """
        try:
            if not interaction.response.is_done():
                await interaction.response.send_message(note, ephemeral=True)
            else:
                await interaction.edit_original_response(content=note)
        except discord.NotFound as exc:
            if exc.code in UNANSWERABLE:
                ids = [ticket.job_id for ticket in tickets]
                log.warning("interaction for job(s) %s was gone; withdrawing them", ids)
                await self.cards.withdraw(ids)
            raise
        for ticket in tickets:
            message = await interaction.followup.send(
                render_card(ticket.card), wait=True, allowed_mentions=_NONE
            )
            await self._remember(interaction, ticket.job_id, message.id)
        self.wake()

    async def recover(self) -> None:
        """After a restart: finish the answers a previous process left open.

        For every stored job whose interaction token still lives and whose message was never
        posted: the response is (re)written to say it is queued, and the job's message posted
        as a follow-up. A response Discord says was never acknowledged means the user saw the
        command fail: its jobs are withdrawn instead. Tokens are forgotten once they are no
        longer needed (message posted, or expired).
        """
        await self.cards.forget_tokens()
        pending = await self.cards.open_interactions()
        by_interaction: dict[int, list[OpenInteraction]] = {}
        for item in pending:
            if item.message_id is not None:
                await self.cards.forget_tokens([item.job_id])
            else:
                by_interaction.setdefault(item.interaction_id, []).append(item)
        for items in by_interaction.values():
            try:
                await self._finish_answer(items)
            except discord.HTTPException as exc:
                log.warning(
                    "could not finish the answer for job(s) %s after a restart: HTTP %s",
                    [item.job_id for item in items],
                    exc.status,
                )
        if by_interaction:
            self.wake()

    async def _finish_answer(self, items: list[OpenInteraction]) -> None:
        client = self.client()
        application_id = client.application_id
        assert application_id is not None, "recover() runs once the client is ready"
        webhook = discord.Webhook.partial(application_id, items[0].token, client=client)
        ids = ", ".join(f"`{item.job_id}`" for item in items)
        try:
            # Discord's "@original" names the interaction's own response.
            await webhook.edit_message(
                cast(int, ORIGINAL), content=f"Queued: job {ids} (after a restart)."
            )
        except discord.NotFound as exc:
            if exc.code not in UNANSWERABLE:
                raise
            log.warning("job(s) %s were never acknowledged; withdrawing them", ids)
            await self.cards.withdraw([item.job_id for item in items])
            await self.cards.forget_tokens([item.job_id for item in items])
            return
        for item in items:
            # Finished or not, the job gets its message here; the publisher's pass, which
            # starts after this, then shows its progress or result in it.
            delivery = await self.cards.message_of(item.job_id)
            found = await self._find_unrecorded(delivery)
            if found is not None:  # posted just before the kill, not yet recorded
                await self.cards.attach_message(
                    item.job_id, found, delivery.attachment_limit, item.expires_at
                )
                await self.cards.forget_tokens([item.job_id])
                continue
            message = await webhook.send(
                render_card(delivery.card), wait=True, allowed_mentions=_NONE
            )
            self._live[item.job_id] = _Live(webhook, message.id, item.expires_at)
            await self.cards.attach_message(
                item.job_id, message.id, delivery.attachment_limit, item.expires_at
            )
            await self.cards.forget_tokens([item.job_id])

    async def show(self, interaction: discord.Interaction[Any], ticket: Ticket) -> None:
        """Post a finished job again (/show), with its result and working buttons."""
        message = await self.cards.message_of(ticket.job_id)
        files = [
            discord.File(io.BytesIO(data), filename=name)
            for name, data in await self.cards.result_files(message)
        ]
        view = self._view_of(message) if files else discord.utils.MISSING
        await interaction.edit_original_response(content=f"Job `{ticket.job_id}` is below.")
        copy = await interaction.followup.send(
            render_card(ticket.card), files=files, allowed_mentions=_NONE, view=view, wait=True
        )
        await self.cards.add_copy(ticket.job_id, copy.channel.id, copy.id)

    async def _remember(
        self, interaction: discord.Interaction[Any], job_id: str, message_id: int
    ) -> None:
        expires = interaction.created_at + TOKEN_LIFETIME
        self._live[job_id] = _Live(interaction.followup, message_id, expires)
        await self.cards.attach_message(job_id, message_id, interaction.filesize_limit, expires)
        # The message exists: the live token (in memory) edits it, and after a restart the
        # channel does. The stored copy of the token has done its work.
        await self.cards.forget_tokens([job_id])

    async def wait_recovered(self) -> None:
        """Until ``recover`` has run in this process (for tests)."""
        await self._recovered.wait()

    async def wait_posted(self, job_id: str) -> int:
        """The message id once this process has posted ``job_id``'s result (for tests, benches)."""
        async with self._posted_changed:
            await self._posted_changed.wait_for(lambda: job_id in self._posted)
            return self._posted[job_id]

    async def wait_given_up(self, job_id: str) -> str:
        """The reason once this process has given up ``job_id``'s delivery (for tests)."""
        async with self._posted_changed:
            await self._posted_changed.wait_for(lambda: job_id in self._given_up)
            return self._given_up[job_id]

    async def wait_held(self, after: int) -> int:
        """Wait until more than ``after`` sweeps stopped on a spent budget (for tests)."""
        async with self._posted_changed:
            await self._posted_changed.wait_for(lambda: self.held_passes > after)
            return self.held_passes

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Finish what a previous process left open, then forever: wait for a change or the
        poll interval, and bring messages up to date."""
        try:
            await self.recover()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("finishing open answers after a restart failed")
        self._recovered.set()
        while True:
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that arrives as the
            # wait finishes (a job announced as the bot closes), and the loop would poll on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()
            await self.pass_once()
            await self._forget_expired_tokens()

    async def _forget_expired_tokens(self) -> None:
        """Now and then, clear the stored interaction tokens that have expired (an answer that
        failed half-way leaves one behind); a token is a credential for 15 minutes only."""
        now = time.monotonic()
        if now < self._tokens_checked_at + TOKEN_SWEEP_SECONDS:
            return
        self._tokens_checked_at = now
        try:
            await self.cards.forget_tokens()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("clearing expired interaction tokens failed; will try again")

    async def pass_once(self) -> None:
        """One sweep over every job whose message is not final yet.

        The job list is one query; a job's card (which asks the queue for its position) is only
        built when its message is due: finished, or not edited for ``progress_interval``. While
        the invalid-request budget is spent, the sweep stops: nothing is claimed, nothing lost.
        """
        for job in await self.cards.undelivered_jobs():
            if self._budget_spent():
                async with self._posted_changed:
                    self.held_passes += 1
                    self._posted_changed.notify_all()
                return
            try:
                await self._update(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivering job %s failed; will retry", job.id)
                self._backoff[job.id] = time.monotonic() + self.retry_seconds
        await self._edit_due()
        if self._likes_due:
            try:
                await self._edit_likes()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("showing like counts failed; will retry")

    def _budget_spent(self) -> bool:
        if not self.budget.exhausted():
            self._holding = False
            return False
        if not self._holding:
            log.warning(
                "%d invalid Discord answers (401/403/429) in the last %g s: holding deliveries "
                "and progress edits for %.0f s",
                self.budget.used(),
                self.budget.window_seconds,
                self.budget.frees_in(),
            )
            self._holding = True
        return True

    async def _update(self, job: JobView[GenerationRequest]) -> None:
        now = time.monotonic()
        if self._backoff.get(job.id, 0.0) > now:
            return
        if job.terminal:
            self.edits.spend(job.channel_id or 0)
            await self._deliver_final(await self.cards.message_for(job))
            return
        if job.message_id is None:
            return  # announced by another path that has not attached yet, or lost: wait for end
        shown = self._shown.setdefault(job.id, _Shown())
        if shown.closed or now - shown.at < self.progress_interval:
            return
        # Due: edited after this pass's results, if the budget allows (see _edit_due).
        self._due.append(job)

    async def _edit_due(self) -> None:
        """The progress edits found due in this pass, most-behind first, within the budget.

        A message over budget is skipped; the next pass renders it afresh, so only its newest
        state is ever sent, and a result never waits behind a flood of position edits.
        """
        # A sweep the invalid-request budget cut short left its due list for this one: the
        # newest view of each job counts once.
        due = list({job.id: job for job in self._due}.values())
        self._due = []
        for job in most_behind_first(due, lambda job: self._shown[job.id].at):
            if not self.edits.allows(job.channel_id or 0):
                self.edits.refuse()
                continue
            try:
                await self._show_progress(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("showing the progress of job %s failed; will retry", job.id)
                self._backoff[job.id] = time.monotonic() + self.retry_seconds

    async def _show_progress(self, job: JobView[GenerationRequest]) -> None:
        now = time.monotonic()
        shown = self._shown.setdefault(job.id, _Shown())
        delivery = await self.cards.message_for(job)
        content = render_card(delivery.card)
        if content == shown.content:
            return
        preview = None
        if delivery.card.status is JobStatus.RUNNING and delivery.card.step != shown.step:
            preview = await self.cards.preview(delivery)
        files = [discord.File(io.BytesIO(preview), filename="preview.webp")] if preview else []
        self.edits.take(delivery.channel_id)
        try:
            await self._edit(delivery, content=content, files=files, view=None, keep=not files)
        except discord.HTTPException as exc:
            # Progress is best effort; the final result finds another way (new message, DM).
            # After a lasting refusal, no more progress edits: each would be refused again.
            shown.closed = classify(exc.status, exc.code).permanent
            log.info("progress of job %s not shown: %s", delivery.job_id, exc)
        shown.content, shown.at, shown.step = content, now, delivery.card.step

    async def _deliver_final(self, delivery: JobMessage) -> None:
        if not await self.cards.claim(delivery.job_id):
            return  # another bot process is posting it, it already was, or it is backing off
        attempt = delivery.post_attempts + 1
        content = render_card(delivery.card)
        files = []
        view: discord.ui.View | None = None
        if delivery.showable:
            for name, data in await self.cards.result_files(delivery):
                files.append(discord.File(io.BytesIO(data), filename=name))
            view = self._view_of(delivery)
        elif delivery.card.status is JobStatus.SUCCEEDED:
            view = discord.ui.View()  # held for review: no image, no buttons
        try:
            if delivery.card.status is JobStatus.BLOCKED:
                message_id = await self._take_down(delivery, content)
            else:
                message_id = await self._edit_or_post(delivery, content, files, view)
        except _Undeliverable as exc:
            await self._give_up(delivery, exc.reason)
            return
        except discord.HTTPException as exc:
            what = describe(exc.status, exc.code)
            if classify(exc.status, exc.code).permanent:
                await self._give_up(delivery, f"Discord refused it ({what})")
            else:
                await self._retry_later(delivery, attempt, what)
            return
        except _NO_ANSWER as exc:
            log.info("job %s: no answer from Discord (%r)", delivery.job_id, exc)
            await self._retry_later(delivery, attempt, describe(0))
            return
        await self.cards.mark_posted(delivery.job_id, message_id)
        async with self._posted_changed:
            self._posted[delivery.job_id] = message_id or 0
            while len(self._posted) > POSTED_MEMORY:
                self._posted.popitem(last=False)
            self._posted_changed.notify_all()
        self._forget(delivery.job_id)

    async def _retry_later(self, delivery: JobMessage, attempt: int, what: str) -> None:
        """A passing failure: try again after a backoff, stored with the delivery; after
        ``max_attempts`` tries, give up."""
        if attempt >= self.max_attempts:
            await self._give_up(delivery, f"Discord kept failing ({what}) for {attempt} tries")
            return
        delay = backoff_seconds(
            attempt, base=self.retry_seconds, cap=self.retry_max_seconds, jitter=self.jitter()
        )
        log.info(
            "job %s not posted (%s, try %d); next try in %.1f s",
            delivery.job_id,
            what,
            attempt,
            delay,
        )
        await self.cards.release(delivery.job_id, what, retry_after=delay)

    async def _give_up(self, delivery: JobMessage, reason: str) -> None:
        log.warning("job %s: delivery given up: %s", delivery.job_id, reason)
        await self.cards.give_up(delivery.job_id, reason)
        async with self._posted_changed:
            self._given_up[delivery.job_id] = reason
            while len(self._given_up) > POSTED_MEMORY:
                self._given_up.popitem(last=False)
            self._posted_changed.notify_all()
        self._forget(delivery.job_id)

    def _forget(self, job_id: str) -> None:
        self._live.pop(job_id, None)
        self._shown.pop(job_id, None)
        self._backoff.pop(job_id, None)

    async def _take_down(self, delivery: JobMessage, content: str) -> int | None:
        """A blocked job's message, and every ``/show`` copy of it, says so, with no image and
        no buttons. Nothing new is posted for it: if a message is gone, or the bot may no longer
        edit it, there is nothing public left to take down there."""
        for channel_id, message_id in await self.cards.copies(delivery.job_id):
            copy = self.client().get_partial_messageable(channel_id)
            try:
                await copy.get_partial_message(message_id).edit(
                    content=content, attachments=[], view=None, allowed_mentions=_NONE
                )
            except (discord.NotFound, discord.Forbidden) as exc:
                log.info("a copy of blocked job %s cannot be edited (%s)", delivery.job_id, exc)
        await self.cards.forget_copies(delivery.job_id)
        if delivery.message_id is None:
            return None
        try:
            # An empty view clears the buttons; no attachments clears the image.
            await self._edit(
                delivery, content=content, files=[], view=discord.ui.View(), keep=False
            )
        except (discord.NotFound, discord.Forbidden) as exc:
            log.info("blocked job %s: its message cannot be edited (%s)", delivery.job_id, exc)
        return delivery.message_id

    async def _edit_or_post(
        self,
        delivery: JobMessage,
        content: str,
        files: list[discord.File],
        view: discord.ui.View | None,
    ) -> int:
        """Edit the job message; if it is gone, post a new one; if the channel refuses, DM the
        owner. Each fallback is tried once. A passing failure is raised as it is (the caller
        backs off); when every way met a lasting refusal, ``_Undeliverable`` says why."""
        refusals: list[str] = []
        post_new = True
        if delivery.message_id is None:
            found = await self._find_unrecorded(delivery)
            if found is not None:
                delivery = replace(delivery, message_id=found)
        if delivery.message_id is not None:
            try:
                await self._edit(delivery, content=content, files=files, view=view, keep=False)
                return delivery.message_id
            except discord.HTTPException as exc:
                failure = classify(exc.status, exc.code)
                if failure is Failure.CLOSED:
                    # The channel itself refuses (or is gone): a new message there would be
                    # refused too, and count as one more invalid request.
                    refusals.append(describe(exc.status, exc.code))
                    post_new = False
                elif failure is Failure.MESSAGE_GONE:
                    log.info("message of job %s is gone; posting a new one", delivery.job_id)
                else:
                    raise
            _rewind(files)
        if post_new:
            try:
                channel = self.client().get_partial_messageable(delivery.channel_id)
                message = await channel.send(
                    content,
                    files=files,
                    allowed_mentions=_NONE,
                    nonce=_nonce(delivery),
                    **_view(view),
                )
                return message.id
            except discord.HTTPException as exc:
                failure = classify(exc.status, exc.code)
                if failure in (Failure.TRANSIENT, Failure.REJECTED):
                    raise
                refusals.append(describe(exc.status, exc.code))
            _rewind(files)
        try:
            return await self._dm_owner(delivery, content, files, view)
        except discord.HTTPException as exc:
            if not classify(exc.status, exc.code).permanent:
                raise
            raise _Undeliverable(
                f"the channel refused it ({', '.join(refusals)}), and so did a direct message "
                f"to you ({describe(exc.status, exc.code)})"
            ) from exc

    async def _edit(
        self,
        delivery: JobMessage,
        *,
        content: str,
        files: list[discord.File],
        view: discord.ui.View | None,
        keep: bool,
    ) -> None:
        """Edit the job message through the live token, else through the channel."""
        assert delivery.message_id is not None
        extra: dict[str, Any] = {"allowed_mentions": _NONE}
        if not keep:
            extra["attachments"] = files
        if view is not None:
            extra["view"] = view
        live = self._live.get(delivery.job_id)
        if live is not None and self.clock() < live.expires_at - TOKEN_MARGIN:
            try:
                await live.webhook.edit_message(live.message_id, content=content, **extra)
                return
            except discord.HTTPException as exc:
                # Discord's clock decides: a token it calls expired (50027) is dropped and the
                # channel route takes over; anything else is a real failure.
                if exc.code != INVALID_WEBHOOK_TOKEN:
                    raise
                log.info(
                    "interaction token of job %s expired; editing via channel", delivery.job_id
                )
                for file in extra.get("attachments", []):
                    file.reset()
        self._live.pop(delivery.job_id, None)
        channel = self.client().get_partial_messageable(delivery.channel_id)
        await channel.get_partial_message(delivery.message_id).edit(content=content, **extra)

    async def _dm_owner(
        self,
        delivery: JobMessage,
        content: str,
        files: list[discord.File],
        view: discord.ui.View | None,
    ) -> int:
        client = self.client()
        user = await client.fetch_user(delivery.owner_id)
        channel = await user.create_dm()
        note = "I could not post in the channel where you asked, so here is your result.\n"
        message = await channel.send(
            note + content,
            files=files,
            allowed_mentions=_NONE,
            nonce=_nonce(delivery, "dm"),
            **_view(view),
        )
        return message.id

    async def _find_unrecorded(self, delivery: JobMessage) -> int | None:
        """A message of the job's that was posted but never recorded (the process died between
        the post and the commit): the bot's own message naming the job, after the job's
        interaction, in the job's channel. Posting another would show the job twice."""
        if delivery.interaction_id is None or not delivery.channel_id:
            return None
        client = self.client()
        me = client.user.id if client.user else None
        needle = f"job `{delivery.job_id}`"
        channel = client.get_partial_messageable(delivery.channel_id)
        try:
            async for message in channel.history(
                after=discord.Object(id=delivery.interaction_id),
                limit=HISTORY_SCAN,
                oldest_first=True,
            ):
                if message.author.id == me and needle in message.content:
                    return message.id
        except discord.HTTPException as exc:
            log.info("could not look for job %s's message: HTTP %s", delivery.job_id, exc.status)
        return None

    def _view_of(self, message: JobMessage) -> discord.ui.View:
        rows = [[(label, ref.encode()) for label, ref in row] for row in message.buttons]
        if message.extra_row:
            rows.append(list(message.extra_row))
        return self.router.view(rows)

    # -- like counts: coalesced edits ---------------------------------------------------------

    def likes_changed(self, job_id: str) -> None:
        """A like was toggled: every message that shows the job's count is due for one edit,
        however many clicks arrive before it is made (within the edit budget)."""
        self._like_clicks += 1
        self._likes_due.pop(job_id, None)
        self._likes_due[job_id] = (self._like_clicks, None)
        while len(self._likes_due) > POSTED_MEMORY:
            del self._likes_due[next(iter(self._likes_due))]
        self.wake()

    async def _edit_likes(self) -> None:
        """Show each due job's like count on every message that shows it: its own post, its
        ``/show`` copies (the job's buttons) and its showcase post (❤ and Unpublish). A message
        whose channel is out of edit budget waits for a later pass, which sends the newest
        count; the messages already edited are not edited again for the same clicks."""
        for job_id, (click, pending) in list(self._likes_due.items()):
            job = await self.cards.queue.get(job_id)
            if job is None or not job.showable:
                self._likes_due.pop(job_id, None)
                continue
            targets = await self.cards.copy_records(job_id)
            if job.message_id is not None:
                targets.insert(0, (job.channel_id or 0, job.message_id, CopyKind.SHOW))
            if pending is not None:
                targets = [t for t in targets if t[1] in pending]
            message = await self.cards.message_for(job)
            waiting: set[int] = set()
            for channel_id, message_id, kind in targets:
                if not self.edits.allows(channel_id):
                    self.edits.refuse()
                    waiting.add(message_id)
                    continue
                if kind is CopyKind.SHOWCASE:
                    view = self.router.view([list(showcase_row(job.id, job.like_count))])
                else:
                    view = self._view_of(message)
                self.edits.take(channel_id)
                try:
                    partial = self.client().get_partial_messageable(channel_id)
                    await partial.get_partial_message(message_id).edit(view=view)
                except discord.HTTPException as exc:
                    log.info("like count of job %s not shown in %s: %s", job_id, message_id, exc)
            if self._likes_due.get(job_id, (None,))[0] != click:
                continue  # liked again meanwhile: every message is due once more
            if waiting:
                self._likes_due[job_id] = (click, waiting)
            else:
                del self._likes_due[job_id]

    async def refresh(self, job_id: str) -> bool:
        """Edit a posted job's own message to show it as it now is (its card and buttons): a
        session entry whose round ended names its author. Counted against the edit budget like
        a final result (never refused). False when there was nothing to edit."""
        job = await self.cards.queue.get(job_id)
        if job is None or job.message_id is None or not job.showable:
            return False
        message = await self.cards.message_for(job)
        channel_id = job.channel_id or 0
        self.edits.spend(channel_id)
        try:
            partial = self.client().get_partial_messageable(channel_id)
            await partial.get_partial_message(job.message_id).edit(
                content=render_card(message.card), view=self._view_of(message)
            )
        except discord.HTTPException as exc:
            log.info("job %s's message not refreshed: %s", job_id, exc)
            return False
        return True

    def client(self) -> discord.Client:
        if self._client is None:
            raise RuntimeError("Publisher used before bind()")
        return self._client


def _rewind(files: list[discord.File]) -> None:
    for file in files:
        file.reset()


def _view(view: discord.ui.View | None) -> dict[str, Any]:
    return {} if view is None else {"view": view}


def _nonce(delivery: JobMessage, salt: str = "post") -> str:
    # Discord drops a second message with the same nonce (enforce_nonce), so a retry after a
    # crash between "sent" and "marked posted" does not post twice.
    return hashlib.sha256(f"{salt}:{delivery.job_id}".encode()).hexdigest()[:25]
