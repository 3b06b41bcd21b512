"""The output image classifier: every result's images scored before the result is stored.

:func:`load_classifier` turns ``ATELIER_MODERATION_CLASSIFIER_MODEL`` into an
:class:`ImageClassifier`, or None when it is unset (the default: no classifier, nothing changes):

* a hub id or a local transformers directory: :class:`HubImageClassifier`, an
  ``AutoModelForImageClassification`` with its ``AutoImageProcessor`` (an NSFW detector in
  production), loaded on the generation device like the pipelines, every failure one
  :class:`~generation.errors.ModelLoadError` that names the setting and the fix;
* ``tiny``: a ViT with random weights built offline into ``data_dir/models/tiny-classifier``
  (:func:`build_tiny_classifier`) and loaded by that same ``from_pretrained`` code;
* ``keyword:<word>``: :class:`KeywordClassifier`, deterministic, which flags the images of jobs
  whose prompt has the word (the end-to-end tests' classifier).

Scores are label -> probability per image; :mod:`generation.verdict` says what they mean.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from config.settings import KEYWORD_CLASSIFIER_PREFIX, GenerationSettings, ModerationSettings
from generation.errors import GenerationError, ModelLoadError, OutOfMemoryError
from generation.pipelines import _HUB_ID, _first_line, free_memory, resolve_device
from generation.request import GenerationRequest
from generation.tiny import build_once, quiet_progress_bars

log = logging.getLogger(__name__)

SETTING = "ATELIER_MODERATION_CLASSIFIER_MODEL"
#: ``ATELIER_MODERATION_CLASSIFIER_MODEL=tiny``: the random tiny classifier, built offline.
TINY_CLASSIFIER = "tiny"
TINY_CLASSIFIER_DIR = "tiny-classifier"
TINY_LABELS = ("normal", "nsfw")
#: Bump when the tiny classifier's build changes; a stale build is then rebuilt.
TINY_CLASSIFIER_FORMAT = 1
_MARKER = "atelier-tiny-classifier.json"
#: A ViT small enough to score a grid in milliseconds on a CPU: 32 px input, 8 px patches.
TINY_VIT_CONFIG: dict[str, Any] = {
    "image_size": 32,
    "patch_size": 8,
    "num_channels": 3,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


class ImageClassifier(Protocol):
    """Scores a job's result images. Called on the engine thread, one job at a time."""

    @property
    def name(self) -> str:
        """What the setting named, for logs and the benchmark."""
        ...

    def classify(
        self, request: GenerationRequest, images: Sequence[Image.Image]
    ) -> list[dict[str, float]]:
        """One ``label -> probability`` mapping per image, in order. ``request`` is the job's
        (a classifier may ignore it; the keyword one reads its prompt)."""
        ...


#: What the keyword classifier scores a matching job's images: below 1, so that a strict and a
#: looser threshold (an age-restricted channel's) can be told apart in tests.
KEYWORD_SCORE = 0.75


class KeywordClassifier:
    """Deterministic: every image of a job whose prompt has ``word`` (a whole word or phrase,
    any case) scores ``KEYWORD_SCORE`` for each of ``labels``, every other image 0.0."""

    def __init__(self, word: str, labels: Sequence[str]) -> None:
        self.word = word.strip()
        self.labels = tuple(labels)
        self._pattern = re.compile(rf"(?<!\w){re.escape(self.word)}(?!\w)", re.IGNORECASE)

    @property
    def name(self) -> str:
        return f"{KEYWORD_CLASSIFIER_PREFIX}{self.word}"

    def classify(
        self, request: GenerationRequest, images: Sequence[Image.Image]
    ) -> list[dict[str, float]]:
        score = KEYWORD_SCORE if self._pattern.search(request.prompt) else 0.0
        return [dict.fromkeys(self.labels, score) for _ in images]


