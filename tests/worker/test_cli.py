"""The command line: a bad configuration is named precisely, with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.definition import load_definition
from drivers.sim.library import SimulatedLibrary
from drivers.sim.standins import install_standins

REPO = Path(__file__).resolve().parents[2]


def tapeworker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[http]\nport = "eighty"\n', "http.port: Input should be a valid integer"),
        ("backend = 'tape-robot'\n", "backend: Input should be 'sim' or 'mtx'"),
        ("surprise = 1\n", "surprise: Extra inputs are not permitted"),
        ("[planner\n", "tapeworker.toml"),
        ('library = "missing.toml"\n', "library definition not found"),
    ],
)
def test_bad_config_names_file_key_and_problem(tmp_path: Path, content: str, expected: str) -> None:
    config = tmp_path / "tapeworker.toml"
    config.write_text(content, encoding="utf-8")
    result = tapeworker("check-config", "--config", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr or "missing.toml" in result.stderr
    assert expected in result.stderr


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    result = tapeworker("run", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml: configuration file not found" in result.stderr


def test_bad_library_definition_names_the_key(tmp_path: Path) -> None:
    library = tmp_path / "lib.toml"
    library.write_text(
        "slots = 4\n[[drives]]\nindex = 0\ndevice = '/dev/nst0'\ngeneration = 'LTO-12'\n",
        encoding="utf-8",
    )
    config = tmp_path / "tapeworker.toml"
    config.write_text(f'library = "{library}"\n', encoding="utf-8")
    result = tapeworker("check-config", "--config", str(config))
    assert result.returncode == 2
    assert "drives.0.generation" in result.stderr
    assert "LTO-12" in result.stderr


def test_shipped_configuration_is_valid() -> None:
    result = tapeworker("check-config", "--config", "config/tapeworker.toml")
    assert result.returncode == 0, result.stderr


def test_simulate_compares_the_planner_with_the_baselines() -> None:
    result = tapeworker("simulate", "--workload", "w4", "--quick", "--json", "--no-progress")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    [workload] = report["workloads"]
    policies = {m["policy"] for m in workload["metrics"]}
    assert "planner" in policies
    assert len(policies) >= 4, policies


def test_check_config_reports_a_changer_that_is_not_there(tmp_path: Path) -> None:

    demo = REPO / "config" / "demo-library.toml"
    state = tmp_path / "sim-library.json"
    SimulatedLibrary.open(load_definition(demo), state_file=state, speed=1000.0)
    install_standins(tmp_path / "bin", state)
    moved = tmp_path / "library.toml"
    moved.write_text(demo.read_text().replace('changer = "/dev/sg4"', 'changer = "/dev/sg9"'))
    config = tmp_path / "tapeworker.toml"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    for library, expected in ((demo, 0), (moved, 1)):
        config.write_text(f'backend = "mtx"\nlibrary = "{library}"\nstate_dir = "{tmp_path}"\n')
        result = subprocess.run(
            [sys.executable, "-m", "worker.cli", "check-config", "--config", str(config)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
            env=env,
        )
        assert result.returncode == expected, result.stderr
    assert "/dev/sg9" in result.stderr
