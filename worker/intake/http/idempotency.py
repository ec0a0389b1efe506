"""Idempotency-Key on creates: a retried POST gets the first result and creates nothing.

A client whose create timed out cannot know whether it was applied; retrying with the
same `Idempotency-Key` header is safe. The key, a digest of the request (method, path,
body) and what the create did are written in the same journal transaction as the
create's event, so a create and its key commit together or not at all, across a
crash or restart; the response body as sent is saved after it, with the next group of
events (`worker.intake.http.group_commit`), and answered from memory until then. Keys are kept
`idempotency_keep_s` (24 h by default) and belong to the credentials that sent them.

- the same key and the same request: the first response again, with
  `Idempotent-Replayed: true` (if the daemon stopped between the commit and saving the
  body, the destination as it is now, still 201);
- the same key with a different request: 422 (the draft IETF standard's answer for a
  reused key: the request is well-formed, but it cannot be processed as a retry);
- the same key while its first request is still being processed: 409 with Retry-After;
- a key that is not 1-255 visible ASCII characters: 400.

A create without the header behaves as before.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worker.errors import JournalFaultError
from worker.intake.destinations import Outcome
from worker.intake.http.errors import error_response, journal_unavailable
from worker.intake.http.group_commit import GroupCommit, WithinOne
from worker.seed.error_details import error_body
from worker.state.journal import IdempotentResult, Journal, UnitOfWork

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from worker.settings import HttpSettings

HEADER = "Idempotency-Key"
REPLAYED = (b"idempotent-replayed", b"true")
#: The seed's create endpoint, the only one whose retries are not safe by themselves.
CREATE_PATH = re.compile(r"^/api/v2/tasks/[^/]+/task_destinations/?$")
KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
#: A stored request is compared by digest; a body larger than this cannot be the same.
MAX_COMPARED_BODY = 1 << 20


@dataclass
class _Claim:
    """A create under a new key, in progress: what `remember_create` writes."""

    journal: Journal
    scope: str
    key: str
    now: float
    keep_s: float
    digest: Any = field(default_factory=hashlib.sha256)
    recorded: bool = False


_claim: ContextVar[_Claim | None] = ContextVar("idempotency_claim", default=None)


def key_of_this_create() -> WithinOne | None:
    """What records the Idempotency-Key of the create in progress inside its event's
    transaction; None for a create without the header.

    The create route calls this (the key belongs to its request's context) and hands
    the result to the group commit with its event.
    """
    claim = _claim.get()
    if claim is None:
        return None

    def remember(unit: UnitOfWork, outcome: Outcome) -> None:
        created = outcome.status != "rejected" and outcome.destination_id is not None
        unit.remember_idempotent_result(
            scope=claim.scope,
            key=claim.key,
            fingerprint=claim.digest.hexdigest(),
            status=201 if created else 409 if outcome.conflict else 400,
            destination_id=outcome.destination_id,
            reason=outcome.reason,
            now=claim.now,
            keep_s=claim.keep_s,
        )
        claim.recorded = True

    return remember


def _request_digest(scope: Scope) -> Any:
    digest = hashlib.sha256()
    digest.update(f"{scope['method']} {scope['path']}\n".encode())
    return digest


class IdempotentCreates:
    """ASGI wrapper answering retries of keyed creates from the journal."""

    def __init__(
        self,
        app: ASGIApp,
        journal: Journal,
        settings: HttpSettings,
        clock: Callable[[], float],
        commits: GroupCommit | None = None,
    ) -> None:
        self.app = app
        self.journal = journal
        self.keep_s = settings.idempotency_keep_s
        self.clock = clock
        #: Where response bodies are saved, with the next group of events; without
        #: it, each in a transaction of its own.
        self.commits = commits
        self._in_progress: set[tuple[str, str]] = set()
        #: Response bodies sent but not yet saved, by (owner, key): (status, body).
        self._unsaved: dict[tuple[str, str], tuple[int, str]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", ())) if scope["type"] == "http" else {}
        raw_key = headers.get(HEADER.lower().encode())
        if raw_key is None or scope["method"] != "POST" or not CREATE_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1")
        if not KEY.match(key):
            await error_response(
                400,
                f"{HEADER} must be 1 to 255 visible ASCII characters.",
                {HEADER: [{"error": "invalid", "value": key[:255]}]},
            )(scope, receive, send)
            return
        # Keys belong to the credentials that sent them: two clients cannot collide.
        owner = hashlib.sha256(headers.get(b"authorization", b"")).hexdigest()
        slot = (owner, key)
        if slot in self._in_progress:
            await error_response(
                409,
                f"A request with this {HEADER} is still being processed: retry later.",
                {HEADER: [{"error": "in_progress", "value": key}]},
                headers={"Retry-After": "1"},
            )(scope, receive, send)
            return
        self._in_progress.add(slot)
        try:
            try:
                stored = await self.journal.idempotent_result(owner, key, self.clock())
            except JournalFaultError as exc:
                await journal_unavailable(exc.kind, exc.detail)(scope, receive, send)
                return
            if stored is None:
                await self._first(scope, receive, send, owner, key)
            else:
                await self._retry(scope, receive, send, stored, owner, key)
        finally:
            self._in_progress.discard(slot)

    async def _first(
        self, scope: Scope, receive: Receive, send: Send, owner: str, key: str
    ) -> None:
        claim = _Claim(self.journal, owner, key, self.clock(), self.keep_s)
        claim.digest = _request_digest(scope)
        sent: dict[str, Any] = {"status": None, "body": []}

        async def hashing_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                claim.digest.update(message.get("body", b""))
            return message

        async def capturing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif message["type"] == "http.response.body":
                sent["body"].append(message.get("body", b""))
            await send(message)

        token = _claim.set(claim)
        try:
            await self.app(scope, hashing_receive, capturing_send)
        finally:
            _claim.reset(token)
        if claim.recorded and sent["status"] is not None:
            body = b"".join(sent["body"]).decode("utf-8", "replace")
            await self._save(owner, key, sent["status"], body)

    async def _save(self, owner: str, key: str, status: int, body: str) -> None:
        """Keep the response body for retries: in memory now, in the journal soon.

        The key committed with the create; should the daemon stop before the body is
        saved, a retry gets the destination as it is then (see `_show_as_created`).
        """
        slot = (owner, key)
        self._unsaved[slot] = (status, body)

        def write(unit: UnitOfWork) -> None:
            unit.save_idempotent_response(owner, key, status, body)

        def done() -> None:
            self._unsaved.pop(slot, None)

        if self.commits is not None:
            self.commits.defer(write, done)
            return
        try:
            await self.journal.apply(write)
        except JournalFaultError:
            pass  # a retry then gets the stored result without this copy of the body
        finally:
            done()

    async def _retry(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        stored: IdempotentResult,
        owner: str,
        key: str,
    ) -> None:
        digest = _request_digest(scope)
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            digest.update(chunk)
            more = message.get("more_body", False) and size <= MAX_COMPARED_BODY
        if digest.hexdigest() != stored.fingerprint:
            await error_response(
                422,
                f"This {HEADER} was used for a different request: use a new key.",
                {HEADER: [{"error": "reused", "value": key}]},
            )(scope, receive, send)
            return
        unsaved = self._unsaved.get((owner, key))
        if stored.response is not None:
            await _send_json(send, stored.status, stored.response.encode())
        elif unsaved is not None:
            await _send_json(send, unsaved[0], unsaved[1].encode())
        elif stored.destination_id is not None and stored.status == 201:
            await self._show_as_created(scope, send, stored.destination_id)
        else:
            body = json.dumps(error_body(stored.reason or "The create was rejected.")).encode()
            await _send_json(send, stored.status, body)

    async def _show_as_created(self, scope: Scope, send: Send, destination_id: int) -> None:
        """The destination as it is now, for a key whose first response was not saved."""
        path = f"{scope['path'].rstrip('/')}/{destination_id}"
        show = {**scope, "method": "GET", "path": path, "raw_path": path.encode()}
        show["query_string"] = b""

        async def no_body() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def as_created(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = 201 if message["status"] == 200 else message["status"]
                message = {**message, "status": status, "headers": [*message["headers"], REPLAYED]}
            await send(message)

        await self.app(show, no_body, as_created)


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        REPLAYED,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
