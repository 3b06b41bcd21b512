"""Grid layout, cell cropping, and encoding under an upload limit with metadata."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from generation.grid import compose_grid, crop_cell, encode_image, read_metadata
from tests.generation.images import EXACT, assert_images_close, assert_images_differ

METADATA = {"request": {"prompt": "a cat — naïve café ☕", "seed": 7}, "seeds": [7, 8, 9, 10]}


def _noise(width: int, height: int, seed: int) -> Image.Image:
    """Incompressible pixels: PNG of these is big, so small limits force the WebP path."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_compose_and_crop_round_trip() -> None:
    cells = [_noise(48, 32, seed) for seed in range(4)]
    grid = compose_grid(cells)
    assert grid.size == (96, 64)
    # Exact on every CPU: pasting and cropping copy the same bytes, no arithmetic.
    for index, cell in enumerate(cells, start=1):
        assert_images_close(crop_cell(grid, index, (48, 32)), cell, EXACT)
        assert_images_close(crop_cell(grid, index), cell, EXACT)
    assert_images_differ(crop_cell(grid, 2), cells[0], EXACT)


def test_compose_single_and_mismatched() -> None:
    assert compose_grid([_noise(16, 16, 1)]).size == (16, 16)
    with pytest.raises(ValueError, match="same size"):
        compose_grid([_noise(16, 16, 1), _noise(8, 16, 2)])
    with pytest.raises(ValueError, match="outside this grid"):
        crop_cell(compose_grid([_noise(8, 8, i) for i in range(4)]), 5)


def test_small_images_stay_lossless_png_with_metadata() -> None:
    image = _noise(32, 32, 3)
    encoded = encode_image(image, 10_000_000, METADATA)
    assert encoded.content_type == "image/png"
    assert encoded.filename == "atelier.png"
    assert read_metadata(encoded.data) == METADATA
    with Image.open(io.BytesIO(encoded.data)) as decoded:
        # Exact on every CPU: PNG is lossless, integer-only.
        assert_images_close(decoded, image, EXACT)


def test_limit_forces_webp_and_metadata_survives(tmp_path: Path) -> None:
    image = _noise(256, 256, 4)
    png_size = len(encode_image(image, 10_000_000, METADATA).data)
    limit = png_size // 4
    encoded = encode_image(image, limit, METADATA, stem="grid")
    assert encoded.content_type == "image/webp"
    assert encoded.filename == "grid.webp"
    assert len(encoded.data) <= limit
    assert read_metadata(encoded.data) == METADATA
    path = tmp_path / encoded.filename
    path.write_bytes(encoded.data)
    assert read_metadata(path) == METADATA


def test_tiny_limit_downscales_until_it_fits() -> None:
    image = _noise(512, 512, 5)
    encoded = encode_image(image, 3_000, METADATA)
    assert len(encoded.data) <= 3_000
    with Image.open(io.BytesIO(encoded.data)) as decoded:
        assert decoded.width < 512
    assert read_metadata(encoded.data) == METADATA


@settings(max_examples=15, deadline=None)
@given(limit=st.integers(min_value=2_500, max_value=200_000), seed=st.integers(0, 1000))
def test_encoded_size_never_exceeds_the_limit(limit: int, seed: int) -> None:
    encoded = encode_image(_noise(160, 96, seed), limit, METADATA)
    assert len(encoded.data) <= limit
    assert read_metadata(encoded.data) == METADATA


def test_impossible_limit_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode_image(_noise(64, 64, 6), 50, METADATA)


def test_foreign_images_have_no_metadata() -> None:
    buffer = io.BytesIO()
    _noise(8, 8, 7).save(buffer, format="PNG")
    assert read_metadata(buffer.getvalue()) is None
    exif = Image.Exif()
    exif[0x010E] = "a holiday photo"
    buffer = io.BytesIO()
    _noise(8, 8, 8).save(buffer, format="WEBP", exif=exif.tobytes())
    assert read_metadata(buffer.getvalue()) is None
