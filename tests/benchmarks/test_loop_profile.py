"""The event loop's shares from py-spy's raw output: the drain's daemon, its main thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.loop_profile import main, report, shares

BENCH = 'process 10:"python -m tests.benchmarks.intake_bench"'
DRAIN = 'process 11:"python -m worker.cli run --config a.toml"'
RESTART = 'process 12:"python -m worker.cli run --config a.toml"'


def sample(process: str, thread: str, *frames: str, count: int = 1) -> str:
    return ";".join((BENCH, process, f"thread (1): {thread}", *frames)) + f" {count}"


SAMPLES = [
    sample(DRAIN, "MainThread", "run (asyncio)", "select (selectors.py:468)", count=5),
    sample(DRAIN, "MainThread", "Inbox._read (m.py:1)", "message_to_event (m.py:2)", count=3),
    sample(DRAIN, "MainThread", "Inbox._read (m.py:1)", "decode_publish (m.py:3)", count=2),
    sample(DRAIN, "MainThread", "Service._changed (s.py:1)", count=4),
    sample(DRAIN, "MainThread", "odd (x.py:1)", count=1),
    sample(DRAIN, "MainThread", "_find_and_load (<frozen>)", count=7),
    # Another thread, and the daemon started again over the journal: not the drain's loop.
    sample(DRAIN, "journal", "Service._changed (s.py:1)", count=50),
    sample(RESTART, "MainThread", "Service._changed (s.py:1)", count=50),
]


def test_the_drains_main_thread_counts_once_for_its_first_part() -> None:
    counts, daemon = shares(SAMPLES)
    assert daemon == "process 11"
    assert counts == {
        "idle": 5,
        "start-up": 7,
        "parsing messages into events": 3,
        "decoding PUBLISH packets, reading the subscribing socket": 2,
        "the state's view, serialised": 4,
        "other": 1,
    }
    lines = report(counts)
    assert lines[0] == "main thread: 10 busy samples, idle 33% (start-up's 7 left out)"
    assert lines[1].split()[-2:] == ["4", "40.0%"]


def test_the_command_prints_the_shares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text("\n".join(SAMPLES) + "\n", encoding="utf-8")
    assert main([str(raw)]) == 0
    assert "parsing messages into events" in capsys.readouterr().out
    raw.write_text(sample(DRAIN, "journal", "x (y.py:1)") + "\n", encoding="utf-8")
    assert main([str(raw)]) == 1
