"""How fast one user may start new jobs: a token bucket derived from their recent jobs. Pure.

The bucket holds ``burst`` tokens and refills at ``per_window / window_seconds`` tokens a second;
each new job takes one. It is replayed from the creation times of the user's recent jobs (any
status: a cancelled job counted when it was made), so it needs no state of its own and holds
across restarts and bot processes. The check runs under the user's account lock, in the enqueue
transaction, so two concurrent commands cannot both take the last token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class NewJobRate:
    """``per_window`` new jobs per ``window_seconds``, at most ``burst`` at once."""

    per_window: int
    window_seconds: float
    burst: int

    @property
    def enabled(self) -> bool:
        return self.per_window > 0

    @property
    def lookback_seconds(self) -> float:
        """How far back the history matters: after this long an empty bucket is full again
        (and never less than the window itself)."""
        return max(self.window_seconds, self.burst / self.refill_per_second)

    @property
    def refill_per_second(self) -> float:
        return self.per_window / self.window_seconds

    def wait_seconds(self, recent: Sequence[datetime], now: datetime, adding: int) -> float:
        """Seconds until ``adding`` new jobs fit, 0.0 when they fit now; ``inf`` when they never
        fit (more than ``burst`` at once). ``recent``: creation times within the lookback."""
        if not self.enabled:
            return 0.0
        if adding > self.burst:
            return float("inf")
        rate = self.refill_per_second
        tokens = float(self.burst)
        previous: datetime | None = None
        for moment in sorted(recent):
            if previous is not None:
                tokens = min(self.burst, tokens + rate * (moment - previous).total_seconds())
            tokens -= 1
            previous = moment
        if previous is not None:
            tokens = min(self.burst, tokens + rate * max(0.0, (now - previous).total_seconds()))
        missing = adding - tokens
        return 0.0 if missing <= 1e-9 else missing / rate
