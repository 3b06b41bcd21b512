"""Follow-up requests derived from a finished job: select (U), vary (V), upscale and re-roll.

Torch-free: the bot builds these when a button is clicked, the CLI when it reads a grid file.
"""

from __future__ import annotations

from config.settings import GenerationSettings
from generation.errors import OptionError
from generation.request import GenerationRequest, Operation, SourceImage

_STRENGTH_FIELD = {
    Operation.VARY_SUBTLE: "vary_subtle_strength",
    Operation.VARY_STRONG: "vary_strong_strength",
    Operation.UPSCALE_SUBTLE: "upscale_subtle_strength",
    Operation.UPSCALE_CREATIVE: "upscale_creative_strength",
}


def followup_request(
    parent: GenerationRequest,
    operation: Operation,
    index: int,
    *,
    parent_job_id: str,
    settings: GenerationSettings,
    seed: int,
) -> GenerationRequest:
    """The request for ``operation`` applied to image ``index`` (1-based) of ``parent``.

    Select and upscale keep the chosen image's own seed; a variation uses ``seed`` (fresh) so
    repeated clicks give new images.
    """
    count = parent.image_count
    if not 1 <= index <= count:
        if count == 1:
            raise OptionError(f"image {index} does not exist: this is a single image; use 1")
        raise OptionError(f"image {index} does not exist; this job has images 1 to {count}")
    if operation is Operation.IMAGINE:
        raise OptionError("imagine is not a follow-up; use reroll_request")
    image_seed = parent.image_seeds[index - 1]
    width, height = parent.width, parent.height
    if operation.is_upscale:
        width, height = width * 2, height * 2
        if width * height > settings.max_output_pixels:
            raise OptionError(
                f"upscaling this {parent.width}x{parent.height} image would give {width}x{height}; "
                f"the largest allowed output is {settings.max_output_pixels:,} pixels"
            )
    strength_field = _STRENGTH_FIELD.get(operation)
    # Re-validate rather than model_copy(update=...), which would skip the model's invariants.
    return GenerationRequest.model_validate(
        {
            **parent.to_json(),
            "operation": operation,
            "source": SourceImage(job_id=parent_job_id, index=index).model_dump(),
            "width": width,
            "height": height,
            "seed": seed if operation.is_variation else image_seed,
            "strength": getattr(settings, strength_field) if strength_field else None,
            "stop": 100,
        }
    )


def reroll_request(parent: GenerationRequest, seed: int) -> GenerationRequest:
    """The same request with a new seed (the re-roll button)."""
    return GenerationRequest.model_validate({**parent.to_json(), "seed": seed})
