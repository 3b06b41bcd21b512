"""Shared fixtures for the generation tests: the tiny model, built once per session, offline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from config.settings import GenerationSettings, Settings
from generation.request import GenerationRequest

if TYPE_CHECKING:
    from generation.engine import Engine


@pytest.fixture(scope="session")
def tiny_settings(tiny_data_dir: Path) -> Settings:
    return Settings(data_dir=tiny_data_dir, model="tiny", generation=GenerationSettings())


@pytest.fixture(scope="session")
def engine(tiny_settings: Settings) -> Iterator[Engine]:
    """One warm tiny engine for the whole session, as a worker keeps it."""
    from generation.engine import Engine

    warm = Engine(tiny_settings)
    warm.load()
    yield warm
    warm.close()


def make_request(**overrides: Any) -> GenerationRequest:
    """A valid tiny-model imagine request; keyword arguments override fields."""
    fields: dict[str, Any] = {
        "prompt": "a castle on a hill at sunset, oil painting",
        "width": 128,
        "height": 128,
        "seed": 1234,
        "steps": 6,
        "guidance": 5.0,
        "model": "tiny",
    }
    fields.update(overrides)
    return GenerationRequest.model_validate(fields)


def load_error(settings: Settings) -> str:
    """The message of the ModelLoadError that loading ``settings.model`` raises: one line."""
    from generation.engine import Engine
    from generation.errors import ModelLoadError

    with pytest.raises(ModelLoadError) as caught:
        Engine(settings).load()
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message
