"""The composition root: the one place that wires config, storage, generation and bot.

``atelier run``, ``atelier worker``, the tests and the benchmarks all start the system through
these functions. Heavy modules are imported inside them, so a worker host never imports
discord.py and ``atelier --help`` stays instant. Only this module (and the CLI) may join storage
and generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from config import ConfigError, Settings

if TYPE_CHECKING:
    from bot.app import AtelierBot
    from bot.services.intake import PromptChecker
    from generation.jobs import ModelPool
    from generation.request import GenerationRequest
    from generation.runner import EngineRunner
    from generation.worker import Worker
    from storage.db import Database
    from storage.delivery_ledger import DeliveryLedger
    from storage.images import FileImageStore
    from storage.modlog import ModerationLog
    from storage.preferences import PreferenceStore
    from storage.queue import JobQueue
    from storage.retention import Retention
    from storage.review import ReviewDesk


@dataclass
class Ledger:
    """Storage services over one database."""

    db: Database
    queue: JobQueue[GenerationRequest]
    delivery: DeliveryLedger[GenerationRequest]
    prefs: PreferenceStore
    images: FileImageStore
    #: The moderation audit log.
    modlog: ModerationLog
    #: What the retention settings let go: run in the background by the bot and by
    #: `atelier db prune`.
    retention: Retention
    #: The review queue: holds, reports, appeals, decisions and bans.
    review: ReviewDesk


@contextlib.asynccontextmanager
async def open_ledger(settings: Settings) -> AsyncIterator[Ledger]:
    """Migrate, then open the storage services; the worker and the bot both start here."""
    from generation.request import REQUEST_CODEC
    from storage.db import Database
    from storage.delivery_ledger import DeliveryLedger
    from storage.images import FileImageStore
    from storage.migrate import upgrade
    from storage.modlog import ModerationLog
    from storage.preferences import PreferenceStore
    from storage.queue import JobQueue
    from storage.quota import QuotaService
    from storage.retention import Retention
    from storage.review import ReviewDesk

    url = settings.resolved_database_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade(url)
    db = Database(url)
    try:
        quota = QuotaService(db, settings.quota)
        queue = JobQueue(db, settings.queue, quota, codec=REQUEST_CODEC)
        images = FileImageStore(settings.data_dir / "images")
        modlog = ModerationLog(db)
        yield Ledger(
            db=db,
            queue=queue,
            delivery=DeliveryLedger(
                db, codec=REQUEST_CODEC, claim_seconds=settings.bot.delivery_claim_seconds
            ),
            prefs=PreferenceStore(db),
            images=images,
            modlog=modlog,
            retention=Retention(queue, images, settings.retention, modlog=modlog),
            review=ReviewDesk(
                db,
                queue,
                claim_seconds=settings.moderation.review_claim_seconds,
                # A killed process's claim on posting an item passes on like a delivery's.
                post_claim_seconds=settings.bot.delivery_claim_seconds,
            ),
        )
    finally:
        await db.dispose()


@contextlib.asynccontextmanager
async def open_models(settings: Settings) -> AsyncIterator[ModelPool]:
    """The model pool, with the default model loaded before anything is served."""
    from generation.jobs import ModelPool

    models = ModelPool(settings)
    try:
        await models.runner(settings.model)
        yield models
    finally:
        await models.close()


#: `atelier worker`'s exit status after a job hung (see ``generation.worker``): its thread cannot
#: be interrupted, so the process exits for its supervisor (systemd, Docker) to restart it.
WORKER_HUNG_EXIT = 3


@contextlib.asynccontextmanager
async def open_worker(
    settings: Settings, ledger: Ledger, models: ModelPool | None = None
) -> AsyncIterator[Worker[GenerationRequest]]:
    """A worker running the configured models on the ledger; the default model is loaded once,
    here, unless ``models`` (shared with the bot's prompt check) is given, in which case the
    worker runs in the bot's process (``in_process``)."""
    from generation.classifier import load_classifier
    from generation.errors import OptionError
    from generation.jobs import EngineGenerator
    from generation.verdict import ClassifierPolicy, flagged_details
    from generation.worker import Worker, WorkResult
    from storage.errors import LeaseLost
    from storage.types import JobStatus

    async with contextlib.AsyncExitStack() as stack:
        in_process = models is not None
        if models is None:
            models = await stack.enter_async_context(open_models(settings))

        async def source_refs(job_id: str) -> Sequence[str]:
            # Only a succeeded job's images are ever served, to a worker as to Discord: a
            # follow-up of a job blocked since it was queued fails (refunded), it never reads
            # the images kept for the appeal.
            parent = await ledger.queue.require(job_id)
            if parent.status is not JobStatus.SUCCEEDED:
                raise OptionError(f"job {job_id} was removed by a moderator; nothing to work from")
            if not parent.showable:
                raise OptionError(f"job {job_id} is held for review; nothing to work from yet")
            if parent.pruned_at is not None:
                raise OptionError(f"the images of job {job_id} have expired; nothing to work from")
            return parent.result_refs

        # The output classifier (None unless configured) loads before anything is claimed, as
        # the default model does: a classifier that cannot load stops the start, not a job.
        classifier = await asyncio.to_thread(
            load_classifier, settings.moderation, settings.generation, settings.data_dir
        )
        generator = EngineGenerator(
            models, ledger.images, source_refs, settings.generation, classifier=classifier
        )
        judge = None
        if classifier is not None:
            policy = ClassifierPolicy.from_settings(settings.moderation)

            def judge(job: Any, result: WorkResult) -> Mapping[str, Any] | None:
                assert result.scores is not None
                restricted = bool(getattr(job, "age_restricted", False))
                return flagged_details(result.scores, policy, age_restricted=restricted)

        worker = Worker(
            ledger.queue,
            ledger.images,
            generator,
            settings.queue,
            lease_lost_errors=(LeaseLost,),
            in_process=in_process,
            judge=judge,
        )
        ledger.queue.on_new_work = worker.notify
        yield worker


class TokenCountCheck:
    """The bot's token-count check on the default model's tokenizer (CPU, microseconds).

    It has its own tokenizer copy, since the engine thread uses the engine's. Requests for other
    models are checked by the worker that runs them."""

    def __init__(self, runner: EngineRunner) -> None:
        self._engine = runner.engine
        self._counter = runner.engine.token_counter()

    def check(self, request: GenerationRequest) -> None:
        if request.model == self._engine.preset.name:
            self._engine.validate(request, counter=self._counter)


async def run_worker(settings: Settings) -> int:
    """`atelier worker`: claim and run jobs until SIGTERM/SIGINT (status 0), or until a job hangs
    (``WORKER_HUNG_EXIT``). Needs no Discord token."""
    async with open_ledger(settings) as ledger, open_worker(settings, ledger) as worker:
        worker.install_signal_handlers()
        await worker.run()
        return 0 if worker.hang is None else WORKER_HUNG_EXIT


@dataclass
class Runtime:
    """A wired bot: what tests and ``atelier run`` drive."""

    bot: AtelierBot
    ledger: Ledger
    worker: Worker[GenerationRequest] | None


def wire_bot(
    settings: Settings,
    ledger: Ledger,
    checker: PromptChecker | None,
    worker_hung: Callable[[], bool] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> AtelierBot:
    """The bot over the ledger, with every feature registered: one line per feature.
    ``worker_hung`` says whether the in-process worker stopped after a job hung. ``clock``
    is the group sessions' clock (tests move it to run a session in seconds)."""
    from bot.app import AtelierBot
    from bot.delivery_policy import InvalidRequestBudget
    from bot.edit_budget import EditBudget
    from bot.features.account import AccountFeature
    from bot.features.imagine import ImageFeature
    from bot.features.moderation import ModerationFeature
    from bot.features.review import ReviewFeature
    from bot.features.sessions import SessionFeature
    from bot.features.settings import SettingsFeature
    from bot.features.sharing import SharingFeature
    from bot.publisher import Publisher
    from bot.review_poster import ReviewPoster
    from bot.router import ButtonRouter
    from bot.services.account import AccountService
    from bot.services.guilds import GuildPresence
    from bot.services.intake import JobIntake
    from bot.services.job_cards import JobCards
    from bot.services.moderation import Moderation
    from bot.services.review import ReviewService
    from bot.services.server_settings import ServerSettings
    from bot.services.sessions import SessionService
    from bot.services.sharing import SharingService
    from bot.session_runner import SessionRunner
    from storage.sessions import SessionStore
    from storage.sharing import SharingStore
    from storage.sql import utc_now
    from storage.webdir import WebDirectory

    cards = JobCards(settings, ledger.queue, ledger.delivery, ledger.images)
    review = ReviewService(
        settings, ledger.review, ledger.queue, ledger.delivery, ledger.prefs, ledger.images
    )
    moderation = Moderation(settings, ledger.queue, ledger.prefs, ledger.modlog, review)
    intake = JobIntake(
        settings, ledger.queue, ledger.prefs, cards, moderation, checker, review=review
    )
    account = AccountService(settings, ledger.queue, ledger.prefs, cards, worker_hung)
    router = ButtonRouter()
    publisher = Publisher(
        cards,
        router,
        progress_interval=settings.bot.progress_interval_seconds,
        retry_seconds=settings.bot.delivery_retry_seconds,
        retry_max_seconds=settings.bot.delivery_retry_max_seconds,
        max_attempts=settings.bot.delivery_max_attempts,
        budget=InvalidRequestBudget(settings.bot.invalid_request_budget),
        edits=EditBudget(
            per_channel=settings.bot.edits_per_channel_per_5s,
            per_second=settings.bot.edits_per_second,
        ),
    )
    bot = AtelierBot(settings, ledger.prefs, publisher, router, GuildPresence(ledger.queue))
    poster = ReviewPoster(review, ledger.review, router)
    poster.bind(bot)
    bot.review_poster = poster
    bot.add_background("review", poster.run, stop=poster.stop)
    bot.add_feature(ImageFeature(intake, account, publisher))
    bot.add_feature(AccountFeature(account, settings.generation))
    bot.add_feature(
        SettingsFeature(
            account, ServerSettings(settings, ledger.prefs, review, WebDirectory(ledger.db))
        )
    )
    bot.add_feature(ModerationFeature(moderation, publisher))
    bot.add_feature(ReviewFeature(review, publisher, poster))
    sharing = SharingService(
        settings,
        SharingStore(
            ledger.db,
            images=ledger.images,
            query_ttl=timedelta(hours=settings.bot.search_results_hours),
            max_saved_per_user=settings.bot.saved_searches_per_member,
        ),
        ledger.queue,
        cards,
        ledger.images,
        ledger.prefs,
    )
    bot.add_feature(SharingFeature(sharing, intake, publisher))
    sessions = SessionService(
        settings,
        SessionStore(ledger.db, ledger.queue, clock=clock or utc_now),
        ledger.prefs,
        moderation,
        review,
        checker,
        names=WebDirectory(ledger.db),
    )
    cards.sessions = sessions.store
    runner = SessionRunner(
        sessions,
        router,
        ledger.images,
        publisher.edits,
        poll_seconds=settings.bot.session_poll_seconds,
        clock=clock or utc_now,
        refresh=publisher.refresh,
    )
    runner.bind(bot)
    bot.session_runner = runner
    bot.add_background("sessions", runner.run, stop=runner.stop)
    bot.add_feature(SessionFeature(sessions, runner))
    return bot


@contextlib.asynccontextmanager
async def atelier_runtime(
    settings: Settings, *, clock: Callable[[], datetime] | None = None
) -> AsyncIterator[Runtime]:
    """The bot over the ledger, plus one worker in this process unless configured off, and
    the web gallery when ``web.enabled``.

    The worker starts with the bot (setup_hook) and is stopped gracefully when it closes.
    """
    from storage.retention import RetentionLoop

    async with open_ledger(settings) as ledger, contextlib.AsyncExitStack() as stack:
        worker = None
        checker = None
        if settings.queue.run_worker_in_process:
            models = await stack.enter_async_context(open_models(settings))
            worker = await stack.enter_async_context(open_worker(settings, ledger, models))
            checker = TokenCountCheck(models.default)
        bot = wire_bot(settings, ledger, checker, _hung(worker), clock)
        if settings.web.enabled:
            from bot.web import web_server

            await stack.enter_async_context(web_server(settings, ledger.db, ledger.images))
        retention = RetentionLoop(ledger.retention)
        bot.add_background("retention", retention.run, stop=retention.stop)
        if worker is not None:
            bot.add_background("worker", worker.run, stop=worker.stop)
        try:
            yield Runtime(bot=bot, ledger=ledger, worker=worker)
        finally:
            await bot.close()


def _hung(worker: Worker[GenerationRequest] | None) -> Callable[[], bool] | None:
    if worker is None:
        return None
    return lambda: worker.hang is not None


def discord_token(settings: Settings) -> str:
    token = settings.discord.token
    if token is None or not token.get_secret_value().strip():
        raise ConfigError(
            "setting discord.token (ATELIER_DISCORD_TOKEN) is required to run the bot; "
            "see the README's 'Create the Discord application'"
        )
    return token.get_secret_value()


async def run_bot(settings: Settings) -> None:
    """`atelier run`: the bot until SIGINT/SIGTERM, then a graceful stop."""
    token = discord_token(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with atelier_runtime(settings) as runtime:
        connection = asyncio.create_task(runtime.bot.start(token), name="discord")
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        done, _ = await asyncio.wait({connection, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        await runtime.bot.close()
        if connection in done:
            connection.result()
        else:
            with contextlib.suppress(asyncio.CancelledError):
                await connection


async def run_web(settings: Settings) -> None:
    """`atelier web`: the read-only web gallery alone until SIGINT/SIGTERM. Needs only the
    database and the images directory: no Discord token, no model."""
    from bot.web import serve_web

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await serve_web(settings, stop)
