"""The wheel holds what an installed ``atelier`` needs outside a checkout, and no tests.

``atelier bench bot`` drives the Discord emulator and every start applies the migrations, so
both must ship, as must the web gallery's templates and stylesheet; ``tests`` must not become an
installed top-level package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "config", "generation", "storage")


def test_the_wheel_ships_the_devtools_and_migrations_but_not_the_tests(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    # A copy, so setuptools' build/ and egg-info neither litter the checkout nor leak stale
    # files from an earlier build into this wheel. tests/ comes along to prove it is left out.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in (*PACKAGES, "tests"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    dist = tmp_path / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*command, "--wheel-dir", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"},
    )
    (wheel,) = dist.glob("atelier-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(
            archive.read(n).decode() for n in names if n.endswith("dist-info/entry_points.txt")
        )

    top_level = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_level == set(PACKAGES)
    for needed in (
        "bot/devtools/bench.py",
        "bot/devtools/bench_gallery.py",
        "bot/devtools/emulator/__init__.py",
        "bot/devtools/emulator/server.py",
        "bot/devtools/emulator/README.md",
        "storage/alembic.ini",
        "storage/migrations/env.py",
        "storage/migrations/script.py.mako",
        "storage/migrations/versions/0001_initial.py",
        "storage/migrations/versions/0009_web_gallery.py",
        "bot/web/templates/base.html",
        "bot/web/templates/image.html",
        "bot/web/static/atelier.css",
        "bot/web/static/favicon.svg",
        "generation/bench.py",
        "generation/bench_sheet.py",
        "storage/bench.py",
        "storage/bench_gallery.py",
        "storage/bench_seed.py",
    ):
        assert needed in names, needed
    assert "atelier = bot.cli:main" in entry_points


def test_the_emulator_and_bench_import_without_pytest_or_the_tests(tmp_path: Path) -> None:
    # A fresh interpreter away from the checkout: in this one pytest and tests/ are loaded.
    code = (
        "import sys, bot.devtools.bench, bot.devtools.bench_gallery, bot.devtools.emulator; "
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', 'tests')); "
        "assert not leaked, leaked"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=tmp_path)
