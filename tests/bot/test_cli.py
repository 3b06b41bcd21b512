"""The `atelier` command as an operator uses it: local generation, errors, database, run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from generation.grid import read_metadata


@pytest.fixture
def tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_data_dir: Path) -> Path:
    monkeypatch.setenv("ATELIER_MODEL", "tiny")
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tiny_data_dir))
    return tiny_data_dir


def test_imagine_then_upscale_and_vary(
    tiny_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = tmp_path / "grid.png"
    assert main(["imagine", "a lighthouse at dusk --ar 3:2 --seed 7", "--out", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "seeds: 7, 8, 9, 10" in out and "a lighthouse at dusk" in out
    metadata = read_metadata(grid)
    assert metadata is not None and metadata["request"]["seed"] == 7

    up = tmp_path / "up.png"
    assert main(["upscale", str(grid), "--index", "2", "--creative", "--out", str(up)]) == 0
    assert "upscale_creative" in capsys.readouterr().out and up.exists()
    vary = tmp_path / "vary.png"
    assert main(["vary", str(grid), "--index", "3", "--strong", "--out", str(vary)]) == 0
    assert "vary_strong" in capsys.readouterr().out and vary.exists()


def test_bad_input_exits_non_zero_with_the_parsers_message(
    tiny_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["imagine", "a cat --ar 11:1", "--out", str(tmp_path / "x.png")]) == 2
    assert "--ar 11:1 is too extreme" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ATELIER_QUEUE_MAX_QUEUED_PER_USER", "many")
    assert main(["db", "upgrade"]) == 2
    assert "ATELIER_QUEUE_MAX_QUEUED_PER_USER" in capsys.readouterr().err


def test_db_upgrade(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path))
    assert main(["db", "upgrade"]) == 0
    assert "database at revision" in capsys.readouterr().out
    assert (tmp_path / "atelier.db").exists()


def test_run_without_token_explains_and_leaks_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path))
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "ATELIER_DISCORD_TOKEN" in err and "Traceback" not in err


def test_full_size_model_on_cpu_is_refused_with_a_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ATELIER_MODEL", "sdxl")
    assert main(["imagine", "a cat", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "sdxl" in err and "ATELIER_MODEL=tiny" in err and "Traceback" not in err


def test_sockets_beyond_loopback_are_blocked() -> None:
    import socket

    import pytest_socket

    # pytest-socket (pyproject addopts) guards connect(): only loopback hosts are allowed.
    assert socket.socket.connect is not pytest_socket._true_connect
