"""The publisher's loop ends when the bot closes, even when a job was just announced.

A wake that lands within a few event-loop turns of the cancel (the last job is announced as the
bot closes) was swallowed by ``asyncio.wait_for`` on Python 3.11: it returned the finished wait
instead of raising ``CancelledError``, the loop polled on, and ``AtelierBot.close`` awaited it
forever. The stops are bounded here so that a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest

from bot.app import AtelierBot
from bot.publisher import Publisher
from bot.router import ButtonRouter
from bot.services.job_cards import JobCards
from config.settings import Settings
from generation.request import GenerationRequest
from storage.types import JobView

STOP_SECONDS = 5.0


class NoJobs:
    """Cards with nothing to deliver: the loop only waits and sweeps."""

    def __init__(self) -> None:
        self.sweeps = 0

    async def undelivered_jobs(self) -> list[JobView[GenerationRequest]]:
        self.sweeps += 1
        return []


class NoMeta:
    async def get_meta(self, key: str) -> str | None:
        return None

    async def set_meta(self, key: str, value: str) -> None:
        return None


def idle_publisher(cards: NoJobs) -> Publisher:
    return Publisher(cast(JobCards, cards), ButtonRouter(), progress_interval=0.2, poll_seconds=0.5)


async def turns(count: int) -> None:
    """Let the event loop run ``count`` times (no wall-clock wait)."""
    for _ in range(count):
        await asyncio.sleep(0)


@pytest.mark.parametrize("turns_between", [0, 1, 2, 3])
async def test_cancel_ends_the_loop_even_as_a_wake_arrives(turns_between: int) -> None:
    cards = NoJobs()
    publisher = idle_publisher(cards)
    loop_task = asyncio.create_task(publisher.run(), name="publisher")
    publisher.wake()
    await turns(5)
    assert cards.sweeps == 1  # the loop is running and back in its wait
    publisher.wake()
    await turns(turns_between)
    loop_task.cancel()
    done, _ = await asyncio.wait({loop_task}, timeout=STOP_SECONDS)
    assert loop_task in done, "the publisher's loop ignored its cancellation"
    assert loop_task.cancelled()


class NoGuilds:
    """Guild membership that records nothing (these tests never connect)."""

    async def removed(self, guild_id: int) -> int:
        return 0

    async def present(self, guild_ids: Sequence[int]) -> None:
        return None

    async def reconcile(self, guild_ids: Sequence[int]) -> list[int]:
        return []


async def test_bot_close_stops_a_publisher_that_was_just_woken(tmp_path: Path) -> None:
    cards = NoJobs()
    publisher = idle_publisher(cards)
    bot = AtelierBot(Settings(data_dir=tmp_path), NoMeta(), publisher, ButtonRouter(), NoGuilds())
    bot.start_task("publisher", publisher.run)
    await turns(5)
    publisher.wake()  # announce() wakes the loop as its last step, as the bot may be closing
    closing = asyncio.create_task(bot.close())
    # asyncio.wait, which does not cancel on timeout: a close that swallowed that cancel would
    # return and hide the hang.
    done, _ = await asyncio.wait({closing}, timeout=STOP_SECONDS)
    try:
        assert closing in done, "AtelierBot.close did not finish"
    finally:
        closing.cancel()
    closing.result()


async def test_a_cancelled_close_is_not_swallowed(tmp_path: Path) -> None:
    """close() waits for its cancelled tasks; cancelling that wait (a caller's timeout) must
    cancel close() too, not be taken for the task's own end."""
    bot = AtelierBot(
        Settings(data_dir=tmp_path), NoMeta(), idle_publisher(NoJobs()), ButtonRouter(), NoGuilds()
    )
    release = asyncio.Event()

    async def swallows_one_cancel() -> None:  # what the publisher's loop used to do
        try:
            await release.wait()
        except asyncio.CancelledError:
            await release.wait()

    bot.start_task("publisher", swallows_one_cancel)
    await turns(3)
    closing = asyncio.create_task(bot.close())
    await turns(3)
    closing.cancel()
    done, _ = await asyncio.wait({closing}, timeout=STOP_SECONDS)
    release.set()
    await bot.close()
    assert closing in done and closing.cancelled()
