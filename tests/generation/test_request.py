"""The request's codec: what the job ledger stores and how it comes back."""

from __future__ import annotations

import pytest

from generation.request import REQUEST_CODEC, GenerationRequest, Operation, SourceImage
from storage import RequestCodec
from tests.generation.conftest import make_request

# The composition root hands this codec to the ledger; mypy checks that it fits storage's shape.
CODEC: RequestCodec[GenerationRequest] = REQUEST_CODEC


def test_the_codec_round_trips_a_request_through_json() -> None:
    request = make_request(
        operation=Operation.VARY_STRONG, source=SourceImage(job_id="J1", index=2), strength=0.8
    )
    stored = CODEC.encode(request)
    assert stored["source"] == {"job_id": "J1", "index": 2} and stored["operation"] == "vary_strong"
    assert CODEC.decode(stored) == request


def test_data_that_is_no_request_is_a_value_error() -> None:
    stored = CODEC.encode(make_request())
    with pytest.raises(ValueError, match="steps"):
        CODEC.decode({**stored, "steps": 0})
    with pytest.raises(ValueError, match="unknown_option"):
        CODEC.decode({**stored, "unknown_option": 1})


def test_work_units_scale_with_images_steps_pixels_and_guidance() -> None:
    """The unit quotas price work in: images x steps run x megapixels x passes per step."""
    grid = make_request(width=1000, height=1000, steps=30, guidance=5.0)
    assert grid.work_units == 4 * 30 * 1.0 * 2
    # No classifier-free guidance (LCM's 1.0): one pass per step.
    assert make_request(width=1000, height=1000, steps=4, guidance=1.0).work_units == 16
    # --stop 50 runs half the steps.
    assert make_request(width=1000, height=1000, steps=30, stop=50).work_units == 4 * 15 * 2
    source = SourceImage(job_id="parent", index=1)
    upscale = make_request(
        width=2000,
        height=2000,
        steps=30,
        operation=Operation.UPSCALE_SUBTLE,
        source=source,
        strength=0.3,
    )
    assert upscale.work_units == 1 * 9 * 4.0 * 2  # one image, 30% of the steps, 4 megapixels
    select = make_request(operation=Operation.SELECT, source=source)
    assert select.work_units == 0.0


def test_a_single_image_request_is_one_image_and_a_quarter_of_the_work() -> None:
    """A group session's entry: one image, its own seed, priced as one; imagine only."""
    grid = make_request(width=1000, height=1000, steps=30, guidance=5.0, seed=7)
    single = grid.model_copy(update={"single": True})
    assert single.image_count == 1 and grid.image_count == 4
    assert single.image_seeds == (7,) and grid.image_seeds == (7, 8, 9, 10)
    assert single.work_units * 4 == grid.work_units
    assert CODEC.decode(CODEC.encode(single)) == single
    # Without the key (every job stored before it existed) a request is a grid.
    stored = CODEC.encode(grid)
    assert (
        "single" in stored
        and CODEC.decode({k: v for k, v in stored.items() if k != "single"}) == grid
    )
    source = SourceImage(job_id="J1", index=1)
    with pytest.raises(ValueError, match="only an imagine request can be a single image"):
        make_request(operation=Operation.UPSCALE_SUBTLE, source=source, strength=0.3, single=True)
