"""Runs the engine on one dedicated thread and makes it awaitable from the bot's event loop.

The engine is synchronous and holds one model, so every call goes through a single-thread
executor: jobs run one after another and never block the loop. Progress reported on the engine's
thread is handed to the loop with ``call_soon_threadsafe`` and delivered, in order, to the
caller's callback (a plain function or a coroutine function) on the loop's thread.

The engine thread is a daemon thread, not a ``ThreadPoolExecutor``'s (which the interpreter
joins at exit): a call stuck in a driver, like a hung CUDA kernel, cannot be interrupted, and
after ``abandon()`` nothing waits for it, so the process can still stop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import queue
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, Future
from typing import ParamSpec, TypeVar

from PIL import Image

from generation.engine import Engine
from generation.request import GenerationRequest
from generation.results import GenerationResult, Progress

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")
#: Called on the event loop's thread; may return an awaitable, which is awaited in order.
AsyncProgressCallback = Callable[[Progress], Awaitable[None] | None]


class EngineRunner:
    """An :class:`Engine` behind a one-thread executor, for use from asyncio code."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._executor = EngineThread("atelier-engine")
        self._closed = False
        #: Set by ``abandon()``: a call is stuck on the engine thread and nothing waits for it.
        self.abandoned = False

    async def load(self) -> float:
        """Load the model (once) on the engine thread; return the seconds it took."""
        return await self._submit(self.engine.load)

    async def generate(
        self,
        request: GenerationRequest,
        source_image: Image.Image | None = None,
        on_progress: AsyncProgressCallback | None = None,
        cancel: threading.Event | None = None,
        *,
        only_index: int | None = None,
    ) -> GenerationResult:
        """:meth:`Engine.generate` without blocking the loop.

        Cancelling the awaiting task sets ``cancel`` (one is made if none is given), so the
        engine stops within one denoising step and is free for the next job.
        """
        call = functools.partial(self.engine.generate, request, source_image, only_index=only_index)
        return await self._run_job(call, on_progress, cancel)

    async def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        on_progress: AsyncProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[GenerationResult]:
        """:meth:`Engine.generate_batch` without blocking the loop."""
        call = functools.partial(self.engine.generate_batch, list(requests))
        return await self._run_job(call, on_progress, cancel)

    async def call(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the engine thread, after whatever is queued there (e.g. the output
        classifier on a job's images: one thread keeps the device's work in one line)."""
        return await self._submit(work)

    def abandon(self) -> None:
        """A call on the engine thread is hung: refuse new work and never wait for the thread
        again (``close()`` returns at once). The model stays in memory until the process ends."""
        if self.abandoned:
            return
        self.abandoned = True
        self._closed = True
        self._executor.shutdown(wait=False)
        log.error(
            "engine thread of model %s abandoned: a call on it is hung", self.engine.preset.name
        )

    async def close(self) -> None:
        """Let queued work finish, unload the model and stop the thread."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.engine.close)
        self._executor.shutdown(wait=False)

    async def _submit(self, call: Callable[[], T]) -> T:
        if self._closed:
            raise RuntimeError("the engine runner is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, call)

    async def _run_job(
        self,
        call: Callable[..., T],
        on_progress: AsyncProgressCallback | None,
        cancel: threading.Event | None,
    ) -> T:
        loop = asyncio.get_running_loop()
        cancel = cancel if cancel is not None else threading.Event()
        relay = _ProgressRelay(loop, on_progress) if on_progress is not None else None
        job = functools.partial(
            call, on_progress=relay.push if relay is not None else None, cancel=cancel
        )
        try:
            return await self._submit(job)
        except asyncio.CancelledError:
            # The thread cannot be interrupted; the event makes the engine stop at its next step.
            cancel.set()
            raise
        finally:
            if relay is not None:
                await relay.close()


class EngineThread(Executor):
    """One daemon thread running submitted calls in order (see the module on why a daemon)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[object], Callable[[], object]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._shutdown = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            call = functools.partial(fn, *args, **kwargs)
            self._calls.put((future, call))  # type: ignore[arg-type]
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                self._calls.put(None)
        if wait:
            self._thread.join()

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # noqa: BLE001 - the caller gets it, as ThreadPoolExecutor's
                future.set_exception(exc)
            else:
                future.set_result(result)


class _ProgressRelay:
    """Carries progress from the engine thread to the loop and delivers it in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: AsyncProgressCallback) -> None:
        self._loop = loop
        self._callback = callback
        self._queue: asyncio.Queue[Progress | None] = asyncio.Queue()
        self._task = loop.create_task(self._deliver(), name="atelier-progress")

    def push(self, progress: Progress) -> None:
        """Called on the engine thread."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, progress)

    async def close(self) -> None:
        """Deliver what is pending, then stop.

        Pushes made before the job returned were scheduled on the loop before the job's result
        was, so they are all queued by now and the end marker comes last.
        """
        self._queue.put_nowait(None)
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            self._task.cancel()
            raise

    async def _deliver(self) -> None:
        while (progress := await self._queue.get()) is not None:
            try:
                outcome = self._callback(progress)
                if inspect.isawaitable(outcome):
                    await outcome
            except asyncio.CancelledError:
                raise
            except Exception:
                # A broken progress display must not fail the job that is being displayed.
                log.exception("progress callback failed")
