"""Who is asking: the user, where, and with which roles and permissions. Pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Requester:
    """Who clicked or typed, where, and with which roles."""

    user_id: int
    guild_id: int | None
    channel_id: int
    role_ids: tuple[int, ...] = ()
    is_admin: bool = False
    is_moderator: bool = False
    #: Manage Events across the server (who may host a group session, unless the server
    #: names a host role).
    manage_events: bool = False
    #: The channel is age-restricted by Discord's own NSFW flag (an admin's mark is a server
    #: setting: see ``ReviewService.age_restricted``).
    age_restricted: bool = False
    #: The name the server shows for them (their nickname, else their global name), which
    #: the web gallery credits them by; "" when unknown.
    display_name: str = ""

    def may_see(self, guild_id: int | None, owner_id: int) -> bool:
        """Whether a job made in ``guild_id`` by ``owner_id`` is within reach: a server's jobs
        from inside that server, a job made in DMs by its owner alone, in DMs (so it is never
        reposted where others can see it)."""
        if guild_id is None:
            return self.guild_id is None and self.user_id == owner_id
        return self.guild_id == guild_id
