"""What the engine hands back: progress while a job runs, and the frozen result when it is done.

Torch-free (PIL only), so the worker and the bot can use these types without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from generation.request import GenerationRequest


@dataclass(frozen=True)
class Progress:
    """One denoising step finished.

    ``preview`` is a cheap look at the latents (no VAE decode), composed like the final grid, and
    is only set every ``settings.generation.preview_every`` steps and on the last step.
    ``batch_index`` says which request of a :meth:`Engine.generate_batch` call this is about
    (0 for a single job).
    """

    step: int
    total: int
    preview: Image.Image | None = None
    batch_index: int = 0

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 1.0


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds spent in each phase of one job."""

    #: Loading the model, when this job was the one that had to load it; else 0.
    load: float = 0.0
    #: Tokenizing and running the text encoders (compel).
    encode: float = 0.0
    #: The denoising loop.
    denoise: float = 0.0
    #: VAE decode and conversion to PIL images.
    decode: float = 0.0
    #: Everything, load included.
    total: float = 0.0


@dataclass(frozen=True)
class GenerationResult:
    """A finished job's images and everything needed to describe and bill it."""

    images: tuple[Image.Image, ...]
    #: One seed per image: each image alone is re-made from its own seed.
    seeds: tuple[int, ...]
    width: int
    height: int
    request: GenerationRequest
    timings: Timings
    #: Wall time of the accelerator work (encode, denoise, decode; not loading): what quotas
    #: charge. A batched call's time is split evenly among its jobs.
    gpu_seconds: float
