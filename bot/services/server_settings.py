"""/settings server: a server's own settings, read by its moderators and changed by its admins.
No discord.py.

This service is the only gate. Discord applies ``default_permissions`` and ``guild_only`` to a
whole top-level command, and /settings me is for every member, in servers and in DMs alike, so
Discord shows /settings server to everyone, everywhere. Every call is therefore checked here, at
the server level (``Requester.is_admin`` and ``is_moderator`` come from the member's server-wide
permissions, never from one channel's overwrites):

- in DMs: refused, with a word on where to run it;
- with no change: moderators (Manage Messages) and admins (Manage Server) see the settings;
- with a change: admins only.

A server's settings document holds who may click a job's buttons (here) and its moderation rules
(``ReviewService.update``: the review channel, age-restricted channels, appeals, automatic bans).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.errors import UserFacingError
from bot.render_settings import ServerSettingsView
from bot.requester import Requester
from bot.services.review import ModerationChange, ReviewService
from config.settings import Settings
from storage.preferences import PreferenceStore
from storage.session_rules import LANE_SECONDS
from storage.webdir import WebDirectory

#: The key of the click rule in a server's settings document.
OWNER_ONLY_BUTTONS_KEY = "owner_only_buttons"
#: Settings keys: the member's default visibility (their own settings); the server's default,
#: and whether its members may choose stealth at all.
VISIBILITY_KEY = "visibility"
DEFAULT_VISIBILITY_KEY = "default_visibility"
ALLOW_STEALTH_KEY = "allow_stealth"
#: The showcase: its channel, and the likes that feature a job automatically (0: off).
SHOWCASE_CHANNEL_KEY = "showcase_channel"
AUTO_FEATURE_KEY = "auto_feature_likes"
#: The role that may host group sessions (absent: members with Manage Events).
SESSION_HOST_ROLE_KEY = "session_host_role"
SESSION_LANE_KEY = "session_lane_minutes"
#: Who may click a job's buttons, as /settings server names it.
CLICK_RULES = ("owner", "anyone")


def session_lane_minutes(stored: Mapping[str, Any]) -> int:
    """The server's priority lane for group sessions, in minutes (0: none)."""
    value = stored.get(SESSION_LANE_KEY, 0)
    return value if isinstance(value, int) and value >= 0 else 0


def owner_only_buttons(stored: Mapping[str, Any], settings: Settings) -> bool:
    """Whether only a job's owner (and admins) may click its buttons in a server whose settings
    document is ``stored``; the operator's default for a server that has not chosen."""
    return bool(stored.get(OWNER_ONLY_BUTTONS_KEY, settings.bot.owner_only_buttons))


@dataclass(frozen=True)
class ServerChange:
    """What an admin asked /settings server to change; None and an empty ``moderation`` leave
    a setting as it is."""

    buttons: str | None = None  # "owner" | "anyone"
    moderation: ModerationChange = field(default_factory=ModerationChange)
    #: "public" | "stealth": who may find new jobs unless their members choose otherwise.
    default_visibility: str | None = None
    #: Whether members may make stealth jobs.
    allow_stealth: bool | None = None
    #: The showcase channel, and the server it belongs to (as Discord resolved it).
    showcase_channel: int | None = None
    showcase_channel_guild: int | None = None
    #: Likes that feature a job automatically; 0 turns it off.
    auto_feature_likes: int | None = None
    #: The server the chosen review channel belongs to, as Discord resolved it.
    review_channel_guild: int | None = None
    #: Whether the server's public jobs are shown on the web gallery, and the server's name
    #: (shown there) as Discord gave it.
    web_gallery: bool | None = None
    server_name: str = ""
    #: The role that may host group sessions, and the server it belongs to.
    session_host_role: int | None = None
    session_host_role_guild: int | None = None
    #: Minutes before a group session round closes when its entries take the priority lane
    #: (new sessions; 0 turns it off).
    session_lane_minutes: int | None = None

    @property
    def empty(self) -> bool:
        return (
            self.buttons is None
            and self.moderation.empty
            and self.default_visibility is None
            and self.allow_stealth is None
            and self.showcase_channel is None
            and self.auto_feature_likes is None
            and self.web_gallery is None
            and self.session_host_role is None
            and self.session_lane_minutes is None
        )


