"""The budget for progress and position edits: Discord's rate limits, kept ahead of. No discord.py.

Discord allows about 5 message edits per 5 seconds in a channel and 50 requests a second in
all. discord.py honours the bucket headers by sleeping before the next request, so a publisher
that edits every due message in one sequential pass does not see 429s: it stalls, and a result
that became ready meanwhile waits behind hundreds of position edits.

The publisher therefore asks this budget before each progress edit. A due message over budget
is skipped for this pass; the next pass renders it afresh, so only its newest state is ever
sent. Due messages are offered the budget most-behind first (the longest since their last
edit), so every message gets its turn. Final results are never refused: they are counted
(``spend``) so that progress edits leave room for them.

The windows are sliding (no more than ``per_channel`` grants in any ``window`` seconds), and a
little longer than Discord's fixed windows, so the budget runs out before a bucket does.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")

#: Discord's per-channel message window, in seconds.
CHANNEL_WINDOW = 5.0
#: Added to every window: requests reach Discord a little after they are granted.
WINDOW_MARGIN = 0.5


@dataclass
class BudgetCounters:
    """What the budget and the HTTP trace saw, since the process started."""

    granted: int = 0  # progress edits allowed
    refused: int = 0  # due progress edits skipped for a later pass (one per message per pass)
    forced: int = 0  # final results counted against the budget, never refused
    requests: int = 0  # every HTTP request discord.py finished (with the trace installed)
    rate_limited: int = 0  # of those, answered 429


@dataclass
class EditBudget:
    """Per-channel and global sliding windows for message edits.

    ``per_channel`` edits per ``CHANNEL_WINDOW`` seconds in one channel and ``per_second``
    edits a second in all; 0 turns that limit off (both 0: no budget, the naive way).
    """

    per_channel: int
    per_second: int
    clock: Callable[[], float] = time.monotonic
    counters: BudgetCounters = field(default_factory=BudgetCounters)
    _channels: dict[int, deque[float]] = field(default_factory=dict)
    _global: deque[float] = field(default_factory=deque)

    @classmethod
    def unlimited(cls) -> EditBudget:
        return cls(per_channel=0, per_second=0)

    def allows(self, channel_id: int) -> bool:
        """Whether a progress edit in ``channel_id`` fits now (nothing is counted)."""
        now = self.clock()
        if self.per_second and len(_trim(self._global, now, 1.0 + WINDOW_MARGIN)) >= (
            self.per_second
        ):
            return False
        window = CHANNEL_WINDOW + WINDOW_MARGIN
        sent = self._channels.get(channel_id)
        return not (self.per_channel and sent and len(_trim(sent, now, window)) >= self.per_channel)

    def take(self, channel_id: int) -> None:
        """Count a progress edit in ``channel_id`` (after ``allows`` said it fits)."""
        self.counters.granted += 1
        self._record(channel_id)

    def refuse(self) -> None:
        """Count a due progress edit skipped for a later pass."""
        self.counters.refused += 1

    def spend(self, channel_id: int) -> None:
        """Count an edit that goes out regardless (a final result)."""
        self.counters.forced += 1
        self._record(channel_id)

    def _record(self, channel_id: int) -> None:
        now = self.clock()
        if self.per_second:
            self._global.append(now)
        if self.per_channel:
            self._channels.setdefault(channel_id, deque()).append(now)

    def trace(self) -> aiohttp.TraceConfig:
        """An aiohttp trace for the client (``discord.Client(http_trace=...)``): counts every
        request and every 429, which discord.py otherwise retries silently."""
        config = aiohttp.TraceConfig()

        async def on_end(
            _session: Any, _context: Any, params: aiohttp.TraceRequestEndParams
        ) -> None:
            self.counters.requests += 1
            if params.response.status == 429:
                self.counters.rate_limited += 1

        config.on_request_end.append(on_end)
        return config


def most_behind_first(items: Iterable[T], last_edit: Callable[[T], float]) -> list[T]:
    """``items`` ordered by their last edit, oldest first; ties keep their order (fair: each
    edit sends a message to the back)."""
    return sorted(items, key=last_edit)


def _trim(stamps: deque[float], now: float, window: float) -> deque[float]:
    while stamps and stamps[0] <= now - window:
        stamps.popleft()
    return stamps
