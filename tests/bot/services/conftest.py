"""The bot's Discord-free services over a real SQLite ledger (made by the composition root's
``open_ledger``), with no emulator, no model and a counting seed source."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.requester import Requester
from bot.runtime import Ledger, open_ledger
from bot.services.account import AccountService
from bot.services.intake import JobIntake
from bot.services.job_cards import JobCards
from bot.services.moderation import Moderation
from config.settings import QueueSettings, QuotaSettings, Settings
from generation.request import GenerationRequest
from storage.types import JobView

GUILD = 800
OTHER_GUILD = 801
CHANNEL = 700


def member(user_id: int = 1, guild_id: int | None = GUILD, *, is_admin: bool = False) -> Requester:
    return Requester(user_id=user_id, guild_id=guild_id, channel_id=CHANNEL, is_admin=is_admin)


class RecordingChecker:
    """A token check that records what it saw and refuses prompts containing ``refuse``."""

    def __init__(self) -> None:
        self.seen: list[GenerationRequest] = []

    def check(self, request: GenerationRequest) -> None:
        from generation.errors import OptionError

        self.seen.append(request)
        if "refuse" in request.prompt:
            raise OptionError("the prompt is too long for the text encoders")


@dataclass
class Bench:
    settings: Settings
    ledger: Ledger
    intake: JobIntake
    account: AccountService
    checker: RecordingChecker
    seeds: itertools.count[int]
    moderation: Moderation
    cards: JobCards

    async def finish(self, job_id: str) -> JobView[GenerationRequest]:
        """Run ``job_id`` as a worker would: claim it and complete it with one image ref."""
        claimed = await self.ledger.queue.claim_next("test-worker")
        assert claimed is not None and claimed.id == job_id
        return await self.ledger.queue.complete(
            claimed.id, claimed.lease_token, result_refs=[f"{job_id}/grid.png"], gpu_seconds=1.0
        )


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    settings = Settings(
        data_dir=tmp_path,
        model="tiny",
        queue=QueueSettings(run_worker_in_process=False),
        quota=QuotaSettings(user_daily_gpu_seconds=1000),
    )
    seeds = itertools.count(100)
    checker = RecordingChecker()
    async with open_ledger(settings) as ledger:
        cards = JobCards(settings, ledger.queue, ledger.delivery, ledger.images)
        moderation = Moderation(settings, ledger.queue, ledger.prefs, ledger.modlog)
        intake = JobIntake(
            settings,
            ledger.queue,
            ledger.prefs,
            cards,
            moderation,
            checker,
            seed_source=lambda: next(seeds),
        )
        account = AccountService(settings, ledger.queue, ledger.prefs, cards)
        yield Bench(settings, ledger, intake, account, checker, seeds, moderation, cards)
