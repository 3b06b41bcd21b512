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
