"""journald entries: PRIORITY and one field per key, for our loggers and stdlib ones."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from worker.logging import configure


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
