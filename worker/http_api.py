"""The embedded HTTP intake: the seed's task_destinations endpoints on loopback.

A create/update/destroy is committed to the journal (inbox event + destination)
before the response is sent, so a client that got an answer never loses it.
"""

# No `from __future__ import annotations`: FastAPI must see the local `User` alias.

import secrets
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from worker.callbacks import ChangeListener, Clock
from worker.destinations import (
    DestinationEvent,
    Outcome,
    RejectedInput,
    Verb,
    WithinTransaction,
    parse_payload,
    record_events,
)
from worker.errors import JournalFaultError, RejectedEventError
from worker.http_errors import error_response, journal_unavailable
from worker.http_idempotency import remember_create
from worker.journal import Journal
from worker.settings import Settings
from worker.views import destination_view

PREFIX = "/api/v2/tasks/{task_id}/task_destinations"

#: Ids as the models bound them; beyond SQLite's integer range they were a 500.
DestinationId = Annotated[int, Path(ge=0, le=2**53)]


async def journal_fault_response(_: Request, exc: Exception) -> JSONResponse:
    """503 while the journal refuses writes: nothing was committed, the client retries."""
    assert isinstance(exc, JournalFaultError)
    return journal_unavailable(exc.kind, exc.detail)


def rejected(outcome: Outcome) -> JSONResponse:
    """400 for input the API refuses; 500 for an event a bug could not handle."""
    if outcome.poison:
        # Our bug, not the client's input: journaled, skipped, and said so.
        return error_response(500, f"the request could not be handled: {outcome.reason}")
    return JSONResponse(
        {
            "error": "The received resource was not correctly formatted.",
            "reason": outcome.reason,
        },
        status_code=status.HTTP_400_BAD_REQUEST,
    )


def create_app(
    journal: Journal,
    settings: Settings,
    *,
    on_change: ChangeListener,
    clock: Clock,
) -> FastAPI:
    app = FastAPI(
        title="tapeworker",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        exception_handlers={JournalFaultError: journal_fault_response},
    )
    security = HTTPBasic(realm="tapeworker")
    users = {name: secret.get_secret_value() for name, secret in settings.http.users.items()}

    def authenticated(
        credentials: Annotated[HTTPBasicCredentials, Depends(security)],
    ) -> str:
        expected = users.get(credentials.username)
        # Compare in constant time, and also for unknown users, so timing tells nothing.
        given = credentials.password.encode()
        ok = secrets.compare_digest(given, (expected or "\0").encode()) and expected is not None
        if not ok:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid credentials",
                headers={"WWW-Authenticate": 'Basic realm="tapeworker"'},
            )
        return credentials.username

    User = Annotated[str, Depends(authenticated)]

    async def submit(
        verb: Verb,
        task_id: str,
        destination_id: int | None,
        raw: bytes | None,
        within: WithinTransaction | None = None,
    ) -> Outcome:
        now = clock()
        event: DestinationEvent | RejectedInput
        payload = raw.decode("utf-8", "replace") if raw is not None else None
        try:
            parsed = parse_payload(raw) if raw is not None else None
        except RejectedEventError as exc:
            event = RejectedInput(exc.reason, source="http", payload=payload)
        else:
            event = DestinationEvent(
                verb,
                task_id,
                destination_id,
                parsed.body if parsed else None,
                "http",
                payload=payload,
                size_bytes=parsed.size_bytes if parsed else None,
            )
        [outcome] = await record_events(
            journal, [event], now=now, hold_seconds=settings.hold_seconds, within=within
        )
        if outcome.destination_id is not None:
            await on_change({outcome.destination_id})
        return outcome

    async def shown(task_id: str, destination_id: int) -> dict[str, Any]:
        record = await journal.destination(destination_id)
        if record is None or record.deleted or record.task_id != task_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "task destination not found")
        return (await destination_view(journal, record)).to_json()

    @app.get(PREFIX)
    async def index(task_id: str, _: User) -> dict[str, Any]:
        records = await journal.destinations(task_id)
        items = [(await destination_view(journal, r)).to_json() for r in records]
        return {"count": len(items), "task_destinations": items}

    @app.post(PREFIX, status_code=status.HTTP_201_CREATED, response_model=None)
    async def create(task_id: str, request: Request, _: User) -> dict[str, Any] | JSONResponse:
        # An Idempotency-Key commits with the create's event (worker/http_idempotency.py).
        outcome = await submit(
            "create", task_id, None, await request.body(), within=remember_create
        )
        if outcome.status == "rejected" or outcome.destination_id is None:
            return rejected(outcome)
        return await shown(task_id, outcome.destination_id)

    @app.get(PREFIX + "/{destination_id}")
    async def show(task_id: str, destination_id: DestinationId, _: User) -> dict[str, Any]:
        return await shown(task_id, destination_id)

    @app.put(PREFIX + "/{destination_id}", response_model=None)
    async def update(
        task_id: str, destination_id: DestinationId, request: Request, _: User
    ) -> dict[str, Any] | JSONResponse:
        record = await journal.destination(destination_id)
        if record is None or record.deleted or record.task_id != task_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "task destination not found")
        outcome = await submit("update", task_id, destination_id, await request.body())
        if outcome.status == "rejected":
            return rejected(outcome)
        return await shown(task_id, destination_id)

    @app.delete(PREFIX + "/{destination_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def destroy(task_id: str, destination_id: DestinationId, _: User) -> Response:
        record = await journal.destination(destination_id)
        if record is None or record.deleted or record.task_id != task_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "task destination not found")
        await submit("destroy", task_id, destination_id, None)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @app.post(PREFIX + "/{destination_id}/release", status_code=status.HTTP_204_NO_CONTENT)
    async def release(task_id: str, destination_id: DestinationId, _: User) -> Response:
        """The data mover is done with the drive (same as the MQTT release topic)."""
        await shown(task_id, destination_id)
        await submit("release", task_id, destination_id, None)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return app
