"""`atelier bench bot --queued N`: a result's way out past a flood of position edits.

``N`` queued jobs in one channel, whose messages all want a position edit, against the
emulator with Discord's rate limits on (5 edits per 5 s per channel, 50 requests/s in all).
Once the publisher is busy with them, one job finishes. Measured, for the naive publisher (every
due message edited in one sequential pass; discord.py sleeps on each exhausted bucket) and the
budgeted one, side by side in one run: the time from "ready" to "posted" for that result, the
429s the emulator sent, and the requests the bot made meanwhile.

The messages are edited through the channel route, as after a restart or once the interaction
tokens have expired (15 minutes): the jobs are seeded into the ledger with messages the bot
"posted" earlier.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.devtools.bench import EmulatorThread, ZeroCostGenerator, connected, emulated
from bot.devtools.emulator import DiscordEmulator, RateLimits, RecordedRequest
from bot.runtime import Ledger, open_ledger, wire_bot
from config.settings import QueueSettings, Settings
from generation.options import parse_imagine_prompt
from generation.worker import ClaimedJobLike, JobControl, Worker, WorkResult
from storage.types import JobKind, NewJob, Owner

GUILD, CHANNEL = 1_000_000_000_000_000_011, 1_000_000_000_000_000_012
TOKEN = "bench.edits.token"
#: Edits the publisher must have made before the first job is finished: it is mid-flood.
FLOOD_STARTED = 3


@dataclass(frozen=True)
class EditRun:
    """One publisher's numbers."""

    name: str
    ready_to_posted: float | None  # None: not posted within the cap
    rate_limited: int  # 429s the emulator sent
    requests: int  # requests the bot made, from start to posted (or the cap)
    edits: int  # of which message edits
    granted: int
    refused: int
    edits_before_result: int  # position edits Discord saw before the result (all, if never)


@dataclass(frozen=True)
class EditBenchReport:
    queued: int
    cap: float
    runs: tuple[EditRun, EditRun]

    def table(self) -> str:
        naive, budget = self.runs

        def seconds(run: EditRun) -> str:
            value = run.ready_to_posted
            return f"{value:8.2f} s" if value is not None else f"  > {self.cap:.0f} s"

        def ratio(a: float | None, b: float | None, *, bound: bool = False) -> str:
            if a is None or b is None or b == 0:
                return "n/a"
            return f"{'>= ' if bound else ''}{a / b:.1f}x"

        time_ratio = ratio(
            naive.ready_to_posted if naive.ready_to_posted is not None else self.cap,
            budget.ready_to_posted,
            bound=naive.ready_to_posted is None,
        )
        lines = [
            f"bench bot --queued {self.queued}: one result ready while {self.queued} queued "
            "messages in one channel want edits",
            "(Discord API emulator with rate limits: 5 edits/5 s per channel, 50 requests/s)",
            "publisher   ready->posted   429s   requests   edits   budget granted/refused",
            *(
                f"{run.name:<10} {seconds(run):>14} {run.rate_limited:6d} {run.requests:10d} "
                f"{run.edits:7d}   {run.granted}/{run.refused}"
                for run in self.runs
            ),
            f"naive / budgeted ready->posted: {time_ratio}; 429s: "
            f"{naive.rate_limited} vs {budget.rate_limited}; requests: "
            f"{ratio(float(naive.requests), float(budget.requests))}",
        ]
        return "\n".join(lines)


class _Ready:
    """A zero-cost generator that notes which job it finished."""

    def __init__(self) -> None:
        self.inner = ZeroCostGenerator()
        self.finished: list[str] = []

    async def run(self, job: ClaimedJobLike[object], control: JobControl) -> WorkResult:
        result = await self.inner.run(job, control)
        self.finished.append(job.id)
        return result


async def bench_edits(settings: Settings, queued: int = 500, cap: float = 60.0) -> str:
    """The naive publisher, then the budgeted one, each with ``queued`` queued jobs."""
    naive = await measure_publisher(settings, "naive", queued, cap, budget=False)
    budgeted = await measure_publisher(settings, "budgeted", queued, cap, budget=True)
    return EditBenchReport(queued, cap, (naive, budgeted)).table()


