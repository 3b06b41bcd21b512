"""The benchmark: batched vs naive on a warm model; the GPU mode's random full-size SDXL."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from config.settings import Settings
from generation.bench import bench_generation, bench_upscale, build_random_sdxl
from generation.engine import Engine
from generation.errors import ModelLoadError, OptionError
from generation.memory import PeakMemory, mebibytes
from generation.pipelines import assemble_model
from generation.presets import PRESETS
from generation.tiny import (
    TEXT_ENCODER_WIDTHS,
    UNET_CONFIG,
    VAE_CONFIG,
    build_vocab,
    text_encoder_config,
)
from tests.generation.conftest import make_request


def test_bench_on_the_tiny_model(tiny_settings: Settings) -> None:
    report = bench_generation(tiny_settings, gpu=False, compile=False, grids=1)
    assert report.model == "tiny" and report.device == "cpu" and report.grids == 1
    assert report.load_seconds > 0 and report.batched_seconds > 0 and report.naive_seconds > 0
    table = report.to_table()
    assert "batched (1 call/grid)" in table and "naive (4 calls/grid)" in table
    assert f"{report.speedup:.2f}x" in table
    assert "peak MiB" in table and "batched / naive peak memory" in table
    # The output classifier, unconfigured here, is measured with the tiny one.
    assert report.classifier == "tiny" and report.classified_seconds is not None
    assert report.classify_seconds is not None and report.classify_seconds > 0
    assert report.unclassified_seconds is not None and report.unclassified_seconds > 0
    assert report.classify_seconds < report.classified_seconds
    assert "batched + classifier" in table
    assert report.classifier_overhead is not None and report.classifier_overhead > 0
    assert f"(median over 1 grids): {report.classifier_overhead:.2f}x" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_bench_needs_cuda(tiny_settings: Settings) -> None:
    with pytest.raises(ModelLoadError, match="needs a CUDA GPU"):
        bench_generation(tiny_settings, gpu=True, compile=False, grids=1)


def test_random_sdxl_builder_runs_with_small_configs(tiny_settings: Settings) -> None:
    """The GPU benchmark's builder, exercised on the CPU with the tiny geometry."""
    vocab, _ = build_vocab()
    first, second = (text_encoder_config(vocab, width) for width in TEXT_ENCODER_WIDTHS)
    pipe = build_random_sdxl(
        torch.device("cpu"), torch.float32, UNET_CONFIG, VAE_CONFIG, (first, second)
    )
    preset = PRESETS["tiny"]
    model = assemble_model(preset, pipe, tiny_settings.generation, tiny_settings.data_dir)
    engine = Engine.with_model(tiny_settings, model)
    assert len(engine.generate(make_request(steps=2)).images) == 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bench_full_size(tiny_settings: Settings) -> None:
    report = bench_generation(tiny_settings, gpu=True, compile=False, grids=1)
    assert (report.width, report.height, report.dtype) == (1024, 1024, "bfloat16")
    print(report.to_table())


def test_random_sdxl_has_sdxl_base_geometry() -> None:
    """The --gpu bench must cost what SDXL costs: same parameter counts, checked on the meta
    device (no memory, no GPU)."""
    import torch

    from generation.bench import build_random_sdxl

    pipe = build_random_sdxl(torch.device("meta"), torch.bfloat16)

    def millions(module: torch.nn.Module) -> int:
        return round(sum(p.numel() for p in module.parameters()) / 1e6)

    assert millions(pipe.unet) == 2567  # SDXL base UNet: 2.567 B parameters
    assert millions(pipe.vae) == 84
    assert millions(pipe.text_encoder) == 123  # CLIP ViT-L
    assert millions(pipe.text_encoder_2) == 695  # OpenCLIP ViT-bigG
    assert pipe.vae_scale_factor == 8
    assert pipe.unet.config.addition_embed_type == "text_time"


def test_bench_upscale_compares_tiled_with_whole_image_decoding(tiny_settings: Settings) -> None:
    report = bench_upscale(tiny_settings, gpu=False, size=64, runs=1)
    assert (report.model, report.source_size, report.runs) == ("tiny", 64, 1)
    assert report.tiled_seconds > 0 and report.untiled_seconds > 0
    table = report.to_table()
    assert "64x64 -> 128x128" in table
    assert "whole image (naive)" in table and "tiled" in table


def test_bench_upscale_rejects_a_size_the_model_cannot_make(tiny_settings: Settings) -> None:
    with pytest.raises(OptionError, match="--size 100 must be a positive multiple of 16"):
        bench_upscale(tiny_settings, gpu=False, size=100, runs=1)


def test_peak_memory_sees_a_large_allocation_on_the_cpu() -> None:
    with PeakMemory(torch.device("cpu")) as peak:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB of float32, touched
        del block
    if peak.bytes is None:
        pytest.skip("this kernel does not expose a resettable peak RSS")
    assert peak.bytes >= 60 * 2**20


def test_peak_memory_is_unknown_without_proc(tmp_path: Path) -> None:
    with PeakMemory(torch.device("cpu"), proc=tmp_path / "missing") as peak:
        torch.ones(1024)
    assert peak.bytes is None
    assert mebibytes(peak.bytes) == "n/a" and mebibytes(3 * 2**20) == "3"
