"""2x2 grids, cropping a cell back out, and encoding images under an upload limit with metadata.

Torch-free (PIL only): the bot crops and re-encodes images without loading a model.

Every encoded image carries the parameters that made it, as JSON: in a PNG ``tEXt`` chunk named
``atelier``, or in a WebP's EXIF ImageDescription. :func:`read_metadata` reads either back.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

GRID_COLUMNS = 2
METADATA_KEY = "atelier"
#: EXIF ImageDescription: ASCII, which ``json.dumps`` guarantees by escaping everything else.
_EXIF_DESCRIPTION = 0x010E
_WEBP_QUALITIES = (92, 85, 75, 65, 50, 35)
_SMALLEST_SIDE = 8


@dataclass(frozen=True)
class EncodedImage:
    """Bytes ready to upload, with the filename and MIME type that match them."""

    data: bytes
    filename: str
    content_type: str


def compose_grid(images: Sequence[Image.Image]) -> Image.Image:
    """Lay equal-sized images out two per row (four make the familiar 2x2 grid)."""
    if not images:
        raise ValueError("a grid needs at least one image")
    width, height = images[0].size
    if any(image.size != (width, height) for image in images):
        raise ValueError("all images of a grid must have the same size")
    if len(images) == 1:
        return images[0].convert("RGB")
    rows = -(-len(images) // GRID_COLUMNS)
    grid = Image.new("RGB", (width * GRID_COLUMNS, height * rows))
    for index, image in enumerate(images):
        row, column = divmod(index, GRID_COLUMNS)
        grid.paste(image.convert("RGB"), (column * width, row * height))
    return grid


def crop_cell(
    grid: Image.Image, index: int, cell_size: tuple[int, int] | None = None
) -> Image.Image:
    """Cut image ``index`` (1-based, U1..U4 order: left to right, top to bottom) out of a grid.

    ``cell_size`` defaults to half the grid in each direction, i.e. a 2x2 grid.
    """
    if cell_size is None:
        cell_size = (grid.width // GRID_COLUMNS, grid.height // GRID_COLUMNS)
    width, height = cell_size
    columns = grid.width // width
    rows = grid.height // height
    if not 1 <= index <= columns * rows:
        raise ValueError(f"image index {index} is outside this grid (1 to {columns * rows})")
    row, column = divmod(index - 1, columns)
    box = (column * width, row * height, (column + 1) * width, (row + 1) * height)
    return grid.crop(box)


def encode_image(
    image: Image.Image, limit_bytes: int, metadata: dict[str, Any], stem: str = "atelier"
) -> EncodedImage:
    """Encode ``image`` in at most ``limit_bytes``, with ``metadata`` embedded.

    Lossless PNG when it fits; otherwise WebP at decreasing quality; as a last resort the image is
    downscaled until it fits. Raises ValueError only if even a tiny WebP cannot fit.
    """
    text = json.dumps(metadata, sort_keys=True, separators=(",", ":"))
    png = _png(image, text)
    if len(png) <= limit_bytes:
        return EncodedImage(png, f"{stem}.png", "image/png")
    candidate = image.convert("RGB")
    while True:
        for quality in _WEBP_QUALITIES:
            webp = _webp(candidate, text, quality)
            if len(webp) <= limit_bytes:
                return EncodedImage(webp, f"{stem}.webp", "image/webp")
        if min(candidate.size) <= _SMALLEST_SIDE:
            raise ValueError(f"cannot encode an image with its metadata in {limit_bytes} bytes")
        # Shrink by a quarter per round: few rounds, and each keeps most of the detail.
        new_size = (
            max(_SMALLEST_SIDE, candidate.width * 3 // 4),
            max(_SMALLEST_SIDE, candidate.height * 3 // 4),
        )
        candidate = candidate.resize(new_size, Image.Resampling.LANCZOS)


def read_metadata(source: bytes | Path | str) -> dict[str, Any] | None:
    """The metadata :func:`encode_image` embedded, or None if the image carries none."""
    stream: io.BytesIO | Path = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    with Image.open(stream) as image:
        return image_metadata(image)


def image_metadata(image: Image.Image) -> dict[str, Any] | None:
    """The metadata of an opened image, read from its header: no pixel is decoded."""
    text = image.info.get(METADATA_KEY)
    if text is None and image.format == "WEBP":
        text = image.getexif().get(_EXIF_DESCRIPTION)
    if not isinstance(text, str | bytes):
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None  # someone else's description (or a hostile, deeply nested one), not ours
    return data if isinstance(data, dict) else None


def _png(image: Image.Image, text: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, text)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _webp(image: Image.Image, text: str, quality: int) -> bytes:
    exif = Image.Exif()
    exif[_EXIF_DESCRIPTION] = text
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=quality, method=4, exif=exif.tobytes())
    return buffer.getvalue()


def reencode(data: bytes, limit_bytes: int, stem: str = "atelier") -> EncodedImage:
    """Re-encode an already encoded image (metadata kept) to fit a smaller ``limit_bytes``."""
    metadata = read_metadata(data) or {}
    with Image.open(io.BytesIO(data)) as image:
        return encode_image(image.convert("RGB"), limit_bytes, metadata, stem=stem)


def thumbnail(data: bytes, max_side: int = 384) -> bytes:
    """A small WebP of an encoded image (no metadata), e.g. for a moderator's review item."""
    if max_side < _SMALLEST_SIDE:
        raise ValueError(f"a thumbnail is at least {_SMALLEST_SIDE} px on a side, not {max_side}")
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("RGB")
        small.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        small.save(buffer, format="WEBP", quality=80, method=4)
        return buffer.getvalue()


#: A contact sheet's layout: columns, and each cell's side in pixels.
SHEET_COLUMNS = 3
SHEET_CELL = 256


def contact_sheet(images: Sequence[bytes | None], cell: int = SHEET_CELL) -> bytes:
    """Numbered thumbnails (1, 2, ...) in rows of ``SHEET_COLUMNS``, as one WebP: a gallery
    page. A missing image (None) leaves its numbered cell grey."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    from PIL import ImageDraw

    columns = min(SHEET_COLUMNS, len(images))
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * cell, rows * cell), (32, 32, 36))
    draw = ImageDraw.Draw(sheet)
    for index, data in enumerate(images):
        x, y = (index % columns) * cell, (index // columns) * cell
        if data is not None:
            with Image.open(io.BytesIO(data)) as image:
                small = image.convert("RGB")
                small.thumbnail((cell - 8, cell - 8))
                sheet.paste(small, (x + (cell - small.width) // 2, y + (cell - small.height) // 2))
        label = str(index + 1)
        draw.rectangle((x + 4, y + 4, x + 30, y + 26), fill=(0, 0, 0))
        draw.text((x + 12, y + 8), label, fill=(255, 255, 255))
    buffer = io.BytesIO()
    sheet.save(buffer, format="WEBP", quality=80, method=4)
    return buffer.getvalue()
