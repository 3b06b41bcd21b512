"""Loading: every failure is one ModelLoadError naming the model and the fix."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from config.settings import GenerationSettings, Settings
from generation.engine import Engine
from generation.errors import ModelLoadError, OptionError
from generation.pipelines import load_model, resolve_device
from generation.presets import resolve_preset
from generation.request import Mode
from generation.tiny import tiny_lora_path
from tests.generation.conftest import load_error, make_request

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")


def test_unknown_model(tmp_path: Path) -> None:
    message = load_error(Settings(data_dir=tmp_path, model="definitely-not-a-model"))
    assert "unknown model 'definitely-not-a-model'" in message
    assert "sdxl, sdxl-lcm, tiny" in message


def test_missing_local_directory_and_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model"
    assert "does not exist" in load_error(Settings(data_dir=tmp_path, model=str(missing)))
    file = tmp_path / "missing.safetensors"
    assert "does not exist" in load_error(Settings(data_dir=tmp_path, model=str(file)))
    (tmp_path / "empty").mkdir()
    message = load_error(Settings(data_dir=tmp_path, model=str(tmp_path / "empty")))
    assert "not a diffusers pipeline" in message


@no_cuda
def test_full_size_model_is_refused_without_a_gpu(tmp_path: Path) -> None:
    message = load_error(Settings(data_dir=tmp_path, model="sdxl"))
    assert "'sdxl' is a full-size model" in message
    assert "ATELIER_MODEL=tiny" in message
    assert "ATELIER_GENERATION_ALLOW_LARGE_ON_CPU=true" in message


def test_offline_hub_model_says_how_to_download(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        model="atelier-tests/not-in-the-cache",
        generation=GenerationSettings(allow_large_on_cpu=True),
    )
    message = load_error(settings)
    assert "not in the local Hugging Face cache" in message
    assert "huggingface-cli download atelier-tests/not-in-the-cache" in message
    assert "ATELIER_MODEL=tiny" in message


@no_cuda
def test_device_settings() -> None:
    assert resolve_device(GenerationSettings()) == (torch.device("cpu"), torch.float32)
    assert resolve_device(GenerationSettings(dtype="bfloat16"))[1] is torch.bfloat16
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        resolve_device(GenerationSettings(device="cuda"))
    with pytest.raises(ModelLoadError, match="float16 does not work on CPU"):
        resolve_device(GenerationSettings(dtype="float16"))


def test_local_directory_loads_and_a_missing_lora_only_disables_fast_mode(
    tiny_data_dir: Path,
) -> None:
    """Any diffusers directory loads through from_pretrained; its preset's LCM-LoRA (a hub id,
    offline here) cannot load, so quality works and fast requests get a clear OptionError."""
    directory = str(tiny_data_dir / "models" / "tiny")
    settings = Settings(
        data_dir=tiny_data_dir,
        model=directory,
        generation=GenerationSettings(allow_large_on_cpu=True),
    )
    engine = Engine(settings)
    assert len(engine.generate(make_request(model=directory, steps=2)).images) == 4
    assert not engine.fast_available
    with pytest.raises(OptionError, match="latent-consistency/lcm-lora-sdxl"):
        engine.validate(make_request(model=directory, mode=Mode.FAST, steps=4, guidance=1.0))


def test_fast_default_model_without_its_lora_fails_to_load(tiny_data_dir: Path) -> None:
    preset = replace(
        resolve_preset(str(tiny_data_dir / "models" / "tiny")), default_mode="fast", full_size=False
    )
    with pytest.raises(ModelLoadError, match="fast mode is unavailable"):
        load_model(preset, GenerationSettings(), tiny_data_dir)


def test_fast_lora_setting_accepts_a_file(tiny_data_dir: Path) -> None:
    lora_file = (
        tiny_lora_path(tiny_data_dir / "models" / "tiny") / "pytorch_lora_weights.safetensors"
    )
    settings = Settings(
        data_dir=tiny_data_dir,
        model="tiny",
        generation=GenerationSettings(fast_lora=str(lora_file)),
    )
    engine = Engine(settings)
    assert engine.model.lora_module_count() > 0
    result = engine.generate(make_request(mode=Mode.FAST, steps=2, guidance=1.0))
    assert len(result.images) == 4


def test_out_of_memory_while_loading(tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import StableDiffusionXLPipeline

    def exhausted(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 5.00 GiB")

    monkeypatch.setattr(StableDiffusionXLPipeline, "from_pretrained", exhausted)
    message = load_error(Settings(data_dir=tiny_data_dir, model="tiny"))
    assert "out of memory loading model 'tiny'" in message
