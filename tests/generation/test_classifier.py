"""The output image classifier: the tiny random one loaded through the real loading code, the
keyword one, load errors, and the worker's generator attaching scores to its results."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from config.settings import GenerationSettings, ModerationSettings, Settings
from generation.classifier import (
    KEYWORD_SCORE,
    TINY_CLASSIFIER_DIR,
    HubImageClassifier,
    KeywordClassifier,
    build_tiny_classifier,
    is_tiny_classifier_built,
    load_classifier,
)
from generation.engine import Engine
from generation.errors import ModelLoadError
from generation.jobs import EngineGenerator, ModelPool
from generation.request import GenerationRequest
from generation.verdict import ClassifierPolicy, verdict
from generation.worker import JobControl
from tests.generation.conftest import make_request

CPU = GenerationSettings(device="cpu")


@pytest.fixture(scope="module")
def grid(engine: Engine) -> list[Image.Image]:
    return list(engine.generate(make_request(steps=2)).images)


@pytest.fixture(scope="module")
def tiny_classifier(tiny_data_dir: Path) -> HubImageClassifier:
    classifier = load_classifier(ModerationSettings(classifier_model="tiny"), CPU, tiny_data_dir)
    assert isinstance(classifier, HubImageClassifier)
    return classifier


def classifier_error(source: str, data_dir: Path, **moderation: object) -> str:
    settings = ModerationSettings(classifier_model=source, **moderation)
    with pytest.raises(ModelLoadError) as caught:
        load_classifier(settings, CPU, data_dir)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_no_classifier_unless_configured(tmp_path: Path) -> None:
    assert load_classifier(ModerationSettings(), CPU, tmp_path) is None
    assert not (tmp_path / "models").exists()


def test_the_tiny_classifier_loads_through_from_pretrained_and_scores_a_grid(
    tiny_classifier: HubImageClassifier, tiny_data_dir: Path, grid: list[Image.Image]
) -> None:
    assert is_tiny_classifier_built(tiny_data_dir / "models" / TINY_CLASSIFIER_DIR)
    assert type(tiny_classifier.model).__name__ == "ViTForImageClassification"
    assert tiny_classifier.labels == ("normal", "nsfw")
    assert tiny_classifier.device == torch.device("cpu")
    scores = tiny_classifier.classify(make_request(), grid)
    assert len(scores) == 4
    for image_scores in scores:
        assert set(image_scores) == {"normal", "nsfw"}
        assert all(0.0 <= score <= 1.0 for score in image_scores.values())
        assert math.isclose(sum(image_scores.values()), 1.0, rel_tol=1e-5)
    # Random weights, fixed seed: a second load scores the same images the same.
    again = load_classifier(ModerationSettings(classifier_model="tiny"), CPU, tiny_data_dir)
    assert again is not None
    assert again.classify(make_request(), grid) == scores


def test_the_tiny_classifier_builds_once_and_rebuilds_when_damaged(tmp_path: Path) -> None:
    target = tmp_path / "models" / TINY_CLASSIFIER_DIR
    build_tiny_classifier(target)
    weights = target / "model.safetensors"
    built = weights.stat().st_mtime_ns
    build_tiny_classifier(target)
    assert weights.stat().st_mtime_ns == built
    (target / "atelier-tiny-classifier.json").unlink()
    assert not is_tiny_classifier_built(target)
    build_tiny_classifier(target)
    assert is_tiny_classifier_built(target)


def test_a_directory_loads_like_a_hub_model(tiny_data_dir: Path, grid: list[Image.Image]) -> None:
    directory = str(tiny_data_dir / "models" / TINY_CLASSIFIER_DIR)
    classifier = load_classifier(ModerationSettings(classifier_model=directory), CPU, tiny_data_dir)
    assert classifier is not None and classifier.name == directory
    assert len(classifier.classify(make_request(), grid[:1])) == 1


def test_offline_hub_classifier_is_one_clear_line(tmp_path: Path) -> None:
    message = classifier_error("atelier-tests/no-such-classifier", tmp_path)
    assert message.startswith(
        "classifier 'atelier-tests/no-such-classifier' is not in the local Hugging Face cache"
    )
    assert "the hub is offline (HF_HUB_OFFLINE)" in message
    assert "huggingface-cli download atelier-tests/no-such-classifier" in message
    assert "ATELIER_MODERATION_CLASSIFIER_MODEL" in message


def test_bad_sources_name_the_setting(tmp_path: Path) -> None:
    missing = classifier_error(str(tmp_path / "nothing-here"), tmp_path)
    assert "does not exist" in missing and "ATELIER_MODERATION_CLASSIFIER_MODEL" in missing
    not_a_model = classifier_error(str(tmp_path), tmp_path)
    assert "is not a transformers model (it has no config.json)" in not_a_model
    unknown = classifier_error("not a model", tmp_path)
    assert unknown.startswith("unknown classifier 'not a model'")


def test_a_label_the_model_never_scores_is_a_load_error(tiny_data_dir: Path) -> None:
    message = classifier_error(
        "tiny", tiny_data_dir, classifier_labels=["porn"], classifier_thresholds={"porn": 0.5}
    )
    assert "has the labels 'normal', 'nsfw'" in message
    assert "ATELIER_MODERATION_CLASSIFIER_LABELS names 'porn'" in message


def test_out_of_memory_while_loading_the_classifier(
    tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForImageClassification

    def exhausted(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    monkeypatch.setattr(AutoModelForImageClassification, "from_pretrained", exhausted)
    with pytest.raises(ModelLoadError, match="out of memory loading classifier 'tiny'") as caught:
        load_classifier(ModerationSettings(classifier_model="tiny"), CPU, tiny_data_dir)
    assert caught.value.out_of_memory


def test_keyword_classifier_flags_jobs_whose_prompt_has_the_word(tmp_path: Path) -> None:
    classifier = load_classifier(
        ModerationSettings(classifier_model="keyword:forbidden fruit"), CPU, tmp_path
    )
    assert isinstance(classifier, KeywordClassifier)
    assert classifier.name == "keyword:forbidden fruit"
    images = [Image.new("RGB", (8, 8))] * 4

    def scores(prompt: str) -> list[dict[str, float]]:
        return classifier.classify(make_request(prompt=prompt), images)

    assert scores("a Forbidden Fruit on a table") == [{"nsfw": KEYWORD_SCORE}] * 4
    assert scores("forbidden fruitcake, forbidden fruits") == [{"nsfw": 0.0}] * 4
    assert scores("a castle") == [{"nsfw": 0.0}] * 4
    assert scores("forbidden fruit") == [{"nsfw": KEYWORD_SCORE}] * 4


# -- the worker's generator -----------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    request: GenerationRequest
    id: str = "job-1"
    lease_token: str = "lease"
    kind: str = "imagine"
    mode: str = "quality"
    batch_key: str = "key"
    attempts: int = 1
    reserved: float = 10.0


class NoImages:
    async def put(self, job_id: str, name: str, data: bytes) -> str:
        raise AssertionError("the generator stores nothing itself")

    async def get(self, ref: str) -> bytes:
        raise AssertionError("an imagine job reads no source image")


async def no_refs(job_id: str) -> list[str]:
    raise AssertionError("an imagine job has no source")


@pytest.fixture
async def generators(
    tiny_settings: Settings,
) -> AsyncIterator[Callable[[ModerationSettings], EngineGenerator]]:
    pool = ModelPool(tiny_settings)

    def make(moderation: ModerationSettings) -> EngineGenerator:
        classifier = load_classifier(moderation, CPU, tiny_settings.data_dir)
        return EngineGenerator(
            pool, NoImages(), no_refs, tiny_settings.generation, classifier=classifier
        )

    yield make
    await pool.close()


async def test_without_a_classifier_results_carry_no_scores(
    generators: Callable[[ModerationSettings], EngineGenerator],
) -> None:
    job = Job(make_request(steps=2))
    result = await generators(ModerationSettings()).run(job, JobControl(job))
    assert result.scores is None
    assert [image.name for image in result.images][:4] == ["0.png", "1.png", "2.png", "3.png"]


async def test_the_generator_attaches_each_images_scores(
    generators: Callable[[ModerationSettings], EngineGenerator],
) -> None:
    generator = generators(ModerationSettings(classifier_model="tiny"))
    job = Job(make_request(steps=2))
    result = await generator.run(job, JobControl(job))
    assert result.scores is not None and len(result.scores) == 4
    assert all(set(scores) == {"normal", "nsfw"} for scores in result.scores)
    assert len(result.images) == 5  # the four images and the grid, as without a classifier


async def test_a_known_prompt_word_is_flagged_by_the_keyword_classifier(
    generators: Callable[[ModerationSettings], EngineGenerator],
) -> None:
    moderation = ModerationSettings(
        classifier_model="keyword:lighthouse",
        classifier_thresholds={"nsfw": 0.5},
        classifier_loose_thresholds={"nsfw": 1.0},
    )
    generator = generators(moderation)
    policy = ClassifierPolicy.from_settings(moderation)
    flagged_job = Job(make_request(prompt="a lighthouse at dusk", steps=2))
    clean_job = Job(make_request(prompt="a castle at dusk", steps=2), id="job-2")
    results = await generator.run_batch(
        [flagged_job, clean_job], [JobControl(flagged_job), JobControl(clean_job)]
    )
    flagged, clean = (verdict(result.scores or (), policy) for result in results)
    assert flagged.labels == ("nsfw",) and flagged.images == (0, 1, 2, 3)
    assert flagged.max_score == KEYWORD_SCORE
    assert not clean.flagged
    # In an age-restricted channel the loose threshold applies, and 0.75 is under it.
    loose = verdict(results[0].scores or (), policy, age_restricted=True)
    assert not loose.flagged and clean.max_score == 0.0
