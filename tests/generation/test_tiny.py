"""The tiny model: built offline, deterministically, once; SDXL-shaped; CLIP-like tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

from generation.tiny import (
    MARKER,
    build_tiny_model,
    build_vocab,
    is_built,
    make_tokenizer,
    tiny_lora_path,
)


def test_common_words_are_single_tokens() -> None:
    vocab, merges = build_vocab()
    tokenizer = make_tokenizer(vocab, merges)
    ids = tokenizer("a castle on a hill at sunset, oil painting, highly detailed").input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<|startoftext|>" and tokens[-1] == "<|endoftext|>"
    assert tokens[1:-1] == [
        "a</w>", "castle</w>", "on</w>", "a</w>", "hill</w>", "at</w>", "sunset</w>",
        ",</w>", "oil</w>", "painting</w>", ",</w>", "highly</w>", "detailed</w>",
    ]  # fmt: skip
    # Unknown words still tokenize, in byte-level pieces.
    assert len(tokenizer("xylophonequartz", add_special_tokens=False).input_ids) > 1
    assert tokenizer.model_max_length == 77


def test_vocab_is_deterministic() -> None:
    assert build_vocab() == build_vocab()


def test_build_layout_and_idempotence(tiny_data_dir: Path) -> None:
    path = tiny_data_dir / "models" / "tiny"
    assert is_built(path)
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    unet = json.loads((path / "unet" / "config.json").read_text())
    assert unet["addition_embed_type"] == "text_time"
    vae = json.loads((path / "vae" / "config.json").read_text())
    assert len(vae["block_out_channels"]) == 4  # VAE scale factor 8
    assert (tiny_lora_path(path) / "pytorch_lora_weights.safetensors").is_file()
    for name in ("tokenizer", "tokenizer_2"):
        assert (path / name / "vocab.json").is_file() and (path / name / "merges.txt").is_file()
    marker = (path / MARKER).stat().st_mtime_ns
    assert build_tiny_model(path) == path  # already built: nothing is rewritten
    assert (path / MARKER).stat().st_mtime_ns == marker


def test_lora_weights_are_nonzero(tiny_data_dir: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(
        tiny_lora_path(tiny_data_dir / "models" / "tiny") / "pytorch_lora_weights.safetensors"
    )
    assert state and all(key.startswith("unet.") for key in state)
    assert any("lora_B" in key or "lora.up" in key for key in state)
    assert all(tensor.abs().sum() > 0 for tensor in state.values())


def test_builds_are_identical(tmp_path: Path, tiny_data_dir: Path) -> None:
    """Same seeds, same bytes: two builds produce identical weight files.

    Exact on every CPU: both builds run the same code, seeds and kernels in this one process.
    """
    other = build_tiny_model(tmp_path / "tiny")
    reference = tiny_data_dir / "models" / "tiny"
    for relative in (
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "lcm-lora/pytorch_lora_weights.safetensors",
    ):
        assert (other / relative).read_bytes() == (reference / relative).read_bytes(), relative


def test_incomplete_build_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "tiny"
    path.mkdir()
    (path / MARKER).write_text('{"fingerprint": "stale"}')
    assert not is_built(path)
    build_tiny_model(path)
    assert is_built(path)


def test_quiet_progress_bars_nests() -> None:
    """A nested quiet block leaves the bars off for the rest of the outer one."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from generation.tiny import quiet_progress_bars

    with quiet_progress_bars():
        with quiet_progress_bars():
            pass
        assert not diffusers_logging.is_progress_bar_enabled()
        assert not transformers_logging.is_progress_bar_enabled()
