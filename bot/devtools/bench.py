"""`atelier bench bot` and `atelier bench batching`: the wired system, measured.

``bench bot`` drives the real bot (discord.py, the ledger, the publisher and a worker with a
zero-cost generator) through the Discord API emulator (``bot.devtools.emulator``, the one the
end-to-end tests use). The emulator runs on its own thread and event loop, so the event-loop lag
reported is the bot's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import statistics
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image
from pydantic import SecretStr

from bot.app import AtelierBot
from bot.devtools.emulator import DiscordEmulator, EmuUser, RateLimits
from bot.publisher import Publisher
from bot.runtime import Ledger, open_ledger, open_worker, wire_bot
from config.settings import DiscordSettings, QueueSettings, QuotaSettings, Settings
from generation.worker import ClaimedJobLike, JobControl, OutputImage, Worker, WorkResult

T = TypeVar("T")


class ZeroCostGenerator:
    """A generator that makes a tiny grid at once: the bench measures everything but the GPU."""

    def __init__(self) -> None:
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (90, 120, 200)).save(buffer, format="PNG")
        self._png = buffer.getvalue()

    async def run(self, job: ClaimedJobLike[object], control: JobControl) -> WorkResult:
        images = [OutputImage(f"{i}.png", self._png) for i in range(4)]
        return WorkResult(images=(*images, OutputImage("grid.png", self._png)), gpu_seconds=0.0)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


@dataclass(frozen=True)
class BotBenchReport:
    interactions: int
    users: int
    seconds: float
    acked: int
    ack_p50_ms: float
    ack_p99_ms: float
    ack_max_ms: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    posted: int
    violations: int

    def table(self) -> str:
        return "\n".join(
            [
                f"bench bot: {self.interactions} /imagine from {self.users} users "
                f"in {self.seconds:.1f} s (zero-cost generator, Discord API emulator)",
                "metric                          p50        p99        max",
                f"acknowledgement latency   {self.ack_p50_ms:8.1f} ms {self.ack_p99_ms:7.1f} ms "
                f"{self.ack_max_ms:7.1f} ms",
                f"bot event-loop lag        {self.lag_p50_ms:8.1f} ms {self.lag_p99_ms:7.1f} ms "
                f"{self.lag_max_ms:7.1f} ms",
                f"acknowledged within 3 s: {self.acked}/{self.interactions}; results posted: "
                f"{self.posted}; Discord rule violations: {self.violations}",
            ]
        )


@contextlib.asynccontextmanager
async def emulated(
    settings: Settings,
    token: str,
    guild: int,
    channel: int,
    queue: QueueSettings,
    bot_updates: dict[str, Any],
    *,
    rate_limits: RateLimits | None = None,
) -> AsyncIterator[tuple[DiscordEmulator, EmulatorThread, Settings]]:
    """A Discord API emulator on its own thread, and ``settings`` pointed at it with a scratch
    data dir, ``queue``, an unlimited quota and ``bot_updates``: what every bot bench runs in."""
    with EmulatorThread() as thread, tempfile.TemporaryDirectory() as scratch:
        emu = DiscordEmulator(
            token=token,
            application_id=guild + 2,
            guild_id=guild,
            channel_ids=[channel],
            rate_limits=rate_limits,
        )
        await thread.call(emu.__aenter__())
        try:
            yield (
                emu,
                thread,
                settings.model_copy(
                    update={
                        "data_dir": Path(scratch),
                        "database_url": None,
                        "discord": DiscordSettings(
                            token=SecretStr(token),
                            api_base_url=emu.api_base_url,
                            gateway_url=emu.gateway_url,
                            guild_id=guild,
                        ),
                        "queue": queue,
                        "quota": QuotaSettings(user_daily_gpu_seconds=10**9),
                        "bot": settings.bot.model_copy(update=bot_updates),
                    }
                ),
            )
        finally:
            await thread.call(emu.__aexit__(None, None, None))


class EmulatorThread:
    """The emulator on its own loop in a thread; ``call`` runs a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="emulator", daemon=True)

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def call(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return asyncio.wrap_future(future)


async def _lag_probe(samples: list[float], stop: asyncio.Event, interval: float = 0.02) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(interval)
        samples.append(max(0.0, time.perf_counter() - start - interval) * 1000)


async def bench_bot(
    settings: Settings, interactions: int = 1000, users: int = 50, seconds: float = 60.0
) -> str:
    """Fire ``interactions`` /imagine commands from ``users`` users spread over ``seconds``."""
    token = "bench.bot.token"
    guild, channel = 1_000_000_000_000_000_001, 1_000_000_000_000_000_002
    queue = QueueSettings(
        max_running_per_user=2,
        max_queued_per_user=interactions,
        poll_seconds=0.2,
        # A load test: the per-user new-jobs rate limit would refuse most of it.
        new_jobs_per_window=0,
    )
    bot_updates = {"progress_interval_seconds": 2.0, "delivery_retry_seconds": 1.0}
    async with emulated(settings, token, guild, channel, queue, bot_updates) as (emu, thread, run):
        report = await _drive(run, emu, thread, interactions, users, seconds, token)
    return report.table()


async def _drive(
    settings: Settings,
    emu: DiscordEmulator,
    thread: EmulatorThread,
    interactions: int,
    users: int,
    seconds: float,
    token: str,
) -> BotBenchReport:
    async with open_ledger(settings) as ledger:
        worker = Worker(ledger.queue, ledger.images, ZeroCostGenerator(), settings.queue)
        ledger.queue.on_new_work = worker.notify
        bot = wire_bot(settings, ledger, None)
        publisher = bot.publisher
        bot.add_background("worker", worker.run, stop=worker.stop)
        people = [emu.make_user(name=f"user{i}") for i in range(users)]
        lag: list[float] = []
        stop = asyncio.Event()
        async with connected(bot, token, emu, thread):
            probe = asyncio.create_task(_lag_probe(lag, stop))
            rng = random.Random(7)
            latencies = await _fire(emu, thread, people, interactions, seconds, rng)
            stop.set()
            await probe
            posted = await _all_posted(ledger, publisher, people)
        violations = len(emu.violations)
    elapsed = [x for x in latencies if x is not None]
    return BotBenchReport(
        interactions=interactions,
        users=users,
        seconds=seconds,
        acked=sum(1 for x in elapsed if x < 3000),
        ack_p50_ms=statistics.median(elapsed) if elapsed else 0.0,
        ack_p99_ms=_percentile(elapsed, 0.99),
        ack_max_ms=max(elapsed, default=0.0),
        lag_p50_ms=statistics.median(lag) if lag else 0.0,
        lag_p99_ms=_percentile(lag, 0.99),
        lag_max_ms=max(lag, default=0.0),
        posted=posted,
        violations=violations,
    )


async def _all_posted(ledger: Ledger, publisher: Publisher, people: list[EmuUser]) -> int:
    """How many results were posted, waiting (bounded) for the last ones to go out."""
    ids = [
        job.id
        for person in people
        for job in await ledger.queue.list_for_user(person.id, limit=100_000)
    ]
    waits = [asyncio.wait_for(publisher.wait_posted(job_id), timeout=60) for job_id in ids]
    results = await asyncio.gather(*waits, return_exceptions=True)
    return sum(1 for result in results if not isinstance(result, BaseException))


@contextlib.asynccontextmanager
async def connected(
    bot: AtelierBot, token: str, emu: DiscordEmulator, thread: EmulatorThread
) -> AsyncIterator[None]:
    async with bot:
        connection = asyncio.create_task(bot.start(token), name="bench-bot")
        try:
            await thread.call(emu.wait_until_connected())
            yield
        finally:
            await bot.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(connection, timeout=30)


async def _fire(
    emu: DiscordEmulator,
    thread: EmulatorThread,
    people: list[EmuUser],
    interactions: int,
    seconds: float,
    rng: random.Random,
) -> list[float | None]:
    gap = seconds / interactions
    start = time.perf_counter()

    async def one(number: int) -> float | None:
        user = people[number % len(people)]
        prompt = f"bench prompt {number} --ar {rng.choice(['1:1', '3:2', '2:3'])}"

        async def send_and_ack() -> float | None:
            sent = time.perf_counter()
            handle = await emu.send_slash_command("imagine", {"prompt": prompt}, user=user)
            try:
                await handle.wait_for_ack(timeout=10)
            except TimeoutError:
                return None
            acked = (time.perf_counter() - sent) * 1000
            # /imagine defers before it stores the job and edits @original once it has: wait
            # for that, or the last jobs are not in the ledger yet when the results are counted.
            with contextlib.suppress(TimeoutError):
                await handle.wait_for_original(timeout=60)
            return acked

        return await thread.call(send_and_ack())

    tasks = []
    for number in range(interactions):
        delay = start + number * gap - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the load, not waiting for a condition
        tasks.append(asyncio.create_task(one(number)))
    return list(await asyncio.gather(*tasks))


async def bench_batching(settings: Settings, jobs: int = 16) -> str:
    """Tiny-model grids/s for a queue of compatible jobs, cross-job batching off vs on."""
    from generation.options import parse_imagine_prompt
    from storage.types import JobKind, NewJob, Owner

    rows = []
    for batching in (False, True):
        with tempfile.TemporaryDirectory() as scratch:
            data = Path(scratch)
            models = settings.data_dir.resolve() / "models"
            models.mkdir(parents=True, exist_ok=True)
            (data / "models").symlink_to(models)
            run_settings = settings.model_copy(
                update={
                    "data_dir": data,
                    "database_url": None,
                    "model": "tiny",
                    "queue": QueueSettings(
                        batching=batching,
                        max_batch=4,
                        max_queued_per_user=jobs,
                        max_running_per_user=4,
                        new_jobs_per_window=0,
                        poll_seconds=0.05,
                    ),
                    "quota": QuotaSettings(user_daily_gpu_seconds=10**9),
                    "bot": settings.bot.model_copy(
                        update={"progress_interval_seconds": 2.0, "delivery_retry_seconds": 1.0}
                    ),
                }
            )
            async with (
                open_ledger(run_settings) as ledger,
                open_worker(run_settings, ledger) as worker,
            ):
                requests = parse_imagine_prompt(
                    "a lighthouse at dusk --seed 1",
                    settings=run_settings.generation,
                    model="tiny",
                )
                for number in range(jobs):
                    request = requests[0]
                    await ledger.queue.enqueue(
                        Owner(user_id=1 + number % 4),
                        NewJob(
                            kind=JobKind.IMAGINE,
                            request=request,
                            mode=request.mode.value,
                            estimated_cost=1.0,
                            batch_key=request.batch_key(),
                        ),
                    )
                started = time.perf_counter()
                while worker.stats.succeeded < jobs:
                    if not await worker.run_once():
                        raise RuntimeError("the queue ran dry before every job finished")
                elapsed = time.perf_counter() - started
                rows.append((batching, elapsed, worker.stats.batches))
    off, on = rows
    return "\n".join(
        [
            f"bench batching: {jobs} compatible tiny-model grids, one worker",
            "batching   seconds   grids/s   pipeline calls",
            *(
                f"{'on ' if b else 'off'}       {t:7.2f}   {jobs / t:7.2f}   {len(calls)}"
                for b, t, calls in rows
            ),
            f"on / off throughput: {off[1] / on[1]:.2f}x",
        ]
    )
