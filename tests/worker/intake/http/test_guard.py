"""The HTTP guard's decisions and its admission wrapper, on a real event loop."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from tests.conftest import REPO
from worker.intake.http.guard import (
    FD_RESERVE,
    Admission,
    Backlog,
    ConnectionTable,
    GuardedServer,
    WaitingRoom,
    next_waiter,
    raise_open_files_limit,
    server_config,
    waiting_for_the_disk,
)
from worker.settings import HttpSettings

# -- the connection table ----------------------------------------------------------------


def test_a_new_connection_evicts_the_longest_idle_one() -> None:
    table: ConnectionTable[str] = ConnectionTable(limit=3)
    for name in ("a", "b", "c"):
        assert table.open(name).accept
    table.mark_busy("a")
    verdict = table.open("d")
    assert verdict.accept
    assert verdict.evict == "b"
    assert len(table) == 3


def test_a_connection_that_finished_its_request_goes_to_the_back_of_the_idle_line() -> None:
    table: ConnectionTable[str] = ConnectionTable(limit=2)
    table.open("a")
    table.open("b")
    table.mark_busy("a")
    table.mark_idle("a")
    assert table.open("c").evict == "b"


def test_when_every_connection_is_busy_a_new_one_is_refused() -> None:
    table: ConnectionTable[str] = ConnectionTable(limit=2)
    for name in ("a", "b"):
        table.open(name)
        table.mark_busy(name)
    verdict = table.open("c")
    assert not verdict.accept
    assert verdict.evict is None
    table.close("a")
    assert table.open("c").accept


# -- which waiter goes next ------------------------------------------------------------


def test_a_draining_queue_is_served_in_order_a_standing_one_newest_first() -> None:
    assert next_waiter([10.0, 10.01, 10.02], now=10.03, lifo_after_s=0.05) == 0
    assert next_waiter([10.0, 10.01, 10.02], now=10.05, lifo_after_s=0.05) == 2
    with pytest.raises(ValueError, match="nobody"):
        next_waiter([], now=0.0, lifo_after_s=1.0)


def test_clients_take_turns_and_a_full_room_sheds_from_the_longest_line() -> None:
    room: WaitingRoom[str] = WaitingRoom(capacity=4, lifo_after_s=10)
    for n in range(3):
        assert room.add(b"flood", f"f{n}", now=float(n)) is None
    assert room.add(b"archive", "a0", now=3.0) is None
    # Full: the flood's oldest goes, not the other client's only request.
    assert room.add(b"flood", "f3", now=4.0) == "f0"
    assert room.add(b"archive", "a1", now=5.0) == "f1"
    popped = [room.pop(now=5.0) for _ in range(5)]
    assert popped == [
        (b"flood", "f2"),
        (b"archive", "a0"),
        (b"flood", "f3"),
        (b"archive", "a1"),
        None,
    ]


def test_a_line_that_stands_gives_its_newest_first() -> None:
    room: WaitingRoom[str] = WaitingRoom(capacity=10, lifo_after_s=1)
    for n in range(3):
        room.add(b"flood", f"f{n}", now=0.0)
    assert room.pop(now=0.5) == (b"flood", "f0")
    assert room.pop(now=2.0) == (b"flood", "f2")
    room.remove("f1")
    assert len(room) == 0
    assert room.pop(now=2.0) is None


def test_a_room_without_capacity_sheds_the_newcomer() -> None:
    room: WaitingRoom[str] = WaitingRoom(capacity=0, lifo_after_s=1)
    assert room.add(b"a", "x", now=0.0) == "x"
    assert len(room) == 0


class Parked:
    """What the backlog needs of a connection: to be read again."""

    def __init__(self, name: str, resumed: list[str]) -> None:
        self.name = name
        self.resumed = resumed

    def unpark(self) -> None:
        self.resumed.append(self.name)


def test_parked_connections_are_read_again_newest_first() -> None:
    backlog = Backlog()
    resumed: list[str] = []
    for name in ("burst-1", "burst-2", "newcomer"):
        backlog.parked[Parked(name, resumed)] = None  # type: ignore[index]
    backlog.resume(2)
    assert resumed == ["newcomer", "burst-2"]
    backlog.resume(5)
    assert resumed == ["newcomer", "burst-2", "burst-1"]
    assert not backlog.parked


def test_the_open_files_limit_is_raised_within_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        wanted = soft + 10 if hard == resource.RLIM_INFINITY else min(soft + 10, hard)
        assert raise_open_files_limit(wanted) == wanted
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == wanted
        # Never lowered.
        assert raise_open_files_limit(1) == wanted
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_unit_allows_the_default_connections_their_files() -> None:
    unit = (REPO / "systemd" / "tapeworker.service").read_text(encoding="utf-8")
    [line] = [line for line in unit.splitlines() if line.startswith("LimitNOFILE=")]
    assert int(line.split("=")[1]) >= HttpSettings().max_connections + FD_RESERVE


# -- admission, driven through the ASGI interface ------------------------------------------


class Gate:
    """A tiny ASGI application whose requests wait until released; it records the order."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.started.append(scope["path"])
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(
    app: Any,
    path: str,
    body: list[bytes] | None = None,
    *,
    complete: bool = True,
    authorization: bytes = b"",
) -> tuple[int, dict[str, Any]]:
    """One request through the ASGI interface; returns the status, the JSON body and headers.

    With `complete=False` the client sends `body` and then nothing more.
    """
    sent: list[dict[str, Any]] = []
    chunks = list(body or [b""])

    async def receive() -> dict[str, Any]:
        if chunks:
            chunk = chunks.pop(0)
            more = bool(chunks) or not complete
            return {"type": "http.request", "body": chunk, "more_body": more}
        await asyncio.Event().wait()  # a client that never sends the rest
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    sent_headers = [(b"authorization", authorization)] if authorization else []
    scope = {"type": "http", "path": path, "method": "POST", "headers": sent_headers}
    await app(scope, receive, send)
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    headers = dict(sent[0]["headers"])
    decoded = json.loads(payload) if headers.get(b"content-type") == b"application/json" else {}
    return status, {"body": decoded, "headers": headers}