class ServerSettings:
    """A server's settings: the click rule and the moderation rules, seen and changed."""

    def __init__(
        self,
        settings: Settings,
        prefs: PreferenceStore,
        review: ReviewService,
        web: WebDirectory,
    ) -> None:
        self.settings = settings
        self.prefs = prefs
        self.review = review
        self.web = web

    async def show(self, requester: Requester) -> ServerSettingsView:
        """Moderators and admins: the requester's server's settings."""
        guild_id = _server_of(requester)
        if not requester.is_moderator:
            raise UserFacingError(
                "only moderators (Manage Messages) and server admins (Manage Server) may see "
                "this server's settings"
            )
        return await self._view(guild_id)

    async def update(
        self, requester: Requester, change: ServerChange
    ) -> tuple[list[str], ServerSettingsView]:
        """Admins: change the requester's server's settings; lines saying what changed, and the
        settings afterwards. An empty change only shows them (see ``show``)."""
        if change.empty:
            return [], await self.show(requester)
        guild_id = _server_of(requester)
        if not requester.is_admin:
            look = (
                "; as a moderator you may see them: run /settings server with no options"
                if requester.is_moderator
                else ""
            )
            raise UserFacingError(
                f"only server admins (Manage Server) may change this server's settings{look}"
            )
        if change.default_visibility not in (None, "public", "stealth"):
            raise UserFacingError(
                f"default_visibility must be public or stealth, not {change.default_visibility!r}"
            )
        if change.buttons is not None and change.buttons not in CLICK_RULES:
            raise UserFacingError(f"buttons must be owner or anyone, not {change.buttons[:20]!r}")
        if change.moderation.review_channel is not None and change.review_channel_guild not in (
            None,
            guild_id,
        ):
            raise UserFacingError("the review channel must be a channel of this server")
        # The moderation rules first: they are the ones that may refuse (too many
        # age-restricted channels), and a refused change should change nothing.
        lines = await self.review.update(requester, change.moderation)
        if change.buttons is not None:
            owner_only = change.buttons == "owner"
            await self.prefs.update_guild_settings(guild_id, {OWNER_ONLY_BUTTONS_KEY: owner_only})
            lines.insert(
                0,
                "Only a job's owner (and admins) may now click its buttons."
                if owner_only
                else "Anyone in this server may now click a job's buttons.",
            )
        sharing: dict[str, Any] = {}
        if change.default_visibility is not None:
            sharing[DEFAULT_VISIBILITY_KEY] = change.default_visibility
            lines.append(f"New jobs here are now {change.default_visibility} by default.")
        if change.allow_stealth is not None:
            sharing[ALLOW_STEALTH_KEY] = change.allow_stealth
            lines.append(
                "Members may make stealth jobs (--stealth, or their /settings me)."
                if change.allow_stealth
                else "Members may no longer make stealth jobs; --stealth is refused here."
            )
        if change.showcase_channel is not None:
            if change.showcase_channel_guild not in (None, guild_id):
                raise UserFacingError("the showcase channel must be a channel of this server")
            sharing[SHOWCASE_CHANNEL_KEY] = change.showcase_channel
            lines.append(f"Published images now go to <#{change.showcase_channel}>.")
        if change.auto_feature_likes is not None:
            if not 0 <= change.auto_feature_likes <= 1000:
                raise UserFacingError("auto_feature_likes is 0 (off) to 1000")
            sharing[AUTO_FEATURE_KEY] = change.auto_feature_likes
            lines.append(
                "Images are no longer featured automatically."
                if not change.auto_feature_likes
                else f"Images with {change.auto_feature_likes} likes are featured automatically."
            )
        if change.session_host_role is not None:
            if change.session_host_role_guild not in (None, guild_id):
                raise UserFacingError("the session host role must be a role of this server")
            if change.session_host_role == guild_id:  # @everyone
                sharing[SESSION_HOST_ROLE_KEY] = None
                lines.append("Members with Manage Events may host group sessions again.")
            else:
                sharing[SESSION_HOST_ROLE_KEY] = change.session_host_role
                lines.append(
                    f"Members with <@&{change.session_host_role}> may now host group sessions "
                    "here (and server admins)."
                )
        if change.session_lane_minutes is not None:
            high = LANE_SECONDS[1] // 60
            if not 0 <= change.session_lane_minutes <= high:
                raise UserFacingError(f"session_lane_minutes is 0 (off) to {high}")
            sharing[SESSION_LANE_KEY] = change.session_lane_minutes
            lines.append(
                "Group session entries no longer take a priority lane."
                if not change.session_lane_minutes
                else f"Group session entries now jump the queue in each round's last "
                f"{change.session_lane_minutes} minute(s) and until generated (sessions "
                "started from now on)."
            )
        if sharing:
            await self.prefs.update_guild_settings(guild_id, sharing)
        if change.web_gallery:
            await self.web.enable(
                guild_id, change.server_name or f"server {guild_id}", requester.user_id
            )
            lines.append(
                f"This server's public jobs are now on the web gallery: <{self._page(guild_id)}>. "
                "Stealth, held, blocked and deleted jobs never are."
            )
        elif change.web_gallery is not None:
            was_on = await self.web.disable(guild_id)
            lines.append(
                "This server is no longer on the web gallery: its pages answer 404."
                if was_on
                else "The web gallery was already off for this server."
            )
        return lines, await self._view(guild_id)

    def _page(self, guild_id: int) -> str:
        return f"{self.settings.web.base_url.rstrip('/')}/s/{guild_id}"

    async def _view(self, guild_id: int) -> ServerSettingsView:
        stored = await self.prefs.get_guild_settings(guild_id)
        rules = await self.review.rules(guild_id)
        return ServerSettingsView(
            owner_only_buttons=owner_only_buttons(stored, self.settings),
            review_channel=rules.review_channel,
            age_restricted_channels=rules.age_restricted_channels,
            appeal_same_moderator=rules.appeal_same_moderator,
            auto_ban_strikes=rules.auto_ban.strikes,
            auto_ban_window=rules.auto_ban.window,
            auto_ban_duration=rules.auto_ban.duration,
            default_visibility=str(stored.get(DEFAULT_VISIBILITY_KEY, "public")),
            allow_stealth=bool(stored.get(ALLOW_STEALTH_KEY, True)),
            showcase_channel=stored.get(SHOWCASE_CHANNEL_KEY),
            auto_feature_likes=int(stored.get(AUTO_FEATURE_KEY, 0)),
            web_gallery=None if await self.web.get(guild_id) is None else self._page(guild_id),
            session_host_role=stored.get(SESSION_HOST_ROLE_KEY),
            session_lane_minutes=session_lane_minutes(stored),
        )


def _server_of(requester: Requester) -> int:
    if requester.guild_id is None:
        raise UserFacingError(
            "a server's settings belong to that server: run /settings server there "
            "(here, /settings me changes your own defaults)"
        )
    return requester.guild_id
