"""The HTTP listener's defences: connections, timeouts and admission under load.

uvicorn bounds idle keep-alive time, but nothing bounds how long a client may take
to send a request head (its keep-alive timer is cancelled by the first byte), its
httptools protocol bounds no head's size, and its `limit_concurrency` counts idle
connections too, so a few thousand idle sockets would turn every request into a 503.
This module adds, on top of uvicorn's own httptools protocol (llhttp, in C: the
parse and the answer's framing cost a fraction of what uvicorn's h11 protocol costs):

- a connection table: at most `max_connections` open; a new connection evicts the
  connection that has waited longest without a request in progress, and is refused
  (503) only when every connection is busy with a request;
- a request-head deadline: the head must be complete within `header_timeout_s` of
  the connection opening or of the previous response (408, then close);
- a request head larger than `max_header_bytes` is refused (431, then close),
  whether it arrived whole or in pieces;
- a request carrying both Content-Length and Transfer-Encoding is refused (400,
  then close; llhttp refuses it, as RFC 9112 6.1 allows): a proxy in front might
  frame it otherwise, which is how requests are smuggled;
- admission (an ASGI wrapper): at most `max_concurrent_requests` in the
  application, a bounded queue for the rest, each waiting at most
  `queue_timeout_s`; once the queue stands (its oldest waiter has waited
  `lifo_after_s`) the newest request is served first, so a burst cannot make every
  later request wait behind it; shed requests get 503 with Retry-After;
- a body deadline: the body must be read within `body_timeout_s` of the head (408).

Every error body is the API's one error shape (`worker.intake.http.errors`). The decisions
(which connection to evict, which waiter goes next) are pure and tested on their own.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import httptools
import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from worker.seed.error_details import error_body

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from worker.settings import HttpSettings

log = structlog.get_logger("tapeworker.http")

K = TypeVar("K")

#: File descriptors kept free for the journal, the broker, subprocesses and logs.
FD_RESERVE = 256
#: asyncio accepts as many connections per event-loop turn as the listen backlog, and
#: a thousand at once stall MQTT and every request in flight for that turn: accept in
#: small batches, and let the kernel queue the rest (see `widen_listen_queue`).
ACCEPT_BATCH = 32
#: Linux caps it at net.core.somaxconn (4096 since 5.4).
LISTEN_QUEUE = 4096


# -- pure decisions --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict(Generic[K]):
    """What to do with a new connection: accept it (evicting one) or refuse it."""

    accept: bool
    evict: K | None = None


@dataclass
class ConnectionTable(Generic[K]):
    """Open connections, idle ones (no request in progress) in the order they became idle."""

    limit: int
    idle: OrderedDict[K, None] = field(default_factory=OrderedDict)
    busy: set[K] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.idle) + len(self.busy)

    def open(self, conn: K) -> Verdict[K]:
        evict: K | None = None
        if len(self) >= self.limit:
            if not self.idle:
                return Verdict(accept=False)
            evict, _ = self.idle.popitem(last=False)
        self.idle[conn] = None
        return Verdict(accept=True, evict=evict)

    def mark_busy(self, conn: K) -> None:
        if conn in self.idle:
            del self.idle[conn]
            self.busy.add(conn)

    def mark_idle(self, conn: K) -> None:
        if conn in self.busy:
            self.busy.discard(conn)
            self.idle[conn] = None

    def close(self, conn: K) -> None:
        self.idle.pop(conn, None)
        self.busy.discard(conn)


def next_waiter(waiting_since: Sequence[float], now: float, lifo_after_s: float) -> int:
    """Index of the waiter to admit: the oldest, or the newest once the queue stands.

    A queue whose oldest entry has waited `lifo_after_s` is not draining: serving it in
    order would make every newcomer wait the whole queue ("adaptive LIFO", as in
    Facebook's "Fail at Scale"); the old entries time out with a 503 instead.
    """
    if not waiting_since:
        raise ValueError("nobody is waiting")
    if now - waiting_since[0] >= lifo_after_s:
        return len(waiting_since) - 1
    return 0


W = TypeVar("W")


@dataclass
class WaitingRoom(Generic[W]):
    """Requests waiting for a slot, one line per client (its credentials), taken in turn.

    Fair queuing between clients: a client flooding the daemon fills its own line and
    sheds its own requests, and another client's request is next at the next free slot.
    Within a line, `next_waiter` decides (in order, or newest first once it stands).
    """

    capacity: int
    lifo_after_s: float
    lines: OrderedDict[bytes, deque[tuple[float, W]]] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return sum(len(line) for line in self.lines.values())

    def add(self, owner: bytes, item: W, now: float) -> W | None:
        """Queue `item`; return the item shed to make room (the longest line's oldest)."""
        shed: W | None = None
        if len(self) >= self.capacity:
            longest = max(self.lines, key=lambda o: len(self.lines[o]), default=None)
            if longest is None:  # no queue at all (capacity 0)
                return item
            shed = self.lines[longest].popleft()[1]
            if not self.lines[longest]:
                del self.lines[longest]
        self.lines.setdefault(owner, deque()).append((now, item))
        return shed

    def remove(self, item: W) -> None:
        for owner, line in list(self.lines.items()):
            for entry in line:
                if entry[1] == item:
                    line.remove(entry)
                    if not line:
                        del self.lines[owner]
                    return

    def pop(
        self, now: float, eligible: Callable[[bytes], bool] = lambda _: True
    ) -> tuple[bytes, W] | None:
        """The next (owner, item) to admit: the first eligible line's; that line goes last."""
        owner = next((o for o in self.lines if eligible(o)), None)
        if owner is None:
            return None
        line = self.lines.pop(owner)
        index = next_waiter([since for since, _ in line], now, self.lifo_after_s)
        _, item = line[index]
        del line[index]
        if line:
            self.lines[owner] = line
        return owner, item


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE toward `wanted` (within the hard limit); return it.

    systemd's default soft limit is 1024 and it expects a program that needs more to
    raise it itself, up to the hard limit (`LimitNOFILE=` in the unit).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            # A seccomp filter (the unit's ~@resources) refuses it: keep what we have.
            log.warning(
                "cannot raise the open files limit", limit=soft, wanted=target, error=str(exc)
            )
            return soft
        soft = target
    return soft


# -- raw responses written by the protocol ---------------------------------------------

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
_REASONS |= {501: b"Not Implemented", 503: b"Service Unavailable"}


def raw_error(status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, in the one error shape.

    Written directly: these answer connections whose request never arrived whole, past
    the ASGI application.
    """
    body = json.dumps(error_body(message)).encode()
    lines = [
        b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error")),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
        *(f"{name}: {value}".encode("latin-1") for name, value in headers),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


_BUSY = raw_error(503, "the daemon is busy: retry later", [("retry-after", "1")])


class Backlog:
    """New connections left unread while requests queue for the application.

    Shedding a request costs a parse and an answer; a closed-loop flood turns every
    shed into the next request, and the event loop (MQTT's and the journal's too)
    spends itself answering 503s. A new connection arriving while requests queue is
    not read until the queue has emptied: its bytes wait in the kernel, at no cost.
    Connections already serving a client (keep-alive) are read as usual, so a client
    that was being served goes on being served.
    """

    def __init__(self) -> None:
        self.busy: Callable[[], bool] = lambda: False
        self.parked: OrderedDict[GuardedHttpProtocol, None] = OrderedDict()

    def resume(self, count: int) -> None:
        """Read the `count` newest parked connections again.

        Newest first, as the queue does once it stands: the newest connection is the
        likeliest to be a client arriving anew rather than the rest of a burst, and the
        oldest are answered 503 at their head timeout.
        """
        for _ in range(min(count, len(self.parked))):
            protocol, _ = self.parked.popitem(last=True)
            protocol.unpark()


# -- the protocol ----------------------------------------------------------------------


class _Refused(Exception):
    """A request the guard refuses while it is parsed: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the connection table, the head deadline and limits.

    httptools (llhttp, in C) parses the request; it bounds neither the head's size nor
    how long it may take, so both are bounded here.
    """

    settings: ClassVar[HttpSettings]
    table: ClassVar[ConnectionTable[GuardedHttpProtocol]]
    backlog: ClassVar[Backlog]
    #: Refusals since the last log line, and when that line was written.
    refused: ClassVar[int] = 0
    refusal_logged_at: ClassVar[float] = float("-inf")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.protocol_error: _Refused | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._partial = False
        self._parked = False
        #: Bytes fed to the parser outside a body since the last message ended: what
        #: an unfinished head has used so far.
        self._head_bytes = 0
        self._in_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        verdict = self.table.open(self)
        if not verdict.accept:
            self._note_refusal()
            self.transport.write(_BUSY)
            self.transport.close()
            return
        if verdict.evict is not None:
            verdict.evict.evict()
        self._arm_head_timer(self.settings.header_timeout_s)
        if self.backlog.busy():
            self._parked = True
            self.transport.pause_reading()
            self.backlog.parked[self] = None

    def unpark(self) -> None:
        self._parked = False
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.table.close(self)
        self.backlog.parked.pop(self, None)
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._partial = True
        if not self._in_body:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            # One of our checks refused the head (`protocol_error` says why).
            self.send_400_response("the request could not be parsed")
            return
        except httptools.HttpParserError as exc:
            self.protocol_error = _Refused(400, str(exc))
            self.send_400_response(str(exc))
            return
        except httptools.HttpParserUpgrade:
            # As uvicorn does: the API serves no upgrade; it says so in its log.
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # llhttp keeps an unfinished head in memory however long it grows: bound it.
        # (A head that completed in this read was measured exactly when it did.)
        if (
            not self._in_body
            and self._head_bytes > self.settings.max_header_bytes
            and not self.transport.is_closing()
        ):
            self.protocol_error = self._too_large()
            self.send_400_response(str(self.protocol_error))

    def _too_large(self) -> _Refused:
        return _Refused(
            431, f"the request head is larger than {self.settings.max_header_bytes} bytes"
        )

    def on_headers_complete(self) -> None:
        """A whole request head arrived: its deadline is met; check its size."""
        self._disarm_head_timer()
        self._partial = False
        self._in_body = True
        self.table.mark_busy(self)
        # Measured as the head's lines, so the limit does not depend on how the bytes
        # were split between reads.
        size = len(self.url) + 24 + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.settings.max_header_bytes:
            self.protocol_error = self._too_large()
            raise self.protocol_error
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # The next head starts here (a pipelined one may already be in this read).
        self._in_body = False
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self.table.mark_idle(self)
            # The next head gets the idle keep-alive time plus the usual head time.
            self._arm_head_timer(self.settings.keep_alive_s + self.settings.header_timeout_s)
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        refused = self.protocol_error
        if refused is not None:
            status, message = refused.status, str(refused)
        else:
            status, message = 400, msg
        self.transport.write(raw_error(status, f"invalid HTTP request: {message}"))
        self.transport.close()

    def _note_refusal(self) -> None:
        # One line a second at most: a flood must not turn into a flood of log lines.
        cls = type(self)
        cls.refused += 1
        now = self.loop.time()
        if now - cls.refusal_logged_at >= 1.0:
            log.warning(
                "http connections refused: every connection is busy",
                refused=cls.refused,
                open=len(self.table),
            )
            cls.refused = 0
            cls.refusal_logged_at = now

    def evict(self) -> None:
        """Closed to make room for a new connection: it had no request in progress."""
        self._disarm_head_timer()
        if not self.transport.is_closing():
            if self._parked:
                self.transport.write(_BUSY)
            self.transport.close()

    def _arm_head_timer(self, delay: float) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(delay, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._parked:
            # Its request, if it sent one, was never read: the daemon was too busy.
            self.transport.write(_BUSY)
        elif self._partial:
            self.transport.write(raw_error(408, "the request head did not arrive in time"))
        self.transport.close()


def protocol_class(settings: HttpSettings, backlog: Backlog) -> type[GuardedHttpProtocol]:
    """The protocol uvicorn instantiates per connection, sharing one connection table."""
    table: ConnectionTable[GuardedHttpProtocol] = ConnectionTable(settings.max_connections)
    shared = {"settings": settings, "table": table, "backlog": backlog}
    return type("TapeworkerHttpProtocol", (GuardedHttpProtocol,), shared)


# -- admission -------------------------------------------------------------------------

#: Gives the request in progress's slot back (see `waiting_for_the_disk`).
_slot: ContextVar[Callable[[], None] | None] = ContextVar("admission_slot", default=None)


def waiting_for_the_disk() -> None:
    """The request in progress now only waits for a commit: its slot goes to the next.

    The slots bound the work on the event loop; a request waiting for its group's
    fsync does none, and with the slot it would keep out the very requests that
    would share that fsync. What is left of it (the answer) is small.
    """
    give_back = _slot.get()
    if give_back is not None:
        give_back()


class Admission:
    """ASGI wrapper: bounded requests in the application, a fair bounded queue, a body deadline.

    A client (its credentials) holds at most `max_concurrent_per_client` of the slots, so
    another client's request finds one free however hard the first one pushes.
    """

    def __init__(self, app: ASGIApp, settings: HttpSettings) -> None:
        self.app = app
        self.settings = settings
        self.active = 0
        self._active_by: Counter[bytes] = Counter()
        self._room: WaitingRoom[asyncio.Future[bool]] = WaitingRoom(
            settings.max_queued_requests, settings.lifo_after_s
        )
        #: Called with the number of free slots whenever nobody waits any more.
        self.on_room_empty: Callable[[int], None] = lambda _: None

    @property
    def waiting(self) -> int:
        return len(self._room)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        body_deadline = loop.time() + self.settings.body_timeout_s
        # The credentials, as sent, tell clients apart (unauthenticated ones share a line).
        owner = dict(scope.get("headers", ())).get(b"authorization", b"")
        if not await self._enter(owner):
            await _send_error(send, 503, "the daemon is busy: retry later", retry_after=True)
            return
        held = True

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                self._leave(owner)

        token = _slot.set(give_back)
        try:
            await self._serve(scope, receive, send, body_deadline)
        finally:
            _slot.reset(token)
            give_back()

    def _may_run(self, owner: bytes) -> bool:
        return self._active_by[owner] < self.settings.max_concurrent_per_client

    def _take(self, owner: bytes) -> None:
        self.active += 1
        self._active_by[owner] += 1

    async def _enter(self, owner: bytes) -> bool:
        """Take a slot in the application, waiting in the queue if need be; False = shed."""
        limit = self.settings.max_concurrent_requests
        # Waiters of other clients are there only because their clients are at their cap.
        if self.active < limit and self._may_run(owner) and owner not in self._room.lines:
            self._take(owner)
            return True
        loop = asyncio.get_running_loop()
        admitted: asyncio.Future[bool] = loop.create_future()
        shed = self._room.add(owner, admitted, loop.time())
        if shed is admitted:
            return False
        if shed is not None and not shed.done():
            # (A done one timed out this very moment and is answered by its own task.)
            shed.set_result(False)
        try:
            async with asyncio.timeout(self.settings.queue_timeout_s):
                return await admitted
        except TimeoutError:
            return self._abandon(owner, admitted)
        except asyncio.CancelledError:
            if self._abandon(owner, admitted):
                self._leave(owner)
            raise

    def _abandon(self, owner: bytes, admitted: asyncio.Future[bool]) -> bool:
        """The wait ended early; True when a slot was handed over all the same."""
        if admitted.done() and not admitted.cancelled():
            return admitted.result()
        admitted.cancel()
        self._room.remove(admitted)
        return False

    def _leave(self, owner: bytes) -> None:
        """Free a slot, and give free slots to the next waiters that may run."""
        self.active -= 1
        self._active_by[owner] -= 1
        if not self._active_by[owner]:
            del self._active_by[owner]
        now = asyncio.get_running_loop().time()
        while self.active < self.settings.max_concurrent_requests:
            popped = self._room.pop(now, self._may_run)
            if popped is None:
                if not self._room.lines:
                    self.on_room_empty(self.settings.max_concurrent_requests - self.active)
                return
            next_owner, admitted = popped
            if not admitted.done():
                self._take(next_owner)
                admitted.set_result(True)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, deadline: float) -> None:
        state = {"body_done": False, "timed_out": False}

        async def timed_receive() -> Message:
            if state["body_done"] or state["timed_out"] or _ready(receive):
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    state["body_done"] = True
                return message
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                state["timed_out"] = True
                await _send_error(send, 408, "the request body did not arrive in time")
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message: Message) -> None:
            if not state["timed_out"]:
                await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not state["timed_out"]:
                raise
            # The application saw the body vanish after we answered 408: expected.
            log.info("http request body timed out", path=scope.get("path"))


def _ready(receive: Receive) -> bool:
    """Whether uvicorn's request cycle behind `receive` holds a message already: then
    `receive` returns without waiting and needs no deadline (a create's whole body
    usually comes with its head, and a timer a request was a fiftieth of its CPU)."""
    event = getattr(getattr(receive, "__self__", None), "message_event", None)
    return isinstance(event, asyncio.Event) and event.is_set()


async def _send_error(send: Send, status: int, message: str, *, retry_after: bool = False) -> None:
    body = json.dumps(error_body(message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 408:
        headers.append((b"connection", b"close"))
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def server_config(app: ASGIApp, settings: HttpSettings) -> uvicorn.Config:
    """uvicorn's configuration for the API listener, with every limit of `settings`."""
    limit = raise_open_files_limit(settings.max_connections + FD_RESERVE)
    if settings.max_connections + FD_RESERVE > limit:
        allowed = max(limit - FD_RESERVE, 1)
        log.error(
            "http max_connections lowered to fit the open files limit",
            configured=settings.max_connections,
            allowed=allowed,
            open_files_limit=limit,
        )
        settings = settings.model_copy(update={"max_connections": allowed})
    admission = Admission(app, settings)
    backlog = Backlog()
    backlog.busy = lambda: admission.waiting > 0
    admission.on_room_empty = backlog.resume
    return uvicorn.Config(
        admission,
        host=settings.host,
        port=settings.port,
        http=protocol_class(settings, backlog),
        timeout_keep_alive=int(settings.keep_alive_s) or 1,
        backlog=ACCEPT_BATCH,
        log_level="warning",
        # uvicorn's own logging set-up would bypass ours; its loggers go through ours.
        log_config=None,
        # Its access lines are info, below the level it pins its loggers at: never
        # written, yet each answer paid for their client address and quoted path.
        access_log=False,
        lifespan="off",
    )


class GuardedServer(uvicorn.Server):
    """uvicorn's server, whose listening sockets queue LISTEN_QUEUE connections."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        widen_listen_queue(self)


def widen_listen_queue(server: uvicorn.Server, queue: int = LISTEN_QUEUE) -> None:
    """Let the kernel queue `queue` connections while asyncio accepts ACCEPT_BATCH a turn.

    Listening again on a listening socket only changes its queue; without this a burst
    beyond the batch would see its SYNs dropped and retried a second later.
    """
    for listener in server.servers:
        for wrapped in listener.sockets:
            with socket.fromfd(wrapped.fileno(), wrapped.family, wrapped.type) as sock:
                sock.listen(queue)
