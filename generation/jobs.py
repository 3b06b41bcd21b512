"""The worker's generator: ledger jobs in, encoded images out, on the warm engine.

Satisfies ``generation.worker.BatchGenerator[GenerationRequest]``. Jobs arrive decoded (the
ledger's codec is ``REQUEST_CODEC``) and are checked once, against the model that runs them, by
``Engine.generate``/``generate_batch`` (``Engine.validate``). Each job's individual images are
stored losslessly (``0.png``..``3.png``, what follow-ups start from) and, for a grid, ``grid``
comes last: it is what gets posted, encoded to fit Discord's attachment limit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from PIL import Image

from config.settings import GenerationSettings, Settings
from generation.classifier import ImageClassifier
from generation.commands import grid_metadata
from generation.engine import Engine
from generation.errors import GenerationError, ModelLoadError, OptionError
from generation.grid import compose_grid, encode_image
from generation.request import GenerationRequest
from generation.results import GenerationResult, Progress
from generation.runner import EngineRunner
from generation.verdict import Scores
from generation.worker import ClaimedJobLike, ImageSink, JobControl, OutputImage, WorkResult

log = logging.getLogger(__name__)

#: The refs a finished job recorded, by job id (the ledger's ``result_refs``).
SourceRefs = Callable[[str], Awaitable[Sequence[str]]]
PREVIEW_LIMIT = 256 * 1024


class ModelPool:
    """One warm runner per model name: the default one loaded at start, others (enabled with
    ``ATELIER_GENERATION_ENABLED_MODELS``) loaded when a job first asks for them.

    At most ``max_loaded_models`` stay loaded: before another is loaded, the least recently used
    models other than the default are unloaded. The default always stays (the bot checks prompts
    with its tokenizer). If a load still runs out of memory, every other model is unloaded and
    the load tried once more. A worker runs one job (or batch) at a time, so a model being
    unloaded is never one that a job is using.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: Least recently used first.
        self._runners: OrderedDict[str, EngineRunner] = OrderedDict()
        self._lock = asyncio.Lock()

    @property
    def default(self) -> EngineRunner:
        return self._runners[self.settings.model]

    @property
    def loaded(self) -> list[str]:
        """The loaded models' names, least recently used first."""
        return list(self._runners)

    async def runner(self, model: str) -> EngineRunner:
        async with self._lock:
            runner = self._runners.get(model)
            if runner is not None:
                self._runners.move_to_end(model)
                return runner
            await self._unload_until(self.settings.generation.max_loaded_models - 1)
            try:
                runner = await self._load(model)
            except ModelLoadError as exc:
                if not (exc.out_of_memory and self._unloadable()):
                    raise
                log.warning("out of memory loading model %s; unloading the others, retrying", model)
                await self._unload_until(0)
                runner = await self._load(model)
            self._runners[model] = runner
            return runner

    def abandon(self) -> None:
        """A job's call hung on an engine thread: abandon every loaded runner (they share one
        device, and the stuck one is not known for sure) and forget them. Nothing waits for
        their threads again; a later ``runner()`` would load the model afresh."""
        for runner in self._runners.values():
            runner.abandon()
        self._runners.clear()

    async def close(self) -> None:
        for runner in self._runners.values():
            await runner.close()
        self._runners.clear()

    async def _load(self, model: str) -> EngineRunner:
        runner = EngineRunner(Engine(self.settings, model=model))
        try:
            await runner.load()
        except BaseException:
            await runner.close()
            raise
        return runner

    def _unloadable(self) -> list[str]:
        return [name for name in self._runners if name != self.settings.model]

    async def _unload_until(self, count: int) -> None:
        """Unload least recently used models (never the default) until ``count`` are left."""
        for name in self._unloadable():
            if len(self._runners) <= count:
                return
            await self._runners.pop(name).close()
            log.info("unloaded model %s to make room for another", name)


