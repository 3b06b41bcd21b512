"""Turning rows into the frozen views the services return: the one place where a row's status
and kind become enums and its stored request is decoded into the caller's type.

A request the codec cannot decode raises ``UndecodableRequest`` from ``job_view`` and
``claimed_job``; ``job_views`` (the listings) leaves such jobs out and logs them, so one bad row
never hides the others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.engine import RowMapping

from storage.errors import UndecodableRequest
from storage.models import DELIVERIES, JOBS
from storage.types import (
    ClaimedJob,
    HoldState,
    JobKind,
    JobStatus,
    JobView,
    RequestCodec,
    RequestT,
    Visibility,
    to_seconds,
)

log = logging.getLogger(__name__)


def job_view_select() -> Select[tuple[object, ...]]:
    """Jobs with their delivery columns (outer join: a job may have no delivery row)."""
    return select(
        JOBS,
        DELIVERIES.c.message_id,
        DELIVERIES.c.attachment_limit,
        DELIVERIES.c.interaction_expires_at,
        DELIVERIES.c.posted_at,
        DELIVERIES.c.post_attempts,
        DELIVERIES.c.interaction_id,
        DELIVERIES.c.next_attempt_at,
        DELIVERIES.c.given_up_at,
        DELIVERIES.c.give_up_reason,
        DELIVERIES.c.review,
    ).select_from(JOBS.outerjoin(DELIVERIES, DELIVERIES.c.job_id == JOBS.c.id))


def decode_request(codec: RequestCodec[RequestT], job_id: str, data: Mapping[str, Any]) -> RequestT:
    """The stored request of job ``job_id`` in the caller's type; raises UndecodableRequest."""
    try:
        return codec.decode(data)
    except (ValueError, TypeError) as exc:
        raise UndecodableRequest(job_id, str(exc)) from exc


def job_view(row: RowMapping, codec: RequestCodec[RequestT]) -> JobView[RequestT]:
    """A JobView from a jobs row, with the delivery columns when the row has them."""
    return JobView(
        id=row["id"],
        kind=JobKind(row["kind"]),
        parent_id=row["parent_id"],
        owner_id=row["owner_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        request=decode_request(codec, row["id"], row["request"]),
        mode=row["mode"],
        batch_key=row["batch_key"],
        priority=row["priority"],
        status=JobStatus(row["status"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        worker_id=row["worker_id"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        estimated_cost=to_seconds(row["estimated_ms"]),
        reserved=to_seconds(row["reserved_ms"]),
        gpu_seconds=None if row["gpu_ms"] is None else to_seconds(row["gpu_ms"]),
        charged=None if row["charged_ms"] is None else to_seconds(row["charged_ms"]),
        result_refs=tuple(row["result_refs"] or ()),
        error=row["error"],
        cancel_requested=bool(row["cancel_requested"]),
        progress_step=row["progress_step"],
        progress_total=row["progress_total"],
        preview_ref=row["preview_ref"],
        progress_at=row["progress_at"],
        lease_expires_at=row["lease_expires_at"],
        message_id=row.get("message_id"),
        attachment_limit=row.get("attachment_limit"),
        interaction_expires_at=row.get("interaction_expires_at"),
        posted_at=row.get("posted_at"),
        post_attempts=row.get("post_attempts") or 0,
        interaction_id=row.get("interaction_id"),
        work_units=float(row["work_units"] or 0.0),
        purge_after=row["purge_after"],
        order_key=row["order_key"],
        releases=row["releases"] or 0,
        pruned_at=row["pruned_at"],
        next_attempt_at=row.get("next_attempt_at"),
        given_up_at=row.get("given_up_at"),
        give_up_reason=row.get("give_up_reason"),
        hold=None if row.get("review") is None else HoldState(row["review"]),
        age_restricted=bool(row["age_restricted"]),
        visibility=Visibility(row["visibility"]),
        deleted_at=row["deleted_at"],
        like_count=row["like_count"] or 0,
        published_at=row["published_at"],
        prompt=row["prompt"] or "",
        model=row["model"] or "",
        aspect=row["aspect"] or "",
        session_id=row["session_id"],
        guild_paid=bool(row["guild_paid"]),
    )


def job_views(rows: Iterable[RowMapping], codec: RequestCodec[RequestT]) -> list[JobView[RequestT]]:
    """The views of ``rows`` in order, leaving out (and logging) jobs whose request the codec
    cannot decode."""
    views = []
    for row in rows:
        try:
            views.append(job_view(row, codec))
        except UndecodableRequest as exc:
            log.warning("job %s left out of a listing: %s (%s)", exc.job_id, exc, exc.detail)
    return views


def claimed_job(row: RowMapping, codec: RequestCodec[RequestT]) -> ClaimedJob[RequestT]:
    """A ClaimedJob from a just-claimed jobs row; raises UndecodableRequest."""
    return ClaimedJob(
        id=row["id"],
        lease_token=row["lease_token"],
        lease_expires_at=row["lease_expires_at"],
        kind=JobKind(row["kind"]),
        mode=row["mode"],
        batch_key=row["batch_key"],
        request=decode_request(codec, row["id"], row["request"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        owner_id=row["owner_id"],
        parent_id=row["parent_id"],
        reserved=to_seconds(row["reserved_ms"]),
        age_restricted=bool(row["age_restricted"]),
    )
