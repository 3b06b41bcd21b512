"""Single-file SDXL checkpoints (``ATELIER_MODEL=model.safetensors``), offline.

The tiny model, exported to the original Stability layout, loads back through the product path
with every weight equal and makes the same pixels as the tiny diffusers directory, within a
stated tolerance. Without a local config, a broken file or a file that is no SDXL checkpoint,
loading fails with one message.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from config.settings import GenerationSettings, Settings
from generation.engine import Engine
from generation.pipelines import load_model
from generation.presets import resolve_preset
from generation.tiny import LORA_WEIGHT_NAME, tiny_lora_path
from tests.generation.conftest import load_error, make_request
from tests.generation.images import CROSS_PATH, assert_images_close, assert_images_differ
from tests.generation.single_file import export_sdxl_single_file

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def tiny_dir(tiny_data_dir: Path) -> Path:
    return tiny_data_dir / "models" / "tiny"


@pytest.fixture(scope="module")
def tiny_file(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as one original-layout SDXL checkpoint."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_dir))
    target = tmp_path_factory.mktemp("single-file") / "tiny-sdxl.safetensors"
    return export_sdxl_single_file(pipe, target)


def _forced_on_cpu(data_dir: Path, model: Path) -> Settings:
    """Settings that load ``model`` (SDXL-sized as far as presets know) on this CPU."""
    return Settings(
        data_dir=data_dir, model=str(model), generation=GenerationSettings(allow_large_on_cpu=True)
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_weight_loads_back_exactly(
    tiny_file: Path, tiny_dir: Path, tiny_data_dir: Path, dtype: str
) -> None:
    from diffusers import StableDiffusionXLPipeline

    settings = GenerationSettings(
        device="cpu", dtype=dtype, allow_large_on_cpu=True, single_file_config=str(tiny_dir)
    )
    loaded = load_model(resolve_preset(str(tiny_file)), settings, tiny_data_dir)
    torch_dtype = getattr(torch, dtype)
    reference = StableDiffusionXLPipeline.from_pretrained(str(tiny_dir), dtype=torch_dtype)
    for name in COMPONENTS:
        expected = dict(getattr(reference, name).named_parameters())
        actual = dict(getattr(loaded.txt2img, name).named_parameters())
        assert actual.keys() == expected.keys(), name
        for key, value in expected.items():
            assert actual[key].dtype == torch_dtype, f"{name}.{key}"
            # Exact on every CPU: loading only copies, renames, splits and transposes the same
            # float32 values, and bfloat16's round-to-nearest-even cast is the same everywhere.
            assert torch.equal(actual[key], value), f"{name}.{key}"
    assert loaded.txt2img.scheduler.config == reference.scheduler.config


@pytest.mark.cross_path
def test_same_pixels_as_the_diffusers_directory(
    tiny_file: Path, tiny_dir: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generation = GenerationSettings(device="cpu", allow_large_on_cpu=True)
    directory = Engine(Settings(data_dir=tiny_data_dir, model=str(tiny_dir), generation=generation))
    # Through the environment, as an operator sets it.
    monkeypatch.setenv("ATELIER_GENERATION_SINGLE_FILE_CONFIG", str(tiny_dir))
    single = Engine(
        Settings(
            data_dir=tiny_data_dir,
            model=str(tiny_file),
            generation={"device": "cpu", "allow_large_on_cpu": True},
        )
    )
    assert single.settings.generation.single_file_config == str(tiny_dir)
    expected = directory.generate(make_request(model=str(tiny_dir), steps=3))
    actual = single.generate(make_request(model=str(tiny_file), steps=3))
    assert actual.seeds == expected.seeds
    # Every weight is equal (above) with the same strides, but the two loads leave the weights
    # at other memory alignments, so the vectorized kernels split their loops differently and
    # round differently in the last bits: a level off in a few values, by CPU and capability.
    assert_images_close(actual.images, expected.images, CROSS_PATH)
    # The tolerance still tells a different picture apart.
    other = directory.generate(make_request(model=str(tiny_dir), steps=3, seed=4321))
    assert_images_differ(other.images, expected.images, CROSS_PATH)


def test_without_a_local_config_offline_names_the_setting(
    tiny_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    # Offline (tests/conftest.py sets it before the hub is imported, which reads it then) with
    # an empty hub cache, whatever this machine has downloaded.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    message = load_error(_forced_on_cpu(tmp_path, tiny_file))
    assert f"cannot load single-file model {str(tiny_file)!r}" in message
    assert (
        "set ATELIER_GENERATION_SINGLE_FILE_CONFIG to a local diffusers SDXL directory" in message
    )


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_broken_file_is_one_clear_error(tiny_file: Path, tmp_path: Path, damage: str) -> None:
    broken = tmp_path / "broken.safetensors"
    data = tiny_file.read_bytes()
    broken.write_bytes(b"not a checkpoint" * 8 if damage == "garbage" else data[: len(data) // 2])
    message = load_error(_forced_on_cpu(tmp_path, broken))
    assert f"model file {str(broken)!r} is not a readable .safetensors file" in message


def test_a_file_that_is_no_sdxl_checkpoint_is_refused(tiny_dir: Path, tmp_path: Path) -> None:
    lora = tiny_lora_path(tiny_dir) / LORA_WEIGHT_NAME
    message = load_error(_forced_on_cpu(tmp_path, lora))
    assert "is not an SDXL checkpoint in the original single-file layout" in message
    assert "model.diffusion_model.label_emb.0.0.weight" in message


def test_a_bad_config_setting_is_named(tiny_file: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for value, problem in [
        (str(tmp_path / "empty"), "is not a diffusers pipeline directory"),
        (str(tmp_path / "nowhere" / "config"), "is neither an existing directory nor a hub id"),
    ]:
        generation = GenerationSettings(allow_large_on_cpu=True, single_file_config=value)
        message = load_error(
            Settings(data_dir=tmp_path, model=str(tiny_file), generation=generation)
        )
        assert f"ATELIER_GENERATION_SINGLE_FILE_CONFIG={value!r} {problem}" in message
