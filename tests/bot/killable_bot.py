"""A bot process for the kill test: ``atelier run``'s wiring, configured through ATELIER_*
variables, with an in-process worker on a zero-cost generator that records each run.

Run as ``python -m tests.bot.killable_bot RUN_LOG``. Every time the worker starts a job it
appends ``<job id>`` to RUN_LOG (flushed and fsynced), so the test can check the order in which
each member's jobs first ran, across SIGKILLs.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
from pathlib import Path

from PIL import Image

from bot.runtime import open_ledger, wire_bot
from config import Settings
from generation.worker import ClaimedJobLike, JobControl, OutputImage, Worker, WorkResult
from storage.errors import LeaseLost


class RecordingGenerator:
    """Makes a tiny grid in a few milliseconds, after writing down which job it runs."""

    def __init__(self, log: Path) -> None:
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 120, 90)).save(buffer, format="PNG")
        self._png = buffer.getvalue()
        self._log = log

    async def run(self, job: ClaimedJobLike[object], control: JobControl) -> WorkResult:
        with self._log.open("a") as handle:
            handle.write(f"{job.id}\n")
            handle.flush()
            os.fsync(handle.fileno())
        await asyncio.sleep(0.03)  # long enough for a kill to land mid-job now and then
        images = [OutputImage(f"{i}.png", self._png) for i in range(4)]
        return WorkResult(images=(*images, OutputImage("grid.png", self._png)), gpu_seconds=0.01)


async def main(run_log: Path) -> None:
    settings = Settings()
    async with open_ledger(settings) as ledger:
        worker = Worker(
            ledger.queue,
            ledger.images,
            RecordingGenerator(run_log),
            settings.queue,
            lease_lost_errors=(LeaseLost,),
        )
        ledger.queue.on_new_work = worker.notify
        bot = wire_bot(settings, ledger, None)
        bot.add_background("worker", worker.run, stop=worker.stop)
        assert settings.discord.token is not None
        async with bot:
            await bot.start(settings.discord.token.get_secret_value())


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
