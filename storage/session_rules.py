"""Group session rules as plain values: the bounds a session must keep, the ranking of a
round's entries, and the session clock's arithmetic. No database; tested with plain values.

Ranking: most votes first; a tie goes to the earlier entry (the lower submission ``seq``), so
every round has one strict order. A round's winner is its first place when it got at least one
vote (``RoundResult.winner``): a round nobody voted in has results but no winner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.types import PoolKind, RankedEntry, SessionSpec

#: Bounds of a session, inclusive. The bot's options may be narrower; never wider.
ROUNDS = (1, 10)
ROUND_SECONDS = (60, 24 * 3600)
VOTING_SECONDS = (60, 24 * 3600)
VOTING_WAIT_SECONDS = (0, 6 * 3600)
ENTRIES_PER_MEMBER = (1, 10)
VOTES_PER_MEMBER = (1, 25)
POOL_SECONDS = (1.0, 1_000_000.0)
#: The longest theme, prompt or reason a session keeps (``models.SESSION_TEXT_LENGTH``).
TEXT_LENGTH = 1000
#: The priority lane's length (``SessionSpec.lane_seconds``); 0 is none.
LANE_SECONDS = (0, 3600)
#: The most seconds one ``extend`` may add.
EXTEND_SECONDS = (1, 24 * 3600)


def _check(name: str, value: float, bounds: tuple[float, float], unit: str = "") -> None:
    low, high = bounds
    if not low <= value <= high:
        raise ValueError(f"{name} must be {low:g}..{high:g}{unit} (got {value:g})")


def _minutes(name: str, seconds: int, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not low <= seconds <= high:
        raise ValueError(
            f"{name} must be {low / 60:g}..{high / 60:g} minutes (got {seconds / 60:g})"
        )


def validate(spec: SessionSpec) -> tuple[str, ...]:
    """Check every bound of ``spec``; ValueError names the option and the allowed range.
    Returns the themes of the rounds, one per round."""
    _check("rounds", spec.rounds, ROUNDS)
    _minutes("round_minutes", spec.round_seconds, ROUND_SECONDS)
    _minutes("voting_minutes", spec.voting_seconds, VOTING_SECONDS)
    _minutes("the voting wait", spec.voting_wait_seconds, VOTING_WAIT_SECONDS)
    _check("entries_per_member", spec.entries_per_member, ENTRIES_PER_MEMBER)
    _check("votes_per_member", spec.votes_per_member, VOTES_PER_MEMBER)
    _minutes("the priority lane", spec.lane_seconds, LANE_SECONDS)
    pool = PoolKind(spec.pool)
    if pool is PoolKind.SERVER:
        _check("pool_gpu_seconds", spec.pool_seconds, POOL_SECONDS, " GPU-seconds")
    elif spec.pool_seconds:
        raise ValueError("pool_gpu_seconds is only for pool:server (members pay themselves)")
    themes = tuple(t.strip() for t in spec.themes) or (spec.theme.strip(),) * spec.rounds
    if len(themes) != spec.rounds:
        raise ValueError(
            f"themes must give one theme per round: {spec.rounds} round(s), {len(themes)} theme(s)"
        )
    for theme in (spec.theme.strip(), *themes):
        if not theme:
            raise ValueError("a theme cannot be empty")
        if len(theme) > TEXT_LENGTH:
            raise ValueError(f"a theme is at most {TEXT_LENGTH} characters (got {len(theme)})")
    return themes


def check_extend(seconds: int) -> None:
    _check("extend seconds", seconds, EXTEND_SECONDS)


@dataclass(frozen=True, slots=True)
class Tally:
    """One entry's standing at the end of voting."""

    entry_id: str
    member_id: int
    job_id: str | None
    votes: int
    seq: int


def rank(tallies: Iterable[Tally]) -> tuple[RankedEntry, ...]:
    """Most votes first, ties to the earlier submission; ranks count from 1."""
    ordered = sorted(tallies, key=lambda t: (-t.votes, t.seq))
    return tuple(
        RankedEntry(i, t.entry_id, t.member_id, t.job_id, t.votes, t.seq)
        for i, t in enumerate(ordered, start=1)
    )


def results_json(ranked: Sequence[RankedEntry]) -> list[dict[str, Any]]:
    """A round's results as stored (``session_rounds.results``)."""
    return [
        {
            "rank": r.rank,
            "entry": r.entry_id,
            "member": r.member_id,
            "job": r.job_id,
            "votes": r.votes,
            "seq": r.seq,
        }
        for r in ranked
    ]


def results_from_json(stored: Sequence[Mapping[str, Any]] | None) -> tuple[RankedEntry, ...]:
    return tuple(
        RankedEntry(
            int(r["rank"]),
            str(r["entry"]),
            int(r["member"]),
            None if r.get("job") is None else str(r["job"]),
            int(r["votes"]),
            int(r["seq"]),
        )
        for r in stored or ()
    )


def remaining_ms(ends_at: datetime | None, now: datetime) -> int:
    """What is left of a phase that ends at ``ends_at`` (0 once due)."""
    if ends_at is None:
        return 0
    return max(0, round((ends_at - now).total_seconds() * 1000))


def board_nonce(session_id: str, round_: int) -> str:
    """A results board's Discord nonce (at most 25 characters): the same for every try, so a
    repeated post after a crash is dropped by Discord."""
    return f"sb{session_id}r{round_}"[:25]