async def measure_publisher(
    settings: Settings, name: str, queued: int, cap: float, *, budget: bool
) -> EditRun:
    """One publisher (naive, or with the edit budget) through the flood; see the module."""
    edits = {} if budget else {"edits_per_channel_per_5s": 0, "edits_per_second": 0}
    queue = QueueSettings(max_queued_per_user=queued, new_jobs_per_window=0, poll_seconds=0.2)
    async with emulated(
        settings,
        TOKEN,
        GUILD,
        CHANNEL,
        queue,
        {"progress_interval_seconds": 2.0, **edits},
        rate_limits=RateLimits(),
    ) as (emu, thread, run_settings):
        return await _measure(run_settings, emu, thread, name, queued, cap)


async def _seed(
    settings: Settings, ledger: Ledger, emu: DiscordEmulator, thread: EmulatorThread, queued: int
) -> None:
    """``queued`` jobs whose messages the bot posted before (their tokens long expired)."""
    request = parse_imagine_prompt(
        "a lighthouse at dusk", settings=settings.generation, model=settings.model
    )[0]
    expired = datetime.now(UTC) - timedelta(hours=1)

    async def post() -> list[int]:
        bot = emu.bot_user
        return [emu.post_message(CHANNEL, content="Queued.", author=bot).id for _ in range(queued)]

    message_ids = await thread.call(post())
    for message_id in message_ids:
        job = await ledger.queue.enqueue(
            Owner(user_id=7, guild_id=GUILD, channel_id=CHANNEL),
            NewJob(
                kind=JobKind.IMAGINE,
                request=request,
                mode=request.mode.value,
                estimated_cost=1.0,
                batch_key=request.batch_key(),
            ),
        )
        await ledger.delivery.attach_message(job.id, message_id, interaction_expires_at=expired)


async def _result_edit(
    emu: DiscordEmulator,
    message_id: int,
    since: int,
    cap: float,
) -> RecordedRequest:
    """The edit that put the result (an image) into the job's message, as Discord saw it."""
    return await emu.wait_for_request(
        lambda r: (
            r.status == 200 and r.params.get("message_id") == str(message_id) and bool(r.files)
        ),
        route="edit_message",
        since=since,
        timeout=cap,
    )


async def _requests_since(emu: DiscordEmulator, start: int) -> list[RecordedRequest]:
    return emu.requests(since=start)


async def _measure(
    settings: Settings,
    emu: DiscordEmulator,
    thread: EmulatorThread,
    name: str,
    queued: int,
    cap: float,
) -> EditRun:
    async with open_ledger(settings) as ledger:
        await _seed(settings, ledger, emu, thread, queued)
        generator = _Ready()
        worker = Worker(ledger.queue, ledger.images, generator, settings.queue)
        bot = wire_bot(settings, ledger, None)
        start = emu.mark()
        async with connected(bot, TOKEN, emu, thread):

            async def flooded() -> None:
                await emu.recorder.signal.wait_for(
                    lambda: (
                        True
                        if len(emu.requests("edit_message", since=start)) >= FLOOD_STARTED
                        else None
                    ),
                    60.0,
                    lambda: f"{FLOOD_STARTED} message edits",
                )

            await thread.call(flooded())
            if not await worker.run_once():
                raise RuntimeError("no job to finish")
            ready = time.monotonic()
            job = await ledger.queue.require(generator.finished[0])
            posted: float | None = None
            result_seq: int | None = None
            with contextlib.suppress(TimeoutError):
                shown = await thread.call(_result_edit(emu, job.message_id or 0, start, cap))
                posted, result_seq = shown.at - ready, shown.seq
            made = await thread.call(_requests_since(emu, start))
            counters = bot.publisher.edits.counters
            run = EditRun(
                name=name,
                ready_to_posted=posted,
                rate_limited=sum(1 for r in made if r.status == 429),
                requests=len(made),
                edits=sum(1 for r in made if r.route == "edit_message"),
                granted=counters.granted,
                refused=counters.refused,
                edits_before_result=sum(
                    1
                    for r in made
                    if r.route == "edit_message" and (result_seq is None or r.seq < result_seq)
                ),
            )
    return run
