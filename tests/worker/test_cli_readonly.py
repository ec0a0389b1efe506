"""Read-only commands: they read the daemon's state, create nothing, and say when there is none."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drivers.definition import load_definition
from drivers.lockfile import file_lock
from worker.intake.destinations import DestinationEvent, RejectedInput, record_events
from worker.seed.models import TaskDestinationBody
from worker.settings import DEFAULTS
from worker.state.journal import Journal

REPO = Path(__file__).resolve().parents[2]
DEMO = DEFAULTS / "demo-library.toml"


def tapeworker(
    *args: str, cwd: Path, stdout: int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEWORKER_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def write_config(folder: Path, state: Path) -> Path:
    config = folder / "tapeworker.toml"
    config.write_text(f'state_dir = "{state}"\nlibrary = "{DEMO}"\n')
    return config


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.mark.parametrize("command", ["status", "events", "inventory"])
def test_without_daemon_state_they_say_so_and_create_nothing(command: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "state")
    before = files_under(tmp_path)
    result = tapeworker(command, "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "has the daemon run" in result.stderr
    assert files_under(tmp_path) == before


async def fill_journal(path: Path, now: float) -> None:
    journal = await Journal.open(path)
    try:
        await journal.sync_catalog(load_definition(DEMO), now)
        body = TaskDestinationBody.model_validate(
            {"folder_id": 1, "folder_path": "/c/f", "tape_barcode": "NOD400L8"}
        )
        await record_events(
            journal,
            [DestinationEvent("create", "7", 3, body, "http")],
            now=now - 600,
            hold_seconds=3600,
        )
        await record_events(
            journal, [RejectedInput("not JSON", source="mqtt")], now=now, hold_seconds=3600
        )
    finally:
        await journal.close()


@pytest.fixture
def daemon_state(tmp_path: Path) -> Path:
    """A journal as a daemon leaves it: one pending request, one rejected event."""
    state = tmp_path / "state"
    asyncio.run(fill_journal(state / "journal.sqlite3", time.time()))
    return write_config(tmp_path, state)


def test_status_json_has_iso_times_ages_and_why_a_request_waits(
    daemon_state: Path, tmp_path: Path
) -> None:
    before = files_under(tmp_path)
    result = tapeworker("status", "--json", "--config", str(daemon_state), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["time"].endswith("Z")
    [request] = data["requests"]
    assert request["task"] == "7"
    assert request["destination"] == 3
    assert request["arrival"].endswith("Z")
    assert 590 <= request["age_s"] < 3600
    assert request["waiting"]
    assert files_under(tmp_path) == before, "a reader leaves no -wal or -shm behind"

    text = tapeworker("status", "--config", str(daemon_state), cwd=tmp_path)
    assert "task 7 destination 3: pending NOD400L8, waiting 10m" in text.stdout


def test_events_carry_time_task_and_destination_and_filter_by_time(
    daemon_state: Path, tmp_path: Path
) -> None:
    result = tapeworker("events", "--json", "--config", str(daemon_state), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)["events"]
    assert [(e["verb"], e["task"], e["destination"], e["status"]) for e in events] == [
        ("create", "7", 3, "applied"),
        (None, None, None, "rejected"),
    ]
    assert all(e["received"].endswith("Z") for e in events)

    recent = tapeworker("events", "--since", "5m", "--config", str(daemon_state), cwd=tmp_path)
    lines = recent.stdout.splitlines()
    assert len(lines) == 1
    assert "rejected: not JSON" in lines[0]
    assert lines[0][:4].isdigit(), "every line starts with its time"

    text = tapeworker("events", "--config", str(daemon_state), cwd=tmp_path)
    assert "task=7 destination=3 applied" in text.stdout

    bad = tapeworker("events", "--since", "yesterday", "--config", str(daemon_state), cwd=tmp_path)
    assert bad.returncode == 2
    assert "neither an ISO-8601 time nor an age" in bad.stderr


def test_a_reader_that_leaves_ends_the_output_quietly(daemon_state: Path, tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    try:
        result = tapeworker("status", "--config", str(daemon_state), cwd=tmp_path, stdout=write_end)
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141


def test_version(tmp_path: Path) -> None:
    result = tapeworker("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("tapeworker ")


async def test_the_changer_lock_excludes_another_process(tmp_path: Path) -> None:
    path = tmp_path / "changer.lock"
    path.touch()
    entered = asyncio.Event()

    async def inventory() -> None:
        async with file_lock(path):
            entered.set()

    with path.open("rb") as other:  # another open file: flock treats it as another process
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        waiter = asyncio.create_task(inventory())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(entered.wait()), 0.3)
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    await asyncio.wait_for(waiter, 10)
    assert entered.is_set()


async def test_without_a_state_directory_there_is_nothing_to_lock(tmp_path: Path) -> None:
    async with file_lock(tmp_path / "absent" / "changer.lock"):
        pass
    assert not (tmp_path / "absent").exists()


def test_check_config_creates_no_simulated_library(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "state")
    before = files_under(tmp_path)
    result = tapeworker("check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration ok" in result.stdout
    assert files_under(tmp_path) == before
