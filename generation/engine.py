"""The generation engine: one warm SDXL model turning requests into images.

:class:`Engine` is synchronous and not thread-safe; it is meant to live in one dedicated thread
(:class:`generation.runner.EngineRunner`). Every job is one pipeline call:

* imagine: the four grid images in one batched call, image *i* from its own seed
  ``request.image_seeds[i]``, so any image can be re-made alone (``only_index``);
* variations: img2img from the chosen image, four images in one call;
* upscales: the image resized 2x (Lanczos), then img2img at that size;
* select: no model at all.

Progress and cancellation run through diffusers' ``callback_on_step_end``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from config.settings import Settings
from generation.errors import GenerationError, JobCancelledError, OptionError, OutOfMemoryError
from generation.pipelines import LoadedModel, free_memory, load_model
from generation.presets import ModelPreset, resolve_preset
from generation.preview import latents_preview
from generation.prompts import PromptEmbeddings, PromptEncoder, TokenCounter
from generation.request import MAX_SEED, GenerationRequest, Mode, Operation
from generation.results import GenerationResult, Progress, Timings
from generation.tiling import seamless, vae_tiling
from generation.weights import MAX_PART_WEIGHT, MAX_TOKEN_WEIGHT, check_prompt_syntax

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]

#: Offsets the chaos noise's seed from the image's latent seed, so the two streams differ.
_CHAOS_SALT = 0x9E3779B9


@dataclass(frozen=True)
class _Share:
    """One request's images in a (possibly batched) pipeline call."""

    request: GenerationRequest
    seeds: tuple[int, ...]


@dataclass
class _CallClock:
    started: float
    encoded: float = 0.0
    denoised: float = 0.0
    finished: float = 0.0


