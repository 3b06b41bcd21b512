"""``atelier bench``: what batching the grid buys, measured side by side on a warm model.

Two ways to make the same grids: ours (the four images in one batched pipeline call) and the
naive way (four single-image calls). Both run in one process on one warm model, after a warm-up
of each, so the ratio is a fair comparison. Cold start (loading the model) is reported too.

``gpu=True`` benchmarks full-size SDXL geometry without downloading anything: the UNet, VAE and
text encoders are built from SDXL base's real configs with random weights (speed does not depend
on the weights' values) in bfloat16 on CUDA, with SDPA attention and optionally torch.compile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from config.settings import Settings
from generation.engine import Engine
from generation.errors import ModelLoadError
from generation.pipelines import assemble_model
from generation.presets import PRESETS, TINY
from generation.request import GenerationRequest, Mode
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
            ("batched (1 call/grid)", self.batched_seconds, self.batched_grids_per_second),
            ("naive (4 calls/grid)", self.naive_seconds, self.naive_grids_per_second),
        ]
        lines = [
            f"model {self.model} on {self.device} ({self.dtype}{compiled}), "
            f"{self.width}x{self.height}, {self.steps} steps, {self.grids} grid(s) each way",
            f"cold start (load): {self.load_seconds:.2f} s",
            "",
            f"{'method':<24}{'seconds':>10}{'grids/s':>10}{'s/grid':>10}",
        ]
        for name, seconds, rate in rows:
            lines.append(f"{name:<24}{seconds:>10.2f}{rate:>10.2f}{seconds / self.grids:>10.3f}")
        lines.append("")
        lines.append(f"batched / naive throughput: {self.speedup:.2f}x")
        return "\n".join(lines)


def bench_generation(settings: Settings, gpu: bool, compile: bool, grids: int) -> BenchReport:
    """Measure grids/second batched vs naive, and cold start, on one warm model.

    Without ``gpu`` the configured model (``settings.model``) is used, e.g. ``tiny`` on a CPU.
    Cold start is the model load in a process that has already imported torch and diffusers.
    """
    if grids < 1:
        raise ValueError("grids must be at least 1")
    settings = settings.model_copy(
        update={"generation": settings.generation.model_copy(update={"compile": compile})}
    )
    if gpu:
        engine, load_seconds = _random_sdxl_engine(settings)
    else:
        engine = Engine(settings)
        if engine.preset.source == TINY:
            # Building the tiny model is a one-off, not part of starting a worker.
            build_tiny_model(settings.data_dir / "models" / TINY)
        load_seconds = engine.load()
    preset = engine.preset
    request = GenerationRequest(
        prompt=BENCH_PROMPT,
        width=preset.native_resolution,
        height=preset.native_resolution,
        seed=BENCH_SEED,
        steps=preset.quality_steps,
        guidance=preset.quality_guidance,
        mode=Mode.QUALITY,
        model=preset.name,
    )
    # One warm-up each: first calls pay for allocator growth, kernel selection and compilation.
    _batched(engine, request)
    _naive(engine, request)
    batched = _timed(lambda: _grids(_batched, engine, request, grids))
    naive = _timed(lambda: _grids(_naive, engine, request, grids))
    model = engine.model
    return BenchReport(
        model=preset.name,
        device=str(model.device),
        dtype=str(model.dtype).removeprefix("torch."),
        compiled=compile and model.device.type == "cuda",
        width=request.width,
        height=request.height,
        steps=request.steps,
        grids=grids,
        load_seconds=load_seconds,
        batched_seconds=batched,
        naive_seconds=naive,
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


def _timed(work: Callable[[], None]) -> float:
    _synchronize()
    started = time.perf_counter()
    work()
    _synchronize()
    return time.perf_counter() - started


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


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
