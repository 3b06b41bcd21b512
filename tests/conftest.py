"""Suite-wide setup: everything offline and deterministic.

pytest-socket (configured in pyproject.toml) refuses connections to anything but loopback, so a
test that tries to download weights fails loudly instead of hanging.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Settings must come from each test, never from the developer's shell.
for _name in list(os.environ):
    if _name.startswith("ATELIER_") and _name != "ATELIER_TEST_POSTGRES_URL":
        del os.environ[_name]


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose models/tiny holds the built tiny model and its LoRA (built once)."""
    from generation.tiny import build_tiny_model

    data_dir = tmp_path_factory.mktemp("atelier-data")
    build_tiny_model(data_dir / "models" / "tiny")
    return data_dir