async def test_requests_beyond_the_limit_queue_and_the_queue_is_bounded() -> None:
    gate = Gate()
    settings = HttpSettings(
        max_concurrent_requests=2, max_queued_requests=2, queue_timeout_s=30, lifo_after_s=30
    )
    admission = Admission(gate, settings)
    tasks = [asyncio.create_task(call(admission, f"/{n}")) for n in range(5)]
    # Requests 0 and 1 run; 2 and 3 queue; 4 arrives at a full queue and sheds the oldest (2).
    async with asyncio.timeout(10):
        status, answer = await tasks[2]
    assert status == 503
    assert answer["body"]["messages"] == ["the daemon is busy: retry later"]
    assert answer["headers"][b"retry-after"] == b"1"
    assert gate.started == ["/0", "/1"]
    gate.release.set()
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(tasks[n] for n in (0, 1, 3, 4)))
    assert [status for status, _ in results] == [200, 200, 200, 200]
    # A draining queue (nobody waited lifo_after_s) is served in arrival order.
    assert gate.started == ["/0", "/1", "/3", "/4"]
    assert admission.active == 0


async def test_a_standing_queue_serves_the_newest_request_first() -> None:
    gate = Gate()
    settings = HttpSettings(
        max_concurrent_requests=1, max_queued_requests=10, queue_timeout_s=30, lifo_after_s=0
    )
    admission = Admission(gate, settings)
    tasks = [asyncio.create_task(call(admission, f"/{n}")) for n in range(4)]
    async with asyncio.timeout(10):
        while admission.waiting < 3:
            await asyncio.sleep(0)
    gate.release.set()
    async with asyncio.timeout(10):
        await asyncio.gather(*tasks)
    assert gate.started == ["/0", "/3", "/2", "/1"]
    assert admission.active == 0


async def test_another_clients_request_is_served_before_a_floods_backlog() -> None:
    gate = Gate()
    settings = HttpSettings(
        max_concurrent_requests=1, max_queued_requests=100, queue_timeout_s=30, lifo_after_s=30
    )
    admission = Admission(gate, settings)
    flood = [
        asyncio.create_task(call(admission, f"/flood{n}", authorization=b"Basic flood"))
        for n in range(20)
    ]
    async with asyncio.timeout(10):
        while admission.waiting < 19:
            await asyncio.sleep(0)
    archive = asyncio.create_task(call(admission, "/archive", authorization=b"Basic archive"))
    async with asyncio.timeout(10):
        while admission.waiting < 20:
            await asyncio.sleep(0)
    gate.release.set()
    async with asyncio.timeout(10):
        await asyncio.gather(archive, *flood)
    # The first flood request was running; the other client's is next, not 20th.
    assert gate.started[:3] == ["/flood0", "/flood1", "/archive"]


async def test_a_waiter_timing_out_as_it_is_shed_is_answered_once() -> None:
    gate = Gate()
    settings = HttpSettings(max_concurrent_requests=1, max_queued_requests=1, queue_timeout_s=30)
    admission = Admission(gate, settings)
    running = asyncio.create_task(call(admission, "/running"))
    async with asyncio.timeout(10):
        while not gate.started:
            await asyncio.sleep(0)
    # A waiter whose timeout has just fired: its future is cancelled, its task has not
    # yet taken it out of the full queue. A newcomer sheds it: no error, no answer twice.
    timed_out: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    timed_out.cancel()
    admission._room.add(b"", timed_out, 0.0)
    newcomer = asyncio.create_task(call(admission, "/newcomer"))
    async with asyncio.timeout(10):
        while admission.waiting < 1 or timed_out in [f for _, f in admission._room.lines[b""]]:
            await asyncio.sleep(0)
    gate.release.set()
    async with asyncio.timeout(10):
        results = await asyncio.gather(running, newcomer)
    assert [status for status, _ in results] == [200, 200]
    assert gate.started == ["/running", "/newcomer"]
    assert admission.active == 0