class EngineGenerator:
    """Runs ledger jobs on the warm engine of the model each job names.

    With a ``classifier`` (``ATELIER_MODERATION_CLASSIFIER_MODEL``), each job's images are scored
    on the same engine thread right after they are made, and the scores travel with the
    ``WorkResult``; without one, nothing is scored and results carry ``scores=None``.
    """

    def __init__(
        self,
        models: ModelPool,
        images: ImageSink,
        source_refs: SourceRefs,
        settings: GenerationSettings,
        classifier: ImageClassifier | None = None,
    ) -> None:
        self.models = models
        self.images = images
        self.source_refs = source_refs
        self.settings = settings
        self.classifier = classifier

    def abandon(self) -> None:
        """The worker's watchdog found a job hung: see ``ModelPool.abandon``."""
        self.models.abandon()

    async def run(self, job: ClaimedJobLike[GenerationRequest], control: JobControl) -> WorkResult:
        request = job.request
        runner = await self.models.runner(request.model)
        source = await self._source_image(request)
        cancel = threading.Event()
        async with _linked(control, cancel):
            result = await runner.generate(
                request, source, on_progress=_progress_to(control), cancel=cancel
            )
        scores = await self._classify(runner, result)
        encoded = await asyncio.to_thread(self._encode, result, job.kind)
        return dataclasses.replace(encoded, scores=scores)

    async def run_batch(
        self, jobs: Sequence[ClaimedJobLike[GenerationRequest]], controls: Sequence[JobControl]
    ) -> Sequence[WorkResult]:
        requests = [job.request for job in jobs]
        runner = await self.models.runner(requests[0].model)  # one batch key, one model
        cancel = threading.Event()
        reporters = [_progress_to(control) for control in controls]

        def on_progress(progress: Progress) -> None:
            reporters[progress.batch_index](progress)

        # One call serves them all, so the batch stops only when every job in it was cancelled.
        async with _linked_all(controls, cancel):
            results = await runner.generate_batch(requests, on_progress, cancel)
        outputs = []
        for result, job in zip(results, jobs, strict=True):
            scores = await self._classify(runner, result)
            encoded = await asyncio.to_thread(self._encode, result, job.kind)
            outputs.append(dataclasses.replace(encoded, scores=scores))
        return outputs

    async def _classify(
        self, runner: EngineRunner, result: GenerationResult
    ) -> tuple[Scores, ...] | None:
        """The classifier's scores of ``result``'s images, or None without a classifier."""
        if self.classifier is None:
            return None
        call = functools.partial(self.classifier.classify, result.request, result.images)
        return tuple(await runner.call(call))

    async def _source_image(self, request: GenerationRequest) -> Image.Image | None:
        if request.source is None:
            return None
        refs = await self.source_refs(request.source.job_id)
        index = request.source.index
        if index > len(refs):
            raise OptionError(f"job {request.source.job_id} has no image {index} to work from")
        data = await self.images.get(refs[index - 1])
        return await asyncio.to_thread(_decode, data)

    def _encode(self, result: GenerationResult, kind: str) -> WorkResult:
        metadata = grid_metadata(result, kind)
        outputs = []
        for number, image in enumerate(result.images):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=False)
            outputs.append(OutputImage(f"{number}.png", buffer.getvalue()))
        if len(result.images) > 1:
            grid = encode_image(
                compose_grid(result.images),
                self.settings.attachment_limit_bytes,
                metadata,
                stem="grid",
            )
            outputs.append(OutputImage(grid.filename, grid.data))
        else:
            single = encode_image(
                result.images[0], self.settings.attachment_limit_bytes, metadata, stem="image"
            )
            outputs[-1] = OutputImage(single.filename, single.data)
        return WorkResult(images=tuple(outputs), gpu_seconds=result.gpu_seconds)


def _decode(data: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except OSError as exc:
        raise GenerationError(f"the source image cannot be read: {exc}") from None


def _progress_to(control: JobControl) -> Callable[[Progress], None]:
    def report(progress: Progress) -> None:
        preview = None
        if progress.preview is not None:
            preview = encode_image(progress.preview, PREVIEW_LIMIT, {}, stem="preview").data
        control.report_progress(progress.step, progress.total, preview)

    return report


class _linked:
    """While open, a cancel of ``control`` sets the engine's ``cancel`` event."""

    def __init__(self, control: JobControl, cancel: threading.Event) -> None:
        self._controls = [control]
        self._cancel = cancel
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        await asyncio.gather(*(control.wait_cancelled() for control in self._controls))
        self._cancel.set()

    async def __aenter__(self) -> None:
        if all(control.cancelled for control in self._controls):
            self._cancel.set()
        self._task = asyncio.create_task(self._watch(), name="cancel-link")

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise


class _linked_all(_linked):
    def __init__(self, controls: Sequence[JobControl], cancel: threading.Event) -> None:
        super().__init__(controls[0], cancel)
        self._controls = list(controls)
