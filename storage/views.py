"""Turning rows into the frozen views the services return."""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.engine import RowMapping

from storage.models import DELIVERIES, JOBS
from storage.types import ClaimedJob, JobView, to_seconds


def job_view_select() -> Select[tuple[object, ...]]:
    """Jobs with their delivery columns (outer join: a job may have no delivery row)."""
    return select(
        JOBS,
        DELIVERIES.c.message_id,
        DELIVERIES.c.attachment_limit,
        DELIVERIES.c.interaction_expires_at,
        DELIVERIES.c.posted_at,
        DELIVERIES.c.post_attempts,
    ).select_from(JOBS.outerjoin(DELIVERIES, DELIVERIES.c.job_id == JOBS.c.id))


def job_view(row: RowMapping) -> JobView:
    """A JobView from a jobs row, with the delivery columns when the row has them."""
    return JobView(
        id=row["id"],
        kind=row["kind"],
        parent_id=row["parent_id"],
        owner_id=row["owner_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        request=row["request"],
        mode=row["mode"],
        batch_key=row["batch_key"],
        priority=row["priority"],
        status=row["status"],
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
    )


def claimed_job(row: RowMapping) -> ClaimedJob:
    return ClaimedJob(
        id=row["id"],
        lease_token=row["lease_token"],
        lease_expires_at=row["lease_expires_at"],
        kind=row["kind"],
        mode=row["mode"],
        batch_key=row["batch_key"],
        request=row["request"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        owner_id=row["owner_id"],
        parent_id=row["parent_id"],
    )
