"""The settings tree: env names operators rely on, TOML, and readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_settings


def test_documented_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "ATELIER_DISCORD_TOKEN": "tok.en.secret",
        "ATELIER_DISCORD_API_BASE_URL": "http://127.0.0.1:9/api/v10",
        "ATELIER_DISCORD_GATEWAY_URL": "ws://127.0.0.1:9/gw",
        "ATELIER_DISCORD_GUILD_ID": "1234",
        "ATELIER_DATABASE_URL": "sqlite+aiosqlite:///x.db",
        "ATELIER_DATA_DIR": str(tmp_path),
        "ATELIER_MODEL": "tiny",
        "ATELIER_QUEUE_MAX_RUNNING_PER_USER": "3",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert s.discord.token is not None and s.discord.token.get_secret_value() == "tok.en.secret"
    assert s.discord.api_base_url == "http://127.0.0.1:9/api/v10"
    assert s.discord.gateway_url == "ws://127.0.0.1:9/gw"
    assert s.discord.guild_id == 1234
    assert s.resolved_database_url == "sqlite+aiosqlite:///x.db"
    assert s.data_dir == tmp_path and s.model == "tiny" and s.queue.max_running_per_user == 3
    assert "tok.en.secret" not in repr(s) and "tok.en.secret" not in str(s.model_dump())


def test_defaults() -> None:
    s = load_settings()
    assert s.discord.api_base_url == "https://discord.com/api/v10"
    assert s.discord.gateway_url.startswith("wss://")
    assert s.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert s.resolved_database_url.endswith("data/atelier.db")


def test_toml_file_and_env_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "atelier.toml"
    path.write_text(
        'model = "tiny"\n[queue]\nmax_running_per_user = 5\nmax_queued_per_user = 7\n'
        '[quota]\nrole_multipliers = {"42" = 3.0}\n'
    )
    monkeypatch.setenv("ATELIER_CONFIG", str(path))
    monkeypatch.setenv("ATELIER_QUEUE_MAX_RUNNING_PER_USER", "1")
    s = load_settings()
    assert s.model == "tiny" and s.queue.max_queued_per_user == 7
    assert s.queue.max_running_per_user == 1  # the environment wins over the file
    assert s.quota.role_multipliers == {"42": 3.0}


def test_bad_value_names_setting_and_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_GENERATION_DEVICE", "gpu")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "generation.device" in message and "ATELIER_GENERATION_DEVICE" in message
    assert "'cuda'" in message and "'gpu'" in message


def test_bad_number_and_unknown_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATELIER_QUEUE_MAX_RUNNING_PER_USER", "0")
    with pytest.raises(
        ConfigError, match=r"queue\.max_running_per_user.*greater than or equal to 1"
    ):
        load_settings()
    monkeypatch.delenv("ATELIER_QUEUE_MAX_RUNNING_PER_USER")
    path = tmp_path / "bad.toml"
    path.write_text("[queue]\nmax_runing = 3\n")
    monkeypatch.setenv("ATELIER_CONFIG", str(path))
    with pytest.raises(ConfigError, match=r"queue\.max_runing.*Extra inputs are not permitted"):
        load_settings()


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_CONFIG", "/nonexistent/atelier.toml")
    with pytest.raises(ConfigError, match="not a readable file"):
        load_settings()


def test_token_never_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_DISCORD_TOKEN", "x" * 5)
    monkeypatch.setenv("ATELIER_DISCORD_GUILD_ID", "not-a-number")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "xxxxx" not in str(info.value)


def test_readme_configuration_reference_is_current() -> None:
    from config.reference import reference_rows, with_reference

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert with_reference(readme) == readme, "run: python -m config.reference --write README.md"
    for env, _, meaning in reference_rows():
        assert meaning, f"{env} needs a description"


# -- secrets never reach an error message --------------------------------------------------------

DISCORD_LIKE_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.GaBcDe.q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8"
DB_PASSWORD = "hunter2-correct-horse"


def _config_error() -> str:
    with pytest.raises(ConfigError) as info:
        load_settings()
    return str(info.value)


def test_misspelt_token_variable_is_named_but_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_DISCORD_TOKN", DISCORD_LIKE_TOKEN)
    message = _config_error()
    assert "discord.tokn" in message and "ATELIER_DISCORD_TOKN" in message
    assert DISCORD_LIKE_TOKEN not in message and "q1w2e3r4t5y6" not in message


def test_unknown_setting_value_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ATELIER_BOT_WEBHOOK", "plain words that are secret anyway")
    message = _config_error()
    assert "ATELIER_BOT_WEBHOOK" in message and "secret anyway" not in message
    monkeypatch.delenv("ATELIER_BOT_WEBHOOK")
    path = tmp_path / "atelier.toml"
    path.write_text(f'[queue]\nwebhook = "{DISCORD_LIKE_TOKEN}"\n')
    monkeypatch.setenv("ATELIER_CONFIG", str(path))
    message = _config_error()
    assert "queue.webhook" in message and "q1w2e3r4t5y6" not in message


def test_token_like_value_of_a_known_setting_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_GENERATION_DEVICE", DISCORD_LIKE_TOKEN)
    message = _config_error()
    assert "ATELIER_GENERATION_DEVICE" in message and "'cuda'" in message
    assert "q1w2e3r4t5y6" not in message


def test_database_url_password_never_in_a_validation_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ATELIER_DATABASE_URL", f"postgresql//atelier:{DB_PASSWORD}@db/atelier")
    message = _config_error()
    assert "ATELIER_DATABASE_URL" in message and DB_PASSWORD not in message
    monkeypatch.delenv("ATELIER_DATABASE_URL")
    path = tmp_path / "atelier.toml"
    path.write_text(f'databse_url = "postgresql://atelier:{DB_PASSWORD}@db/atelier"\n')
    monkeypatch.setenv("ATELIER_CONFIG", str(path))
    message = _config_error()
    assert "databse_url" in message and DB_PASSWORD not in message


def test_database_url_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql+asyncpg://atelier:{DB_PASSWORD}@db:5432/atelier"
    monkeypatch.setenv("ATELIER_DATABASE_URL", url)
    s = load_settings()
    assert s.resolved_database_url == url
    assert str(s.database_url) == "postgresql+asyncpg://atelier:***@db:5432/atelier"
    for shown in (repr(s), str(s), str(s.model_dump()), s.model_dump_json(), repr(s.database_url)):
        assert DB_PASSWORD not in shown


def test_config_error_masks_whatever_raised_it() -> None:
    message = str(
        ConfigError(
            f"bad: postgresql://atelier:{DB_PASSWORD}@db/atelier, ATELIER_API_KEY=abc123, "
            f"{DISCORD_LIKE_TOKEN}"
        )
    )
    assert DB_PASSWORD not in message and "abc123" not in message
    assert "q1w2e3r4t5y6" not in message
    assert "postgresql://atelier:***@db/atelier" in message
