"""What the output image classifier's scores mean for one job: pure, torch-free.

The worker attaches each result image's scores (label -> probability) to its ``WorkResult``;
:func:`verdict` compares them with the configured thresholds: the strict ones everywhere, the
loose ones in age-restricted channels (marked by an admin, or Discord's own NSFW flag). What a
flagged result becomes (held for review) is the moderation workflow's business, not this module's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from config.settings import ModerationSettings

#: One image's scores: the classifier's label -> probability (0 to 1).
Scores = Mapping[str, float]


@dataclass(frozen=True)
class ClassifierPolicy:
    """The labels that count and their thresholds: strict, and loose for age-restricted channels.

    A label without a loose threshold keeps its strict one in age-restricted channels.
    """

    strict: Mapping[str, float]
    loose: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, thresholds in (("strict", self.strict), ("loose", self.loose)):
            for label, threshold in thresholds.items():
                if not 0.0 <= threshold <= 1.0:  # also refuses NaN
                    raise ValueError(
                        f"the {name} threshold of label {label!r} is {threshold!r}; "
                        "a threshold is a probability from 0 to 1"
                    )
        unknown = sorted(set(self.loose) - set(self.strict))
        if unknown:
            raise ValueError(f"loose thresholds for labels with no strict one: {unknown}")
        object.__setattr__(self, "strict", MappingProxyType(dict(self.strict)))
        object.__setattr__(self, "loose", MappingProxyType(dict(self.loose)))

    @classmethod
    def from_settings(cls, settings: ModerationSettings) -> ClassifierPolicy:
        """The policy ``ATELIER_MODERATION_CLASSIFIER_*`` configure (validated there)."""
        thresholds = settings.classifier_thresholds
        return cls(
            strict={label: thresholds[label] for label in settings.classifier_labels},
            loose=dict(settings.classifier_loose_thresholds),
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.strict)

    def thresholds(self, age_restricted: bool) -> Mapping[str, float]:
        """Each counted label's threshold in a channel that is (or is not) age-restricted."""
        if not age_restricted:
            return self.strict
        return {label: self.loose.get(label, strict) for label, strict in self.strict.items()}


@dataclass(frozen=True)
class Verdict:
    """What a job's scores crossed.

    ``labels``: the counted labels some image reached its threshold for, in the policy's order;
    ``images``: the 0-based indices of those images; ``max_score``: the highest score of any
    counted label on any image (0.0 when there are none), flagged or not, for a reviewer.
    """

    labels: tuple[str, ...]
    images: tuple[int, ...]
    max_score: float

    @property
    def flagged(self) -> bool:
        return bool(self.labels)


def verdict(
    scores: Sequence[Scores], policy: ClassifierPolicy, *, age_restricted: bool = False
) -> Verdict:
    """Compare each image's ``scores`` with ``policy``'s thresholds; a score at or above its
    label's threshold crosses it. Labels the policy does not count are ignored, and a counted
    label an image has no score for counts as 0. A score outside 0..1 (or NaN) is a ValueError."""
    thresholds = policy.thresholds(age_restricted)
    crossed: set[str] = set()
    images: list[int] = []
    max_score = 0.0
    for index, image_scores in enumerate(scores):
        flagged = False
        for label, threshold in thresholds.items():
            score = float(image_scores.get(label, 0.0))
            if not 0.0 <= score <= 1.0:  # also NaN: a broken score must not pass as clean
                raise ValueError(f"image {index}'s score for {label!r} is {score!r}, not 0 to 1")
            max_score = max(max_score, score)
            if score >= threshold:
                crossed.add(label)
                flagged = True
        if flagged:
            images.append(index)
    labels = tuple(label for label in thresholds if label in crossed)
    return Verdict(labels=labels, images=tuple(images), max_score=max_score)


def flagged_details(
    scores: Sequence[Scores], policy: ClassifierPolicy, *, age_restricted: bool = False
) -> dict[str, object] | None:
    """What a worker reports for a job whose images crossed a threshold (labels, highest score,
    1-based image numbers, and the thresholds that applied), or None when none did: the
    details a reviewer sees and the audit log keeps."""
    found = verdict(scores, policy, age_restricted=age_restricted)
    if not found.flagged:
        return None
    return {
        "labels": list(found.labels),
        "max_score": round(found.max_score, 4),
        "images": [index + 1 for index in found.images],
        "age_restricted": age_restricted,
    }
