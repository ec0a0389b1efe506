"""What the service checks before it starts, and its view of itself before the journal
opens. The whole daemon runs in tests/integration/test_daemon.py."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.integration.broker import free_port
from worker.errors import StartupError
from worker.ops.daemon import RunningDaemon
from worker.runtime.service import Service, check_state_dir, listen
from worker.settings import Settings


def test_a_missing_state_directory_is_made(tmp_path: Path) -> None:
    state = tmp_path / "var" / "lib" / "tapeworker"
    check_state_dir(state)
    assert state.is_dir()
    assert list(state.iterdir()) == [], "the write test leaves nothing behind"


def test_a_state_directory_that_cannot_be_one_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StartupError) as raised:
        check_state_dir(blocker / "state")
    assert str(raised.value).startswith(f"{blocker / 'state'}: the state directory is not writable")


def test_the_listening_socket_is_bound_before_the_start() -> None:
    port = free_port()
    sock = listen("127.0.0.1", port)
    try:
        assert sock.getsockname() == ("127.0.0.1", port)
        assert sock.type == socket.SOCK_STREAM
    finally:
        sock.close()


def test_a_taken_port_stops_the_start_with_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError) as raised:
            listen("127.0.0.1", port)
    message = str(raised.value)
    assert message.startswith(f"http: cannot listen on 127.0.0.1:{port}: ")
    assert "set [http] port" in message


def test_an_address_that_cannot_be_one_stops_the_start() -> None:
    # A scoped IPv6 literal on an interface that does not exist: refused without a
    # name server, so the test does not depend on one.
    with pytest.raises(StartupError, match="http: cannot listen on fe80::1%nosuchif0:1: "):
        listen("fe80::1%nosuchif0", 1)


def test_before_the_journal_opens_there_is_no_fault_to_report(tmp_path: Path) -> None:
    service = Service(Settings(state_dir=tmp_path))
    view: RunningDaemon = service  # the view ops reads
    assert view.journal is None
    assert view.journal_fault is None
    assert service.health == {
        "journal": "ok",
        "journal_fault": None,
        "journal_fault_kind": None,
        "journal_fault_since": None,
    }
    assert not any(tmp_path.iterdir()), "constructing the service writes nothing"
