"""The engine in bfloat16, the dtype the GPU benchmark uses, run on the CPU.

CI has no GPU, so this is where reduced-precision mistakes show up: float32 noise or embeddings
meeting bfloat16 weights, previews and images made from bfloat16 latents, the LoRA and the VAE
tiling in bfloat16. Every operation a worker runs goes through it once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from config.settings import GenerationSettings, Settings
from generation.engine import Engine
from generation.request import Mode, Operation, SourceImage
from generation.results import Progress
from tests.generation.conftest import make_request


@pytest.fixture(scope="module")
def bf16_engine(tiny_settings: Settings) -> Iterator[Engine]:
    generation = GenerationSettings(dtype="bfloat16", vae_tiling_pixels=100 * 100)
    engine = Engine(tiny_settings.model_copy(update={"generation": generation}))
    engine.load()
    yield engine
    engine.close()


def _assert_real_images(images: tuple[object, ...], size: tuple[int, int]) -> None:
    for image in images:
        pixels = np.asarray(image)
        assert image.size == size  # type: ignore[attr-defined]
        assert pixels.std() > 0  # not a blank (NaN-turned-black) image


def test_the_model_really_is_bfloat16(bf16_engine: Engine) -> None:
    model = bf16_engine.model
    assert model.dtype is torch.bfloat16
    for module in (model.txt2img.unet, model.txt2img.vae, model.txt2img.text_encoder_2):
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}


def test_grid_with_chaos_previews_and_fast_mode(bf16_engine: Engine) -> None:
    updates: list[Progress] = []
    result = bf16_engine.generate(make_request(chaos=40, steps=4), on_progress=updates.append)
    _assert_real_images(result.images, (128, 128))
    assert [u.preview for u in updates if u.preview is not None]
    fast = bf16_engine.generate(make_request(mode=Mode.FAST, steps=2, guidance=1.0))
    _assert_real_images(fast.images, (128, 128))
    again = bf16_engine.generate(make_request(chaos=40, steps=4))
    assert [np.asarray(i).tobytes() for i in again.images] == [
        np.asarray(i).tobytes() for i in result.images
    ]


@pytest.mark.parametrize(
    "operation", [Operation.VARY_STRONG, Operation.UPSCALE_CREATIVE], ids=["vary", "upscale"]
)
def test_follow_ups(bf16_engine: Engine, operation: Operation) -> None:
    source = bf16_engine.generate(make_request(steps=2), only_index=0).images[0]
    size = (256, 256) if operation.is_upscale else (128, 128)
    request = make_request(
        operation=operation,
        source=SourceImage(job_id="parent", index=1),
        strength=0.5,
        width=size[0],
        height=size[1],
        steps=4,
    )
    # The upscale is over vae_tiling_pixels here, so its VAE runs tiled in bfloat16 too.
    result = bf16_engine.generate(request, source)
    _assert_real_images(result.images, size)
    assert len(result.images) == operation.image_count


def test_tiled_seamless_grid(bf16_engine: Engine) -> None:
    result = bf16_engine.generate(make_request(tile=True, steps=2))
    _assert_real_images(result.images, (128, 128))
