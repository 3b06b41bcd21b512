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
