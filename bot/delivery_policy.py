"""How the publisher treats Discord's answers: which failures are worth retrying, how long to
wait, and how many invalid requests it may cause. Pure: no discord.py, no I/O.

Discord bans an IP for a while after 10,000 invalid requests (401, 403 and 429 answers) in 10
minutes, so a result that can never be delivered must stop being tried, and the bot as a whole
keeps a budget well below that limit.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

#: Discord counts these answers as invalid requests.
INVALID_STATUSES = frozenset({401, 403, 429})
#: Discord's window for invalid requests, and its limit in it.
DISCORD_INVALID_WINDOW_SECONDS = 600.0
DISCORD_INVALID_LIMIT = 10_000

UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015

#: What the owner reads for the JSON error codes a delivery meets most.
_CODE_NAMES = {
    10003: "Unknown Channel",
    10008: "Unknown Message",
    10013: "Unknown User",
    10015: "Unknown Webhook",
    50001: "Missing Access",
    50007: "Cannot send messages to this user",
    50013: "Missing Permissions",
}


class Failure(StrEnum):
    """What a failed REST call means for the delivery of one result."""

    #: 429, 5xx, no answer: try again later, with backoff.
    TRANSIENT = "transient"
    #: 404 Unknown Message (or its webhook): the message is gone; post a new one.
    MESSAGE_GONE = "message gone"
    #: 403 (Missing Access, Missing Permissions, DMs closed) or 404 Unknown Channel: this
    #: channel will not take the result; use the next fallback.
    CLOSED = "closed"
    #: Any other 4xx: Discord refuses the request itself; retrying changes nothing.
    REJECTED = "rejected"

    @property
    def permanent(self) -> bool:
        return self is not Failure.TRANSIENT


def classify(status: int, code: int = 0) -> Failure:
    """The meaning of an HTTP ``status`` with Discord's JSON error ``code`` (0 when none).
    A status of 0 stands for no answer at all (a connection error, a timeout)."""
    if status == 0 or status == 429 or status >= 500:
        return Failure.TRANSIENT
    if status == 404 and code in (UNKNOWN_MESSAGE, UNKNOWN_WEBHOOK):
        return Failure.MESSAGE_GONE
    if status == 403 or status == 404:
        return Failure.CLOSED
    if status == 401:
        # A bad bot token fails every call alike: wait (counted against the budget), do not
        # give results up for it.
        return Failure.TRANSIENT
    return Failure.REJECTED


def describe(status: int, code: int = 0) -> str:
    """A short name for an answer, for logs and the owner: ``403 Missing Access``."""
    if status == 0:
        return "no answer from Discord"
    name = _CODE_NAMES.get(code)
    if name is None:
        return f"HTTP {status}" + (f" (code {code})" if code else "")
    return f"{status} {name}"


def backoff_seconds(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """The wait after the ``attempt``-th failed try (1 for the first): ``base`` doubled per
    attempt, at most ``cap``, then scaled into its upper half by ``jitter`` in [0, 1), so many
    deliveries that failed together do not retry together."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1 (got {attempt})")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1) (got {jitter})")
    delay = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return delay / 2 + delay / 2 * jitter


@dataclass
class InvalidRequestBudget:
    """A sliding-window count of the invalid answers (401, 403, 429) this process received.

    Every REST answer is recorded (the client's HTTP trace sees discord.py's own 429 retries
    too). Once ``limit`` invalid answers fall in the last ``window_seconds``, ``exhausted`` is
    true, and the publisher makes no risky call (a delivery, a progress edit) until old answers
    leave the window. Interaction responses are not held back: they answer a user now.
    """

    limit: int
    window_seconds: float = DISCORD_INVALID_WINDOW_SECONDS
    clock: Callable[[], float] = time.monotonic
    _times: deque[float] = field(default_factory=deque)
    #: Invalid answers recorded since the start, by status (for logs and tests).
    totals: dict[int, int] = field(default_factory=dict)

    def record(self, status: int) -> None:
        """Count one REST answer; only 401, 403 and 429 use the budget."""
        if status not in INVALID_STATUSES:
            return
        self.totals[status] = self.totals.get(status, 0) + 1
        self._times.append(self.clock())
        self._prune()

    def used(self) -> int:
        """Invalid answers in the current window."""
        self._prune()
        return len(self._times)

    def exhausted(self) -> bool:
        return self.used() >= self.limit

    def frees_in(self) -> float:
        """Seconds until the oldest invalid answer leaves the window (0 when not exhausted)."""
        if not self.exhausted():
            return 0.0
        return max(0.0, self._times[0] + self.window_seconds - self.clock())

    def _prune(self) -> None:
        horizon = self.clock() - self.window_seconds
        while self._times and self._times[0] <= horizon:
            self._times.popleft()
