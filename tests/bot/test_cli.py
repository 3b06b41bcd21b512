"""The `atelier` command as an operator uses it: local generation, errors, database, run."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import struct
import sys
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.cli import main
from config.settings import GenerationSettings, QueueSettings, QuotaSettings
from generation.grid import encode_image, read_metadata
from generation.options import parse_imagine_prompt
from storage import Database, DeliveryLedger, FileImageStore, JobQueue, Owner, QuotaService, audit
from tests.storage.dbfixtures import FakeClock, new_job


@pytest.fixture
def tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_data_dir: Path) -> Path:
    monkeypatch.setenv("ATELIER_MODEL", "tiny")
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tiny_data_dir))
    return tiny_data_dir


def test_imagine_then_upscale_and_vary(
    tiny_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    grid = tmp_path / "grid.png"
    assert main(["imagine", "a lighthouse at dusk --ar 3:2 --seed 7", "--out", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "seeds: 7, 8, 9, 10" in out and "a lighthouse at dusk" in out
    metadata = read_metadata(grid)
    assert metadata is not None and metadata["request"]["seed"] == 7

    # Without --out, the result is named after the operation and seed, in the current folder.
    monkeypatch.chdir(tmp_path)
    assert main(["upscale", str(grid), "--index", "2", "--creative"]) == 0
    assert "upscale_creative" in capsys.readouterr().out
    assert (tmp_path / "upscale_creative-8.png").is_file()
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


def test_db_prune_says_what_it_deletes_and_dry_run_deletes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path))
    assert main(["db", "upgrade"]) == 0
    url = f"sqlite+aiosqlite:///{(tmp_path / 'atelier.db').resolve()}"
    images = FileImageStore(tmp_path / "images")
    old, recent = asyncio.run(_seed_posted_jobs(url, images, days_ago=[200, 40]))
    capsys.readouterr()

    assert main(["db", "prune", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "retention: images kept 30 day(s), job rows kept 180 day(s), "
        "blocked jobs' images kept 14 day(s) after the block, audit log rows kept 365 day(s); "
        "liked and published jobs are kept"
    )
    summary = (
        "1 job row(s) with 3 quota ledger line(s); the images of 1 more job(s) and of 0 "
        "blocked job(s); 2 file(s), 30 bytes; 0 audit log row(s); 0 expired saved search(es); "
        "0 ended group session(s)"
    )
    assert out[1] == f"would delete: {summary}"
    assert (tmp_path / "images" / old[:2] / old / "grid.png").is_file()

    assert main(["db", "prune"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == f"deleted: {summary}"
    assert not (tmp_path / "images" / old[:2] / old).exists()
    assert not (tmp_path / "images" / recent[:2] / recent).exists()
    assert main(["db", "prune"]) == 0
    assert "deleted: 0 job row(s)" in capsys.readouterr().out

    async def audited() -> bool:
        async with Database(url) as db:
            return (await audit(db)).ok

    assert asyncio.run(audited())
    with pytest.raises(SystemExit):
        main(["db", "prune", "--older-than", "3"])


def test_modlog_export_writes_csv_safe_for_spreadsheets_and_jsonl(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prompts and reasons are user text: a CSV cell that a spreadsheet would run as a formula
    gets a leading quote. JSON lines keep the text as it is."""
    import csv

    from storage import ModAction, ModerationLog

    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path))
    assert main(["db", "upgrade"]) == 0
    url = f"sqlite+aiosqlite:///{(tmp_path / 'atelier.db').resolve()}"
    hostile = '=HYPERLINK("http://evil.example","click")'

    async def seed() -> None:
        async with Database(url) as db:
            log = ModerationLog(db)
            await log.record(5, ModAction.FILTER_ADDED, actor_id=50, reason="red fox")
            await log.record(6, ModAction.FILTER_ADDED, actor_id=60, reason="elsewhere")
            await log.record(
                5,
                ModAction.REFUSED,
                actor_id=None,
                target_user_id=7,
                reason="red fox",
                details={"prompt": hostile},
            )
            for reason in ("+1 spam", "-x", "@cmd", "\tx", "\rx", "plain, with comma"):
                await log.record(
                    5, ModAction.BLOCKED, actor_id=50, target_job_id="abc123", reason=reason
                )

    asyncio.run(seed())
    capsys.readouterr()
    target = tmp_path / "log.csv"
    assert (
        main(["modlog", "export", "--guild", "5", "--format", "csv", "--output", str(target)]) == 0
    )
    assert "wrote 8 audit log row(s)" in capsys.readouterr().err
    assert not (tmp_path / "log.csv.part").exists()
    rows = list(csv.reader(target.open(newline="", encoding="utf-8")))
    assert rows[0][:5] == ["id", "created_at", "guild_id", "actor_id", "action"]
    assert [r[4] for r in rows[1:3]] == ["filter_added", "refused"]
    assert rows[1][3] == "50" and rows[2][3] == ""  # the bot is no one
    details = json.loads(rows[2][8])
    assert details == {"prompt": hostile}  # a JSON object starts with "{": left as it is
    assert [r[7] for r in rows[3:]] == [
        "'+1 spam",
        "'-x",
        "'@cmd",
        "'\tx",
        "'\rx",
        "plain, with comma",
    ]
    for row in rows[1:]:
        assert not row[7].startswith(("=", "+", "-", "@", "\t", "\r"))

    assert main(["modlog", "export", "--guild", "5", "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["action"] for line in lines] == ["filter_added", "refused", *["blocked"] * 6]
    assert lines[1]["details"] == {"prompt": hostile} and lines[2]["reason"] == "+1 spam"
    assert lines[1]["actor_id"] is None and {line["guild_id"] for line in lines} == {5}

    # Hostile text in a cell that starts the row is guarded as well.
    from bot.cli import csv_cell

    assert csv_cell(hostile) == "'" + hostile and csv_cell(None) == "" and csv_cell(12) == "12"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--guild", "abc", "--format", "csv"], "--guild must be a server id"),
        (["--guild", "0", "--format", "csv"], "--guild must be a server id"),
        (["--guild", "5", "--format", "xml"], "--format must be csv or jsonl"),
    ],
)
def test_modlog_export_refuses_bad_input_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    fragment: str,
) -> None:
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path))
    assert main(["modlog", "export", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and fragment in captured.err


def test_modlog_export_from_an_unreachable_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ATELIER_DATABASE_URL", "postgresql://atelier:hunter2@127.0.0.1:1/atelier")
    target = tmp_path / "out.csv"
    args = ["modlog", "export", "--guild", "5", "--format", "csv", "--output", str(target)]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "hunter2" not in captured.err
    assert captured.err.startswith("atelier: ")
    assert not target.exists() and not (tmp_path / "out.csv.part").exists()


async def _seed_posted_jobs(url: str, images: FileImageStore, days_ago: list[int]) -> list[str]:
    """Succeeded, posted jobs that finished ``days_ago`` (one 15-byte image each)."""
    clock = FakeClock(datetime.now(UTC))
    made = []
    async with Database(url) as db:
        quota = QuotaService(db, QuotaSettings(), clock=clock)
        queue = JobQueue(db, QueueSettings(), quota, clock=clock)
        deliveries = DeliveryLedger(db, clock=clock)
        for days in days_ago:
            clock.now = datetime.now(UTC) - timedelta(days=days)
            view = await queue.enqueue(Owner(1, 100, 555), new_job())
            claimed = await queue.claim_next("w")
            assert claimed is not None and claimed.id == view.id
            ref = await images.put(view.id, "grid.png", b"x" * 15)
            await queue.complete(view.id, claimed.lease_token, result_refs=[ref], gpu_seconds=1)
            assert await deliveries.claim(view.id)
            assert await deliveries.mark_posted(view.id, 1)
            made.append(view.id)
    return made


# -- hostile input: every bad file or database gets one line on stderr and exit status 2 --------

SECRET_PASSWORD = "hunter2-correct-horse"


def _one_line_refusal(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err
    assert err.startswith("atelier: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert not captured.out.strip(), captured.out
    return err


@pytest.fixture
def no_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: a refused file must be refused before any generation."""
    from generation.engine import Engine

    def refuse(self: Engine) -> float:
        pytest.fail("a model was loaded for input that should have been refused")

    monkeypatch.setattr(Engine, "load", refuse)


def _tiny_request() -> dict[str, Any]:
    (request,) = parse_imagine_prompt(
        "a lighthouse --seed 7", settings=GenerationSettings(), model="tiny"
    )
    return request.to_json()


def _metadata(fields: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "atelier": 1,
        "kind": "grid",
        "request": fields,
        "seeds": [7, 8, 9, 10],
        "cell": [fields["width"], fields["height"]],
        **changes,
    }


def _grid_file(path: Path, fields: dict[str, Any] | None = None, **changes: Any) -> Path:
    """A 2x2 grid of noise with Atelier metadata (``changes`` replace metadata keys)."""
    fields = fields or _tiny_request()
    size = (fields["width"] * 2, fields["height"] * 2)
    pixels = random.Random(0).randbytes(size[0] * size[1] * 3)
    image = Image.frombytes("RGB", size, pixels)
    path.write_bytes(encode_image(image, sys.maxsize, _metadata(fields, **changes)).data)
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


def _text_file(path: Path) -> Path:
    path.write_text("hello, not an image")
    return path


def _png_header_only(path: Path, width: int, height: int, text: bytes | None = None) -> Path:
    """A PNG that claims ``width`` x ``height`` pixels, with metadata (valid unless ``text`` is
    given) but almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    text = text or json.dumps(_metadata(_tiny_request())).encode()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"tEXt", b"atelier\0" + text)
        + chunk(b"IDAT", zlib.compress(b"\0" * (1 + 3 * width)))
        + chunk(b"IEND", b"")
    )
    return path


def _truncated(path: Path) -> Path:
    data = _grid_file(path).read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _forged(**changes: Any) -> Callable[[Path], Path]:
    return lambda path: _grid_file(path, {**_tiny_request(), **changes})


BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda path: path, "cannot be read"),
    "directory": (_directory, "cannot be read"),
    "not an image": (_text_file, "is not an image"),
    "truncated png": (_truncated, "is damaged"),
    "decompression bomb": (lambda path: _png_header_only(path, 20_000, 20_000), "too large"),
    "81 megapixels": (lambda path: _png_header_only(path, 9_000, 9_000), "81,000,000 pixels"),
    "deeply nested metadata": (
        lambda path: _png_header_only(path, 256, 256, b"[" * 100_000),
        "carries no Atelier parameters",
    ),
    "steps -5": (_forged(steps=-5), "steps"),
    "cell 0x0": (lambda path: _grid_file(path, cell=[0, 0]), "cell"),
    "cell of text": (lambda path: _grid_file(path, cell="wide"), "cell"),
    "request not an object": (lambda path: _grid_file(path, request=[1, 2]), "parameters"),
    "steps 100000": (_forged(steps=100_000), "--steps must be from 1 to 60; got 100000"),
    "cfg 1e308": (_forged(guidance=1e308), "--cfg must be from 0 to 20"),
    "aspect 50:1": (_forged(aspect="50:1"), "--ar 50:1 is too extreme"),
    "unknown model": (_forged(model="someone/else"), "--model someone/else is not enabled"),
    "size beyond its aspect": (_forged(width=384, height=384), "384x384 is not a size"),
}