async def test_one_client_cannot_take_every_slot() -> None:
    gate = Gate()
    settings = HttpSettings(
        max_concurrent_requests=4, max_concurrent_per_client=2, queue_timeout_s=30
    )
    admission = Admission(gate, settings)
    flood = [
        asyncio.create_task(call(admission, f"/flood{n}", authorization=b"Basic flood"))
        for n in range(6)
    ]
    async with asyncio.timeout(10):
        while admission.waiting < 4:
            await asyncio.sleep(0)
    assert gate.started == ["/flood0", "/flood1"]
    # Two slots stay free for everybody else, taken at once.
    archive = asyncio.create_task(call(admission, "/archive", authorization=b"Basic archive"))
    async with asyncio.timeout(10):
        while len(gate.started) < 3:
            await asyncio.sleep(0)
    assert gate.started[2] == "/archive"
    gate.release.set()
    async with asyncio.timeout(10):
        results = await asyncio.gather(archive, *flood)
    assert {status for status, _ in results} == {200}
    assert admission.active == 0
    assert admission.waiting == 0


class DiskWaiter:
    """An ASGI application whose requests wait for a "commit" after giving their slot back."""

    def __init__(self) -> None:
        self.commit = asyncio.Event()
        self.waiting: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        waiting_for_the_disk()
        waiting_for_the_disk()  # twice: still one slot given back
        self.waiting.append(scope["path"])
        await self.commit.wait()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def test_a_request_waiting_for_the_disk_gives_its_slot_to_the_next() -> None:
    app = DiskWaiter()
    settings = HttpSettings(
        max_concurrent_requests=2, max_queued_requests=0, queue_timeout_s=30, lifo_after_s=30
    )
    admission = Admission(app, settings)
    # Two slots and no queue, yet ten requests all wait for the same commit together.
    tasks = [
        asyncio.create_task(call(admission, f"/{n}", authorization=b"Basic one")) for n in range(10)
    ]
    async with asyncio.timeout(10):
        while len(app.waiting) < 10:
            await asyncio.sleep(0)
    assert admission.active == 0
    app.commit.set()
    async with asyncio.timeout(10):
        results = await asyncio.gather(*tasks)
    assert [status for status, _ in results] == [201] * 10
    assert admission.active == 0
    assert not admission._active_by


async def test_a_queued_request_is_shed_after_the_queue_timeout() -> None:
    gate = Gate()
    settings = HttpSettings(max_concurrent_requests=1, queue_timeout_s=0.05)
    admission = Admission(gate, settings)
    first = asyncio.create_task(call(admission, "/first"))
    async with asyncio.timeout(10):
        while not gate.started:
            await asyncio.sleep(0)
        status, _ = await call(admission, "/second")
    assert status == 503
    gate.release.set()
    async with asyncio.timeout(10):
        assert (await first)[0] == 200
    assert gate.started == ["/first"]
    assert admission.active == 0


