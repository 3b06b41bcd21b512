"""The one request model every job carries, and its JSON round trip.

Torch-free. A request is validated once, by the option parser at the edge; past that point it is
frozen and trusted. It crosses into the job ledger as JSON through ``REQUEST_CODEC``, which the
composition root gives the ledger (it has the shape of ``storage.RequestCodec``; generation never
imports storage), so jobs come back out of the ledger already decoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_SEED = 2**32 - 1
GRID_SIZE = 4


class Mode(StrEnum):
    """Fast drafts (LCM-LoRA, few steps) or quality (full sampler)."""

    FAST = "fast"
    QUALITY = "quality"


class Operation(StrEnum):
    """What the worker does with a request."""

    IMAGINE = "imagine"  # txt2img: a 2x2 grid
    VARY_SUBTLE = "vary_subtle"  # img2img from one image, four new images
    VARY_STRONG = "vary_strong"
    UPSCALE_SUBTLE = "upscale_subtle"  # 2x img2img of one image
    UPSCALE_CREATIVE = "upscale_creative"
    SELECT = "select"  # take one image out of a grid: no GPU work

    @property
    def needs_source(self) -> bool:
        return self is not Operation.IMAGINE

    @property
    def is_upscale(self) -> bool:
        return self in (Operation.UPSCALE_SUBTLE, Operation.UPSCALE_CREATIVE)

    @property
    def is_variation(self) -> bool:
        return self in (Operation.VARY_SUBTLE, Operation.VARY_STRONG)

    @property
    def image_count(self) -> int:
        return GRID_SIZE if self in (Operation.IMAGINE, *VARIATIONS) else 1


VARIATIONS = (Operation.VARY_SUBTLE, Operation.VARY_STRONG)


class SourceImage(BaseModel):
    """One image of an earlier job, the input of a variation, upscale or select."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str = Field(min_length=1, max_length=64)
    #: 1-based position in the parent's grid (U1..U4 / V1..V4), 1 for a single image.
    index: int = Field(ge=1, le=GRID_SIZE)


class GenerationRequest(BaseModel):
    """Everything needed to make (and remake) one job's images, bit for bit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = Field(min_length=1)
    negative_prompt: str = ""
    aspect: str = "1:1"
    width: int = Field(ge=8)
    height: int = Field(ge=8)
    seed: int = Field(ge=0, le=MAX_SEED)
    steps: int = Field(ge=1)
    guidance: float = Field(ge=0.0)
    chaos: int = Field(default=0, ge=0, le=100)
    mode: Mode = Mode.QUALITY
    tile: bool = False
    stop: int = Field(default=100, ge=10, le=100)
    model: str = Field(min_length=1)
    operation: Operation = Operation.IMAGINE
    source: SourceImage | None = None
    #: img2img strength for variations and upscales, recorded so a job can be reproduced.
    strength: float | None = Field(default=None, gt=0.0, le=1.0)
    #: ``--stealth`` (True) or ``--public`` (False); None: the member's or the server's
    #: default. Follow-ups inherit it with the rest of the request.
    stealth: bool | None = None
    #: One image alone instead of a 2x2 grid (a group session's entry): imagine only. Priced,
    #: reserved and charged as one image; a re-roll keeps it.
    single: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> GenerationRequest:
        if self.operation.needs_source and self.source is None:
            raise ValueError(f"operation {self.operation.value} needs a source image")
        if not self.operation.needs_source and self.source is not None:
            raise ValueError("an imagine request takes no source image")
        needs_strength = self.operation.is_upscale or self.operation.is_variation
        if needs_strength and self.strength is None:
            raise ValueError(f"operation {self.operation.value} needs a strength")
        if self.single and self.operation is not Operation.IMAGINE:
            raise ValueError("only an imagine request can be a single image")
        return self

    @property
    def image_count(self) -> int:
        """How many images the job makes: a grid's four, or one."""
        return 1 if self.single else self.operation.image_count

    @property
    def image_seeds(self) -> tuple[int, ...]:
        """Each image's own seed: image i alone is reproduced by ``seed + i`` (mod 2**32)."""
        return tuple((self.seed + i) % (MAX_SEED + 1) for i in range(self.image_count))

    @property
    def denoise_steps(self) -> int:
        """Steps actually run, after ``--stop``."""
        return max(1, -(-self.steps * self.stop // 100))

    @property
    def work_units(self) -> float:
        """How much sampler work the request is, the unit quotas price it in: images x steps
        actually run x megapixels x passes per step (two when classifier-free guidance runs the
        unconditional half too). Variations and upscales run ``strength`` of their steps. A
        select does no GPU work."""
        if self.operation is Operation.SELECT:
            return 0.0
        steps = float(self.denoise_steps)
        if self.strength is not None:
            steps = max(1.0, float(int(self.steps * self.strength)))
        passes = 2.0 if self.guidance > 1.0 else 1.0
        megapixels = self.width * self.height / 1_000_000
        return self.image_count * steps * megapixels * passes

    def batch_key(self) -> str:
        """Requests with equal keys can share one batched pipeline call."""
        if self.operation is not Operation.IMAGINE:
            return ""
        return (
            f"{self.model}|{self.mode.value}|{self.width}x{self.height}|{self.steps}|"
            f"{self.guidance:g}|{int(self.tile)}|{self.stop}"
        )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GenerationRequest:
        return cls.model_validate(data)


class GenerationRequestCodec:
    """GenerationRequest to the JSON object the job ledger stores, and back.

    ``decode`` raises pydantic's ValidationError (a ValueError) for data that is not a valid
    request, e.g. a job stored by an older version."""

    def encode(self, request: GenerationRequest, /) -> dict[str, Any]:
        return request.to_json()

    def decode(self, data: Mapping[str, Any], /) -> GenerationRequest:
        return GenerationRequest.model_validate(data)


REQUEST_CODEC: Final = GenerationRequestCodec()
