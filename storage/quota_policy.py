"""Quota arithmetic: pure functions over plain values (no database), in whole milliseconds.

A user's allowance is GPU-seconds per rolling window. At any moment
``remaining = allowance - used - reserved``, where ``used`` is what succeeded jobs were charged
inside the window and ``reserved`` is the estimate held by their queued and running jobs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from config.settings import QuotaSettings
from storage.types import JobKind, to_ms


def allowance_ms(
    settings: QuotaSettings, *, override_ms: int | None, role_ids: Iterable[int]
) -> int:
    """The user's allowance: an admin override wins outright; otherwise the base allowance times
    the best multiplier among the user's roles (1.0 when no role has one)."""
    if override_ms is not None:
        return override_ms
    multipliers = [settings.role_multipliers.get(str(role), 1.0) for role in role_ids]
    return to_ms(settings.user_daily_gpu_seconds * max([1.0, *multipliers]))


def guild_allowance_ms(settings: QuotaSettings) -> int | None:
    if settings.guild_daily_gpu_seconds is None:
        return None
    return to_ms(settings.guild_daily_gpu_seconds)


#: The images a grid's floor (``estimate_fast_seconds``, ``estimate_quality_seconds``) pays for.
GRID_IMAGES = 4


def estimate_seconds(
    settings: QuotaSettings, kind: JobKind, mode: str, *, images: int = GRID_IMAGES
) -> float:
    """The least a job reserves: the upscale floor, or the grid floor of its mode for its share
    of a grid's images (a single image a quarter; a select does no GPU work). The reservation
    itself scales with the job's work; see ``reservation_ms``."""
    if kind is JobKind.SELECT:
        return 0.0
    if kind is JobKind.UPSCALE:
        return settings.estimate_followup_seconds
    grid = settings.estimate_fast_seconds if mode == "fast" else settings.estimate_quality_seconds
    return grid * max(1, images) / GRID_IMAGES


def rate_key(kind: JobKind, mode: str) -> str:
    """Which measured rate prices a job: upscales (one large image, a VAE-heavy decode) apart
    from grids and variations, per mode."""
    return f"{mode}/upscale" if kind is JobKind.UPSCALE else mode


def reservation_ms(
    floor_seconds: float, work_units: float, rate: float | None, default_rate: float
) -> int:
    """What a job reserves: its work at the measured rate (the default until one is measured),
    and never less than its floor. Non-finite or negative inputs fall back to the floor."""
    per_unit = rate if rate is not None and math.isfinite(rate) and rate > 0 else default_rate
    scaled = work_units * per_unit if math.isfinite(work_units) and work_units > 0 else 0.0
    return max(to_ms(floor_seconds), to_ms(scaled))


@dataclass(frozen=True, slots=True)
class Balance:
    allowance_ms: int
    used_ms: int
    reserved_ms: int

    @property
    def remaining_ms(self) -> int:
        # Below zero after an overdraft (at most one job's estimate) or when an admin lowered
        # the allowance under what is already used; the readout never shows that.
        return max(0, self.allowance_ms - self.used_ms - self.reserved_ms)

    def fits(self, needed_ms: int) -> bool:
        return self.used_ms + self.reserved_ms + needed_ms <= self.allowance_ms


def frees_enough_at(
    balance: Balance,
    charges: Sequence[tuple[datetime, int]],
    window: timedelta,
    needed_ms: int,
) -> datetime | None:
    """When enough of the window's charges (oldest first) age out for ``needed_ms`` to fit.

    None when even an empty window would not do (reservations or the allowance itself are in
    the way).
    """
    shortfall = balance.used_ms + balance.reserved_ms + needed_ms - balance.allowance_ms
    if shortfall <= 0:
        return None
    for charged_at, amount in sorted(charges):
        shortfall -= amount
        if shortfall <= 0:
            return charged_at + window
    return None


def capped_charge(measured_ms: int, room_ms: int, overdraft_ms: int) -> tuple[int, int]:
    """Split a measured cost into (charged, waived).

    The work done is charged in full, except that it may take the user at most ``overdraft_ms``
    (the job's own estimate, on which it was admitted) beyond the allowance; the rest is waived.
    ``room_ms`` is the allowance minus what is used and reserved by the owner's other jobs (it
    includes this job's own reservation, and may be negative after an earlier overdraft).
    """
    charged = max(0, min(measured_ms, max(0, room_ms) + overdraft_ms))
    return charged, measured_ms - charged
