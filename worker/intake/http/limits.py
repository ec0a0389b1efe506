"""Size limits of HTTP requests, enforced before the application reads them.

A body larger than `max_body_bytes` is refused with 413 as soon as that is known:
from its Content-Length before a byte of it is read, or, for a chunked body, when
the bytes received pass the limit; what was received is dropped, so nothing that
large reaches the journal. A query string longer than `max_query_bytes` is refused
with 414. (The request line and headers together are bounded by the connection
guard, `worker.intake.http.guard`, with 431.) Refusals are counted in
`tapeworker_http_refused_total{reason}` and logged.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import structlog
from prometheus_client import Counter

from worker.seed.error_details import detail, error_body

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("tapeworker.http")

REFUSED = Counter("tapeworker_http_refused", "HTTP requests refused for their size", ["reason"])


class RequestLimits:
    """ASGI wrapper: 413 for a body past the limit, 414 for a query past its limit."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_query_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_query_bytes = max_query_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if len(query) > self.max_query_bytes:
            await self._refuse(
                send,
                414,
                f"Query string of {len(query)} bytes; at most {self.max_query_bytes}.",
                "query",
                len(query),
            )
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(send, 413, self._too_large(declared), "body", declared)
            return
        # Read the body here, up to the limit, and hand it on whole: a chunked body
        # past the limit is refused without the application seeing any of it.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._refuse(send, 413, self._too_large(size, partial=True), "body", size)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        await self.app(scope, _replay(chunks, None, receive), send)

    def _too_large(self, size: int, *, partial: bool = False) -> str:
        more = "more than " if partial else ""
        return f"Request body of {more}{size} bytes; at most {self.max_body_bytes}."

    async def _refuse(self, send: Send, status: int, message: str, what: str, size: int) -> None:
        REFUSED.labels(reason=f"{what}_too_large").inc()
        log.warning("http request refused", reason=f"{what} too large", size=size)
        attribute = "body" if what == "body" else "query"
        body = json.dumps(error_body(message, {attribute: [detail("too_long", str(size))]}))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body is not read: the connection cannot be reused.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode(), "more_body": False})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(chunks: list[bytes], first: Message | None, then: Receive | None = None) -> Receive:
    """A receive that gives the body read so far in one message, then defers to `then`."""
    pending: list[Message] = (
        [first] if first is not None else [{"type": "http.request", "body": b"".join(chunks)}]
    )

    async def receive() -> Message:
        if pending:
            return pending.pop()
        if then is None:
            # After the body, a receive waits for the client to go away.
            return {"type": "http.disconnect"}
        return await then()

    return receive
