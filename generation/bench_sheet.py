"""``atelier bench gallery``, the image half: rendering a gallery page's contact sheet.

Nine 1024x1024 PNGs (noise over gradients, so they compress like pictures, not like flat
colour) go through ``grid.contact_sheet``. Its thumbnails use PIL's ``thumbnail``, which first
shrinks by an integer factor (``reduce``, a cheap box filter) and then resamples the last step.
The naive way is the same sheet with each image resampled straight from full size
(``resize(..., LANCZOS)``, no reducing step): the same decode, layout, numbering and WebP
encode. Both are timed alternately, ``runs`` times each.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from generation.grid import SHEET_CELL, SHEET_COLUMNS, contact_sheet

IMAGE_SIDE = 1024
IMAGES = 9


@dataclass(frozen=True)
class SheetTimes:
    """Seconds per render, ours and the naive way's; ``sheet_bytes`` is our sheet's size."""

    ours: tuple[float, ...]
    naive: tuple[float, ...]
    image_side: int
    images: int
    sheet_bytes: int


def sample_pngs(count: int = IMAGES, side: int = IMAGE_SIDE) -> list[bytes]:
    """``count`` distinct PNGs of ``side`` pixels, deterministic."""
    out = []
    for n in range(count):
        noise = Image.effect_noise((side, side), 24 + 4 * n).convert("RGB")
        ramp = Image.linear_gradient("L").resize((side, side)).rotate(40 * n)
        tint = Image.merge("RGB", (ramp, ramp.rotate(90), ramp.rotate(180)))
        image = Image.blend(tint, noise, 0.35)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def naive_contact_sheet(images: Sequence[bytes | None], cell: int = SHEET_CELL) -> bytes:
    """``contact_sheet`` with each thumbnail resampled from full size in one LANCZOS pass."""
    columns = min(SHEET_COLUMNS, len(images))
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * cell, rows * cell), (32, 32, 36))
    draw = ImageDraw.Draw(sheet)
    for index, data in enumerate(images):
        x, y = (index % columns) * cell, (index // columns) * cell
        if data is not None:
            with Image.open(io.BytesIO(data)) as image:
                full = image.convert("RGB")
                scale = (cell - 8) / max(full.size)
                size = (max(1, round(full.width * scale)), max(1, round(full.height * scale)))
                small = full.resize(size, Image.Resampling.LANCZOS)
                sheet.paste(small, (x + (cell - small.width) // 2, y + (cell - small.height) // 2))
        draw.rectangle((x + 4, y + 4, x + 30, y + 26), fill=(0, 0, 0))
        draw.text((x + 12, y + 8), str(index + 1), fill=(255, 255, 255))
    buffer = io.BytesIO()
    sheet.save(buffer, format="WEBP", quality=80, method=4)
    return buffer.getvalue()


def bench_contact_sheet(
    runs: int = 20, *, images: int = IMAGES, side: int = IMAGE_SIDE
) -> SheetTimes:
    """Time ``contact_sheet`` against ``naive_contact_sheet`` on the same PNGs."""
    pngs: list[bytes | None] = list(sample_pngs(images, side))
    sheet = contact_sheet(pngs)  # warm: PIL's codecs load on first use
    naive_contact_sheet(pngs)
    ours: list[float] = []
    naive: list[float] = []
    for n in range(runs):
        for fn, into in (
            ((contact_sheet, ours), (naive_contact_sheet, naive))
            if n % 2 == 0
            else ((naive_contact_sheet, naive), (contact_sheet, ours))
        ):
            started = time.perf_counter()
            fn(pngs)
            into.append(time.perf_counter() - started)
    return SheetTimes(tuple(ours), tuple(naive), side, images, len(sheet))
