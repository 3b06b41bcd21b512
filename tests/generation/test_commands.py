"""The CLI's generation commands: imagine to a file, then upscale and vary from that file."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from config.settings import QueueSettings, Settings
from generation.commands import imagine_to_file, upscale_from_file, vary_from_file
from generation.engine import Engine
from generation.errors import CommandFileError, OptionError
from generation.grid import read_metadata
from generation.request import GenerationRequest, Operation
from tests.generation.conftest import make_request


def test_imagine_then_upscale_and_vary(
    engine: Engine, tiny_settings: Settings, tmp_path: Path
) -> None:
    request = make_request(seed=31, width=144, height=112, aspect="4:3")
    (grid,) = imagine_to_file(tiny_settings, [request], tmp_path / "grid", engine=engine)
    assert grid.path == tmp_path / "grid.png"
    assert grid.seeds == (31, 32, 33, 34)
    assert (grid.width, grid.height) == (144, 112)
    with Image.open(grid.path) as image:
        assert image.size == (288, 224)
    metadata = read_metadata(grid.path)
    assert metadata is not None
    assert GenerationRequest.from_json(metadata["request"]) == request
    assert metadata["seeds"] == [31, 32, 33, 34]

    upscaled = upscale_from_file(
        tiny_settings, grid.path, 3, creative=True, out=tmp_path / "up.png", engine=engine
    )
    assert upscaled.request.operation is Operation.UPSCALE_CREATIVE
    assert upscaled.request.seed == 33 and upscaled.seeds == (33,)
    assert upscaled.request.strength == tiny_settings.generation.upscale_creative_strength
    assert upscaled.request.source is not None and upscaled.request.source.index == 3
    with Image.open(upscaled.path) as image:
        assert image.size == (288, 224)

    varied = vary_from_file(
        tiny_settings, grid.path, 2, strong=False, out=tmp_path / "vary.png", engine=engine
    )
    assert varied.request.operation is Operation.VARY_SUBTLE
    assert varied.seeds == (32, 33, 34, 35)
    with Image.open(varied.path) as image:
        assert image.size == (288, 224)
    # A follow-up's file can be followed up again: vary the upscale.
    again = vary_from_file(
        tiny_settings, upscaled.path, 1, strong=True, out=tmp_path / "again.png", engine=engine
    )
    assert (again.width, again.height) == (288, 224)
    with pytest.raises(OptionError, match="single image"):
        upscale_from_file(
            tiny_settings, upscaled.path, 2, creative=False, out=tmp_path, engine=engine
        )


def test_several_requests_share_calls_when_batching(
    engine: Engine, tiny_settings: Settings, tmp_path: Path
) -> None:
    settings = tiny_settings.model_copy(update={"queue": QueueSettings(batching=True)})
    requests = [make_request(seed=1, steps=2), make_request(seed=9, steps=2, prompt="a ship")]
    before = engine.pipeline_calls
    outputs = imagine_to_file(settings, requests, tmp_path, engine=engine)
    assert engine.pipeline_calls - before == 1
    assert [o.path.name for o in outputs] == ["grid-1-1.png", "grid-9-2.png"]
    assert all(o.path.is_file() for o in outputs)


def test_follow_up_needs_atelier_metadata(tiny_settings: Settings, tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (64, 64)).save(plain)
    with pytest.raises(CommandFileError, match="carries no Atelier parameters"):
        upscale_from_file(tiny_settings, plain, 1, creative=False, out=tmp_path / "x.png")
