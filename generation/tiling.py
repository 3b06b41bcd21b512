"""Per-call switches on shared modules: seamless (circular) padding and tiled VAE decoding.

Both are context managers that restore the modules afterwards, because the same UNet and VAE
serve the next job, which may want neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


@contextmanager
def seamless(*modules: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Make every 2-D convolution in ``modules`` pad circularly, for images that tile.

    With wrap-around padding in the UNet and the VAE decoder, the left edge of the picture is
    computed as the neighbour of the right edge (and top of bottom), so copies of the image
    placed side by side show no seam.
    """
    if not enabled:
        yield
        return
    convs = [m for module in modules for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    saved = [conv.padding_mode for conv in convs]
    try:
        for conv in convs:
            conv.padding_mode = "circular"
        yield
    finally:
        for conv, mode in zip(convs, saved, strict=True):
            conv.padding_mode = mode


@contextmanager
def vae_tiling(vae: Any, enabled: bool) -> Iterator[None]:
    """Encode/decode in overlapping tiles for this call: large images then fit in memory."""
    if not enabled:
        yield
        return
    vae.enable_tiling()
    try:
        yield
    finally:
        vae.disable_tiling()
