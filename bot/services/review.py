"""The review queue's service: who may do what, for the review feature and the poster. No
discord.py.

Permissions are checked on every action at the server level, from the interaction itself: a
button's custom_id only names an item, and the item must belong to the clicker's server
(``ReviewDesk.get`` scopes every lookup by server), whose moderator the clicker must be. An
owner appeals only their own job; a reporter reports only a job shown in public in their server.

A server's moderation settings (the moderators' channel, its age-restricted channels, who may
decide appeals, the automatic ban) live in its settings document, set by admins with
/settings server (see bot/services/server_settings.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.errors import UserFacingError
from bot.render import escape, mention, shorten
from bot.render_review import full_time, render_ban, render_review_list
from bot.render_settings import render_auto_ban
from bot.requester import Requester
from config.settings import Settings
from generation.grid import thumbnail
from storage.delivery_ledger import DeliveryLedger
from storage.errors import ImageNotFound, JobNotFound
from storage.images import ImageStore
from storage.preferences import PreferenceStore
from storage.queue import JobQueue
from storage.review import AutoBan, ReviewDesk
from storage.types import (
    Decision,
    DecisionOutcome,
    HoldState,
    JobStatus,
    ReviewItem,
)

log = logging.getLogger(__name__)

#: Keys of a server's settings document.
REVIEW_CHANNEL_KEY = "review_channel"
AGE_RESTRICTED_KEY = "age_restricted_channels"
SAME_MODERATOR_KEY = "appeal_same_moderator"
AUTO_BAN_KEY = "auto_ban"
#: The most channels a server may mark age-restricted.
MAX_AGE_RESTRICTED = 100
#: Items one /review lists.
REVIEW_PAGE = 10
#: Ancestors and descendants "Show lineage" lists.
LINEAGE_LIMIT = 20
_DURATION = re.compile(r"(?P<amount>[0-9]{1,6}(?:\.[0-9]{1,3})?)\s*(?P<unit>m|h|d|w)")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The longest ban a duration may give (ten years; "permanent" is a ban with no end).
MAX_BAN = timedelta(days=3650)
DURATION_HELP = "a number with m, h, d or w (e.g. 30m, 12h, 7d, 2w), or `permanent`"


def parse_duration(text: str) -> timedelta | None:
    """A ban's length: ``30m``, ``12h``, ``7d``, ``2w``, or ``permanent`` (None)."""
    value = text.strip().lower()
    if value in ("permanent", "forever"):
        return None
    match = _DURATION.fullmatch(value)
    if not match:
        raise UserFacingError(
            f"`{escape(shorten(text, 40))}` is not a duration: use {DURATION_HELP}"
        )
    length = timedelta(seconds=float(match.group("amount")) * _UNITS[match.group("unit")])
    if not timedelta(minutes=1) <= length <= MAX_BAN:
        raise UserFacingError(
            f"a ban lasts from 1 minute to 3650 days, not {escape(text)}; "
            "use `permanent` for no end"
        )
    return length


@dataclass(frozen=True)
class GuildModeration:
    """A server's moderation settings."""

    review_channel: int | None
    age_restricted_channels: tuple[int, ...]
    appeal_same_moderator: bool
    auto_ban: AutoBan


@dataclass(frozen=True)
class ModerationChange:
    """Admin changes from /settings server; None: unchanged."""

    review_channel: int | None = None
    age_restricted: bool | None = None
    appeals: str | None = None  # "another" | "any"
    auto_ban_strikes: int | None = None
    auto_ban_window_hours: float | None = None
    auto_ban_hours: float | None = None

    @property
    def empty(self) -> bool:
        return all(value is None for value in vars(self).values())


