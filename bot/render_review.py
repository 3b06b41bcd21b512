"""The review queue's messages, from plain values. No I/O.

An item's message in the moderators' channel, a moderator's /review list, the direct messages
owed to owners, and the ban notice a banned member gets. User text is escaped and nothing
pings (messages go out with mentions disabled).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.render import escape, mention, message_link, relative_time, shorten
from storage.types import Ban, Decision, JobStatus, Notice, ReviewItem, ReviewKind

#: What each decision reads as on an item.
DECISION_WORDS = {
    Decision.APPROVE: "approved",
    Decision.REJECT: "rejected",
    Decision.EXPIRE: "expired (no moderator decided in time): rejected and refunded",
    Decision.GRANT: "appeal granted: the job is restored",
    Decision.DENY: "appeal denied: the rejection stands (final)",
    Decision.SUPERSEDED: "closed",
}
KIND_TITLES = {
    ReviewKind.HOLD: "held for review",
    ReviewKind.REPORT: "reported",
    ReviewKind.APPEAL: "appeal",
}


def full_time(moment: datetime) -> str:
    """Discord's full date-and-time stamp, shown in each reader's time zone."""
    return f"<t:{int(moment.timestamp())}:f>"


def why(item: ReviewItem) -> str:
    """Why the item is in the queue: the term, the classifier's verdict, the reports, or the
    appeal and the decision it contests."""
    details = item.details
    if item.kind is ReviewKind.REPORT:
        reasons = [str(r) for r in details.get("reasons", []) if str(r).strip()]
        quoted = "; ".join(f"\u201c{escape(shorten(r, 120))}\u201d" for r in reasons[-5:])
        return f"reported by {item.reports} member(s)" + (f": {quoted}" if quoted else "")
    if item.kind is ReviewKind.APPEAL:
        rejection = escape(shorten(str(details.get("rejection") or "no reason given"), 200))
        by = details.get("rejected_by")
        who = "the bot (the hold expired)" if by is None else mention(int(by))
        return (
            f"the owner appeals the rejection by {who} (\u201c{rejection}\u201d): "
            f"\u201c{escape(shorten(item.reason, 600))}\u201d"
        )
    # A hold's reason is the bot's own words (a term as /filter parsed it, a classifier's
    # labels from the settings): shown as it is, but never able to ping.
    parts = [shorten(item.reason, 300).replace("@", "@\u200b")]
    if details.get("classifier"):
        labels = ", ".join(str(label) for label in details.get("labels", []))
        images = ", ".join(str(i) for i in details.get("images", []))
        parts.append(
            f"classifier: {escape(labels)} at {float(details.get('max_score', 0)):.2f}"
            + (f" (image {images})" if images else "")
            + (" in an age-restricted channel" if details.get("age_restricted") else "")
        )
    return "; ".join(parts)


def render_item(item: ReviewItem) -> str:
    """An item's message: what, whose, why, and where it stands."""
    head = f"**Review #{item.id}** \u00b7 {KIND_TITLES[item.kind]} \u00b7 job `{item.job_id}`"
    lines = [
        head,
        f"Owner: {mention(item.owner_id)} \u00b7 prompt: **{escape(shorten(item.prompt, 300))}**",
        f"Why: {why(item)}",
    ]
    if item.decision is not None:
        who = "the bot" if item.decided_by is None else mention(item.decided_by)
        reason = escape(shorten(item.decision_reason or "", 300))
        lines.append(
            f"Decided: **{DECISION_WORDS[item.decision]}** by {who}"
            + (f" {relative_time(item.decided_at)}" if item.decided_at else "")
            + (f": {reason}" if reason else "")
        )
    elif item.job_status in (JobStatus.QUEUED, JobStatus.RUNNING):
        lines.append(
            "Still generating: decide now and it applies when it finishes, or wait for the "
            "thumbnail."
        )
    else:
        lines.append("Open: Approve, Reject (with a reason), or Reject and ban.")
    return shorten("\n".join(lines))


def render_review_list(items: Sequence[ReviewItem], total: int, guild_id: int) -> str:
    """/review: the open items, oldest first, with links to their messages."""
    if not items:
        return "The review queue is empty."
    lines = [f"**Review queue**: {total} open item(s), oldest first:"]
    for item in items:
        where = (
            message_link(guild_id, item.channel_id, item.message_id)
            if item.message_id and item.channel_id
            else "(no message: an admin sets a moderators' channel with "
            "/settings server review_channel)"
        )
        claimed = f", being reviewed by {mention(item.claimed_by)}" if item.claimed_by else ""
        lines.append(
            f"- #{item.id} {KIND_TITLES[item.kind]} \u00b7 job `{item.job_id}` by "
            f"{mention(item.owner_id)}: {shorten(why(item), 150)}{claimed} {where}"
        )
    return shorten("\n".join(lines))


def render_notice(notice: Notice, appeal_days: float) -> str:
    """A direct message to a job's owner about a hold or a decision."""
    job = f"`{notice.job_id}`"
    reason = escape(shorten(notice.text, 500))
    if notice.kind == "held":
        return (
            f"Your job {job} is held for review by the server's moderators ({reason}). It is "
            "not shown to anyone meanwhile. You will be told here when they decide; /info "
            "shows it too."
        )
    if notice.kind == "approved":
        return f"Your job {job} was approved by a moderator and is now posted."
    if notice.kind in ("rejected", "expired"):
        what = (
            "no moderator decided in time, so it counts as rejected"
            if notice.kind == "expired"
            else f"a moderator rejected it: {reason}"
        )
        return (
            f"Your job {job} was removed: {what}. You were not charged for it. You may "
            f"appeal once within {appeal_days:g} days, with the button below or "
            f"/appeal job:{notice.job_id} in the server."
        )
    if notice.kind == "granted":
        return f"Your appeal of job {job} was granted: {reason}. The job is posted again."
    if notice.kind == "denied":
        return f"Your appeal of job {job} was denied: {reason}. This decision is final."
    return f"About your job {job}: {reason}"


def render_ban(ban: Ban) -> str:
    """The one clear message a banned member gets for a command or a button."""
    until = "until a moderator lifts it" if ban.until is None else f"until {full_time(ban.until)}"
    who = "automatically" if ban.auto else "by a moderator"
    reason = escape(shorten(ban.reason or "no reason given", 300))
    return (
        f"you are banned from Atelier in this server {until} ({who}: {reason}). "
        "Nothing was queued or charged."
    )