class HubImageClassifier:
    """A transformers image-classification model and its image processor, warm on ``device``."""

    def __init__(self, name: str, model: Any, processor: Any, load_seconds: float = 0.0) -> None:
        self._name = name
        self.model = model
        self.processor = processor
        self.load_seconds = load_seconds
        config = model.config
        self.labels: tuple[str, ...] = tuple(
            str(config.id2label[index]) for index in range(config.num_labels)
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    def classify(
        self, request: GenerationRequest, images: Sequence[Image.Image]
    ) -> list[dict[str, float]]:
        if not images:
            return []
        rgb = [image.convert("RGB") for image in images]
        try:
            inputs = self.processor(images=rgb, return_tensors="pt")
            pixels = inputs["pixel_values"].to(self.model.device, self.model.dtype)
            with torch.inference_mode():
                logits = self.model(pixel_values=pixels).logits
            # Softmax in float32: a float16 softmax of confident logits rounds to exactly 0/1.
            probabilities = logits.float().softmax(dim=-1).cpu().tolist()
        except torch.OutOfMemoryError as exc:
            free_memory()
            raise OutOfMemoryError(
                f"the {self.device.type} ran out of memory classifying {len(rgb)} image(s); "
                "the job will be retried when memory is free"
            ) from exc
        scores = [dict(zip(self.labels, row, strict=True)) for row in probabilities]
        if not all(math.isfinite(value) for row in scores for value in row.values()):
            raise GenerationError(f"classifier {self.name!r} gave a score that is not a number")
        return scores


def load_classifier(
    moderation: ModerationSettings, generation: GenerationSettings, data_dir: Path
) -> ImageClassifier | None:
    """The configured classifier, loaded and warm; None when none is configured.

    Raises ModelLoadError (one line, naming ``ATELIER_MODERATION_CLASSIFIER_MODEL``) when it
    cannot be loaded, or when it has no score for a label ``classifier_labels`` counts.
    """
    source = moderation.classifier_model
    if source is None:
        return None
    labels = moderation.classifier_labels
    if source.startswith(KEYWORD_CLASSIFIER_PREFIX):
        return KeywordClassifier(source.removeprefix(KEYWORD_CLASSIFIER_PREFIX), labels)
    classifier = load_hub_classifier(source, generation, data_dir)
    missing = [label for label in labels if label not in classifier.labels]
    if missing:
        raise ModelLoadError(
            f"classifier {source!r} has the labels {', '.join(map(repr, classifier.labels))}; "
            f"ATELIER_MODERATION_CLASSIFIER_LABELS names {', '.join(map(repr, missing))}, "
            "which it never scores: list only labels of the model's id2label"
        )
    return classifier


def load_hub_classifier(
    source: str, generation: GenerationSettings, data_dir: Path
) -> HubImageClassifier:
    """Load an image-classification model (hub id, directory or ``tiny``) onto the generation
    device, in the generation dtype, as the pipelines are loaded."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    started = time.perf_counter()
    hub = _check_source(source)
    device, dtype = resolve_device(generation)
    path = source
    if source == TINY_CLASSIFIER:
        # Built before the quiet block: the build has its own, which turns the bars back on
        # when it ends.
        target = data_dir / "models" / TINY_CLASSIFIER_DIR
        try:
            path = str(build_tiny_classifier(target))
        except OSError as exc:
            raise ModelLoadError(
                f"cannot build the tiny classifier in {str(target)!r}: {_first_line(exc)}; "
                "check that ATELIER_DATA_DIR is writable"
            ) from exc
    elif not hub:
        path = str(Path(source).expanduser())
    with quiet_progress_bars():
        try:
            model = AutoModelForImageClassification.from_pretrained(path, dtype=dtype)
            processor = AutoImageProcessor.from_pretrained(path)
            model = model.to(device).eval()
        except torch.OutOfMemoryError as exc:
            free_memory()
            raise ModelLoadError(
                f"out of memory loading classifier {source!r} onto {device}: free memory, or "
                f"unset {SETTING}",
                out_of_memory=True,
            ) from exc
        except Exception as exc:
            # As for the pipelines: every library error (no network, missing or bad files)
            # becomes one sentence that names the setting, not a trace from deep in the hub.
            raise ModelLoadError(_describe_failure(source, hub, exc)) from exc
    seconds = time.perf_counter() - started
    log.info("loaded classifier %s on %s in %.2fs", source, device, seconds)
    return HubImageClassifier(source, model, processor, load_seconds=seconds)


def _check_source(source: str) -> bool:
    """True for a hub id, False for ``tiny`` or an existing transformers directory; anything
    else is a ModelLoadError."""
    if source == TINY_CLASSIFIER:
        return False
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"classifier directory {source!r} is not a transformers model (it has no "
                f"config.json); point {SETTING} at a directory saved with save_pretrained, or "
                "at a hub id"
            )
        return False
    if source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source:
        raise ModelLoadError(f"classifier directory {source!r} does not exist; check {SETTING}")
    if _HUB_ID.match(source):
        return True
    raise ModelLoadError(
        f"unknown classifier {source!r}: set {SETTING} to a hub id (owner/name), a local "
        f"transformers directory, {TINY_CLASSIFIER!r} or keyword:WORD, or unset it"
    )


def _describe_failure(source: str, hub: bool, exc: Exception) -> str:
    # The hub's messages run on for several sentences of advice that does not apply here.
    reason = _first_line(exc).split(". ", 1)[0]
    if hub:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        why = "the hub is offline (HF_HUB_OFFLINE)" if offline else "it could not be downloaded"
        return (
            f"classifier {source!r} is not in the local Hugging Face cache and {why}: {reason}. "
            f"Download it once with `huggingface-cli download {source}`, point {SETTING} at a "
            "local directory, or unset it"
        )
    return f"cannot load classifier {source!r}: {reason}; check {SETTING}, or unset it"


# -- the tiny classifier ------------------------------------------------------------------------


def _fingerprint() -> str:
    blob = json.dumps([TINY_CLASSIFIER_FORMAT, TINY_VIT_CONFIG, TINY_LABELS], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_tiny_classifier_built(path: Path) -> bool:
    try:
        marker = json.loads((path / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("fingerprint") == _fingerprint()


def build_tiny_classifier(path: Path) -> Path:
    """Build the tiny random classifier into ``path`` (idempotent) and return ``path``.

    A ViT image classifier with labels ``normal`` and ``nsfw`` and its image processor, saved
    with ``save_pretrained`` so it loads like a hub model. Built in a temporary sibling and
    renamed into place when complete, like the tiny SDXL. Its scores are meaningless.
    """
    return build_once(
        Path(path), is_tiny_classifier_built, _build_tiny_into, what="the tiny classifier"
    )


def _build_tiny_into(target: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    id2label = dict(enumerate(TINY_LABELS))
    config = ViTConfig(
        **TINY_VIT_CONFIG,
        id2label=id2label,
        label2id={label: index for index, label in id2label.items()},
    )
    # A fixed seed, so every build has the same weights (and every test the same scores).
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(target)
    # The PIL processor: the default one needs torchvision, which Atelier does not install.
    size = TINY_VIT_CONFIG["image_size"]
    ViTImageProcessorPil(size={"height": size, "width": size}).save_pretrained(target)
    (target / _MARKER).write_text(
        json.dumps({"fingerprint": _fingerprint(), "format": TINY_CLASSIFIER_FORMAT}) + "\n"
    )
