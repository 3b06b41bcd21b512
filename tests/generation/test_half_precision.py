"""The engine in half precision, run on the CPU: bfloat16 (the GPU benchmark's dtype) and float16
(the default on CUDA).

CI has no GPU, so this is where reduced-precision mistakes show up: float32 noise or embeddings
meeting half-precision weights, previews and images made from half-precision latents, the LoRA
and the VAE tiling, and float16's VAE upcast. Every operation a worker runs goes through it once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from config.settings import GenerationSettings, Settings
from generation.engine import Engine
from generation.pipelines import assemble_model
from generation.presets import PRESETS
from generation.request import Mode, Operation, SourceImage
from generation.results import Progress
from tests.generation.conftest import make_request
from tests.generation.images import EXACT, assert_images_close


@pytest.fixture(scope="module", params=["bfloat16", "float16"])
def half_engine(request: pytest.FixtureRequest, tiny_settings: Settings) -> Iterator[Engine]:
    generation = GenerationSettings(vae_tiling_pixels=100 * 100)
    settings = tiny_settings.model_copy(update={"generation": generation})
    if request.param == "bfloat16":
        engine = Engine(settings.model_copy(update={"generation": generation.model_copy(
            update={"dtype": "bfloat16"})}))  # fmt: skip
        engine.load()
    else:
        # The settings refuse float16 on a CPU (it is meant for GPUs), so load it directly,
        # through the same assembly a worker's load ends with.
        from diffusers import StableDiffusionXLPipeline

        pipe = StableDiffusionXLPipeline.from_pretrained(
            str(tiny_settings.data_dir / "models" / "tiny"), dtype=torch.float16
        )
        model = assemble_model(PRESETS["tiny"], pipe, generation, tiny_settings.data_dir)
        engine = Engine.with_model(settings, model)
    yield engine
    engine.close()


def _assert_real_images(images: tuple[Image.Image, ...], size: tuple[int, int]) -> None:
    for image in images:
        pixels = np.asarray(image)
        assert image.size == size
        assert pixels.std() > 0  # not a blank (NaN-turned-black) image


def test_the_model_really_is_half_precision(half_engine: Engine) -> None:
    model = half_engine.model
    assert model.dtype in (torch.bfloat16, torch.float16)
    for pipe in (model.txt2img, model.img2img):
        for module in (pipe.unet, pipe.vae, pipe.text_encoder_2):
            assert {p.dtype for p in module.parameters()} == {model.dtype}


def test_grid_with_chaos_previews_and_fast_mode(half_engine: Engine) -> None:
    updates: list[Progress] = []
    result = half_engine.generate(make_request(chaos=40, steps=4), on_progress=updates.append)
    _assert_real_images(result.images, (128, 128))
    assert [u.preview for u in updates if u.preview is not None]
    fast = half_engine.generate(make_request(mode=Mode.FAST, steps=2, guidance=1.0))
    _assert_real_images(fast.images, (128, 128))
    again = half_engine.generate(make_request(chaos=40, steps=4))
    # Exact on every CPU: the same call on the same machine, twice.
    assert_images_close(again.images, result.images, EXACT)


@pytest.mark.parametrize(
    "operation", [Operation.VARY_STRONG, Operation.UPSCALE_CREATIVE], ids=["vary", "upscale"]
)
def test_follow_ups(half_engine: Engine, operation: Operation) -> None:
    source = half_engine.generate(make_request(steps=2), only_index=0).images[0]
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
    result = half_engine.generate(request, source)
    _assert_real_images(result.images, size)
    assert len(result.images) == operation.image_count
    # float16's VAE runs upcast to float32 for the call; it must come back afterwards.
    model = half_engine.model
    assert {p.dtype for p in model.txt2img.vae.parameters()} == {model.dtype}


def test_tiled_seamless_grid(half_engine: Engine) -> None:
    result = half_engine.generate(make_request(tile=True, steps=2))
    _assert_real_images(result.images, (128, 128))
