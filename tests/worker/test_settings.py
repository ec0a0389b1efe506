"""Where the configuration and the state directory come from: one rule for every command."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from worker import settings as settings_module
from worker.errors import ConfigError
from worker.settings import BUILTIN_CONFIG, SYSTEM_STATE_DIR, find_config, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_system_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    absent = tmp_path / "etc" / "tapeworker.toml"
    monkeypatch.setattr(settings_module, "SYSTEM_CONFIG", absent)
    monkeypatch.delenv("TAPEWORKER_CONFIG", raising=False)
    monkeypatch.delenv("TAPEWORKER_STATE_DIR", raising=False)
    return absent


def test_search_order(
    no_system_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert find_config() == BUILTIN_CONFIG
    no_system_config.parent.mkdir()
    no_system_config.write_text("")
    assert find_config() == no_system_config
    from_env = tmp_path / "env.toml"
    from_env.write_text("")
    monkeypatch.setenv("TAPEWORKER_CONFIG", str(from_env))
    assert find_config() == from_env
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("")
    assert find_config(explicit) == explicit


def test_a_named_file_that_is_missing_is_an_error(
    no_system_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        find_config(tmp_path / "nope.toml")
    monkeypatch.setenv("TAPEWORKER_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="TAPEWORKER_CONFIG"):
        find_config()


def test_the_builtin_demo_keeps_its_state_in_the_users_state_directory(
    no_system_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    settings = load_settings()
    assert settings.state_dir == tmp_path / "xdg" / "tapeworker"
    assert settings.library.is_file()
    assert not settings.state_dir.exists(), "loading settings creates nothing"


def test_a_system_file_defaults_to_the_system_state_directory(no_system_config: Path) -> None:
    no_system_config.parent.mkdir()
    no_system_config.write_text('library = "lib.toml"\n')
    settings = load_settings()
    assert settings.state_dir == SYSTEM_STATE_DIR
    assert settings.library == no_system_config.parent / "lib.toml"


def test_the_environment_names_the_state_directory_over_the_file(
    no_system_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "tapeworker.toml"
    config.write_text('state_dir = "here"\n')
    assert load_settings(config).state_dir == tmp_path / "here"
    monkeypatch.setenv("TAPEWORKER_STATE_DIR", str(tmp_path / "there"))
    assert load_settings(config).state_dir == tmp_path / "there"


def test_the_journal_must_remember_as_long_as_the_broker(
    no_system_config: Path, tmp_path: Path
) -> None:
    config = tmp_path / "tapeworker.toml"
    broker = '[mqtt]\nhost = "127.0.0.1"\nsession_expiry_s = 604800\n'
    config.write_text(broker + "[journal]\nretention_days = 6\n")
    with pytest.raises(ConfigError, match="retention_days"):
        load_settings(config)
    config.write_text(broker + "[journal]\nretention_days = 7\n")
    assert load_settings(config).journal.retention_days == 7
    # Without a broker nothing is redelivered: a short retention is fine.
    config.write_text("[journal]\nretention_days = 0.5\n")
    assert load_settings(config).journal.retention_days == 0.5


def test_the_example_configuration_matches_the_shipped_default() -> None:
    """config/tapeworker.toml is the shipped default with a state directory in the checkout."""
    example = tomllib.loads((REPO / "config" / "tapeworker.toml").read_text())
    shipped = tomllib.loads(BUILTIN_CONFIG.read_text())
    assert example.pop("state_dir") == "../state"
    assert example == shipped, "keep config/tapeworker.toml and worker/defaults/ in step"
