"""The one rule for who may find a job beyond the message it was posted in.

A job may be listed, searched, shown, liked or remixed for viewer V in server G when:

- it is a job of G (``guild_id == G``; DM jobs belong to no server and are never found);
- it succeeded (not queued, running, failed, cancelled, dead or blocked);
- its result is not held for review or rejected (``deliveries.review`` is NULL or approved);
- its owner has not deleted it (``deleted_at`` NULL) and retention has not pruned its images
  (``pruned_at`` NULL);
- it is public, or V is its owner, or V is a moderator of G.

``visible_clause`` is that rule as SQL, for every query that lists jobs (``storage.sharing``,
``storage.search``); ``visible`` is the same rule over one ``JobView``, for a caller that already
holds the job (``/show``, a button). Tests check that the two agree case by case; nothing else
decides visibility.

``is_moderator`` widens the rule to the server's stealth jobs: pass it only when the answer is
shown to that moderator alone (an ephemeral reply), never for a message the channel sees.
``viewer_id`` None is an anonymous viewer (the web gallery): public jobs only.

**Anonymous session entries.** Beside who may find a job, one rule decides whether its author
may be named: not while it is an entry (``jobs.session_id`` set, and a ``session_entries`` row
names the job) of a group session with ``anonymous`` on whose entry's round has not finished
(``session_rounds.finished_at`` NULL) and which has not ended. Once the round finishes, or the
session ends, the author shows everywhere. ``author_hidden_clause`` is the rule as SQL (a
correlated EXISTS, for any list), ``author_hidden`` the same over values read
(``entry_facts``), and ``hidden_authors`` reads it for a set of jobs. While the author is
hidden, nothing may name them: lists credit no one (``GalleryItem.owner_id`` None), and a
member's lists and counts leave the entry out (``author_shown_clause``), so no filter tells
who made it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Exists, and_, exists, not_, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import DELIVERIES, GROUP_SESSIONS, JOBS, SESSION_ENTRIES, SESSION_ROUNDS
from storage.types import HoldState, JobStatus, JobView, SessionStatus, Visibility

#: Review states whose result is never shown beyond its owner's view.
HIDDEN_HOLDS = (HoldState.HELD, HoldState.REJECTED)


def visible_clause(
    viewer_id: int | None, guild_id: int, *, is_moderator: bool = False
) -> ColumnElement[bool]:
    """Whether a ``jobs`` row may be found by ``viewer_id`` in ``guild_id`` (see the module).

    Self-contained: it needs ``jobs`` in the FROM clause and reaches ``deliveries`` through a
    correlated NOT EXISTS, so it composes with any join."""
    hidden_hold = (
        exists()
        .where(
            DELIVERIES.c.job_id == JOBS.c.id,
            DELIVERIES.c.review.in_([h.value for h in HIDDEN_HOLDS]),
        )
        .correlate(JOBS)
    )
    terms: list[ColumnElement[bool]] = [
        JOBS.c.guild_id == guild_id,
        JOBS.c.status == JobStatus.SUCCEEDED.value,
        not_(hidden_hold),
        JOBS.c.deleted_at.is_(None),
        JOBS.c.pruned_at.is_(None),
    ]
    if not is_moderator:
        public = JOBS.c.visibility == Visibility.PUBLIC.value
        terms.append(public if viewer_id is None else or_(public, JOBS.c.owner_id == viewer_id))
    return and_(*terms)


def visible(
    job: JobView[Any], viewer_id: int | None, guild_id: int, *, is_moderator: bool = False
) -> bool:
    """``visible_clause`` for one job already read (its view carries every column the rule
    reads)."""
    return (
        job.guild_id == guild_id
        and job.status is JobStatus.SUCCEEDED
        and job.hold not in HIDDEN_HOLDS
        and job.deleted_at is None
        and job.pruned_at is None
        and (
            is_moderator
            or job.visibility is Visibility.PUBLIC
            or (viewer_id is not None and job.owner_id == viewer_id)
        )
    )


# -- anonymous session entries ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryFacts:
    """What the anonymity rule reads of a job that is a group session's entry."""

    anonymous: bool
    session_status: SessionStatus
    #: When the entry's round finished (None: it has not, or its row is missing).
    round_finished_at: datetime | None


def author_hidden(entry: EntryFacts | None) -> bool:
    """Whether a job's author is hidden now, over its entry's facts (None: not an entry)."""
    return (
        entry is not None
        and entry.anonymous
        and entry.session_status is not SessionStatus.ENDED
        and entry.round_finished_at is None
    )


def _hidden_entry() -> Exists:
    """A ``jobs`` row is an entry of a live anonymous session whose round has not finished.
    Aliased tables and explicit correlation: it composes with queries that read the session
    tables themselves. A missing round row counts as unfinished (hidden, not shown)."""
    entry = SESSION_ENTRIES.alias("anon_entry")
    group = GROUP_SESSIONS.alias("anon_session")
    rounds = SESSION_ROUNDS.alias("anon_round")
    finished = (
        exists()
        .where(
            rounds.c.session_id == entry.c.session_id,
            rounds.c.round == entry.c.round,
            rounds.c.finished_at.is_not(None),
        )
        .correlate(entry)
    )
    return (
        exists()
        .where(
            entry.c.job_id == JOBS.c.id,
            group.c.id == entry.c.session_id,
            group.c.anonymous.is_(true()),
            group.c.status != SessionStatus.ENDED.value,
            not_(finished),
        )
        .correlate(JOBS)
    )


def author_hidden_clause() -> ColumnElement[bool]:
    """``author_hidden`` as SQL over a ``jobs`` row (see the module). Jobs that are no entry
    (``session_id`` NULL, nearly all) are decided before the EXISTS is reached."""
    return and_(JOBS.c.session_id.is_not(None), _hidden_entry())


def author_shown_clause() -> ColumnElement[bool]:
    """The negation of ``author_hidden_clause``: what a member's lists and counts keep."""
    return or_(JOBS.c.session_id.is_(None), not_(_hidden_entry()))


async def entry_facts(session: AsyncSession, job_ids: Iterable[str]) -> dict[str, EntryFacts]:
    """The facts ``author_hidden`` reads, for those of ``job_ids`` that are session entries."""
    wanted = sorted(set(job_ids))
    if not wanted:
        return {}
    rows = await session.execute(
        select(
            SESSION_ENTRIES.c.job_id,
            GROUP_SESSIONS.c.anonymous,
            GROUP_SESSIONS.c.status,
            SESSION_ROUNDS.c.finished_at,
        )
        .select_from(
            SESSION_ENTRIES.join(
                GROUP_SESSIONS, GROUP_SESSIONS.c.id == SESSION_ENTRIES.c.session_id
            ).outerjoin(
                SESSION_ROUNDS,
                and_(
                    SESSION_ROUNDS.c.session_id == SESSION_ENTRIES.c.session_id,
                    SESSION_ROUNDS.c.round == SESSION_ENTRIES.c.round,
                ),
            )
        )
        .where(SESSION_ENTRIES.c.job_id.in_(wanted))
    )
    return {
        row.job_id: EntryFacts(bool(row.anonymous), SessionStatus(row.status), row.finished_at)
        for row in rows
    }


async def hidden_authors(session: AsyncSession, job_ids: Iterable[str]) -> set[str]:
    """Those of ``job_ids`` whose author is hidden now (``author_hidden_clause``)."""
    wanted = sorted(set(job_ids))
    if not wanted:
        return set()
    rows = await session.execute(
        select(JOBS.c.id).where(JOBS.c.id.in_(wanted), author_hidden_clause())
    )
    return set(rows.scalars())
