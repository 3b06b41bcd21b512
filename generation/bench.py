"""``atelier bench``: what batching the grid buys, measured side by side on a warm model.

Two ways to make the same grids: ours (the four images in one batched pipeline call) and the
naive way (four single-image calls). Both run in one process on one warm model, after a warm-up
of each, so the ratio is a fair comparison. Cold start (loading the model) is reported too.
A third run measures the output image classifier (the configured one, else the tiny random one):
batched grids again, alternately without and with the classifier scoring each grid's images, so
both halves meet the same load on a shared machine and their ratio is what the classifier adds.

``gpu=True`` benchmarks full-size SDXL geometry without downloading anything: the UNet, VAE and
text encoders are built from SDXL base's real configs with random weights (speed does not depend
on the weights' values) in bfloat16 on CUDA, with SDPA attention and optionally torch.compile.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch

from config.settings import Settings
from generation.classifier import TINY_CLASSIFIER, ImageClassifier, load_classifier
from generation.engine import Engine
from generation.errors import ModelLoadError, OptionError
from generation.followups import followup_request
from generation.memory import PeakMemory, mebibytes
from generation.pipelines import assemble_model
from generation.presets import PRESETS, TINY
from generation.request import GenerationRequest, Mode, Operation
from generation.tiny import (
    BOS,
    EOS,
    SCHEDULER_CONFIG,
    build_tiny_model,
    build_vocab,
    make_tokenizer,
)

BENCH_PROMPT = "a lighthouse on a cliff at sunset, dramatic clouds, oil painting, highly detailed"
BENCH_SEED = 1234

#: stabilityai/stable-diffusion-xl-base-1.0 unet/config.json.
SDXL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "use_linear_projection": True,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 2048,
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

#: The SDXL VAE's config.json.
SDXL_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}

#: CLIP ViT-L/14's text tower (SDXL's text_encoder).
SDXL_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}

#: OpenCLIP ViT-bigG/14's text tower (SDXL's text_encoder_2).
SDXL_TEXT_ENCODER_2_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}

RANDOM_SDXL_PRESET = replace(
    PRESETS["sdxl"], name="sdxl-random", source="sdxl-random", fast_lora=None
)


@dataclass(frozen=True)
class BenchReport:
    """Timings of one benchmark run."""

    model: str
    device: str
    dtype: str
    compiled: bool
    width: int
    height: int
    steps: int
    grids: int
    load_seconds: float
    batched_seconds: float
    naive_seconds: float
    #: Peak memory beyond the warm model's, per method (None where it cannot be measured).
    batched_peak_bytes: int | None = None
    naive_peak_bytes: int | None = None
    #: The output classifier's run: batched grids, alternately without and with the
    #: classifier scoring them (``grids`` of each); its peak is the whole run's.
    classifier: str | None = None
    unclassified_seconds: float | None = None
    classified_seconds: float | None = None
    #: Of ``classified_seconds``, the time spent in the classifier alone.
    classify_seconds: float | None = None
    classified_peak_bytes: int | None = None
    #: The median over grids of (time with the classifier / time without): a median, because
    #: one grid slowed by a neighbour on a shared machine would sway a ratio of sums.
    classifier_overhead: float | None = None

    @property
    def batched_grids_per_second(self) -> float:
        return self.grids / self.batched_seconds

    @property
    def naive_grids_per_second(self) -> float:
        return self.grids / self.naive_seconds

    @property
    def speedup(self) -> float:
        """How many times faster one batched call per grid is than four single calls."""
        return self.naive_seconds / self.batched_seconds

    def to_table(self) -> str:
        """A plain-text report for the terminal."""
        compiled = ", torch.compile" if self.compiled else ""
        rows = [
            ("batched (1 call/grid)", self.batched_seconds, self.batched_peak_bytes),
            ("naive (4 calls/grid)", self.naive_seconds, self.naive_peak_bytes),
        ]
        if self.classified_seconds is not None:
            rows.insert(
                1,
                ("batched + classifier", self.classified_seconds, self.classified_peak_bytes),
            )
        lines = [
            f"model {self.model} on {self.device} ({self.dtype}{compiled}), "
            f"{self.width}x{self.height}, {self.steps} steps, {self.grids} grid(s) each way",
            f"cold start (load): {self.load_seconds:.2f} s",
            "",
            f"{'method':<24}{'seconds':>10}{'grids/s':>10}{'s/grid':>10}{'peak MiB':>10}",
        ]
        for name, seconds, peak in rows:
            lines.append(
                f"{name:<24}{seconds:>10.2f}{self.grids / seconds:>10.2f}"
                f"{seconds / self.grids:>10.3f}{mebibytes(peak):>10}"
            )
        lines.append("")
        lines.append(f"batched / naive throughput: {self.speedup:.2f}x")
        lines.append(
            f"batched / naive peak memory: {_ratio(self.batched_peak_bytes, self.naive_peak_bytes)}"
        )
        overhead = self.classifier_overhead
        if overhead is not None and self.classify_seconds is not None:
            lines.append(
                f"classifier {self.classifier}: {self.classify_seconds / self.grids:.4f} s/grid "
                f"scoring its images; with / without classifier (median over {self.grids} grids): "
                f"{overhead:.2f}x"
            )
        return "\n".join(lines)


def bench_generation(settings: Settings, gpu: bool, compile: bool, grids: int) -> BenchReport:
    """Measure grids/second and peak memory, batched vs naive, and cold start, on one warm model.

    Without ``gpu`` the configured model (``settings.model``) is used, e.g. ``tiny`` on a CPU.
    Cold start is the model load in a process that has already imported torch and diffusers.
    """
    if grids < 1:
        raise OptionError("--grids must be at least 1")
    engine, load_seconds = _bench_engine(settings, gpu, compile)
    classifier = _bench_classifier(settings)
    preset = engine.preset
    request = _bench_request(engine, preset.native_resolution)
    paired = _Paired(classifier)
    # One warm-up each: first calls pay for allocator growth, kernel selection and compilation.
    _batched(engine, request)
    _naive(engine, request)
    paired(engine, request)
    paired.reset()
    device = engine.model.device
    batched, batched_peak = _measured(device, lambda: _grids(_batched, engine, request, grids))
    naive, naive_peak = _measured(device, lambda: _grids(_naive, engine, request, grids))
    _, classified_peak = _measured(device, lambda: _grids(paired, engine, request, grids))
    model = engine.model
    return BenchReport(
        model=preset.name,
        device=str(model.device),
        dtype=_dtype_name(model.dtype),
        compiled=compile and model.device.type == "cuda",
        width=request.width,
        height=request.height,
        steps=request.steps,
        grids=grids,
        load_seconds=load_seconds,
        batched_seconds=batched,
        naive_seconds=naive,
        batched_peak_bytes=batched_peak,
        naive_peak_bytes=naive_peak,
        classifier=classifier.name,
        unclassified_seconds=paired.without,
        classified_seconds=paired.with_classifier,
        classify_seconds=paired.classifying,
        classified_peak_bytes=classified_peak,
        classifier_overhead=statistics.median(paired.ratios),
    )


def _bench_classifier(settings: Settings) -> ImageClassifier:
    """The configured output classifier, or the tiny random one when none is configured."""
    moderation = settings.moderation
    if moderation.classifier_model is None:
        moderation = moderation.model_copy(update={"classifier_model": TINY_CLASSIFIER})
    classifier = load_classifier(moderation, settings.generation, settings.data_dir)
    assert classifier is not None  # a model is named
    return classifier


class _Paired:
    """The same batched grid twice, once without the classifier and once with it scoring the
    grid's images, the order swapped from one grid to the next.

    Pairing puts both under the same load (a shared CPU's neighbours come and go), and swapping
    the order cancels what the first call of a pair pays for the second (warm caches).
    """

    def __init__(self, classifier: ImageClassifier) -> None:
        self.classifier = classifier
        self.reset()

    def reset(self) -> None:
        self.without = 0.0
        self.with_classifier = 0.0
        self.classifying = 0.0
        #: Per grid: time with the classifier / time without.
        self.ratios: list[float] = []

    def __call__(self, engine: Engine, request: GenerationRequest) -> None:
        without, with_classifier = self.without, self.with_classifier
        halves = (self._plain, self._scored)
        for half in halves if len(self.ratios) % 2 == 0 else reversed(halves):
            half(engine, request)
        self.ratios.append((self.with_classifier - with_classifier) / (self.without - without))

    def _plain(self, engine: Engine, request: GenerationRequest) -> None:
        started = time.perf_counter()
        _batched(engine, request)
        self.without += time.perf_counter() - started

    def _scored(self, engine: Engine, request: GenerationRequest) -> None:
        started = time.perf_counter()
        result = engine.generate(request)
        _synchronize()
        scoring = time.perf_counter()
        self.classifier.classify(request, result.images)
        _synchronize()
        finished = time.perf_counter()
        self.with_classifier += finished - started
        self.classifying += finished - scoring


@dataclass(frozen=True)
class UpscaleReport:
    """A 2x upscale with VAE tiling against the naive whole-image VAE, on one warm model."""

    model: str
    device: str
    dtype: str
    source_size: int
    runs: int
    untiled_seconds: float
    tiled_seconds: float
    untiled_peak_bytes: int | None
    tiled_peak_bytes: int | None

    def to_table(self) -> str:
        """A plain-text report for the terminal."""
        out = self.source_size * 2
        lines = [
            f"model {self.model} on {self.device} ({self.dtype}), 2x upscale "
            f"{self.source_size}x{self.source_size} -> {out}x{out}, {self.runs} run(s) each way",
            "",
            f"{'VAE':<24}{'s/upscale':>10}{'peak MiB':>10}",
        ]
        for name, seconds, peak in (
            ("whole image (naive)", self.untiled_seconds, self.untiled_peak_bytes),
            ("tiled", self.tiled_seconds, self.tiled_peak_bytes),
        ):
            lines.append(f"{name:<24}{seconds / self.runs:>10.3f}{mebibytes(peak):>10}")
        lines.append("")
        lines.append(
            f"tiled / whole peak memory: {_ratio(self.tiled_peak_bytes, self.untiled_peak_bytes)}"
        )
        lines.append(f"tiled / whole time: {self.tiled_seconds / self.untiled_seconds:.2f}x")
        return "\n".join(lines)


def bench_upscale(settings: Settings, gpu: bool, size: int | None, runs: int) -> UpscaleReport:
    """Time and peak memory of a 2x upscale of a ``size`` square image, VAE tiled vs whole.

    ``ATELIER_GENERATION_VAE_TILING_PIXELS`` decides which one a worker uses; this shows what the
    threshold trades. The source is a real image of the model, made first and not timed.
    """
    if runs < 1:
        raise OptionError("--runs must be at least 1")
    engine, _ = _bench_engine(settings, gpu, compile=False)
    preset = engine.preset
    size = size or preset.native_resolution
    if size < preset.size_multiple or size % preset.size_multiple:
        raise OptionError(
            f"--size {size} must be a positive multiple of {preset.size_multiple} "
            f"for model {preset.name}"
        )
    parent = _bench_request(engine, size)
    source = engine.generate(parent, only_index=0).images[0]
    request = followup_request(
        parent,
        Operation.UPSCALE_SUBTLE,
        1,
        parent_job_id="bench",
        settings=settings.generation,
        seed=BENCH_SEED,
    )

    def engine_with_tiling_above(pixels: int) -> Engine:
        generation = settings.generation.model_copy(update={"vae_tiling_pixels": pixels})
        return Engine.with_model(
            settings.model_copy(update={"generation": generation}), engine.model
        )

    device = engine.model.device
    timings: list[tuple[float, int | None]] = []
    for variant in (engine_with_tiling_above(2**62), engine_with_tiling_above(1)):
        variant.generate(request, source)  # warm-up
        upscales = partial(_repeat, variant.generate, runs, request, source)
        timings.append(_measured(device, upscales))
    (untiled, untiled_peak), (tiled, tiled_peak) = timings
    return UpscaleReport(
        model=preset.name,
        device=str(device),
        dtype=_dtype_name(engine.model.dtype),
        source_size=size,
        runs=runs,
        untiled_seconds=untiled,
        tiled_seconds=tiled,
        untiled_peak_bytes=untiled_peak,
        tiled_peak_bytes=tiled_peak,
    )


def _bench_engine(settings: Settings, gpu: bool, compile: bool) -> tuple[Engine, float]:
    """A loaded engine and its load time: random full-size SDXL on CUDA, or the configured model."""
    settings = settings.model_copy(
        update={"generation": settings.generation.model_copy(update={"compile": compile})}
    )
    if gpu:
        return _random_sdxl_engine(settings)
    engine = Engine(settings)
    if engine.preset.source == TINY:
        # Building the tiny model is a one-off, not part of starting a worker.
        build_tiny_model(settings.data_dir / "models" / TINY)
    return engine, engine.load()


def _bench_request(engine: Engine, size: int) -> GenerationRequest:
    preset = engine.preset
    return GenerationRequest(
        prompt=BENCH_PROMPT,
        width=size,
        height=size,
        seed=BENCH_SEED,
        steps=preset.quality_steps,
        guidance=preset.quality_guidance,
        mode=Mode.QUALITY,
        model=preset.name,
    )


def _reseeded(request: GenerationRequest, number: int) -> GenerationRequest:
    return request.model_copy(update={"seed": BENCH_SEED + 4 * (number + 1)})


def _grids(
    method: Callable[[Engine, GenerationRequest], None],
    engine: Engine,
    request: GenerationRequest,
    grids: int,
) -> None:
    for number in range(grids):
        method(engine, _reseeded(request, number))


def _batched(engine: Engine, request: GenerationRequest) -> None:
    engine.generate(request)
    _synchronize()


def _naive(engine: Engine, request: GenerationRequest) -> None:
    for index in range(len(request.image_seeds)):
        engine.generate(request, only_index=index)
    _synchronize()


def _measured(device: torch.device, work: Callable[[], object]) -> tuple[float, int | None]:
    """Seconds and peak memory (beyond what was in use before) of ``work``."""
    _synchronize()
    with PeakMemory(device) as peak:
        started = time.perf_counter()
        work()
        _synchronize()
        seconds = time.perf_counter() - started
    return seconds, peak.bytes


def _repeat(work: Callable[..., object], times: int, *args: object) -> None:
    for _ in range(times):
        work(*args)


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _ratio(numerator: int | None, denominator: int | None) -> str:
    if numerator is None or not denominator:
        return "n/a"
    return f"{numerator / denominator:.2f}x"


def _random_sdxl_engine(settings: Settings) -> tuple[Engine, float]:
    if not torch.cuda.is_available():
        raise ModelLoadError(
            "bench --gpu needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is "
            "False); run the benchmark without --gpu to measure the configured model here"
        )
    started = time.perf_counter()
    pipe = build_random_sdxl(torch.device("cuda"), torch.bfloat16)
    model = assemble_model(
        RANDOM_SDXL_PRESET, pipe, settings.generation, settings.data_dir, started=started
    )
    engine = Engine.with_model(settings, model)
    return engine, model.load_seconds


def build_random_sdxl(
    device: torch.device,
    dtype: torch.dtype,
    unet_config: dict[str, Any] | None = None,
    vae_config: dict[str, Any] | None = None,
    text_configs: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> Any:
    """An SDXL pipeline with random weights, built directly on ``device`` (nothing downloaded).

    Defaults are SDXL base's geometry; smaller configs (the tiny model's) exercise the same code
    on a CPU. The tokenizer is the tiny model's; its ids are valid for CLIP's 49408-token vocab.
    """
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    vocab, merges = build_vocab()
    tokenizer = make_tokenizer(vocab, merges)
    first, second = text_configs or (SDXL_TEXT_ENCODER_CONFIG, SDXL_TEXT_ENCODER_2_CONFIG)
    special = {"bos_token_id": vocab[BOS], "eos_token_id": vocab[EOS], "pad_token_id": vocab[EOS]}
    torch.manual_seed(0)
    # Building under the device context allocates and initialises weights on the GPU directly:
    # SDXL's 2.6B-parameter UNet would take minutes to initialise on the CPU.
    with device:
        text_encoder: Any = CLIPTextModel(CLIPTextConfig(**{**first, **special}))
        text_encoder_2: Any = CLIPTextModelWithProjection(CLIPTextConfig(**{**second, **special}))
        unet: Any = UNet2DConditionModel(**(unet_config or SDXL_UNET_CONFIG))
        vae: Any = AutoencoderKL(**(vae_config or SDXL_VAE_CONFIG))
    for module in (text_encoder, text_encoder_2, unet, vae):
        module.to(dtype)
    pipe: Any = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG),
    )
    return pipe.to(device)
