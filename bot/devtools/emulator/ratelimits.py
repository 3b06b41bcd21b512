"""Discord's per-route rate limits, opt-in: bucket headers on every answer, 429 when exhausted.

Off unless the emulator is given ``RateLimits`` (``DiscordEmulator(rate_limits=...)`` or
``emu.rate_limits = RateLimits()``), so tests that fire many requests are unaffected.

What is modelled, after Discord's documentation and observed headers:

- **Channel message routes** (create, edit, delete a message): one bucket per route and
  channel, ``per_channel`` requests per ``channel_window`` seconds (5 per 5 s).
- **Interaction webhook routes** (follow-ups, editing and deleting the original response and
  follow-ups): one bucket per route and interaction token, ``per_interaction`` per
  ``interaction_window`` seconds. Interaction routes do not count against the global limit.
- **Global**: every other request with the bot token counts against ``global_per_second``
  requests per second; past it the answer is a global 429 (``"global": true``).

A bucket's window starts with its first request and resets ``window`` seconds later, as
Discord's do. Each answer carries ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset``,
``-Reset-After`` and ``-Bucket``; discord.py reads them and sleeps before the next request
once ``Remaining`` is 0, so a well-behaved client sees a 429 only when it runs requests
concurrently or ignores the headers. The interaction callback (the first response) is never
limited: Discord's 3-second rule is checked instead.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from aiohttp import web

from .errors import json_response

#: Route names (see rest.py) limited per channel.
CHANNEL_ROUTES = frozenset({"create_message", "edit_message", "delete_message"})
#: Route names limited per interaction token, and exempt from the global limit.
INTERACTION_ROUTES = frozenset(
    {
        "create_followup_message",
        "edit_original_response",
        "delete_original_response",
        "edit_followup_message",
        "delete_followup_message",
    }
)
#: Never limited (and never counted): the interaction callback, the CDN.
EXEMPT_ROUTES = frozenset({"interaction_callback", "cdn_attachment"})


@dataclass(frozen=True)
class RateLimits:
    """How many requests each bucket allows, per window (seconds)."""

    per_channel: int = 5
    channel_window: float = 5.0
    per_interaction: int = 5
    interaction_window: float = 5.0
    global_per_second: int = 50


@dataclass
class _Bucket:
    limit: int
    window: float
    started: float = -math.inf
    used: int = 0

    def take(self, now: float) -> bool:
        if now >= self.started + self.window:
            self.started, self.used = now, 0
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def reset_after(self, now: float) -> float:
        return max(0.0, self.started + self.window - now)


@dataclass
class Verdict:
    """The rate-limit headers for one answer, and the 429 to send instead if it was refused."""

    headers: dict[str, str]
    refused: web.Response | None = None
    body: dict[str, object] | None = None


@dataclass
class RateLimiter:
    """The buckets, keyed by (bucket name, major parameter)."""

    limits: RateLimits
    buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)
    global_bucket: _Bucket | None = None

    def check(self, route: str | None, params: dict[str, str], now: float) -> Verdict | None:
        """Count one request to ``route``; ``None`` if the route is not limited."""
        if route is None or route in EXEMPT_ROUTES:
            return None
        if route not in INTERACTION_ROUTES:
            if self.global_bucket is None:
                self.global_bucket = _Bucket(self.limits.global_per_second, 1.0)
            if not self.global_bucket.take(now):
                return self._refused(self.global_bucket, "global", now, is_global=True)
        if route in CHANNEL_ROUTES:
            key = (route, params.get("channel_id", ""))
            limit, window = self.limits.per_channel, self.limits.channel_window
        elif route in INTERACTION_ROUTES:
            key = (route, params.get("interaction_token", ""))
            limit, window = self.limits.per_interaction, self.limits.interaction_window
        else:
            return None
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = _Bucket(limit, window)
        name = f"emu-{route}"
        if not bucket.take(now):
            return self._refused(bucket, name, now, is_global=False)
        return Verdict(_headers(bucket, name, now))

    @staticmethod
    def _refused(bucket: _Bucket, name: str, now: float, *, is_global: bool) -> Verdict:
        retry_after = round(bucket.reset_after(now), 3)
        body: dict[str, object] = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": is_global,
        }
        if is_global:
            body["code"] = 0
        headers = _headers(bucket, name, now)
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        headers["X-RateLimit-Scope"] = "global" if is_global else "user"
        headers["Via"] = "1.1 google"
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        response = json_response(body, status=429, headers=headers)
        return Verdict(headers, refused=response, body=body)


def _headers(bucket: _Bucket, name: str, now: float) -> dict[str, str]:
    reset_after = bucket.reset_after(now)
    return {
        "X-RateLimit-Limit": str(bucket.limit),
        "X-RateLimit-Remaining": str(max(0, bucket.limit - bucket.used)),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": name,
    }