async def test_a_body_that_does_not_arrive_in_time_is_answered_408() -> None:
    read: list[bytes] = []

    async def reader(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionResetError("client went away")  # what a framework would do
            read.append(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    admission = Admission(reader, HttpSettings(body_timeout_s=0.05))
    async with asyncio.timeout(10):
        status, answer = await call(admission, "/slow", body=[b"{", b'"a"'], complete=False)
    assert status == 408
    assert answer["body"] == {
        "messages": ["the request body did not arrive in time"],
        "details": {},
    }
    assert answer["headers"][b"connection"] == b"close"
    assert read == [b"{", b'"a"']
    assert admission.active == 0


# -- the protocol, on a real listener --------------------------------------------------


class Echo:
    """An ASGI application that reads the whole body and answers it, with the path."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        answer = json.dumps({"path": scope["path"], "body": body.decode()}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(answer)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


@asynccontextmanager
async def listening(settings: HttpSettings) -> AsyncIterator[int]:
    """The guarded server (GuardedServer and its protocol) on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = GuardedServer(server_config(Echo(), settings))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:
                await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await serving
        sock.close()


async def read_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Everything until the server closes the connection; then ours is closed too."""
    async with asyncio.timeout(30):
        raw = await reader.read()
        writer.close()
        await writer.wait_closed()
    return raw


def answers(raw: bytes) -> list[tuple[int, dict[str, str], Any]]:
    """The responses in `raw`, each (status, headers, JSON body), in order."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        found.append((int(lines[0].split()[1]), headers, json.loads(rest[:length])))
        raw = rest[length:]
    return found


async def test_a_head_growing_past_the_limit_in_pieces_gets_431_before_it_ends() -> None:
    settings = HttpSettings(port=0, max_header_bytes=1024, header_timeout_s=60)
    async with listening(settings) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        for _ in range(8):  # never ended: the parser alone would keep it all
            writer.write(b"a" * 200)
            await writer.drain()
        [(status, headers, error)] = answers(await read_all(reader, writer))
    assert status == 431
    assert headers["connection"] == "close"
    assert error == {
        "messages": ["invalid HTTP request: the request head is larger than 1024 bytes"],
        "details": {},
    }


async def test_a_whole_head_past_the_limit_gets_431_and_one_within_it_is_served() -> None:
    settings = HttpSettings(port=0, max_header_bytes=1024)
    async with listening(settings) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /big HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n")
        [(status, _, error)] = answers(await read_all(reader, writer))
        assert status == 431
        assert error["messages"] == [
            "invalid HTTP request: the request head is larger than 1024 bytes"
        ]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /fits HTTP/1.1\r\nHost: h\r\nX-Big: "
            + b"a" * 800
            + b"\r\nConnection: close\r\n\r\n"
        )
        [(status, _, body)] = answers(await read_all(reader, writer))
    assert (status, body) == (200, {"path": "/fits", "body": ""})


async def test_pipelined_requests_are_answered_in_order_on_one_connection() -> None:
    async with listening(HttpSettings(port=0)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /first HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\none"
            b"POST /second HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\ntwo"
            b"GET /third HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        found = answers(await read_all(reader, writer))
    assert [(status, body) for status, _, body in found] == [
        (200, {"path": "/first", "body": "one"}),
        (200, {"path": "/second", "body": "two"}),
        (200, {"path": "/third", "body": ""}),
    ]


async def test_a_slow_head_gets_408_a_malformed_one_400_and_framing_twice_400() -> None:
    settings = HttpSettings(port=0, header_timeout_s=0.2)
    async with listening(settings) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n")
        [(status, _, error)] = answers(await read_all(reader, writer))
        assert (status, error["messages"]) == (408, ["the request head did not arrive in time"])

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost h\r\n\r\n")
        [(status, headers, error)] = answers(await read_all(reader, writer))
        assert (status, headers["connection"]) == (400, "close")
        assert error["messages"][0].startswith("invalid HTTP request: ")

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        [(status, _, error)] = answers(await read_all(reader, writer))
    assert status == 400
    assert error["messages"] == [
        "invalid HTTP request: Transfer-Encoding can't be present with Content-Length"
    ]


async def test_a_body_arriving_after_the_previous_answer_is_not_counted_as_a_head() -> None:
    settings = HttpSettings(port=0, max_header_bytes=1024)
    async with listening(settings) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # The second request's head is whole, its body begun, before the first is answered.
        writer.write(
            b"POST /first HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\none"
            b"POST /second HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n"
            b"Connection: close\r\n\r\n" + b"a" * 500
        )
        async with asyncio.timeout(30):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        # The rest of its body, longer than a head may be, after the first answer.
        writer.write(b"a" * 1500)
        rest = await read_all(reader, writer)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    first, second = json.loads(rest[:length]), answers(rest[length:])
    assert first == {"path": "/first", "body": "one"}
    assert [(status, body) for status, _, body in second] == [
        (200, {"path": "/second", "body": "a" * 2000})
    ]


async def test_a_body_that_came_with_its_head_is_read_without_a_deadline_a_late_one_with_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    armed: list[float] = []
    real_timeout_at = asyncio.timeout_at

    def counted_timeout_at(when: float | None) -> asyncio.Timeout:
        armed.append(when or 0.0)
        return real_timeout_at(when)

    # The guard is the only caller of asyncio.timeout_at on this path.
    monkeypatch.setattr(asyncio, "timeout_at", counted_timeout_at)
    async with listening(HttpSettings(port=0, body_timeout_s=0.3)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /whole HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\none"
        )
        [(status, _, body)] = answers(await read_all(reader, writer))
        assert (status, body) == (200, {"path": "/whole", "body": "one"})
        assert armed == []
        # Half a body, then nothing: the rest is waited for until the deadline only.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /half HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc")
        [(status, _, body)] = answers(await read_all(reader, writer))
    assert (status, body["messages"]) == (408, ["the request body did not arrive in time"])
    assert armed


def test_uvicorn_builds_no_access_line() -> None:
    # Its access lines are below the level uvicorn pins its loggers at: never written.
    assert server_config(Echo(), HttpSettings()).access_log is False
