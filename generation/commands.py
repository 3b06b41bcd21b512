"""What the ``atelier imagine / upscale / vary`` commands do, minus argument parsing and printing.

Grids are written as lossless PNGs at full resolution, with the request and every image's seed
in the file's metadata, so a follow-up needs nothing but the file: it reads the parameters back,
crops the chosen cell, and runs the upscale or variation. Each function returns what the CLI
prints (parameters, seeds, paths, timings).
"""

from __future__ import annotations

import os
import stat
import struct
import sys
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from config.settings import Settings
from generation.engine import Engine
from generation.errors import CommandFileError, OptionError
from generation.followups import followup_request
from generation.grid import GRID_COLUMNS, compose_grid, crop_cell, encode_image, image_metadata
from generation.options import check_stored_request
from generation.request import GRID_SIZE, MAX_SEED, GenerationRequest, Operation
from generation.results import GenerationResult, Timings

#: Version of the metadata layout written into image files.
METADATA_VERSION = 1
LOCAL_JOB_ID = "local"
#: What Pillow's decoders raise on damaged data, besides OSError ("image file is truncated").
_DAMAGED = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


@dataclass(frozen=True)
class CommandOutput:
    """One written file and how it was made."""

    request: GenerationRequest
    path: Path
    #: Per-image seeds, in grid order (one for an upscale).
    seeds: tuple[int, ...]
    width: int
    height: int
    timings: Timings
    gpu_seconds: float


def imagine_to_file(
    settings: Settings,
    requests: Sequence[GenerationRequest],
    out: Path,
    engine: Engine | None = None,
) -> list[CommandOutput]:
    """Make a grid per request and write each as a PNG with its parameters embedded.

    ``out`` is a file (``.png`` is added if missing; with several requests ``-1``, ``-2``... are
    inserted before the suffix) or an existing directory (files are named by seed). With
    ``settings.queue.batching``, requests with equal ``batch_key()`` share pipeline calls.
    Every request is validated, and ``out`` checked, before the first is generated.
    """
    if not requests:
        return []
    check_writable(out)
    engine = engine or Engine(settings, model=requests[0].model)
    for request in requests:
        engine.validate(request)
    results: list[GenerationResult] = []
    if settings.queue.batching:
        for group in _batches(requests, settings.queue.max_batch):
            results.extend(engine.generate_batch(group))
    else:
        results.extend(engine.generate(request) for request in requests)
    outputs = []
    for number, result in enumerate(results, start=1):
        path = _output_path(out, number, len(results), f"grid-{result.request.seed}")
        _write(path, compose_grid(result.images), result, kind="grid")
        outputs.append(_output(result, path))
    return outputs


def upscale_from_file(
    settings: Settings,
    grid_path: Path,
    index: int,
    creative: bool,
    out: Path,
    engine: Engine | None = None,
) -> CommandOutput:
    """Upscale image ``index`` (1-4, U1..U4) of a grid file 2x; write it with its metadata."""
    operation = Operation.UPSCALE_CREATIVE if creative else Operation.UPSCALE_SUBTLE
    return _follow_up(settings, grid_path, index, operation, out, engine)


def vary_from_file(
    settings: Settings,
    grid_path: Path,
    index: int,
    strong: bool,
    out: Path,
    engine: Engine | None = None,
) -> CommandOutput:
    """Make four variations of image ``index`` (1-4, V1..V4) of a grid file; write a new grid."""
    operation = Operation.VARY_STRONG if strong else Operation.VARY_SUBTLE
    return _follow_up(settings, grid_path, index, operation, out, engine)


def _follow_up(
    settings: Settings,
    grid_path: Path,
    index: int,
    operation: Operation,
    out: Path,
    engine: Engine | None,
) -> CommandOutput:
    check_writable(out)
    parent, picture = read_grid_file(settings, grid_path)
    # The same derivation the bot's buttons use (strengths, sizes, bounds). A variation from the
    # command line takes the chosen image's own seed, so running it twice gives the same images.
    request = followup_request(
        parent,
        operation,
        index,
        parent_job_id=LOCAL_JOB_ID,
        settings=settings.generation,
        seed=(parent.seed + index - 1) % (MAX_SEED + 1),
    )
    if parent.image_count > 1:
        source = crop_cell(picture, index, (parent.width, parent.height))
    else:
        source = picture
    engine = engine or Engine(settings, model=request.model)
    result = engine.generate(request, source_image=source)
    kind = "grid" if len(result.images) > 1 else "image"
    path = _output_path(out, 1, 1, f"{operation.value}-{request.seed}")
    _write(path, compose_grid(result.images), result, kind=kind)
    return _output(result, path)


