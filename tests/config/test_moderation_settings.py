"""The output classifier's settings: off by default, thresholds that are probabilities, labels
and thresholds that match, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_settings


def error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(f"ATELIER_MODERATION_{name.upper()}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


def test_off_unless_configured() -> None:
    moderation = load_settings().moderation
    assert moderation.classifier_model is None and not moderation.classifier_enabled
    assert moderation.classifier_labels == ["nsfw"]
    assert moderation.classifier_thresholds == {"nsfw": 0.5}
    assert moderation.classifier_loose_thresholds == {}


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_MODERATION_CLASSIFIER_MODEL", "Falconsai/nsfw_image_detection")
    monkeypatch.setenv("ATELIER_MODERATION_CLASSIFIER_LABELS", '["nsfw", "gore"]')
    monkeypatch.setenv("ATELIER_MODERATION_CLASSIFIER_THRESHOLDS", '{"nsfw": 0.4, "gore": 0.6}')
    monkeypatch.setenv("ATELIER_MODERATION_CLASSIFIER_LOOSE_THRESHOLDS", '{"nsfw": 0.95}')
    moderation = load_settings().moderation
    assert moderation.classifier_model == "Falconsai/nsfw_image_detection"
    assert moderation.classifier_enabled
    assert moderation.classifier_labels == ["nsfw", "gore"]
    assert moderation.classifier_thresholds == {"nsfw": 0.4, "gore": 0.6}
    assert moderation.classifier_loose_thresholds == {"nsfw": 0.95}


def test_an_empty_model_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_MODERATION_CLASSIFIER_MODEL", " ")
    assert load_settings().moderation.classifier_model is None


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ('{"nsfw": 1.5}', "less than or equal to 1; got 1.5"),
        ('{"nsfw": -0.1}', "greater than or equal to 0; got -0.1"),
        ('{"nsfw": NaN}', "finite number"),
        ('{"nsfw": Infinity}', "finite number"),
    ],
)
def test_thresholds_are_finite_probabilities(
    monkeypatch: pytest.MonkeyPatch, value: str, complaint: str
) -> None:
    message = error(monkeypatch, classifier_thresholds=value)
    assert "ATELIER_MODERATION_CLASSIFIER_THRESHOLDS), entry 'nsfw'" in message
    assert complaint in message


def test_a_loose_threshold_may_not_be_stricter(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error(monkeypatch, classifier_loose_thresholds='{"nsfw": 0.2}')
    assert "ATELIER_MODERATION_CLASSIFIER_LOOSE_THRESHOLDS" in message
    assert "'nsfw' is 0.2, below its strict threshold 0.5" in message


def test_every_label_needs_a_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error(monkeypatch, classifier_labels='["nsfw", "gore"]')
    assert "has no threshold for 'gore'" in message


def test_a_threshold_for_an_unlisted_label_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error(monkeypatch, classifier_loose_thresholds='{"porn": 0.9}')
    assert "has a threshold for 'porn', which classifier_labels does not list ('nsfw')" in message


def test_labels_are_unique_and_not_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "lists 'nsfw' more than once" in error(monkeypatch, classifier_labels='["nsfw", "nsfw"]')
    monkeypatch.setenv("ATELIER_MODERATION_CLASSIFIER_MODEL", "tiny")
    monkeypatch.setenv("ATELIER_MODERATION_CLASSIFIER_THRESHOLDS", "{}")
    assert "classifier could flag nothing" in error(monkeypatch, classifier_labels="[]")


def test_a_keyword_classifier_needs_its_word(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error(monkeypatch, classifier_model="keyword:")
    assert "ATELIER_MODERATION_CLASSIFIER_MODEL" in message
    assert "a keyword classifier needs its word after the colon" in message


def test_toml_section(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "atelier.toml"
    config.write_text(
        '[moderation]\nclassifier_model = "keyword:forbidden"\n'
        "classifier_loose_thresholds = { nsfw = 0.9 }\n"
    )
    monkeypatch.setenv("ATELIER_CONFIG", str(config))
    moderation = load_settings().moderation
    assert moderation.classifier_model == "keyword:forbidden"
    assert moderation.classifier_loose_thresholds == {"nsfw": 0.9}
