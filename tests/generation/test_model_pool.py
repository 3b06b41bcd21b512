"""The worker's model pool: one warm engine per model, at most max_loaded_models of them."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from config.settings import GenerationSettings, Settings
from generation.engine import Engine
from generation.errors import ModelLoadError
from generation.jobs import ModelPool


@pytest.fixture(scope="module")
def copies(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two more models: copies of the tiny model's diffusers directory under other names."""
    root = tmp_path_factory.mktemp("models")
    names = []
    for name in ("second", "third"):
        shutil.copytree(tiny_data_dir / "models" / "tiny", root / name)
        names.append(str(root / name))
    return names


@pytest.fixture
async def pools(tiny_settings: Settings) -> AsyncIterator[Callable[[int], ModelPool]]:
    """Makes pools with room for N models, and closes them after the test."""
    made: list[ModelPool] = []

    def make(max_loaded: int) -> ModelPool:
        generation = GenerationSettings(max_loaded_models=max_loaded, allow_large_on_cpu=True)
        made.append(ModelPool(tiny_settings.model_copy(update={"generation": generation})))
        return made[-1]

    yield make
    for pool in made:
        await pool.close()


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The models actually loaded (not found warm), in order."""
    seen: list[str] = []
    original = Engine.load

    def load(self: Engine) -> float:
        if not self.loaded:
            seen.append(self.preset.name)
        return original(self)

    monkeypatch.setattr(Engine, "load", load)
    return seen


async def test_least_recently_used_other_model_is_unloaded(
    pools: Callable[[int], ModelPool], copies: list[str], loads: list[str]
) -> None:
    second, third = copies
    pool = pools(2)
    default = await pool.runner("tiny")
    assert await pool.runner(second) is await pool.runner(second)  # warm: loaded once
    await pool.runner("tiny")  # the default is now the most recently used
    await pool.runner(third)  # room for it: the other model goes, never the default
    assert pool.loaded == ["tiny", third]
    assert pool.default is default and default.engine.loaded
    await pool.runner(second)
    assert pool.loaded == ["tiny", second]
    assert loads == ["tiny", second, third, second]


async def test_with_room_for_one_the_default_stays_and_others_take_turns(
    pools: Callable[[int], ModelPool], copies: list[str], loads: list[str]
) -> None:
    second, third = copies
    pool = pools(1)
    await pool.runner("tiny")
    await pool.runner(second)
    assert pool.loaded == ["tiny", second]
    await pool.runner(third)
    assert pool.loaded == ["tiny", third]


async def test_out_of_memory_unloads_the_others_and_tries_again(
    pools: Callable[[int], ModelPool], copies: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    second, third = copies
    pool = pools(3)
    await pool.runner("tiny")
    await pool.runner(second)
    original = Engine.load
    failures: list[str] = []

    def load(self: Engine) -> float:
        # The third model fits only once nothing but the default is loaded.
        if self.preset.name == third and second in pool.loaded:
            failures.append(third)
            raise ModelLoadError("out of memory loading it", out_of_memory=True)
        return original(self)

    monkeypatch.setattr(Engine, "load", load)
    runner = await pool.runner(third)
    assert failures == [third] and runner.engine.loaded
    assert pool.loaded == ["tiny", third]


async def test_other_load_errors_are_not_retried(
    pools: Callable[[int], ModelPool], copies: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    second, _ = copies
    pool = pools(3)
    await pool.runner("tiny")
    with pytest.raises(ModelLoadError, match="does not exist"):
        await pool.runner(second + "-missing")

    def no_room(self: Engine) -> float:
        raise ModelLoadError("out of memory", out_of_memory=True)

    monkeypatch.setattr(Engine, "load", no_room)
    with pytest.raises(ModelLoadError, match="out of memory"):
        await pool.runner(second)  # nothing else to unload: the error stands
    assert pool.loaded == ["tiny"]
