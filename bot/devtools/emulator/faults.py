"""Injected failures: make the next N matching requests answer 429 or 5xx.

A matched request is recorded and answered with the failure *before* any handler runs, so it
has no side effects; the bot's retry then reaches the real handler.

discord.py 2.7.1 behaviour worth knowing when choosing a failure:

- A 429 is retried only if the response carries a ``Via`` header (otherwise discord.py assumes
  a Cloudflare ban and raises). Real Discord sends ``Via: 1.1 google``; so does this emulator
  unless ``via_header=False``. discord.py sleeps ``retry_after`` from the JSON body, and a
  ``"global": true`` body blocks all of its REST traffic for that time.
- The bot-token client (``HTTPClient``) retries 500, 502, 504 and 524, but not 503, and sleeps
  ``1 + 2 * attempt`` seconds first; the webhook/interaction client retries every 5xx the same
  way. A single injected 5xx therefore costs about one real second.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from .errors import json_response
from .recorder import RecordedRequest

RATE_LIMITED = 429


@dataclass
class FaultRule:
    """Fail the next ``remaining`` requests that match ``route``/``method``/``predicate``."""

    status: int
    remaining: int
    route: str | None = None
    method: str | None = None
    retry_after: float = 0.05
    is_global: bool = False
    scope: str = "user"
    via_header: bool = True
    predicate: Callable[[RecordedRequest], bool] | None = None
    hits: int = 0

    def matches(self, request: RecordedRequest) -> bool:
        return (
            self.remaining > 0
            and (self.route is None or self.route in (request.route, request.template))
            and (self.method is None or self.method.upper() == request.method)
            and (self.predicate is None or self.predicate(request))
        )

    def response(self, request: RecordedRequest) -> tuple[web.Response, dict[str, object]]:
        """The failure Discord would send, and the JSON body (for the recording)."""
        if self.status == RATE_LIMITED:
            body: dict[str, object] = {
                "message": "You are being rate limited.",
                "retry_after": self.retry_after,
                "global": self.is_global,
            }
            if self.is_global:
                body["code"] = 0
            headers = {
                "Retry-After": str(max(1, math.ceil(self.retry_after))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + self.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{self.retry_after:.3f}",
                "X-RateLimit-Bucket": f"emulator-{request.route or 'unknown'}",
                "X-RateLimit-Scope": "global" if self.is_global else self.scope,
            }
            if self.is_global:
                headers["X-RateLimit-Global"] = "true"
            if self.via_header:
                headers["Via"] = "1.1 google"
            return json_response(body, status=RATE_LIMITED, headers=headers), body
        body = {"message": f"{self.status}: Server Error", "code": 0}
        return json_response(body, status=self.status), body


class FaultInjector:
    """The active fault rules, consulted in the order they were added."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        return rule

    def take(self, request: RecordedRequest) -> FaultRule | None:
        for rule in self.rules:
            if rule.matches(request):
                rule.remaining -= 1
                rule.hits += 1
                return rule
        return None

    def clear(self) -> None:
        self.rules.clear()
