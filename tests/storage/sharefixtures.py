"""Helpers for the sharing and search tests: finished jobs in chosen states, on either backend."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import FileImageStore, JobKind
from storage.models import DELIVERIES, JOBS
from storage.sharing import SharingStore
from storage.types import Visibility
from tests.storage.dbfixtures import Services, new_job, owner

GUILD = 100
OTHER_GUILD = 200


def sharing(s: Services, images: FileImageStore | None = None) -> SharingStore:
    return SharingStore(s.db, images=images, clock=s.clock)


def image_store(tmp_path: Path) -> FileImageStore:
    return FileImageStore(tmp_path / "images")


async def finished(
    s: Services,
    *,
    user: int = 1,
    guild: int | None = GUILD,
    prompt: str = "a cat",
    visibility: Visibility = Visibility.PUBLIC,
    images: FileImageStore | None = None,
    request: dict[str, Any] | None = None,
    kind: JobKind = JobKind.IMAGINE,
    parent_id: str | None = None,
    mode: str = "fast",
    **fields: Any,
) -> str:
    """A succeeded job (a grid: four images, then the grid), posted as message 1000+seq."""
    job = dataclasses.replace(
        new_job(kind, prompt=prompt, parent_id=parent_id, mode=mode),
        visibility=visibility,
        **fields,
    )
    if request is not None:
        job = dataclasses.replace(job, request=request)
    view = await s.queue.enqueue(owner(user, guild), job)
    claimed = await s.queue.claim_next("w")
    assert claimed is not None and claimed.id == view.id
    names = ["0.png", "1.png", "2.png", "3.png", "grid.png"]
    if images is not None:
        refs = [await images.put(view.id, n, b"x" * 10) for n in names]
    else:
        refs = [f"{view.id}/{n}" for n in names]
    await s.queue.complete(view.id, claimed.lease_token, result_refs=refs, gpu_seconds=1.0)
    assert await s.deliveries.claim(view.id)
    assert await s.deliveries.mark_posted(view.id, 5000 + len(view.id))
    return view.id


async def set_columns(s: Services, job_id: str, **values: Any) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(update(JOBS).where(JOBS.c.id == job_id).values(**values))

    await s.db.write(work)


async def set_review(s: Services, job_id: str, review: str | None) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(
            update(DELIVERIES).where(DELIVERIES.c.job_id == job_id).values(review=review)
        )

    await s.db.write(work)


def at(s: Services) -> datetime:
    return s.clock()
