"""Comparing generated images: exactly where that is portable, within a stated tolerance where not.

The same code run twice on one machine gives the same bits, so those comparisons are exact. Two
different code paths (a single-file load against a diffusers directory, a batch against one
image, a compiled UNet against the eager one) round differently in the last float bits, and how
differently depends on the CPU's vector kernels (``ATEN_CPU_CAPABILITY``: default, avx2,
avx512). Those compare within a tolerance, measured under each capability (see the README,
"Pixel comparisons and tolerances").

Differences are counted in 8-bit levels over pixel values (one value per channel: a 128x128 RGB
image has 49,152).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Tolerance:
    """At most ``max_level_diff`` levels off, on at most ``max_fraction`` of the pixel values."""

    max_level_diff: int
    max_fraction: float


#: The same code path on the same machine: bit-identical on every CPU.
EXACT = Tolerance(max_level_diff=0, max_fraction=0.0)
#: The same pixels reached through two loading or compilation paths. Measured under the default,
#: avx2 and avx512 capabilities: at most 1 level, on at most 0.005% of the values. Another seed
#: or another picture differs on more than 70% of the values, by 14 levels or more.
CROSS_PATH = Tolerance(max_level_diff=2, max_fraction=0.001)
#: One image made in a batch against the same image made alone: the batch size changes how the
#: matmuls are blocked. Measured: at most 1 level, on at most 0.01% of the values; the looser
#: bound is the one this comparison has always had.
BATCHED = Tolerance(max_level_diff=3, max_fraction=0.01)

Images = Image.Image | Sequence[Image.Image]


@dataclass(frozen=True)
class PixelDifference:
    """How two images (or two equally long lists of images) differ."""

    max_level_diff: int
    differing: int
    total: int

    @property
    def fraction(self) -> float:
        return self.differing / self.total if self.total else 0.0

    def within(self, tolerance: Tolerance) -> bool:
        return (
            self.max_level_diff <= tolerance.max_level_diff
            and self.fraction <= tolerance.max_fraction
        )

    def __str__(self) -> str:
        return (
            f"max difference {self.max_level_diff} levels, {self.differing} of {self.total} "
            f"pixel values differ ({self.fraction:.4%})"
        )


def _as_list(images: Images) -> list[Image.Image]:
    return [images] if isinstance(images, Image.Image) else list(images)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def pixel_difference(actual: Images, expected: Images) -> PixelDifference:
    """The largest level difference and the number of differing values over all the images."""
    got, want = _as_list(actual), _as_list(expected)
    assert len(got) == len(want), f"{len(got)} images against {len(want)}"
    worst = differing = total = 0
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.size == b.size, f"image {index}: size {a.size} against {b.size}"
        difference = np.abs(_pixels(a) - _pixels(b))
        worst = max(worst, int(difference.max(initial=0)))
        differing += int(np.count_nonzero(difference))
        total += difference.size
    return PixelDifference(worst, differing, total)


def assert_images_close(
    actual: Images, expected: Images, tolerance: Tolerance = EXACT
) -> PixelDifference:
    """Fail, with the numbers, unless the images are within ``tolerance`` of each other.

    Prints the measured difference, so ``pytest -rP`` shows it for passing tests too.
    """
    difference = pixel_difference(actual, expected)
    print(f"images compared: {difference} ({tolerance})")
    assert difference.within(tolerance), (
        f"images differ beyond the tolerance: {difference}; allowed at most "
        f"{tolerance.max_level_diff} levels on at most {tolerance.max_fraction:.4%} of the values"
    )
    return difference


def assert_images_differ(actual: Images, expected: Images, tolerance: Tolerance) -> None:
    """The negative check: different images must fall outside ``tolerance``, so it can fail."""
    difference = pixel_difference(actual, expected)
    print(f"images that must differ: {difference} ({tolerance})")
    assert not difference.within(tolerance), (
        f"images that should differ are within {tolerance}: {difference}"
    )
