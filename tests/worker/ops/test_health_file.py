"""The health file: written in place by the daemon, read by the CLI only while the
process that wrote it runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from worker.ops.health_file import SIZE, HealthFile, health_path, read_health


def test_what_the_daemon_writes_the_cli_reads_with_its_pid(tmp_path: Path) -> None:
    health = HealthFile(health_path(tmp_path))
    health.open()
    try:
        # Claimed at open: later writes need no new blocks, even on a full disk.
        assert health.path.stat().st_size == SIZE
        health.write({"journal_fault": None, "draining": False})
        assert read_health(tmp_path) == {
            "pid": os.getpid(),
            "journal_fault": None,
            "draining": False,
        }
        health.write({"journal_fault": "journal full: disk full", "draining": False})
        assert read_health(tmp_path) == {
            "pid": os.getpid(),
            "journal_fault": "journal full: disk full",
            "draining": False,
        }
        assert health.path.stat().st_size == SIZE
    finally:
        health.close()
    # A clean stop blanks it: no daemon, nothing to report.
    assert health.path.stat().st_size == SIZE
    assert read_health(tmp_path) is None


def test_the_same_state_is_not_written_again(tmp_path: Path) -> None:
    health = HealthFile(health_path(tmp_path))
    health.open()
    try:
        health.write({"draining": True})
        first = health.path.read_bytes()
        # Someone else's bytes stay until the state changes: no write per tick.
        health.path.write_bytes(b"{}".ljust(SIZE))
        health.write({"draining": True})
        assert health.path.read_bytes() == b"{}".ljust(SIZE)
        health.write({"draining": False})
        assert health.path.read_bytes() != first
        assert read_health(tmp_path) == {"pid": os.getpid(), "draining": False}
    finally:
        health.close()


def test_writes_before_open_or_after_close_are_dropped(tmp_path: Path) -> None:
    health = HealthFile(health_path(tmp_path))
    health.write({"draining": True})
    assert not health.path.exists()
    health.open()
    health.close()
    health.write({"draining": True})
    assert read_health(tmp_path) is None
    health.close()  # twice is harmless


def test_a_file_whose_process_is_gone_counts_for_nothing(tmp_path: Path) -> None:
    child = subprocess.Popen(["true"])
    child.wait(timeout=30)
    health_path(tmp_path).write_text(json.dumps({"pid": child.pid, "draining": False}))
    assert read_health(tmp_path) is None


def test_no_file_or_a_file_that_is_not_health_is_no_daemon(tmp_path: Path) -> None:
    assert read_health(tmp_path) is None
    for text in ("", " " * SIZE, "not json", "[1, 2]", '{"draining": false}', '{"pid": "1"}'):
        health_path(tmp_path).write_text(text)
        assert read_health(tmp_path) is None, text
