"""Deleting what must not be kept: a blocked job's images once its appeal period is over.

A blocked job's images are never served (the bot serves images of succeeded jobs only), but they
are kept ``bot.appeal_days`` so an appeal can still look at them. After that, ``purge_blocked``
deletes the files first and then records it, so a crash in between only repeats a harmless
delete. ``RetentionLoop`` runs it in the bot process every few minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from storage.images import FileImageStore
from storage.queue import JobQueue

log = logging.getLogger(__name__)

#: How often the bot looks for images whose appeal period is over.
PURGE_INTERVAL_SECONDS = 600.0
#: The most jobs one pass purges (the next pass takes the rest).
PURGE_BATCH = 100


async def purge_blocked(queue: JobQueue[Any], images: FileImageStore) -> list[str]:
    """Delete the images of blocked jobs whose appeal period is over; their ids."""
    purged = []
    for job_id in await queue.expired_blocked(limit=PURGE_BATCH):
        removed = await images.delete_job(job_id)
        await queue.forget_images(job_id)
        log.info(
            "deleted %d image(s) of blocked job %s: its appeal period is over", removed, job_id
        )
        purged.append(job_id)
    return purged


class RetentionLoop:
    """``purge_blocked`` now and then every ``interval`` seconds, until ``stop``."""

    def __init__(
        self,
        queue: JobQueue[Any],
        images: FileImageStore,
        interval: float = PURGE_INTERVAL_SECONDS,
    ) -> None:
        self.queue = queue
        self.images = images
        self.interval = interval
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await purge_blocked(self.queue, self.images)
            except Exception:
                log.exception("purging blocked jobs' images failed; will try again")
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancel (see the publisher).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()