class Engine:
    """Loads one model once and generates every kind of job with it.

    ``model`` overrides ``settings.model`` (a worker may keep one engine per enabled model).
    Nothing is loaded until :meth:`load` or the first job.
    """

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        self.settings = settings
        self._generation = settings.generation
        self.preset: ModelPreset = resolve_preset(
            model or settings.model, settings.generation.fast_lora
        )
        self._model: LoadedModel | None = None
        self._encoder: PromptEncoder | None = None
        #: Pipeline calls made so far (one per job, or per batch of jobs).
        self.pipeline_calls = 0

    @classmethod
    def with_model(cls, settings: Settings, model: LoadedModel) -> Engine:
        """An engine around a model that is already loaded (e.g. the benchmark's random SDXL)."""
        engine = cls(settings, model=model.preset.name)
        engine.preset = model.preset
        engine._model = model
        engine._encoder = PromptEncoder(model.txt2img, model.device, model.dtype)
        return engine

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> LoadedModel:
        """The warm model, loaded on first use."""
        self.load()
        assert self._model is not None
        return self._model

    def load(self) -> float:
        """Load the model if it is not loaded yet; return the seconds this call spent loading."""
        if self._model is not None:
            return 0.0
        started = time.perf_counter()
        model = load_model(self.preset, self._generation, self.settings.data_dir)
        self._encoder = PromptEncoder(model.txt2img, model.device, model.dtype)
        self._model = model
        seconds = time.perf_counter() - started
        log.info("loaded model %s on %s in %.1fs", self.preset.name, model.device, seconds)
        return seconds

    def close(self) -> None:
        """Drop the model and give its memory back."""
        self._model = None
        self._encoder = None
        free_memory()

    @property
    def fast_available(self) -> bool:
        return self.model.fast_available

    # -- validation --------------------------------------------------------------------------

    def validate(self, request: GenerationRequest, counter: TokenCounter | None = None) -> None:
        """Raise OptionError (or PromptTooLongError) if this model cannot serve ``request``.

        ``counter`` lets a thread other than the engine's check token counts on its own
        tokenizer copy (see :meth:`token_counter`)."""
        if request.operation is Operation.SELECT:
            return
        if request.model != self.preset.name:
            raise OptionError(f"this worker runs model {self.preset.name!r}, not {request.model!r}")
        if request.mode is Mode.FAST and self.preset.fast_lora is None:
            raise OptionError(f"model {self.preset.name!r} has no fast mode; use --quality")
        multiple = self.preset.size_multiple
        if request.operation is Operation.IMAGINE and (
            request.width % multiple or request.height % multiple
        ):
            raise OptionError(
                f"{request.width}x{request.height} is not a size model {self.preset.name!r} "
                f"can make: width and height must be multiples of {multiple}"
            )
        check_prompt_syntax(request.prompt)
        if request.negative_prompt:
            check_prompt_syntax(request.negative_prompt)
        model = self.model
        if request.mode is Mode.FAST and model.fast_unavailable is not None:
            raise OptionError(model.fast_unavailable)
        checker = counter or self._prompt_encoder()
        checker.check_length(request.prompt)
        if request.negative_prompt:
            checker.check_length(request.negative_prompt, what="negative prompt")

    # -- jobs --------------------------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest,
        source_image: Image.Image | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        *,
        only_index: int | None = None,
    ) -> GenerationResult:
        """Run one job and return its images.

        ``source_image`` is the chosen image for variations, upscales and select.
        ``only_index`` (0-based) makes just that image of the job, from its own seed: the
        same pixels as in the full grid, up to float rounding of the batched maths.
        Raises OptionError, JobCancelledError (when ``cancel`` is set; nothing is returned),
        OutOfMemoryError (retryable) or ModelLoadError.
        """
        if request.operation is Operation.SELECT:
            return self._select(request, source_image)
        load_seconds = self.load()
        self.validate(request)
        _check_cancel(cancel)
        seeds = request.image_seeds
        if only_index is not None:
            if not 0 <= only_index < len(seeds):
                raise OptionError(
                    f"image index {only_index} is out of range for {request.operation.value} "
                    f"(0 to {len(seeds) - 1})"
                )
            seeds = (seeds[only_index],)
        if request.operation is Operation.IMAGINE:
            if source_image is not None:
                raise OptionError("an imagine request takes no source image")
            share = _Share(request, seeds)
            return self._imagine([share], on_progress, cancel, load_seconds)[0]
        if source_image is None:
            raise OptionError(f"{request.operation.value} needs the source image")
        return self._img2img(
            _Share(request, seeds), source_image, on_progress, cancel, load_seconds
        )

    def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[GenerationResult]:
        """Make several imagine jobs with equal ``batch_key()`` in ONE pipeline call.

        Each job keeps its own prompt, seeds and chaos; progress names the job by
        ``Progress.batch_index``. Each request is checked (:meth:`validate`) before anything
        runs, and one invalid request fails the whole batch.
        """
        if not requests:
            return []
        if any(r.operation is not Operation.IMAGINE for r in requests):
            raise ValueError("only imagine requests can be batched")
        if len({r.batch_key() for r in requests}) != 1:
            raise ValueError("batched requests must have equal batch_key()")
        load_seconds = self.load()
        for request in requests:
            self.validate(request)
        _check_cancel(cancel)
        shares = [_Share(request, request.image_seeds) for request in requests]
        return self._imagine(shares, on_progress, cancel, load_seconds)

    # -- the three kinds of work -------------------------------------------------------------

    def _select(
        self, request: GenerationRequest, source_image: Image.Image | None
    ) -> GenerationResult:
        if source_image is None:
            raise OptionError("select needs the source image")
        return GenerationResult(
            images=(source_image,),
            seeds=request.image_seeds,
            width=source_image.width,
            height=source_image.height,
            request=request,
            timings=Timings(),
            gpu_seconds=0.0,
        )

    def _imagine(
        self,
        shares: list[_Share],
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
        load_seconds: float,
    ) -> list[GenerationResult]:
        model = self.model
        first = shares[0].request
        guided = self._uses_guidance(first)
        clock = _CallClock(started=time.perf_counter())
        try:
            embeds, pooled, negative, negative_pooled = self._batch_embeddings(shares, guided)
            clock.encoded = time.perf_counter()
            kwargs: dict[str, Any] = {
                "prompt_embeds": embeds,
                "pooled_prompt_embeds": pooled,
                "width": first.width,
                "height": first.height,
                "num_inference_steps": first.steps,
                "guidance_scale": first.guidance,
                "generator": _generators(shares),
            }
            if guided:
                kwargs["negative_prompt_embeds"] = negative
                kwargs["negative_pooled_prompt_embeds"] = negative_pooled
            images = self._call(
                model.txt2img,
                kwargs,
                request=first,
                stop_after=first.denoise_steps,
                shares=shares,
                pixels=first.width * first.height,
                on_progress=on_progress,
                cancel=cancel,
                clock=clock,
            )
        except torch.OutOfMemoryError as exc:
            raise self._out_of_memory(first, sum(len(s.seeds) for s in shares)) from exc
        results = []
        offset = 0
        total = sum(len(share.seeds) for share in shares)
        for share in shares:
            count = len(share.seeds)
            results.append(
                self._result(share, images[offset : offset + count], clock, load_seconds, total)
            )
            offset += count
        return results

    def _img2img(
        self,
        share: _Share,
        source_image: Image.Image,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
        load_seconds: float,
    ) -> GenerationResult:
        model = self.model
        request = share.request
        assert request.strength is not None  # the request model guarantees it
        source = source_image.convert("RGB")
        target = (
            (source.width * 2, source.height * 2) if request.operation.is_upscale else source.size
        )
        # The UNet needs sizes in multiples of the preset's step; work at the next such size
        # and resize back, so the output is exactly the promised size.
        multiple = self.preset.size_multiple
        work = (
            math.ceil(target[0] / multiple) * multiple,
            math.ceil(target[1] / multiple) * multiple,
        )
        image = source if source.size == work else source.resize(work, Image.Resampling.LANCZOS)
        steps, actual = img2img_steps(request.steps, request.strength)
        stop_after = max(1, -(-actual * request.stop // 100))
        guided = self._uses_guidance(request)
        clock = _CallClock(started=time.perf_counter())
        try:
            embeds, pooled, negative, negative_pooled = self._batch_embeddings(
                [share], guided, chaos=False
            )
            clock.encoded = time.perf_counter()
            kwargs: dict[str, Any] = {
                "image": image,
                "strength": request.strength,
                "prompt_embeds": embeds,
                "pooled_prompt_embeds": pooled,
                "num_inference_steps": steps,
                "guidance_scale": request.guidance,
                "generator": _generators([share]),
            }
            if guided:
                kwargs["negative_prompt_embeds"] = negative
                kwargs["negative_pooled_prompt_embeds"] = negative_pooled
            images = self._call(
                model.img2img,
                kwargs,
                request=request,
                stop_after=stop_after,
                shares=[share],
                pixels=work[0] * work[1],
                on_progress=on_progress,
                cancel=cancel,
                clock=clock,
            )
        except torch.OutOfMemoryError as exc:
            raise self._out_of_memory(request, len(share.seeds), size=work) from exc
        if work != target:
            images = [img.resize(target, Image.Resampling.LANCZOS) for img in images]
        return self._result(share, images, clock, load_seconds, len(share.seeds))

    # -- helpers -----------------------------------------------------------------------------

    def token_counter(self) -> TokenCounter:
        """A token counter with its own tokenizer, safe to use beside a running job."""
        return TokenCounter.copy_of(self.model.txt2img.tokenizer)

    def _prompt_encoder(self) -> PromptEncoder:
        self.load()
        assert self._encoder is not None
        return self._encoder

    def _uses_guidance(self, request: GenerationRequest) -> bool:
        # diffusers runs the unconditional half only when guidance > 1 (LCM's 1.0 skips it).
        unet_config = self.model.txt2img.unet.config
        return request.guidance > 1.0 and unet_config.get("time_cond_proj_dim") is None

    def _batch_embeddings(
        self, shares: list[_Share], guided: bool, chaos: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Prompt embeddings for every image of every share, in call order."""
        encoder = self._prompt_encoder()
        embeds, pooled, negative, negative_pooled = [], [], [], []
        for share in shares:
            request = share.request
            positive = encoder.encode(request.prompt)
            negative_embeddings = (
                encoder.encode_negative(request.negative_prompt, like=positive) if guided else None
            )
            for seed in share.seeds:
                image_embeddings = _with_chaos(positive, seed, request.chaos) if chaos else positive
                embeds.append(image_embeddings.embeds)
                pooled.append(image_embeddings.pooled)
                if negative_embeddings is not None:
                    negative.append(negative_embeddings.embeds)
                    negative_pooled.append(negative_embeddings.pooled)
        tensors = (
            torch.cat(embeds),
            torch.cat(pooled),
            torch.cat(negative) if negative else None,
            torch.cat(negative_pooled) if negative_pooled else None,
        )
        # A NaN or infinity here would denoise into an all-black grid that looks like success.
        for tensor in tensors:
            if tensor is not None and not bool(torch.isfinite(tensor).all()):
                raise GenerationError(
                    "the prompt's weights made its text embeddings infinite or NaN; "
                    f"use smaller weights (at most {MAX_TOKEN_WEIGHT:g} per word, "
                    f"{-MAX_PART_WEIGHT:g} to {MAX_PART_WEIGHT:g} per `::` part)"
                )
        return tensors

    def _call(
        self,
        pipe: Any,
        kwargs: dict[str, Any],
        *,
        request: GenerationRequest,
        stop_after: int,
        shares: list[_Share],
        pixels: int,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
        clock: _CallClock,
    ) -> list[Image.Image]:
        """One pipeline call with progress, --stop, cancellation, mode, tiling and timings."""
        model = self.model
        preview_every = self._generation.preview_every

        def on_step_end(
            pipeline: Any, index: int, timestep: torch.Tensor, tensors: dict[str, torch.Tensor]
        ) -> dict[str, torch.Tensor]:
            step = index + 1
            if cancel is not None and cancel.is_set():
                # Raised inside the loop: diffusers stops at once, and nothing is decoded.
                raise JobCancelledError("the job was cancelled")
            last = step >= stop_after
            if last:
                # --stop (or the final step): diffusers skips remaining steps and decodes.
                pipeline._interrupt = True
                clock.denoised = time.perf_counter()
            if on_progress is not None:
                latents = tensors["latents"]
                show = last or step % preview_every == 0
                offset = 0
                for batch_index, share in enumerate(shares):
                    count = len(share.seeds)
                    preview = latents_preview(latents[offset : offset + count]) if show else None
                    on_progress(Progress(step, stop_after, preview, batch_index))
                    offset += count
            return {}

        model.use_mode(pipe, request.mode)
        self.pipeline_calls += 1
        with (
            seamless(pipe.unet, pipe.vae, enabled=request.tile),
            vae_tiling(pipe.vae, pixels > self._generation.vae_tiling_pixels),
        ):
            output = pipe(
                **kwargs,
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents"],
                output_type="pil",
            )
        clock.finished = time.perf_counter()
        if not clock.denoised:
            clock.denoised = clock.finished
        return list(output.images)

    def _result(
        self,
        share: _Share,
        images: Sequence[Image.Image],
        clock: _CallClock,
        load_seconds: float,
        batch_images: int,
    ) -> GenerationResult:
        """``share``'s result; the call's time is split by image, so a job batched with others
        is charged for its own images' part (a single image a quarter of a grid's)."""
        work = clock.finished - clock.started
        timings = Timings(
            load=load_seconds,
            encode=clock.encoded - clock.started,
            denoise=clock.denoised - clock.encoded,
            decode=clock.finished - clock.denoised,
            total=load_seconds + work,
        )
        return GenerationResult(
            images=tuple(images),
            seeds=share.seeds,
            width=images[0].width,
            height=images[0].height,
            request=share.request,
            timings=timings,
            gpu_seconds=work * len(share.seeds) / batch_images,
        )

    def _out_of_memory(
        self, request: GenerationRequest, images: int, size: tuple[int, int] | None = None
    ) -> OutOfMemoryError:
        free_memory()
        width, height = size if size is not None else (request.width, request.height)
        log.warning("out of memory: %d images at %dx%d", images, width, height)
        return OutOfMemoryError(
            f"the {self.model.device.type} ran out of memory making {images} image(s) at "
            f"{width}x{height}; the job will be retried when memory is free"
        )


def img2img_steps(steps: int, strength: float) -> tuple[int, int]:
    """``(num_inference_steps, steps actually run)`` for img2img at ``strength``.

    diffusers runs ``int(steps * strength)`` of the schedule; a low strength with few steps
    (fast mode: 4 steps at 0.2) would run none, so the schedule is lengthened until one runs.
    """
    total = steps
    while int(total * strength) < 1:
        total += 1
    return total, min(int(total * strength), total)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise JobCancelledError("the job was cancelled before it started")


def _generators(shares: Sequence[_Share]) -> list[torch.Generator]:
    # CPU generators: the same seed gives the same noise on every device and machine.
    return [torch.Generator("cpu").manual_seed(seed) for share in shares for seed in share.seeds]


def _with_chaos(embeddings: PromptEmbeddings, seed: int, chaos: int) -> PromptEmbeddings:
    """Perturb the prompt embeddings by Gaussian noise of ``chaos``% of their spread.

    The noise comes from the image's own seed, so an image re-made alone gets the same push.
    """
    if chaos == 0:
        return embeddings
    generator = torch.Generator("cpu").manual_seed((seed + _CHAOS_SALT) % (MAX_SEED + 1))
    amount = chaos / 100
    embeds = embeddings.embeds.float().cpu()
    pooled = embeddings.pooled.float().cpu()
    # Per-channel spread over the tokens, leaving out the start token: its activations are
    # huge and identical for every prompt, and would swamp the scale.
    spread = embeds[:, 1:].std(dim=1, keepdim=True)
    noise = torch.randn(embeds.shape, generator=generator) * spread * amount
    noise[:, 0] = 0
    pooled_noise = torch.randn(pooled.shape, generator=generator) * pooled.std() * amount
    return PromptEmbeddings(
        embeds=(embeds + noise).to(embeddings.embeds),
        pooled=(pooled + pooled_noise).to(embeddings.pooled),
    )
