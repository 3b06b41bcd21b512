"""Suite-wide setup: everything offline and deterministic.

pytest-socket (configured in pyproject.toml) refuses connections to anything but loopback, so a
test that tries to download weights fails loudly instead of hanging.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser import chrome, chrome_session

__all__ = ["chrome", "chrome_session"]  # the real-browser fixtures, for every test

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Settings must come from each test, never from the developer's shell; the test wrappers'
# services (tests/postgres.sh, tests/browser.sh) are the exception.
_TEST_ENVIRONMENT = {
    "ATELIER_TEST_POSTGRES_URL",
    "ATELIER_TEST_CHROMIUM",
    "ATELIER_TEST_CHROMEDRIVER",
    "ATELIER_TEST_SCREENSHOT_DIR",
}
for _name in list(os.environ):
    if _name.startswith("ATELIER_") and _name not in _TEST_ENVIRONMENT:
        del os.environ[_name]


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose models/tiny holds the built tiny model and its LoRA (built once)."""
    from generation.tiny import build_tiny_model

    data_dir = tmp_path_factory.mktemp("atelier-data")
    build_tiny_model(data_dir / "models" / "tiny")
    return data_dir


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the real browser carries the `browser` marker (`-m browser` selects it)."""
    for item in items:
        if "chrome_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
