"""Getting the review queue onto Discord: each item's message in the moderators' channel, and
the direct messages owed to owners. Also lets undecided holds expire.

Both follow the publisher's rule: the database says what is due, and each post is claim ->
send (with a nonce Discord uses to drop a repeat) -> record. A bot killed between any two steps
leaves a claim that lapses; the next pass, in this process or another, sends again with the
same nonce, so Discord returns the message it already has instead of posting a second one, and
the record is made then. Edits are idempotent. An item's message is edited whenever its
``version`` moves past what was shown (a decision, a new report, the job finishing).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import discord

from bot.customid import join
from bot.delivery_policy import classify
from bot.pass_loop import PassLoop
from bot.render_review import render_item, render_notice
from bot.router import ButtonRouter
from bot.services.review import ReviewService
from storage.review import ReviewDesk
from storage.types import Notice, ReviewItem, ReviewKind

log = logging.getLogger(__name__)

_NONE = discord.AllowedMentions.none()
#: How often undecided holds are checked for expiry.
EXPIRY_SECONDS = 60.0
#: Button codes: an item's buttons (``atl:1:rv:<action>:<item>``) and a DM's Appeal button
#: (``atl:1:ap:<job>``).
REVIEW_CODE = "rv"
APPEAL_CODE = "ap"
#: Item button actions: approve, reject, reject and ban, grant, deny, lineage.
ACTIONS = {"a", "r", "b", "g", "d", "l"}


def item_buttons(item: ReviewItem) -> list[list[tuple[str, str]]]:
    """An item's buttons: the decisions while it is open, then only its lineage."""
    lineage = ("Show lineage", join(REVIEW_CODE, f"l:{item.id}"))
    if not item.open:
        return [[lineage]]
    if item.kind is ReviewKind.APPEAL:
        decide = [
            ("Grant appeal", join(REVIEW_CODE, f"g:{item.id}")),
            ("Deny appeal", join(REVIEW_CODE, f"d:{item.id}")),
        ]
    else:
        keep = "Keep it up" if item.kind is ReviewKind.REPORT else "Approve"
        decide = [
            (keep, join(REVIEW_CODE, f"a:{item.id}")),
            ("Reject", join(REVIEW_CODE, f"r:{item.id}")),
            ("Reject and ban", join(REVIEW_CODE, f"b:{item.id}")),
        ]
    return [[*decide, lineage]]


@dataclass
class ReviewPoster(PassLoop):
    """Posts and edits review items, sends owners' notices, expires holds."""

    review: ReviewService
    desk: ReviewDesk
    router: ButtonRouter
    poll_seconds: float = 1.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _client: discord.Client | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _expired_at: float = 0.0
    #: Passes done (for tests: ``wait_passes``).
    passes: int = 0
    _passed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _stopping: bool = False

    pass_name = "review"

    async def _sleep_seconds(self) -> float:
        return self.poll_seconds

    def stop(self) -> None:
        """End ``run`` after the pass in progress (the bot is closing)."""
        self._stopping = True
        self._wake.set()

    def bind(self, client: discord.Client) -> None:
        self._client = client

    def wake(self) -> None:
        self._wake.set()

    async def wait_passes(self, count: int) -> None:
        """Until ``count`` more passes have run (for tests)."""
        async with self._passed:
            target = self.passes + count
            await self._passed.wait_for(lambda: self.passes >= target)

    async def pass_once(self) -> None:
        await self._expire()
        for item in await self.desk.stale_items():
            await self._show(item)
        for notice in await self.desk.due_notices():
            await self._notify(notice)

    async def _expire(self) -> None:
        now = time.monotonic()
        if now < self._expired_at + EXPIRY_SECONDS and self._expired_at:
            return
        self._expired_at = now
        days = self.review.settings.moderation.hold_days
        expired = await self.desk.expire_holds(
            self.clock() - timedelta(days=days), keep_images=self.review.keep_images
        )
        if expired:
            log.info("%d held result(s) expired undecided: rejected and refunded", expired)
        await self.desk.forget_expired_bans()

    # -- items --------------------------------------------------------------------------------

    async def _show(self, item: ReviewItem) -> None:
        if not await self.desk.claim_post(item.id):
            return
        try:
            channel_id, message_id = await self._post_or_edit(item)
        except discord.HTTPException as exc:
            if classify(exc.status, exc.code).permanent:
                log.warning("review item %s cannot be shown (%s); /review lists it", item.id, exc)
                await self.desk.shown(item.id, item.version, None, None)
            else:
                await self.desk.release_post(item.id)
            return
        await self.desk.shown(item.id, item.version, channel_id, message_id)

    async def _post_or_edit(self, item: ReviewItem) -> tuple[int | None, int | None]:
        content = render_item(item)
        view = self.router.view(item_buttons(item))
        picture = await self.review.thumbnail(item)
        files = (
            [discord.File(io.BytesIO(picture), filename=f"SPOILER_review-{item.job_id}.webp")]
            if picture
            else []
        )
        client = self.client()
        if item.message_id is not None and item.channel_id is not None:
            message = client.get_partial_messageable(item.channel_id).get_partial_message(
                item.message_id
            )
            try:
                await message.edit(
                    content=content, attachments=files, view=view, allowed_mentions=_NONE
                )
                return item.channel_id, item.message_id
            except discord.NotFound:
                log.info("review item %s's message is gone; posting it again", item.id)
                for file in files:
                    file.reset()
        channel_id = (await self.review.rules(item.guild_id)).review_channel
        if channel_id is None:
            return None, None  # no moderators' channel: /review lists it
        channel = client.get_partial_messageable(channel_id)
        sent = await channel.send(
            content,
            files=files,
            view=view,
            allowed_mentions=_NONE,
            # One message per item and channel, even when a killed process sends again.
            nonce=f"rv{item.id}c{channel_id % 10**8}"[:25],
        )
        return channel_id, sent.id

    # -- notices ------------------------------------------------------------------------------

    async def _notify(self, notice: Notice) -> None:
        if not await self.desk.claim_notice(notice.id):
            return
        text = render_notice(notice, self.review.settings.bot.appeal_days)
        extra: dict[str, Any] = {}
        if notice.kind in ("rejected", "expired") and notice.job_id and notice.guild_id:
            extra["view"] = self.router.view([[("Appeal", join(APPEAL_CODE, notice.job_id))]])
        try:
            user = await self.client().fetch_user(notice.user_id)
            channel = await user.create_dm()
            sent = await channel.send(
                text, allowed_mentions=_NONE, nonce=f"nt{notice.id}"[:25], **extra
            )
        except discord.HTTPException as exc:
            permanent = classify(exc.status, exc.code).permanent
            log.info("notice %s to user %s not sent: %s", notice.id, notice.user_id, exc)
            await self.desk.notice_failed(notice.id, str(exc), permanent=permanent)
            return
        await self.desk.notice_sent(notice.id, sent.id)

    def client(self) -> discord.Client:
        if self._client is None:
            raise RuntimeError("ReviewPoster used before bind()")
        return self._client
