"""The engine runner: one engine thread, awaitable without blocking, progress on the loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import types
from typing import cast

import pytest

from config.settings import Settings
from generation.engine import Engine
from generation.results import Progress
from generation.runner import EngineRunner
from tests.generation.conftest import make_request


async def test_generation_does_not_block_the_loop(engine: Engine) -> None:
    runner = EngineRunner(engine)
    loop_thread = threading.get_ident()
    in_flight = False
    ticks_in_flight = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks_in_flight
        while not stop.is_set():
            if in_flight:
                ticks_in_flight += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    delivered: list[tuple[int, int]] = []

    def on_progress(progress: Progress) -> None:
        delivered.append((progress.step, threading.get_ident()))

    # What the loop's ticker had counted each time the engine thread entered the UNet.
    seen_by_engine: list[int] = []
    hook = engine.model.txt2img.unet.register_forward_hook(
        lambda *_: seen_by_engine.append(ticks_in_flight)
    )
    in_flight = True
    try:
        result = await runner.generate(make_request(steps=6), on_progress=on_progress)
    finally:
        hook.remove()
    # No await between the job's end and here: had the job blocked the loop, the ticker could
    # not have run while in_flight was set.
    in_flight = False
    stop.set()
    await ticking
    assert ticks_in_flight > 0
    assert seen_by_engine[-1] > seen_by_engine[0]  # the loop kept running during the denoising
    assert len(result.images) == 4
    assert [step for step, _ in delivered] == [1, 2, 3, 4, 5, 6]
    assert {thread for _, thread in delivered} == {loop_thread}


async def test_async_progress_callbacks_are_awaited_in_order(engine: Engine) -> None:
    runner = EngineRunner(engine)
    steps: list[int] = []

    async def on_progress(progress: Progress) -> None:
        await asyncio.sleep(0)
        steps.append(progress.step)

    results = await runner.generate_batch(
        [make_request(seed=1, steps=3), make_request(seed=50, steps=3)], on_progress=on_progress
    )
    assert len(results) == 2
    assert steps == [1, 1, 2, 2, 3, 3]


async def test_a_failing_progress_callback_does_not_fail_the_job(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(progress: Progress) -> None:
        raise RuntimeError("display broke")

    with caplog.at_level(logging.ERROR, logger="generation.runner"):
        result = await EngineRunner(engine).generate(make_request(steps=2), on_progress=broken)
    assert len(result.images) == 4
    assert "progress callback failed" in caplog.text


async def test_cancelling_the_task_stops_the_engine(engine: Engine) -> None:
    runner = EngineRunner(engine)
    cancel = threading.Event()
    started = asyncio.Event()
    release = threading.Event()
    forwards: list[int] = []

    def hold_second_step(*_: object) -> None:
        # The engine thread waits inside step 2 until the task has been cancelled, so what
        # follows does not depend on thread timing.
        forwards.append(1)
        if len(forwards) == 2:
            release.wait(timeout=60)

    hook = engine.model.txt2img.unet.register_forward_hook(hold_second_step)
    try:
        job = asyncio.create_task(
            runner.generate(
                make_request(steps=40), on_progress=lambda _: started.set(), cancel=cancel
            )
        )
        await started.wait()
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert cancel.is_set()
        release.set()
        # Queued behind the cancelled job on the one engine thread: runs once it has stopped.
        after = await runner.generate(make_request(steps=2))
    finally:
        release.set()
        hook.remove()
    assert len(after.images) == 4
    assert len(forwards) == 2 + 2  # the cancelled job ended with the step it was in


async def test_close_unloads_and_refuses_more_work(tiny_settings: Settings) -> None:
    engine = Engine(tiny_settings)
    runner = EngineRunner(engine)
    await runner.load()
    assert engine.loaded
    await runner.close()
    assert not engine.loaded
    with pytest.raises(RuntimeError, match="closed"):
        await runner.generate(make_request())


class _StuckEngine:
    """Stands in for an Engine whose generate never returns until ``release``, deaf to its
    cancel event: a hung CUDA kernel."""

    def __init__(self) -> None:
        self.preset = types.SimpleNamespace(name="stuck")
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed = False

    def generate(self, *args: object, **kwargs: object) -> None:
        self.entered.set()
        self.release.wait()

    def close(self) -> None:
        self.closed = True


async def test_an_abandoned_runner_never_waits_for_its_stuck_thread() -> None:
    engine = _StuckEngine()
    runner = EngineRunner(cast(Engine, engine))
    job = asyncio.create_task(runner.generate(make_request()))
    try:
        assert await asyncio.to_thread(engine.entered.wait, 30)
        job.cancel()  # awaiting ends at once; the thread goes on
        with pytest.raises(asyncio.CancelledError):
            await job
        runner.abandon()
        await runner.close()  # returns without waiting for the stuck call
        assert runner.abandoned and not engine.closed
        thread = runner._executor._thread
        assert thread.daemon and thread.is_alive()  # a daemon: exiting the process never joins it
        with pytest.raises(RuntimeError, match="closed"):
            await runner.generate(make_request())
    finally:
        engine.release.set()
