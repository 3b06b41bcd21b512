"""Export a diffusers SDXL pipeline as one checkpoint in the original Stability (LDM) layout.

This is the layout people download from Civitai and load with ``ATELIER_MODEL=model.safetensors``:

* ``model.diffusion_model.*``: the UNet as ``input_blocks`` / ``middle_block`` /
  ``output_blocks``;
* ``first_stage_model.*``: the VAE as ``encoder.down.N.block.M`` / ``decoder.up.N...``, its
  attention as 1x1 convolutions;
* ``conditioner.embedders.0.transformer.*``: the CLIP-L text encoder with Hugging Face's keys;
* ``conditioner.embedders.1.model.*``: the OpenCLIP bigG text encoder with OpenCLIP's keys.

It inverts diffusers' own converters (``diffusers.loaders.single_file_utils``:
``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``,
``convert_open_clip_checkpoint``), with the block layout derived from each model's config. Every
parameter must get an original-layout name: an unknown one raises instead of being dropped, so a
round trip through ``from_single_file`` that comes back equal proves both directions exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "conditioner.embedders.0.transformer."
OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

# diffusers ResnetBlock2D -> LDM ResBlock (UNet) names; the LDM VAE keeps diffusers' names
# except for the shortcut.
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
# HF CLIP encoder layer -> OpenCLIP resblock names (q/k/v are fused separately).
_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}

State = dict[str, torch.Tensor]


def export_sdxl_single_file(pipe: Any, path: Path) -> Path:
    """Write ``pipe`` (a ``StableDiffusionXLPipeline``) to ``path`` as one original-layout file."""
    from safetensors.torch import save_file

    state = sdxl_single_file_state_dict(pipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share storage or are not contiguous.
    save_file({key: value.contiguous().clone() for key, value in state.items()}, str(path))
    return path


def sdxl_single_file_state_dict(pipe: Any) -> State:
    """The whole pipeline's weights under the original SDXL checkpoint's key names."""
    state: State = {}
    parts = (
        (UNET_PREFIX, _rename(pipe.unet.state_dict(), _unet_modules(pipe.unet.config), "unet")),
        (VAE_PREFIX, _vae_state(pipe.vae)),
        (CLIP_PREFIX, _clip_state(pipe.text_encoder)),
        (OPEN_CLIP_PREFIX, _open_clip_state(pipe.text_encoder_2)),
    )
    for prefix, part in parts:
        state.update({prefix + key: value.detach().cpu() for key, value in part.items()})
    return state


def _rename(state: State, modules: dict[str, str], what: str) -> State:
    """Rename each key by the longest module path of it that ``modules`` maps."""
    out: State = {}
    for key, value in state.items():
        parts = key.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            target = modules.get(".".join(parts[:cut]))
            if target is not None:
                out[".".join([target, *parts[cut:]])] = value
                break
        else:
            raise ValueError(f"{what}: no original-layout name for parameter {key!r}")
    return out


def _unet_modules(config: Any) -> dict[str, str]:
    """diffusers UNet module paths -> LDM paths, for any number of levels and layers."""
    layers = config.layers_per_block
    if not isinstance(layers, int):
        raise ValueError("the original layout needs one layers_per_block for every level")
    levels = len(config.block_out_channels)
    modules = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        # SDXL's text_time conditioning is stored where LDM keeps its class embedding.
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "mid_block.resnets.0": "middle_block.0",
        "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
    }
    # input_blocks: conv_in, then per level `layers` (resnet, attention) pairs and a downsampler
    # in a block of its own, except after the last level.
    for level in range(levels):
        first = 1 + level * (layers + 1)
        for layer in range(layers):
            modules[f"down_blocks.{level}.resnets.{layer}"] = f"input_blocks.{first + layer}.0"
            modules[f"down_blocks.{level}.attentions.{layer}"] = f"input_blocks.{first + layer}.1"
        modules[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{first + layers}.0.op"
    # output_blocks: per level `layers + 1` blocks; the last one also holds the upsampler,
    # after the attention when the level has one.
    for level, block_type in enumerate(config.up_block_types):
        first = level * (layers + 1)
        for layer in range(layers + 1):
            modules[f"up_blocks.{level}.resnets.{layer}"] = f"output_blocks.{first + layer}.0"
            modules[f"up_blocks.{level}.attentions.{layer}"] = f"output_blocks.{first + layer}.1"
        slot = 2 if "CrossAttn" in block_type else 1
        modules[f"up_blocks.{level}.upsamplers.0.conv"] = (
            f"output_blocks.{first + layers}.{slot}.conv"
        )
    for diffusers, ldm in list(modules.items()):
        if ".resnets." in diffusers:
            modules.update({f"{diffusers}.{a}": f"{ldm}.{b}" for a, b in _UNET_RESNET.items()})
    return modules


def _vae_state(vae: Any) -> State:
    config = vae.config
    layers = config.layers_per_block
    modules = {
        "quant_conv": "quant_conv",
        "post_quant_conv": "post_quant_conv",
    }
    for part in ("encoder", "decoder"):
        modules.update(
            {
                f"{part}.conv_in": f"{part}.conv_in",
                f"{part}.conv_out": f"{part}.conv_out",
                f"{part}.conv_norm_out": f"{part}.norm_out",
                f"{part}.mid_block.resnets.0": f"{part}.mid.block_1",
                f"{part}.mid_block.resnets.1": f"{part}.mid.block_2",
            }
        )
        for a, b in _VAE_ATTENTION.items():
            modules[f"{part}.mid_block.attentions.0.{a}"] = f"{part}.mid.attn_1.{b}"
    for level in range(len(config.down_block_types)):
        for layer in range(layers):
            modules[f"encoder.down_blocks.{level}.resnets.{layer}"] = (
                f"encoder.down.{level}.block.{layer}"
            )
        modules[f"encoder.down_blocks.{level}.downsamplers.0.conv"] = (
            f"encoder.down.{level}.downsample.conv"
        )
    # The LDM decoder numbers its levels from the lowest resolution up: diffusers' first up
    # block is LDM's last.
    up_levels = len(config.up_block_types)
    for level in range(up_levels):
        ldm_level = up_levels - 1 - level
        for layer in range(layers + 1):
            modules[f"decoder.up_blocks.{level}.resnets.{layer}"] = (
                f"decoder.up.{ldm_level}.block.{layer}"
            )
        modules[f"decoder.up_blocks.{level}.upsamplers.0.conv"] = (
            f"decoder.up.{ldm_level}.upsample.conv"
        )
    for diffusers, ldm in list(modules.items()):
        if ".resnets." in diffusers:
            modules[f"{diffusers}.conv_shortcut"] = f"{ldm}.nin_shortcut"
    state = _rename(vae.state_dict(), modules, "vae")
    for key, value in state.items():
        # LDM's VAE attention projects with 1x1 convolutions, diffusers' with linear layers.
        if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 2:
            state[key] = value[:, :, None, None]
    return state


def _text_model_keys(encoder: Any) -> State:
    """The encoder's transformer weights as ``text_model.*`` whatever transformers' layout.

    transformers 5.6 flattened ``CLIPTextModel`` (no ``text_model.`` level) while
    ``CLIPTextModelWithProjection`` keeps it; the original layout always has it.
    """
    out: State = {}
    for key, value in encoder.state_dict().items():
        if key.endswith("position_ids"):  # a buffer, not a weight
            continue
        if key.startswith("text_projection."):
            out[key] = value
        else:
            out["text_model." + key.removeprefix("text_model.")] = value
    return out


def _clip_state(encoder: Any) -> State:
    # The original checkpoint stores CLIP-L with Hugging Face's own names.
    return _text_model_keys(encoder)


def _open_clip_state(encoder: Any) -> State:
    hf = _text_model_keys(encoder)
    state: State = {
        "token_embedding.weight": hf.pop("text_model.embeddings.token_embedding.weight"),
        "positional_embedding": hf.pop("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight": hf.pop("text_model.final_layer_norm.weight"),
        "ln_final.bias": hf.pop("text_model.final_layer_norm.bias"),
        # OpenCLIP multiplies x @ text_projection; HF's Linear holds the transpose.
        "text_projection": hf.pop("text_projection.weight").T,
    }
    for layer in range(encoder.config.num_hidden_layers):
        hf_layer = f"text_model.encoder.layers.{layer}."
        block = f"transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            state[f"{block}attn.in_proj_{kind}"] = torch.cat(
                [hf.pop(f"{hf_layer}self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")]
            )
            for a, b in _OPEN_CLIP_LAYER.items():
                state[f"{block}{b}.{kind}"] = hf.pop(f"{hf_layer}{a}.{kind}")
    if hf:
        raise ValueError(f"text_encoder_2: no OpenCLIP name for {sorted(hf)}")
    return state