def read_grid_file(settings: Settings, grid_path: Path) -> tuple[GenerationRequest, Image.Image]:
    """The request that made ``grid_path`` and its decoded pixels; CommandFileError unless the
    file is intact and a typed command with those parameters would pass.

    The pixel count is checked from the header, before anything is decoded: a follow-up reads at
    most a grid of four images of ``generation.max_output_pixels`` each.
    """
    limit = GRID_SIZE * settings.generation.max_output_pixels
    too_large = (
        f"{grid_path} is too large: a follow-up reads at most {limit:,} pixels "
        "(4 x ATELIER_GENERATION_MAX_OUTPUT_PIXELS)"
    )
    try:
        # A FIFO or a device would block the read or never end; only a regular file is read.
        if not stat.S_ISREG(grid_path.stat().st_mode):
            raise CommandFileError(f"{grid_path} cannot be read: it is not a regular file")
        with warnings.catch_warnings():
            # Pillow only warns between its two bomb limits; a warning would be a second line.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(grid_path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise CommandFileError(f"{too_large}, and this one has more") from None
    except UnidentifiedImageError:
        raise CommandFileError(f"{grid_path} is not an image Atelier can read") from None
    except OSError as exc:
        raise CommandFileError(f"{grid_path} cannot be read: {exc.strerror or exc}") from None
    with opened as image:
        if image.width * image.height > limit:
            raise CommandFileError(
                f"{too_large}, and this one is {image.width}x{image.height}, "
                f"{image.width * image.height:,} pixels"
            )
        parent = _parent_request(settings, grid_path, image_metadata(image))
        count = parent.image_count
        columns = min(count, GRID_COLUMNS)
        expected = (parent.width * columns, parent.height * -(-count // columns))
        if image.size != expected:
            raise CommandFileError(
                f"{grid_path} is {image.width}x{image.height}, but its parameters describe "
                f"{count} image(s) of {parent.width}x{parent.height} ({expected[0]}x{expected[1]})"
            )
        try:
            return parent, image.convert("RGB")
        except _DAMAGED as exc:
            raise CommandFileError(f"{grid_path} is damaged: {exc}") from None


def _parent_request(
    settings: Settings, grid_path: Path, metadata: dict[str, Any] | None
) -> GenerationRequest:
    if metadata is None or "request" not in metadata:
        raise CommandFileError(
            f"{grid_path} carries no Atelier parameters; use a grid written by `atelier imagine`"
        )
    try:
        parent = GenerationRequest.from_json(metadata["request"])
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "request"
        raise CommandFileError(
            f"{grid_path} carries invalid parameters: {where}: {first['msg']}"
        ) from None
    try:
        check_stored_request(parent, settings=settings.generation, model=settings.model)
    except OptionError as exc:
        raise CommandFileError(
            f"{grid_path} carries parameters a typed command could not use: {exc}"
        ) from None
    cell = metadata.get("cell", [parent.width, parent.height])
    if cell != [parent.width, parent.height]:
        raise CommandFileError(
            f"{grid_path} has a cell size that does not match its parameters "
            f"({parent.width}x{parent.height})"
        )
    return parent


def check_writable(out: Path) -> None:
    """Refuse (CommandFileError) an output path whose folder cannot be made or written."""
    folder = out if out.is_dir() else out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandFileError(
            f"cannot write {out}: cannot make the folder {folder} ({exc.strerror or exc})"
        ) from None
    if not os.access(folder, os.W_OK):
        raise CommandFileError(f"cannot write {out}: the folder {folder} is not writable")


def _batches(
    requests: Sequence[GenerationRequest], max_batch: int
) -> list[list[GenerationRequest]]:
    groups: dict[str, list[GenerationRequest]] = {}
    for request in requests:
        groups.setdefault(request.batch_key(), []).append(request)
    return [
        group[start : start + max_batch]
        for group in groups.values()
        for start in range(0, len(group), max_batch)
    ]


def _output_path(out: Path, number: int, count: int, default_stem: str) -> Path:
    if out.is_dir():
        return out / f"{default_stem}-{number}.png" if count > 1 else out / f"{default_stem}.png"
    path = out if out.suffix.lower() == ".png" else out.with_name(out.name + ".png")
    if count > 1:
        path = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return path


def grid_metadata(result: GenerationResult, kind: str) -> dict[str, Any]:
    """The parameters embedded in a written image: enough to re-make or follow it up."""
    return {
        "atelier": METADATA_VERSION,
        "kind": kind,
        "request": result.request.to_json(),
        "seeds": list(result.seeds),
        "cell": [result.width, result.height],
    }


def _write(path: Path, image: Image.Image, result: GenerationResult, kind: str) -> None:
    # Local files keep full resolution and lossless pixels, so no size limit applies: a
    # follow-up must crop exactly the image that was generated.
    encoded = encode_image(image, sys.maxsize, grid_metadata(result, kind))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded.data)
    except OSError as exc:
        raise CommandFileError(f"cannot write {path}: {exc.strerror or exc}") from None


def _output(result: GenerationResult, path: Path) -> CommandOutput:
    return CommandOutput(
        request=result.request,
        path=path,
        seeds=result.seeds,
        width=result.width,
        height=result.height,
        timings=result.timings,
        gpu_seconds=result.gpu_seconds,
    )
