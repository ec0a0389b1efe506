"""`tapeworker sim exec`: any program against the emulated library, as an operator runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "config" / "demo-library.toml"
TIMEOUT_S = 120.0


def sim_exec(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "sim", "exec", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        cwd=cwd,
    )


def test_mtx_status_of_the_demo_library() -> None:
    run = sim_exec("--library", str(DEMO), "--", "mtx", "-f", "/dev/sg4", "status")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "  Storage Changer /dev/sg4:4 Drives, 52 Slots ( 4 Import/Export )"
    assert len(lines) == 1 + 4 + 52
    assert "VolumeTag=NOD400L8" in run.stdout


def test_a_script_under_another_changer_name_keeps_its_moves_in_the_state(
    tmp_path: Path,
) -> None:
    state = tmp_path / "library.json"
    script = (
        "set -e\n"
        'slot=$(mtx -f /dev/sg-sim status | sed -n "s/ *Storage Element \\([0-9]*\\):Full'
        ' :VolumeTag=NOD400L8.*/\\1/p")\n'
        'mtx -f /dev/sg-sim load "$slot" 0\n'
        "mt -f /dev/nst0 status\n"
        "exit 7\n"
    )
    run = sim_exec(
        "--library",
        str(DEMO),
        "--state",
        str(state),
        "--speed",
        "1000",
        "--changer",
        "/dev/sg-sim",
        "--",
        "sh",
        "-c",
        script,
    )
    assert run.returncode == 7, run.stderr
    assert "...done\n" in run.stdout
    assert "Density code 0x5e (LTO-8)." in run.stdout
    saved = json.loads(state.read_text())
    assert saved["changer"] == "/dev/sg-sim"
    assert saved["drives"][0]["barcode"] == "NOD400L8"


def test_a_bad_definition_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "lib.toml"
    bad.write_text('slots = "many"\n', encoding="utf-8")
    run = sim_exec("--library", str(bad), "--", "true")
    assert run.returncode == 2
    assert str(bad) in run.stderr


def test_without_a_program() -> None:
    run = sim_exec("--library", str(DEMO))
    assert run.returncode == 2
    assert "give the program after --" in run.stderr


def test_a_program_that_does_not_exist(tmp_path: Path) -> None:
    run = sim_exec("--library", str(DEMO), "--", str(tmp_path / "nothing"))
    assert run.returncode == 127
    assert "cannot run" in run.stderr
