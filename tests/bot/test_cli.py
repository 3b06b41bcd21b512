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


def test_the_operator_sets_quota_overrides_from_the_command_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9, defect 1: a global override exists only for the operator, never via Discord."""
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path))
    assert main(["quota", "show"]) == 0
    assert "no quota overrides" in capsys.readouterr().out
    assert main(["quota", "set", "--user", "42", "--gpu-seconds", "90"]) == 0
    assert main(["quota", "set", "--user", "42", "--guild", "7", "--gpu-seconds", "30"]) == 0
    assert "30 GPU-seconds per window in server 7" in capsys.readouterr().out
    assert main(["quota", "show", "--user", "42"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "everywhere  90" in lines[0] and "server 7  30" in lines[1]
    assert main(["quota", "clear", "--user", "42"]) == 0
    assert "override removed everywhere" in capsys.readouterr().out
    assert main(["quota", "set", "--user", "42", "--gpu-seconds", "-1"]) == 2
    assert "0 or more" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["quota", "set", "--user", "x", "--gpu-seconds", "5"])
