"""journald entries: PRIORITY and one field per key, for our loggers and stdlib ones."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from worker.logging import configure, journal_fields, set_level


def parse_entry(datagram: bytes) -> dict[str, str]:
    """The native protocol's simple form: KEY=VALUE lines (no value here has a newline)."""
    fields = {}
    for line in datagram.decode().splitlines():
        key, _, value = line.partition("=")
        fields[key] = value
    return fields


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave the process's logging as we found it (pytest captures through it)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def journal_socket(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    path = tmp_path / "journal.socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        yield path, sock


def test_journald_entries_carry_priority_and_fields(
    journal_socket: tuple[Path, socket.socket],
) -> None:
    path, sock = journal_socket
    configure("info", "journald", journal_socket=path)
    structlog.get_logger("tapeworker.executor").error(
        "drive marked down", drive=1, barcode="NOD400L8", reason="3 failures"
    )
    logging.getLogger("drivers.mtx.backend").warning("mtx status degraded, retrying (%d)", 2)
    logging.getLogger("drivers.mtx.backend").debug("below the level: not sent")

    ours = parse_entry(sock.recv(65536))
    assert ours["PRIORITY"] == "3"
    assert ours["DRIVE"] == "1"
    assert ours["BARCODE"] == "NOD400L8"
    assert ours["REASON"] == "3 failures"
    assert ours["SYSLOG_IDENTIFIER"] == "tapeworker"
    assert ours["MESSAGE"].startswith("drive marked down")

    stdlib = parse_entry(sock.recv(65536))
    assert stdlib["PRIORITY"] == "4"
    assert stdlib["MESSAGE"] == "mtx status degraded, retrying (2)"
    assert stdlib["LOGGER"] == "drivers.mtx.backend"

    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(65536)


def test_without_journald_the_lines_go_to_stdout_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("info", "journald", journal_socket=tmp_path / "absent.socket")
    structlog.get_logger("t").info("still logged", drive=2)
    out = capsys.readouterr().out
    assert '"event": "journald not reachable, logging JSON to stdout"' in out
    assert '"drive": 2' in out


def test_journal_fields_name_each_key_as_journald_allows() -> None:
    fields = dict(
        journal_fields(
            {
                "event": "moved",
                "level": "warning",
                "timestamp": "2026-01-01T00:00:00Z",
                "logger": "tapeworker.executor",
                "drive": 1,
                "slot-from": 4,
                "_private": "x",
                "9lives": "x",
                "reason": None,
                "barcodes": ["A", "B"],
                "elapsed": 1.5,
            }
        )
    )
    assert fields["MESSAGE"] == (
        "moved drive=1 slot-from=4 _private=x 9lives=x reason=None barcodes=['A', 'B'] elapsed=1.5"
    )
    assert fields["PRIORITY"] == 4
    assert fields["SYSLOG_IDENTIFIER"] == "tapeworker"
    assert fields["DRIVE"] == 1
    # Not journald's characters: replaced; its own fields (a leading _) are not ours.
    assert fields["SLOT_FROM"] == 4
    assert fields["PRIVATE"] == "x"
    assert "9LIVES" not in fields, "a field name cannot start with a digit"
    assert "REASON" not in fields, "a None value is left out"
    assert fields["BARCODES"] == '["A", "B"]', "structured values travel as JSON"
    assert fields["ELAPSED"] == 1.5
    assert fields["LOGGER"] == "tapeworker.executor"
    assert "TIMESTAMP" not in fields, "journald stamps every entry itself"


def test_an_exception_follows_the_message_and_unknown_levels_are_info() -> None:
    fields = dict(journal_fields({"event": "failed", "level": "chatty", "exception": "Trace"}))
    assert fields["MESSAGE"] == "failed\nTrace"
    assert fields["PRIORITY"] == 6


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_our_events_and_stdlib_records_share_one_stream(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("info", fmt)
    structlog.get_logger("tapeworker.t").info("mounted", drive=3)
    logging.getLogger("uvicorn.error").warning("port %d in use", 18601)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines
    if fmt == "json":
        ours, theirs = (json.loads(line) for line in lines)
        assert (ours["event"], ours["drive"], ours["level"]) == ("mounted", 3, "info")
        assert ours["timestamp"].endswith("Z")
        assert (theirs["event"], theirs["logger"]) == ("port 18601 in use", "uvicorn.error")
    else:
        assert "mounted" in lines[0]
        assert "drive=3" in lines[0]
        assert "port 18601 in use" in lines[1]


def test_the_level_applies_to_every_logger(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("warning", "json")
    structlog.get_logger("tapeworker.t").info("hidden")
    logging.getLogger("drivers").info("hidden too")
    assert capsys.readouterr().out == ""
    set_level("debug")
    assert logging.getLogger().level == logging.DEBUG
    structlog.get_logger("tapeworker.t").debug("shown")
    assert json.loads(capsys.readouterr().out)["event"] == "shown"
    set_level("error")
    assert logging.getLogger().level == logging.ERROR
