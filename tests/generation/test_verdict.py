"""What a job's classifier scores mean: thresholds per label, strict and loose. Plain values."""

from __future__ import annotations

import math

import pytest

from config.settings import ModerationSettings
from generation.verdict import ClassifierPolicy, Verdict, verdict

POLICY = ClassifierPolicy(strict={"nsfw": 0.5, "gore": 0.4}, loose={"nsfw": 0.9})


def test_a_score_at_its_threshold_crosses_it() -> None:
    result = verdict([{"nsfw": 0.5, "gore": 0.39}], POLICY)
    assert result == Verdict(labels=("nsfw",), images=(0,), max_score=0.5)
    assert result.flagged


def test_nothing_crossed() -> None:
    result = verdict([{"nsfw": 0.49, "gore": 0.1}, {"nsfw": 0.2}], POLICY)
    assert result == Verdict(labels=(), images=(), max_score=0.49)
    assert not result.flagged


def test_age_restricted_channels_use_the_loose_thresholds() -> None:
    scores = [{"nsfw": 0.1}, {"nsfw": 0.7}, {"nsfw": 0.95, "gore": 0.0}]
    strict = verdict(scores, POLICY)
    loose = verdict(scores, POLICY, age_restricted=True)
    assert strict.labels == ("nsfw",) and strict.images == (1, 2)
    assert loose.labels == ("nsfw",) and loose.images == (2,)
    assert strict.max_score == loose.max_score == 0.95


def test_a_label_without_a_loose_threshold_keeps_its_strict_one() -> None:
    assert POLICY.thresholds(age_restricted=True) == {"nsfw": 0.9, "gore": 0.4}
    assert verdict([{"gore": 0.4}], POLICY, age_restricted=True).labels == ("gore",)


def test_labels_come_in_the_policys_order_and_others_are_ignored() -> None:
    result = verdict([{"gore": 0.8, "normal": 1.0}, {"nsfw": 0.6}], POLICY)
    assert result.labels == ("nsfw", "gore") and result.images == (0, 1)
    assert result.max_score == 0.8  # "normal" is not counted


def test_no_images_no_verdict() -> None:
    assert verdict([], POLICY) == Verdict(labels=(), images=(), max_score=0.0)


@pytest.mark.parametrize("score", [math.nan, -0.1, 1.5])
def test_a_broken_score_is_refused(score: float) -> None:
    with pytest.raises(ValueError, match="not 0 to 1"):
        verdict([{"nsfw": score}], POLICY)


@pytest.mark.parametrize("threshold", [math.nan, -0.1, 1.01])
def test_thresholds_are_probabilities(threshold: float) -> None:
    with pytest.raises(ValueError, match="a threshold is a probability from 0 to 1"):
        ClassifierPolicy(strict={"nsfw": threshold})


def test_a_loose_threshold_needs_a_strict_one() -> None:
    with pytest.raises(ValueError, match="no strict one"):
        ClassifierPolicy(strict={"nsfw": 0.5}, loose={"gore": 0.9})


def test_the_policy_from_settings() -> None:
    settings = ModerationSettings(
        classifier_model="tiny",
        classifier_labels=["nsfw"],
        classifier_thresholds={"nsfw": 0.3},
        classifier_loose_thresholds={"nsfw": 0.8},
    )
    policy = ClassifierPolicy.from_settings(settings)
    assert policy.labels == ("nsfw",)
    assert policy.thresholds(age_restricted=False) == {"nsfw": 0.3}
    assert policy.thresholds(age_restricted=True) == {"nsfw": 0.8}
    default = ClassifierPolicy.from_settings(ModerationSettings())
    assert default.thresholds(False) == default.thresholds(True) == {"nsfw": 0.5}
