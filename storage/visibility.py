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
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, exists, not_, or_

from storage.models import DELIVERIES, JOBS
from storage.types import HoldState, JobStatus, JobView, Visibility

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
