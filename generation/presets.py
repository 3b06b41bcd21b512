"""Model presets: which weights a model name means, its native geometry and per-mode defaults.

Torch-free, so the option parser (and the bot) can use the geometry without loading anything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from generation.errors import ModelLoadError

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
LCM_LORA_SDXL = "latent-consistency/lcm-lora-sdxl"
TINY = "tiny"


@dataclass(frozen=True)
class ModelPreset:
    """What one model name resolves to."""

    name: str
    #: Hub id, local diffusers directory, single-file .safetensors, or ``"tiny"``.
    source: str
    #: Side of the square image the model was trained at; --ar keeps this many pixels.
    native_resolution: int
    #: Width and height are multiples of this (VAE factor times UNet downsampling).
    size_multiple: int
    quality_steps: int
    quality_guidance: float
    fast_steps: int
    fast_guidance: float
    #: LoRA loaded for fast mode (LCM-LoRA); None disables fast mode for this model.
    fast_lora: str | None
    default_mode: str
    #: A full-size model needs a GPU unless the operator forces CPU loading.
    full_size: bool = True


_SDXL = ModelPreset(
    name="sdxl",
    source=SDXL_BASE,
    native_resolution=1024,
    size_multiple=64,
    quality_steps=30,
    quality_guidance=7.0,
    fast_steps=4,
    fast_guidance=1.0,
    fast_lora=LCM_LORA_SDXL,
    default_mode="quality",
)

PRESETS: dict[str, ModelPreset] = {
    "sdxl": _SDXL,
    # The same weights, fast drafts by default.
    "sdxl-lcm": replace(_SDXL, name="sdxl-lcm", default_mode="fast"),
    "tiny": ModelPreset(
        name="tiny",
        source=TINY,
        native_resolution=128,
        size_multiple=16,
        quality_steps=8,
        quality_guidance=5.0,
        fast_steps=4,
        fast_guidance=1.0,
        fast_lora=TINY,
        default_mode="quality",
        full_size=False,
    ),
}


def resolve_preset(model: str, fast_lora: str | None = None) -> ModelPreset:
    """Resolve a preset name, hub id, local directory or ``.safetensors`` file to a preset.

    Anything that is not a preset name is treated as an SDXL-architecture checkpoint.
    ``fast_lora`` overrides the LoRA used for fast mode.
    """
    name = model.strip()
    if not name:
        raise ModelLoadError(
            "no model is configured; set ATELIER_MODEL to one of "
            f"{', '.join(sorted(PRESETS))}, a hub id, a directory or a .safetensors file"
        )
    preset = PRESETS.get(name)
    if preset is None:
        preset = replace(_SDXL, name=name, source=name)
    if fast_lora is not None:
        preset = replace(preset, fast_lora=fast_lora)
    return preset
