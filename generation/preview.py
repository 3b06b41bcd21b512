"""Cheap progress previews: SDXL latents to RGB by a fixed linear map, no VAE decode.

SDXL's four latent channels are close to a linear function of colour, so a 4x3 matrix (the
factors ComfyUI and others use for SDXL) gives a recognisable thumbnail at 1/8 resolution for
the cost of one small matrix product.
"""

from __future__ import annotations

import torch
from PIL import Image

from generation.grid import compose_grid

SDXL_LATENT_RGB_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_LATENT_RGB_BIAS = (0.1084, -0.0175, -0.0011)


def latents_to_images(latents: torch.Tensor) -> list[Image.Image]:
    """One small RGB image per latent in a ``(batch, 4, h, w)`` tensor."""
    factors = torch.tensor(SDXL_LATENT_RGB_FACTORS, dtype=torch.float32)
    bias = torch.tensor(SDXL_LATENT_RGB_BIAS, dtype=torch.float32)
    with torch.no_grad():
        rgb = torch.einsum("bchw,cr->bhwr", latents.detach().float().cpu(), factors) + bias
        pixels = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0).mul(255).round().to(torch.uint8).numpy()
    return [Image.fromarray(array) for array in pixels]


def latents_preview(latents: torch.Tensor) -> Image.Image:
    """The latents as one image, laid out like the final grid."""
    return compose_grid(latents_to_images(latents))
