"""One crash-test worker process: the real worker loop, the real queue, the fake generator.

The crash test starts several of these against one database and kills, freezes and restarts
them. ``unsafe`` builds the queue with ``_unsafe_skip_lease_check`` so the test can show that its
invariant checker catches a queue that accepts completions from workers whose lease is gone.

Run by the test through a multiprocessing fork server (so restarts cost milliseconds, not a fresh
interpreter), or by hand: ``python -m tests.storage.crash_worker '<config json>'``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config.settings import QueueSettings, QuotaSettings
from generation.worker import ClaimedJobLike, JobControl, Worker, WorkResult
from storage import Database, FileImageStore, JobQueue, LeaseLost, QuotaService
from tests.generation.fake_generator import FakeGenerator


class PacedGenerator(FakeGenerator):
    """The fake generator with a per-job step time derived from the job id (deterministic).

    While it runs a job it names the job in ``state_file``, so the test can freeze this process
    while it is inside the generator (and not in the middle of a database transaction).
    """

    def __init__(
        self,
        base_step: float,
        state_file: Path,
        *,
        steps: int,
        gpu_seconds: float,
        crash: set[str],
    ) -> None:
        super().__init__(steps=steps, gpu_seconds=gpu_seconds, crash=crash)
        self.base_step = base_step
        self.state_file = state_file

    async def run(self, job: ClaimedJobLike[Mapping[str, Any]], control: JobControl) -> WorkResult:
        self.step_seconds = self.base_step * (0.5 + (sum(job.id.encode()) % 10) / 10)
        self.state_file.write_text(job.id)
        try:
            return await super().run(job, control)
        finally:
            self.state_file.write_text("")


async def serve(config: dict[str, Any]) -> None:
    settings = QueueSettings(**config["queue"])
    db = Database(config["url"], pool_size=3)
    quota = QuotaService(db, QuotaSettings(user_daily_gpu_seconds=1e9))
    queue = JobQueue(db, settings, quota, _unsafe_skip_lease_check=config.get("unsafe", False))
    generator = PacedGenerator(
        config["step_seconds"],
        Path(config["state"]),
        steps=config["steps"],
        gpu_seconds=config["gpu_seconds"],
        crash={"crash"},
    )
    worker = Worker(
        queue,
        FileImageStore(Path(config["images"])),
        generator,
        settings,
        worker_id=config["worker_id"],
        lease_lost_errors=(LeaseLost,),
    )
    worker.install_signal_handlers()
    try:
        await worker.run()
    finally:
        await db.dispose()


def main(config: dict[str, Any]) -> None:
    """Process entry point: log to the given file, then run the worker until SIGTERM."""
    logging.basicConfig(
        filename=config["log"],
        level=logging.WARNING,
        format=f"%(asctime)s {config['worker_id']} %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(config))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
