"""Suite-wide setup: everything offline and deterministic.

pytest-socket (configured in pyproject.toml) refuses connections to anything but loopback, so a
test that tries to download weights fails loudly instead of hanging.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Settings must come from each test, never from the developer's shell.
for _name in list(os.environ):
    if _name.startswith("ATELIER_") and _name != "ATELIER_TEST_POSTGRES_URL":
        del os.environ[_name]
