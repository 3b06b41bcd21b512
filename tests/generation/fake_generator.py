"""A deterministic, zero-cost stand-in for the diffusers engine, for worker and queue tests.

It makes tiny valid PNGs whose colour depends only on the request (so reruns are bit-identical),
reports progress every step, honours cancellation within a step, and can be told to fail, hang,
get stuck (ignoring cancellation, on a thread) or crash its process for chosen prompts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import struct
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from generation.errors import JobCancelledError
from generation.worker import ClaimedJobLike, JobControl, OutputImage, WorkResult


def tiny_png(seed: bytes, size: int = 2) -> bytes:
    """A valid ``size`` x ``size`` RGB PNG of one colour derived from ``seed``."""
    r, g, b = hashlib.sha256(seed).digest()[:3]
    row = b"\x00" + bytes((r, g, b)) * size
    raw = row * size

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _key(request: Mapping[str, Any]) -> bytes:
    return repr(sorted(request.items())).encode()


@dataclass
class FakeGenerator:
    """``steps`` steps of ``step_seconds`` each (0: instant), four images and a grid.

    ``errors`` maps a prompt to the exception its job raises; prompts in ``hang`` block until
    ``gate`` is set or the job is cancelled; prompts in ``stuck`` block a daemon thread, deaf to
    cancellation, until ``unstick`` is set, like a hung CUDA kernel; prompts in ``crash`` end
    the process (os._exit), like a segfault in a GPU driver would. ``abandoned`` counts the
    worker's ``abandon()`` calls.
    """

    steps: int = 3
    step_seconds: float = 0.0
    gpu_seconds: float = 0.0
    errors: dict[str, BaseException] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    crash: set[str] = field(default_factory=set)
    stuck: set[str] = field(default_factory=set)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    unstick: threading.Event = field(default_factory=threading.Event)
    abandoned: int = 0
    started: list[str] = field(default_factory=list)
    batches: list[list[str]] = field(default_factory=list)

    async def run(self, job: ClaimedJobLike[Mapping[str, Any]], control: JobControl) -> WorkResult:
        self.started.append(job.id)
        prompt = str(job.request.get("prompt", ""))
        if prompt in self.crash:
            os._exit(3)
        for step in range(1, self.steps + 1):
            control.raise_if_cancelled()
            if prompt in self.hang and step == 2:
                await self._hang(control)
            if prompt in self.stuck and step == 2:
                await self._stuck_call()
            if self.step_seconds:
                await asyncio.sleep(self.step_seconds)
            preview = tiny_png(_key(job.request) + b"preview", 1)
            control.report_progress(step, self.steps, preview if step % 2 == 1 else None)
        control.raise_if_cancelled()
        if prompt in self.errors:
            raise self.errors[prompt]
        images = [
            OutputImage(f"{i}.png", tiny_png(_key(job.request) + bytes([i]))) for i in range(4)
        ]
        images.append(OutputImage("grid.png", tiny_png(_key(job.request) + b"grid", 4)))
        return WorkResult(images=tuple(images), gpu_seconds=self.gpu_seconds)

    def abandon(self) -> None:
        self.abandoned += 1

    async def _stuck_call(self) -> None:
        """A call on its own daemon thread that no cancel reaches (awaiting it can be
        cancelled, as with ``run_in_executor``; the thread goes on until ``unstick``)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def call() -> None:
            if done.set_running_or_notify_cancel():
                self.unstick.wait()
                done.set_result(None)

        threading.Thread(target=call, name="fake-stuck-call", daemon=True).start()
        await asyncio.wrap_future(done)

    async def _hang(self, control: JobControl) -> None:
        gate = asyncio.create_task(self.gate.wait())
        stop = asyncio.create_task(control.wait_cancelled())
        try:
            await asyncio.wait({gate, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (gate, stop):
                task.cancel()
        if control.cancelled:
            raise JobCancelledError(f"job {control.job.id} cancelled")


@dataclass
class FakeBatchGenerator(FakeGenerator):
    """The same, plus ``run_batch`` (one call for jobs with equal batch keys)."""

    async def run_batch(
        self, jobs: Sequence[ClaimedJobLike[Mapping[str, Any]]], controls: Sequence[JobControl]
    ) -> Sequence[WorkResult]:
        self.batches.append([job.id for job in jobs])
        return [await self.run(job, control) for job, control in zip(jobs, controls, strict=True)]
