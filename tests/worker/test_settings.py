"""Where the configuration and the state directory come from: one rule for every command."""

from __future__ import annotations

import tomllib
from dataclasses import fields, replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.definition import load_definition
from drivers.mtx.backend import MtxLibrary
from drivers.sim.library import SimulatedLibrary
from worker import settings as settings_module
from worker.core.planner import PlanPolicy
from worker.errors import ConfigError
from worker.settings import (
    BUILTIN_CONFIG,
    DEFAULTS,
    SYSTEM_STATE_DIR,
    PlannerSettings,
    Settings,
    find_config,
    load_settings,
)

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


def test_the_environment_overrides_the_file_key_by_key(
    no_system_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "tapeworker.toml"
    config.write_text('hold_seconds = 60\n[mqtt]\nhost = "file-broker"\nport = 1884\n')
    monkeypatch.setenv("TAPEWORKER_MQTT__HOST", "env-broker")
    monkeypatch.setenv("TAPEWORKER_HOLD_SECONDS", "90")
    settings = load_settings(config)
    assert (settings.mqtt.host, settings.mqtt.port, settings.hold_seconds) == (
        "env-broker",
        1884,
        90,
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("colour = 1\n", "colour: Extra inputs are not permitted"),
        ("[mqtt]\nport = 0\n", "mqtt.port: Input should be greater than or equal to 1"),
        ('[planner]\nmax_age_s = "soon"\n', "planner.max_age_s: Input should be a valid number"),
        ('[http.users]\nann = 1\n[[http.tasks]]\nid = -1\nname = "a"\n', "http.tasks.0.id"),
        ("library_id = 'a/b'\n", "library_id: String should match pattern"),
        ("[mqtt\n", "tapeworker.toml: "),
    ],
)
def test_a_bad_file_is_reported_with_the_file_the_key_and_the_problem(
    no_system_config: Path, tmp_path: Path, text: str, problem: str
) -> None:
    config = tmp_path / "tapeworker.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert str(raised.value).startswith(f"{config}: ")
    assert problem in str(raised.value)


def test_a_relative_library_is_found_beside_the_file_unless_the_environment_names_it(
    no_system_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "etc" / "tapeworker.toml"
    config.parent.mkdir()
    config.write_text('library = "libraries/hall3.toml"\nstate_dir = "/srv/tapeworker"\n')
    settings = load_settings(config)
    assert settings.library == tmp_path / "etc" / "libraries" / "hall3.toml"
    assert settings.state_dir == Path("/srv/tapeworker")
    monkeypatch.setenv("TAPEWORKER_LIBRARY", "relative.toml")
    assert load_settings(config).library == Path("relative.toml")


def test_the_state_directory_holds_the_journal_the_simulator_and_the_changer_lock() -> None:
    settings = Settings(state_dir=Path("/srv/tw"))
    assert settings.journal_path == Path("/srv/tw/journal.sqlite3")
    assert settings.sim_state_path == Path("/srv/tw/sim-library.json")
    assert settings.changer_lock_path == Path("/srv/tw/changer.lock")


def test_the_planner_section_is_the_planners_policy_with_its_defaults() -> None:
    assert PlannerSettings().policy() == PlanPolicy()
    policy = PlannerSettings(dismount_delay_s=30, spare_drives=None).policy()
    assert policy == replace(PlanPolicy(), dismount_delay_s=30, spare_drives=None)
    with pytest.raises(ValidationError, match="dismount_delay_s"):
        PlannerSettings(dismount_delay_s=-1)
    # Only what an operator may set: the rest of PlanPolicy stays the planner's.
    assert set(PlannerSettings.model_fields) <= {f.name for f in fields(PlanPolicy)}


async def test_the_backend_is_picked_in_one_place(tmp_path: Path) -> None:
    definition = load_definition(DEFAULTS / "demo-library.toml")
    settings = Settings(state_dir=tmp_path, backend="sim")
    async with settings.open_library(definition) as sim:
        assert isinstance(sim, SimulatedLibrary)
        # The simulated library keeps its cartridges where the state directory says.
        assert settings.sim_state_path.is_file()
    async with Settings(state_dir=tmp_path / "mtx", backend="mtx").open_library(definition) as mtx:
        assert isinstance(mtx, MtxLibrary)