class ReviewService:
    """Reports, appeals, decisions, bans and the server's moderation settings."""

    def __init__(
        self,
        settings: Settings,
        desk: ReviewDesk,
        queue: JobQueue[Any],
        delivery: DeliveryLedger[Any],
        prefs: PreferenceStore,
        images: ImageStore,
    ) -> None:
        self.settings = settings
        self.desk = desk
        self.queue = queue
        self.delivery = delivery
        self.prefs = prefs
        self.images = images

    @property
    def keep_images(self) -> timedelta:
        return timedelta(days=self.settings.bot.appeal_days)

    # -- a server's settings -------------------------------------------------------------

    async def rules(self, guild_id: int) -> GuildModeration:
        stored = await self.prefs.get_guild_settings(guild_id)
        auto = stored.get(AUTO_BAN_KEY) or {}
        return GuildModeration(
            review_channel=stored.get(REVIEW_CHANNEL_KEY),
            age_restricted_channels=tuple(stored.get(AGE_RESTRICTED_KEY, [])),
            appeal_same_moderator=bool(stored.get(SAME_MODERATOR_KEY, False)),
            auto_ban=AutoBan(
                strikes=int(auto.get("strikes", 0)),
                window=timedelta(hours=float(auto.get("window_hours", 24))),
                duration=timedelta(hours=float(auto.get("ban_hours", 24))),
            ),
        )

    async def update(self, requester: Requester, change: ModerationChange) -> list[str]:
        """Admins: the server's moderation settings; lines saying what changed."""
        if change.empty:
            return []
        if requester.guild_id is None or not requester.is_admin:
            raise UserFacingError(
                "only server admins (Manage Server) may change the server's moderation settings"
            )
        guild_id = requester.guild_id
        lines: list[str] = []

        def edit(current: dict[str, Any]) -> dict[str, Any]:
            updated = dict(current)
            if change.review_channel is not None:
                updated[REVIEW_CHANNEL_KEY] = change.review_channel
                lines.append(f"Review items now go to <#{change.review_channel}>.")
            if change.age_restricted is not None:
                marked = [
                    c for c in current.get(AGE_RESTRICTED_KEY, []) if c != requester.channel_id
                ]
                if change.age_restricted:
                    if len(marked) >= MAX_AGE_RESTRICTED:
                        raise UserFacingError(
                            f"this server already marks {len(marked)} channels age-restricted, "
                            f"the most allowed ({MAX_AGE_RESTRICTED})"
                        )
                    marked.append(requester.channel_id)
                updated[AGE_RESTRICTED_KEY] = marked
                lines.append(
                    f"<#{requester.channel_id}> is "
                    + (
                        "now age-restricted: the classifier's loose thresholds apply here."
                        if change.age_restricted
                        else "no longer marked age-restricted (Discord's NSFW flag still counts)."
                    )
                )
            if change.appeals is not None:
                same = change.appeals == "any"
                updated[SAME_MODERATOR_KEY] = same
                lines.append(
                    "Appeals may be decided by any moderator, even the one who rejected."
                    if same
                    else "Appeals go to a moderator other than the one who rejected."
                )
            auto = dict(current.get(AUTO_BAN_KEY) or {})
            for key, value in (
                ("strikes", change.auto_ban_strikes),
                ("window_hours", change.auto_ban_window_hours),
                ("ban_hours", change.auto_ban_hours),
            ):
                if value is not None:
                    auto[key] = value
            if auto != (current.get(AUTO_BAN_KEY) or {}):
                updated[AUTO_BAN_KEY] = auto
                lines.append(
                    render_auto_ban(
                        int(auto.get("strikes", 0)),
                        timedelta(hours=float(auto.get("window_hours", 24))),
                        timedelta(hours=float(auto.get("ban_hours", 24))),
                    )
                )
            return updated

        before = await self.rules(guild_id)
        await self.prefs.edit_guild_settings(guild_id, edit)
        if change.review_channel is not None and change.review_channel != before.review_channel:
            await self.desk.repost_open(guild_id)
        return lines

    async def age_restricted(self, requester: Requester) -> bool:
        """Whether new jobs here get the classifier's loose thresholds: Discord's NSFW flag on
        the channel, or an admin's mark. DMs never."""
        if requester.guild_id is None:
            return False
        if requester.age_restricted:
            return True
        return (
            requester.channel_id in (await self.rules(requester.guild_id)).age_restricted_channels
        )

    # -- bans -----------------------------------------------------------------------------

    async def check_not_banned(self, requester: Requester) -> None:
        """Refuse a banned member's new job or job button, with the end of the ban."""
        if requester.guild_id is None:
            return
        ban = await self.desk.active_ban(requester.guild_id, requester.user_id)
        if ban is not None:
            raise UserFacingError(render_ban(ban))

    async def ban(self, requester: Requester, member_id: int, duration: str, reason: str) -> str:
        guild_id = self._moderator_guild(requester)
        if member_id == requester.user_id:
            raise UserFacingError("you cannot ban yourself")
        length = parse_duration(duration)
        ban = await self.desk.ban(
            guild_id, member_id, duration=length, reason=reason, moderator_id=requester.user_id
        )
        until = "until /unban" if ban.until is None else f"until {full_time(ban.until)}"
        return (
            f"{mention(member_id)} may not create jobs or click job buttons here {until}. "
            "They are told so, with the end time, whenever they try."
        )

    async def unban(self, requester: Requester, member_id: int, reason: str) -> str:
        guild_id = self._moderator_guild(requester)
        if not await self.desk.unban(guild_id, member_id, requester.user_id, reason):
            raise UserFacingError(f"{mention(member_id)} is not banned from Atelier here")
        return f"{mention(member_id)} may use Atelier here again."

    async def strike(self, guild_id: int, user_id: int) -> None:
        """After a rejection or a refused prompt: the server's automatic ban, if it is on and
        the member reached it."""
        rule = (await self.rules(guild_id)).auto_ban
        ban = await self.desk.strike(guild_id, user_id, rule)
        if ban is not None:
            log.info("user %s was banned automatically in guild %s", user_id, guild_id)

    # -- reports and appeals -------------------------------------------------------------

    async def job_of_message(self, requester: Requester, message_id: int) -> str:
        """The job a message of ours shows, for a report from its context menu."""
        if requester.guild_id is None:
            raise UserFacingError("reports go to a server's moderators; report in the server")
        job_id = await self.delivery.job_of_message(message_id)
        if job_id is None:
            raise UserFacingError(
                "this message shows no Atelier job; only job results are reported"
            )
        return job_id

    async def report(self, requester: Requester, job_id: str, reason: str) -> str:
        if requester.guild_id is None:
            raise UserFacingError("reports go to a server's moderators; report in the server")
        try:
            await self.desk.report(
                requester.guild_id,
                job_id,
                requester.user_id,
                reason.strip() or "no reason given",
                per_hour=self.settings.moderation.reports_per_hour,
            )
        except JobNotFound:
            raise UserFacingError(f"there is no job `{job_id}` in this server") from None
        return f"Thank you: job `{job_id}` is reported to this server's moderators."

    async def check_appeal(self, requester: Requester, job_id: str) -> None:
        """Before the appeal form opens: the requester's own job, rejected, not appealed."""
        job = await self.queue.get(job_id)
        if job is None or job.owner_id != requester.user_id:
            raise UserFacingError(f"you have no job `{job_id}`; appeals are for your own jobs")
        if job.hold is not HoldState.REJECTED:
            raise UserFacingError(
                f"job `{job_id}` was not rejected in review; there is nothing to appeal"
            )

    async def appeal(self, requester: Requester, job_id: str, text: str) -> str:
        try:
            await self.desk.appeal(job_id, requester.user_id, text.strip() or "no text given")
        except JobNotFound:
            raise UserFacingError(
                f"you have no job `{job_id}`; appeals are for your own jobs"
            ) from None
        return (
            f"Your appeal of job `{job_id}` went to the server's moderators. A moderator other "
            "than the one who rejected it decides, and you will be told by DM and in /info."
        )

    # -- moderators ----------------------------------------------------------------------

    async def item_for(self, requester: Requester, item_id: int) -> ReviewItem:
        """The item, for a moderator of its server clicking from inside that server."""
        guild_id = self._moderator_guild(requester)
        return await self.desk.get(item_id, guild_id)

    async def claim(self, requester: Requester, item_id: int) -> ReviewItem:
        guild_id = self._moderator_guild(requester)
        return await self.desk.claim(item_id, guild_id, requester.user_id)

    async def decide(
        self,
        requester: Requester,
        item_id: int,
        decision: Decision,
        reason: str,
        *,
        ban: bool = False,
    ) -> DecisionOutcome:
        """Decide an item once; a decided item answers who decided it first."""
        guild_id = self._moderator_guild(requester)
        rules = await self.rules(guild_id)
        outcome = await self.desk.decide(
            item_id,
            guild_id,
            requester.user_id,
            decision,
            reason,
            keep_images=self.keep_images,
            ban=ban,
            ban_for=timedelta(hours=self.settings.moderation.reject_ban_hours),
            allow_same_moderator=rules.appeal_same_moderator,
        )
        if outcome.decided and decision is Decision.REJECT and not ban:
            await self.strike(guild_id, outcome.item.owner_id)
        return outcome

    async def open_list(self, requester: Requester) -> str:
        guild_id = self._moderator_guild(requester)
        items = await self.desk.open_items(guild_id, limit=REVIEW_PAGE)
        total = await self.desk.count_open(guild_id)
        return render_review_list(items, total, guild_id)

    async def lineage(self, requester: Requester, item_id: int) -> str:
        """The item's job, where it came from and what was made from it (moderators only)."""
        item = await self.item_for(requester, item_id)
        chain: list[str] = []
        current = await self.queue.get(item.job_id)
        while current is not None and current.parent_id and len(chain) < LINEAGE_LIMIT:
            current = await self.queue.get(current.parent_id)
            if current is not None:
                chain.append(f"`{current.id}` {current.kind} by {mention(current.owner_id)}")
        children = await self.queue.followups(item.job_id, limit=LINEAGE_LIMIT)
        lines = [f"**Lineage of job `{item.job_id}`** (review #{item.id})"]
        lines.append(
            "Made from: " + (" \u2190 ".join(chain) if chain else "nothing (an original prompt)")
        )
        if children:
            lines.append("Made from it:")
            lines.extend(
                f"- `{c.id}` {c.kind} by {mention(c.owner_id)} ({c.status})" for c in children
            )
        else:
            lines.append("Nothing was made from it.")
        return shorten("\n".join(lines))

    async def thumbnail(self, item: ReviewItem) -> bytes | None:
        """A small image of the item's job for its message, once it has images that may be
        shown to moderators (a removed job's images are never served again)."""
        if item.job_status is not JobStatus.SUCCEEDED or not item.result_refs:
            return None
        try:
            data = await self.images.get(item.result_refs[-1])
        except ImageNotFound:
            return None
        return await asyncio.to_thread(thumbnail, data)

    def _moderator_guild(self, requester: Requester) -> int:
        if requester.guild_id is None:
            raise UserFacingError("the review queue belongs to a server; use it there")
        if not requester.is_moderator:
            raise UserFacingError("only moderators (Manage Messages) may do this")
        return requester.guild_id
