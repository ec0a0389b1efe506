"""journald entries: PRIORITY and one field per key, for our loggers and stdlib ones."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import structlog
from logging_journald import JournaldTransport

from worker.logging import (
    configure,
    journal_entry,
    journal_fields,
    lost_lines,
    set_level,
)


def parse_entry(datagram: bytes) -> dict[str, str]:
    """The native protocol's simple form: KEY=VALUE lines (no value here has a newline)."""
    fields = {}
    for line in datagram.decode().splitlines():
        key, _, value = line.partition("=")
        fields[key] = value
    return fields


@pytest.fixture(autouse=True)
def restore_logging(restored_logging: None) -> None:
    """Every test here leaves the process's logging as it found it."""


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
    warning, line = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    assert warning["event"] == "journald not reachable, logging JSON to stdout"
    assert warning["problem"].endswith("absent.socket: no such socket")
    assert (line["event"], line["drive"]) == ("still logged", 2)


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


def test_each_format_renders_the_event_its_own_way(
    journal_socket: tuple[Path, socket.socket], capsys: pytest.CaptureFixture[str]
) -> None:
    log = structlog.get_logger("tapeworker.destinations")
    configure("info", "json")
    before = time.time()
    log.info("event received", intake="mqtt", task="7", destination=12)
    after = time.time()
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line) == {
        "intake": "mqtt",
        "task": "7",
        "destination": 12,
        "event": "event received",
        "level": "info",
        "logger": "tapeworker.destinations",
        "timestamp": json.loads(line)["timestamp"],
    }
    stamp = json.loads(line)["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    assert before - 1e-6 <= when <= after, (before, stamp, after)

    configure("info", "console")
    log.info("event received", intake="mqtt", destination=12)
    [line] = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\S+Z \[info\s*\] event received\s+"
        r"\[tapeworker.destinations\] destination=12 intake=mqtt",
        line,
    ), line

    path, sock = journal_socket
    configure("info", "journald", journal_socket=path)
    log.info("event received", intake="mqtt", destination=12)
    entry = parse_entry(sock.recv(65536))
    assert entry == {
        "MESSAGE": "event received intake=mqtt destination=12",
        "PRIORITY": "6",
        "SYSLOG_IDENTIFIER": "tapeworker",
        "INTAKE": "mqtt",
        "DESTINATION": "12",
        "LOGGER": "tapeworker.destinations",
    }
    assert capsys.readouterr().out == ""


def test_a_level_change_reaches_a_logger_bound_and_cached_before_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the daemon's modules do: a module-level logger, used (and cached) before SIGHUP.
    log = structlog.get_logger("tapeworker.mqtt")
    configure("info", "json")
    bound = log.bind(intake="mqtt")
    log.debug("hidden")
    bound.debug("hidden too")
    log.info("shown at info")
    assert [json.loads(x)["event"] for x in capsys.readouterr().out.splitlines()] == [
        "shown at info"
    ]
    set_level("debug")
    log.debug("shown at debug")
    bound.debug("bound, shown at debug")
    logging.getLogger("drivers.mtx").debug("stdlib, shown at debug")
    set_level("error")
    log.warning("hidden at error")
    # uvicorn sets its loggers' own level (warning): ours, stricter, still applies.
    monkeypatch.setattr(logging.getLogger("uvicorn.error"), "level", logging.WARNING)
    logging.getLogger("uvicorn.error").warning("hidden at error too")
    log.error("shown at error")
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == [
        "shown at debug",
        "bound, shown at debug",
        "stdlib, shown at debug",
        "shown at error",
    ]
    assert lines[1]["intake"] == "mqtt"


def test_a_logger_cached_before_a_reconfiguration_follows_the_new_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = structlog.get_logger("tapeworker.t")
    configure("info", "json")
    log.info("as json")
    configure("info", "console")
    log.info("as a console line", drive=1)
    first, second = capsys.readouterr().out.splitlines()
    assert json.loads(first)["event"] == "as json"
    assert "as a console line" in second
    assert "drive=1" in second
    assert not second.startswith("{")


def test_context_variables_and_tracebacks_reach_every_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("info", "json")
    structlog.contextvars.bind_contextvars(library="alpha")
    try:
        try:
            raise ValueError("bad slot 99")
        except ValueError:
            structlog.get_logger("tapeworker.executor").exception("move failed", drive=2)
            logging.getLogger("drivers.mtx.backend").exception("mtx %s failed", "load")
        structlog.get_logger("tapeworker.executor").info("moved %d tapes", 3)
    finally:
        structlog.contextvars.clear_contextvars()
    ours, theirs, formatted = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    for line in (ours, theirs):
        assert line["library"] == "alpha"
        assert line["level"] == "error"
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert line["exception"].rstrip().endswith("ValueError: bad slot 99")
    assert (ours["event"], ours["drive"]) == ("move failed", 2)
    assert (theirs["event"], theirs["logger"]) == ("mtx load failed", "drivers.mtx.backend")
    assert formatted["event"] == "moved 3 tapes"


class BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_broken_stream_loses_lines_and_raises_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", BrokenStream())
    configure("info", "json")
    lost = lost_lines()
    structlog.get_logger("tapeworker.t").info("into the void", drive=1)
    logging.getLogger("uvicorn.error").error("stdlib into the void")
    assert lost_lines() == lost + 2
    assert "log line lost (OSError: [Errno 28] No space left on device)" in (
        capsys.readouterr().err
    )
    monkeypatch.undo()
    configure("info", "json")
    structlog.get_logger("tapeworker.t").info("unrenderable", value=Unprintable())
    structlog.get_logger("tapeworker.t").info("the next line is written")
    assert lost_lines() == lost + 3
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["event"] == "the next line is written"


def test_a_journal_socket_gone_away_loses_lines_and_raises_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        configure("info", "journald", journal_socket=path)
    path.unlink()  # journald stopped: its socket closed and removed
    lost = lost_lines()
    structlog.get_logger("tapeworker.t").info("nobody listens", drive=1)
    logging.getLogger("drivers").warning("nobody listens either")
    assert lost_lines() == lost + 2
    # journald back (a new socket at the same path): the transport reconnects.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        structlog.get_logger("tapeworker.t").info("heard again")
        assert parse_entry(sock.recv(65536))["MESSAGE"] == "heard again"


def parse_native(datagram: bytes) -> dict[str, str]:
    """The native protocol in full: `KEY=value` lines and `KEY\\n<64-bit length><bytes>\\n`."""
    fields, at = {}, 0
    while at < len(datagram):
        end = datagram.index(b"\n", at)
        line = datagram[at:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            at = end + 1
        else:
            key, size = line, int.from_bytes(datagram[end + 1 : end + 9], "little")
            value = datagram[end + 9 : end + 9 + size]
            assert datagram[end + 9 + size : end + 10 + size] == b"\n"
            at = end + 10 + size
        fields[key.decode()] = value.decode()
    return fields


def test_journal_entries_are_encoded_as_logging_journald_encodes_them() -> None:
    fields = journal_fields(
        {"event": "failed", "level": "error", "exception": "Traceback\n  boom", "drive": 2}
    )
    with io.BytesIO() as theirs:
        for key, value in fields:
            JournaldTransport.pack(theirs, key, value)
        assert journal_entry(fields) == theirs.getvalue()
    assert parse_native(journal_entry(fields)) == {
        "MESSAGE": "failed drive=2\nTraceback\n  boom",
        "PRIORITY": "3",
        "SYSLOG_IDENTIFIER": "tapeworker",
        "EXCEPTION": "Traceback\n  boom",
        "DRIVE": "2",
    }


def test_a_traceback_and_an_entry_too_large_for_a_datagram_reach_the_journal(
    journal_socket: tuple[Path, socket.socket],
) -> None:
    path, sock = journal_socket
    configure("info", "journald", journal_socket=path)
    try:
        raise ValueError("bad slot 99")
    except ValueError:
        structlog.get_logger("tapeworker.executor").exception("move failed", drive=2)
    entry = parse_native(sock.recv(65536))
    assert entry["MESSAGE"].startswith("move failed drive=2\nTraceback (most recent call last):")
    assert entry["EXCEPTION"].rstrip().endswith("ValueError: bad slot 99")

    # Past the socket's largest datagram: the entry travels in a memfd passed along.
    huge = "x" * (4 << 20)
    structlog.get_logger("tapeworker.t").info("huge", blob=huge)
    _, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(4))
    [(level, kind, data)] = ancillary
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    with open(int.from_bytes(data[:4], sys.byteorder), "rb") as memfd:
        memfd.seek(0)  # the sender's offset: it wrote the entry through the same file
        entry = parse_native(memfd.read())
    assert entry["BLOB"] == huge
    assert entry["MESSAGE"] == f"huge blob={huge}"


def test_an_exception_passed_as_exc_info_is_rendered_outside_its_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("info", "json")
    try:
        raise KeyError("slot 4")
    except KeyError as caught:
        problem = caught
    structlog.get_logger("tapeworker.destinations").error("poison event skipped", exc_info=problem)
    line = json.loads(capsys.readouterr().out)
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].rstrip().endswith("KeyError: 'slot 4'")
