"""The emulator's notion of time, which tests can move forward.

Discord's deadlines (3 s to acknowledge an interaction, 15 min of interaction-token life) are
checked against this clock, never against the real one directly, so a test can jump past a
deadline with ``emu.advance_time(...)`` instead of sleeping.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    """What the emulator needs from a clock; inject your own for full control."""

    def monotonic(self) -> float:
        """Seconds on a monotonic scale; only differences matter."""
        ...

    def now(self) -> dt.datetime:
        """The current wall-clock time (UTC, timezone-aware)."""
        ...

    def advance(self, seconds: float) -> None:
        """Move this clock forward by ``seconds``."""
        ...


class EmulatorClock:
    """Real time plus an offset that only ever grows.

    Real time keeps flowing (so discord.py's own timers and the emulator agree on short spans),
    and ``advance`` adds a jump on top of it.
    """

    def __init__(self) -> None:
        self._offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self._offset

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self._offset)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"the clock only moves forward, got {seconds} s")
        self._offset += seconds


def iso_timestamp(moment: dt.datetime) -> str:
    """Discord's timestamp format: ISO 8601 with microseconds and an explicit offset."""
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")