@pytest.mark.parametrize("command", ["upscale", "vary"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_refused_in_one_line_before_generation(
    tiny_env: Path,
    no_generation: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    case: str,
) -> None:
    make, expected = BAD_FILES[case]
    bad = make(tmp_path / "grid.png")
    assert main([command, str(bad), "--index", "1", "--out", str(tmp_path / "out.png")]) == 2
    err = _one_line_refusal(capsys)
    assert expected in err and str(bad) in err
    assert not (tmp_path / "out.png").exists()


def test_imagine_to_an_unwritable_path_is_refused_before_generation(
    tiny_env: Path, no_generation: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    out = tmp_path / "a-file" / "grid.png"
    assert main(["imagine", "a cat", "--out", str(out)]) == 2
    err = _one_line_refusal(capsys)
    assert "cannot write" in err and str(out) in err


UNREACHABLE_DATABASES = {
    "refused": f"postgresql+asyncpg://atelier:{SECRET_PASSWORD}@127.0.0.1:1/atelier",
    "sqlite under a file": "sqlite+aiosqlite:///{tmp}/a-file/atelier.db",
    "unknown dialect": f"nosuchdb://atelier:{SECRET_PASSWORD}@127.0.0.1:1/atelier",
    "in-memory sqlite": "sqlite+aiosqlite://",
}


@pytest.mark.parametrize(
    "argv",
    [["db", "upgrade"], ["db", "prune"], ["db", "prune", "--dry-run"], ["worker"], ["run"]],
    ids=" ".join,
)
@pytest.mark.parametrize("case", list(UNREACHABLE_DATABASES))
def test_unreachable_database_is_one_line_without_the_password(
    tiny_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    argv: list[str],
    case: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "a-file").write_text("not a directory")
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / "tiny").symlink_to(tiny_env / "models" / "tiny")
    monkeypatch.setenv("ATELIER_DATA_DIR", str(data_dir))
    monkeypatch.setenv("ATELIER_DATABASE_URL", UNREACHABLE_DATABASES[case].format(tmp=tmp_path))
    monkeypatch.setenv("ATELIER_DISCORD_TOKEN", "MTIz.not-a-real-token.for-this-test")
    assert main(argv) == 2
    err = _one_line_refusal(capsys)
    assert "database" in err and SECRET_PASSWORD not in err
    assert SECRET_PASSWORD not in caplog.text
