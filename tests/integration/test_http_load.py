"""The HTTP listener under hostile clients, against the daemon as a process, with raw sockets.

Every error is the API's one error shape, the connection is closed after it, and a
valid request is still answered.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from statistics import median

import pytest

from tests.benchmarks.http_flood import run_benchmark
from tests.integration.daemon import Daemon, wait_until

pytestmark = pytest.mark.integration

INDEX = "/api/v2/tasks/1/task_destinations"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(
        folder=tmp_path / "daemon",
        extra_env={
            "TAPEWORKER_HTTP__HEADER_TIMEOUT_S": "1",
            "TAPEWORKER_HTTP__BODY_TIMEOUT_S": "1",
            "TAPEWORKER_HTTP__MAX_CONNECTIONS": "16",
        },
    )
    daemon.start()
    yield daemon
    daemon.stop()


def connect(daemon: Daemon) -> socket.socket:
    return socket.create_connection(("127.0.0.1", daemon.http_port), timeout=15)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the daemon sends until it closes the connection (bounded by the timeout)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def is_closed(sock: socket.socket) -> bool:
    """Whether the daemon closed the connection (a reset counts), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def parse(raw: bytes) -> tuple[int, dict[str, str], object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def test_content_length_with_transfer_encoding_is_refused_and_nothing_journaled(
    daemon: Daemon,
) -> None:
    body = b'{"folder_id": 1, "folder_path": "/smuggled"}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    request = (
        f"POST {INDEX} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Authorization: Basic dGVzdGVyOnNlY3JldC1mb3ItdGVzdHM=\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(chunked)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode() + chunked
    with connect(daemon) as sock:
        sock.sendall(request)
        status, headers, error = parse(read_until_closed(sock))
    assert status == 400
    assert headers["connection"] == "close"
    assert error == {
        "messages": [
            "invalid HTTP request: Transfer-Encoding can't be present with Content-Length"
        ],
        "details": {},
    }
    assert daemon.query("SELECT * FROM events") == []
    # The same body, framed once, is accepted.
    with daemon.http() as http:
        assert http.post("/tasks/1/task_destinations", content=body).status_code == 201


def test_a_head_larger_than_the_limit_gets_431(daemon: Daemon) -> None:
    with connect(daemon) as sock:
        sock.sendall(f"GET {INDEX} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".encode())
        sock.sendall(b"a" * (20 * 1024) + b"\r\n\r\n")
        status, headers, error = parse(read_until_closed(sock))
    assert status == 431
    assert headers["connection"] == "close"
    assert isinstance(error, dict)
    assert error["details"] == {}
    assert error["messages"] == [
        "invalid HTTP request: the request head is larger than 16384 bytes"
    ]


def test_a_head_that_never_ends_gets_408_and_a_silent_connection_is_closed(
    daemon: Daemon,
) -> None:
    with connect(daemon) as slow, connect(daemon) as silent:
        slow.sendall(f"GET {INDEX} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        status, headers, error = parse(read_until_closed(slow))
        assert status == 408
        assert headers["connection"] == "close"
        assert error == {"messages": ["the request head did not arrive in time"], "details": {}}
        # Nothing was asked, so nothing is answered: the connection is just closed.
        assert read_until_closed(silent) == b""


def test_a_body_that_never_ends_gets_408(daemon: Daemon) -> None:
    with connect(daemon) as sock:
        sock.sendall(
            (
                f"POST {INDEX} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Authorization: Basic dGVzdGVyOnNlY3JldC1mb3ItdGVzdHM=\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            ).encode()
        )
        status, _, error = parse(read_until_closed(sock))
    assert status == 408
    assert error == {"messages": ["the request body did not arrive in time"], "details": {}}
    assert daemon.query("SELECT * FROM events") == []


def test_idle_connections_make_room_for_a_valid_request(daemon: Daemon) -> None:
    idle = [connect(daemon) for _ in range(40)]
    try:
        for sock in idle:
            sock.sendall(b"GET / HTTP/1.1\r\n")
        with daemon.http() as http:
            assert http.get("/tasks/1/task_destinations").status_code == 200
        # At most 16 connections stay open; the oldest idle ones were closed at once.

        closed: set[socket.socket] = set()

        def closed_count() -> int:
            for sock in idle:
                if sock not in closed and is_closed(sock):
                    closed.add(sock)
            return len(closed)

        assert wait_until(lambda: closed_count() >= 40 - 16 + 1, timeout=10, what="evictions")
        # And the rest by the head timeout (1 s here).
        assert wait_until(lambda: closed_count() == 40, timeout=15, what="head timeouts")
    finally:
        for sock in idle:
            sock.close()


def test_a_keyed_create_retried_after_a_restart_gets_the_first_result(daemon: Daemon) -> None:
    body = {"folder_id": 3, "folder_path": "/c/retried.txt"}
    headers = {"Idempotency-Key": "archive-manager-42"}
    with daemon.http() as http:
        first = http.post("/tasks/1/task_destinations", json=body, headers=headers)
    assert first.status_code == 201
    daemon.stop()
    daemon.start()
    with daemon.http() as http:
        again = http.post("/tasks/1/task_destinations", json=body, headers=headers)
        reused = http.post(
            "/tasks/1/task_destinations", json={**body, "folder_id": 4}, headers=headers
        )
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert reused.status_code == 422
    assert len(daemon.query("SELECT * FROM destinations")) == 1


def test_a_flood_leaves_the_valid_client_served_and_idle_connections_closed(
    tmp_path: Path,
) -> None:
    """`make bench-http` in small: 100 concurrent requests a wave, 200 idle connections."""
    run = run_benchmark(
        tmp_path,
        flood=100,
        idle=200,
        seconds=3,
        destinations=5,
        extra_env={"TAPEWORKER_HTTP__HEADER_TIMEOUT_S": "1"},
    )
    quiet, flood = run.quiet, run.flood
    # The valid client was answered every time, during the flood as before it.
    assert set(quiet.probe_statuses) == {200}
    assert set(flood.probe_statuses) == {200}
    assert flood.probe_latencies
    # A client connecting anew during the flood got an answer too (503 allowed: its
    # connection may wait past the 1 s head timeout of this test behind the flood's).
    assert flood.fresh_statuses
    assert set(flood.fresh_statuses) <= {200, 503}
    # Every flood request got an answer (served, or 503 when the daemon was too busy).
    assert flood.flood_waves >= 1
    assert flood.flood_errors == flood.flood_unanswered == 0
    assert sum(flood.flood_statuses.values()) == flood.flood_waves * 100
    assert set(flood.flood_statuses) <= {200, 503}
    # Every idle connection was closed by the daemon (the head timeout is 1 s here).
    assert flood.idle_opened == 200
    assert flood.idle_closed == 200
    # MQTT went on: every event came back, in both phases.
    assert len(quiet.mqtt_latencies) == quiet.mqtt_sent > 0
    assert len(flood.mqtt_latencies) == flood.mqtt_sent > 0
    # Speeds compared as ratios only: the valid client's median wait was below the
    # flood's own median wait, in the same run (it was not served behind the flood).
    assert median(flood.probe_latencies) < median(flood.flood_latencies)
