"""/settings me and /settings server's answers, from plain values. No I/O.

A member's own defaults are one line; a server's settings are a summary a moderator can read at a
glance, one line per rule. Channel mentions never ping, and every message is sent with mentions
disabled anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from bot.render import shorten

#: Age-restricted channels the summary names before it only counts the rest.
LISTED_CHANNELS = 20


@dataclass(frozen=True)
class ServerSettingsView:
    """A server's settings as /settings server shows them."""

    owner_only_buttons: bool
    review_channel: int | None
    age_restricted_channels: tuple[int, ...]
    appeal_same_moderator: bool
    auto_ban_strikes: int
    auto_ban_window: timedelta
    auto_ban_duration: timedelta
    default_visibility: str = "public"
    allow_stealth: bool = True
    showcase_channel: int | None = None
    auto_feature_likes: int = 0
    #: The server's page on the web gallery while its admins have it on, else None.
    web_gallery: str | None = None
    #: The role that may host group sessions (None: Manage Events).
    session_host_role: int | None = None
    #: Minutes of a session round's priority lane (0: none).
    session_lane_minutes: int = 0


def render_settings(current: Mapping[str, object]) -> str:
    """A member's own defaults (/settings me)."""
    shown = ", ".join(f"{key}: {value}" for key, value in sorted(current.items())) or "defaults"
    return f"Your settings: {shown}."


def _hours(length: timedelta) -> str:
    return f"{length.total_seconds() / 3600:g} h"


def render_auto_ban(strikes: int, window: timedelta, duration: timedelta) -> str:
    """The automatic ban rule, as a sentence."""
    if not strikes:
        return "Automatic bans are off."
    return (
        f"Automatic ban: {strikes} rejections or refusals within {_hours(window)} "
        f"ban for {_hours(duration)}."
    )


def _channels(ids: Sequence[int]) -> str:
    if not ids:
        return "none marked (channels Discord marks NSFW still count)"
    named = ", ".join(f"<#{channel}>" for channel in ids[:LISTED_CHANNELS])
    more = f" and {len(ids) - LISTED_CHANNELS} more" if len(ids) > LISTED_CHANNELS else ""
    return f"{named}{more} (and channels Discord marks NSFW)"


def render_server_settings(view: ServerSettingsView) -> str:
    """A server's settings (/settings server), one line per rule."""
    review = (
        f"<#{view.review_channel}>"
        if view.review_channel is not None
        else "not set: held results, reports and appeals are listed by /review only"
    )
    appeals = (
        "any moderator, even the one who rejected"
        if view.appeal_same_moderator
        else "a moderator other than the one who rejected"
    )
    lines = [
        "**This server's settings**",
        "- Who may click a job's buttons: "
        + ("its owner (and admins)" if view.owner_only_buttons else "anyone"),
        f"- Review channel: {review}",
        f"- Age-restricted channels: {_channels(view.age_restricted_channels)}",
        f"- Appeals are decided by: {appeals}",
        "- " + render_auto_ban(view.auto_ban_strikes, view.auto_ban_window, view.auto_ban_duration),
        f"- New jobs are {view.default_visibility} by default; members "
        + ("may" if view.allow_stealth else "may not")
        + " make stealth jobs",
        "- Showcase: "
        + (f"<#{view.showcase_channel}>" if view.showcase_channel else "not set")
        + (
            f", featuring images with {view.auto_feature_likes} likes automatically"
            if view.auto_feature_likes
            else ""
        ),
        "- Web gallery: "
        + (
            f"on, at <{view.web_gallery}> (public jobs only)"
            if view.web_gallery
            else "off (its public jobs are not on the web)"
        ),
        "- Group sessions are hosted by: "
        + (
            f"<@&{view.session_host_role}>"
            if view.session_host_role
            else "members with Manage Events"
        )
        + " (and admins); "
        + (
            f"their entries jump the queue in a round's last {view.session_lane_minutes} minute(s)"
            if view.session_lane_minutes
            else "their entries queue like any job (no priority lane)"
        ),
        "Admins (Manage Server) change them with /settings server; moderators may look.",
    ]
    return shorten("\n".join(lines))


def render_server_change(changed: Sequence[str], view: ServerSettingsView) -> str:
    """What an admin changed, then the server's settings as they now are."""
    said = list(changed) or ["Nothing changed: the server already had those settings."]
    return shorten("\n".join([*said, "", render_server_settings(view)]))
