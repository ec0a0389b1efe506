"""The embedded HTTP intake: the seed's task_destinations endpoints on loopback.

A create/update/destroy is committed to the journal (inbox event + destination)
before the response is sent, so a client that got an answer never loses it.
Every error leaves in the archive manager's one shape (`worker.intake.http.errors`).
"""

# No `from __future__ import annotations`: FastAPI must see the local caller aliases.

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

from worker.callbacks import ChangeListener, Clock
from worker.errors import JournalFaultError, RejectedEventError
from worker.intake.destinations import (
    DestinationEvent,
    Outcome,
    RejectedInput,
    Verb,
    parse_payload,
)
from worker.intake.http.auth import Authenticator, Principal
from worker.intake.http.errors import (
    ApiError,
    error_response,
    install_error_handlers,
    internal_error,
    journal_unavailable,
)
from worker.intake.http.group_commit import GroupCommit, WithinOne
from worker.intake.http.guard import waiting_for_the_disk
from worker.intake.http.idempotency import key_of_this_create
from worker.intake.http.limits import RequestLimits
from worker.intake.http.listing import index_listing
from worker.intake.http.openapi import install_openapi
from worker.intake.views import ViewFragments, destination_answer_of, destinations_by_ids
from worker.seed.error_details import detail
from worker.seed.query import QueryError, describe, parse_index_query
from worker.seed.tasks import AmbiguousTaskError, UnknownTaskError, resolve_task
from worker.settings import Settings
from worker.state.journal import DestinationRecord, Journal

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/api/v2/tasks/{task_id}/task_destinations"
#: PREFIX as the router matches it (a path parameter is one segment).
CREATE_PATH = re.compile(r"/api/v2/tasks/(?P<task_id>[^/]+)/task_destinations")
ITEM = PREFIX + "/{task_destination_id}"

#: Ids as the models bound them; beyond SQLite's integer range they were a 500.
DestinationId = Annotated[int, Path(ge=0, le=2**53, description="Numeric ID of task destination.")]

SORT_DESCRIPTION = (
    "Sort results by attribute.\n"
    "Can sort on multiple attributes, separated by |.\n"
    "Order direction can be suffixing the attribute by either :asc (default) or :desc."
)

#: Media types a create or update body may declare (none declared is taken as JSON).
_JSON_TYPES = ("application/json",)


def _require_json(request: Request) -> None:
    """415 for a body declared as something else than JSON."""
    _require_json_type(request.headers.get("content-type"))


def _require_json_type(declared: str | None) -> None:
    if declared is None:
        return
    media_type = declared.split(";", 1)[0].strip().lower()
    if media_type in _JSON_TYPES or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    raise ApiError(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        f"Unsupported media type {media_type!r}: send application/json.",
        {"Content-Type": [detail("invalid", declared)]},
    )


async def journal_fault_response(_: Request, exc: Exception) -> JSONResponse:
    """503 while the journal refuses writes: nothing was committed, the client retries."""
    assert isinstance(exc, JournalFaultError)
    return journal_unavailable(exc.kind, exc.detail)


def _answer(view: bytes, status_code: int = status.HTTP_200_OK) -> Response:
    """A destination's view (`destination_answer_of`'s bytes) as the answer: the bytes
    and headers a `JSONResponse` of the view would have."""
    return Response(view, status_code, media_type="application/json")


def _not_found(task_id: str, destination_id: int) -> ApiError:
    return ApiError(
        status.HTTP_404_NOT_FOUND,
        f"Task destination {destination_id} of task {task_id} not found.",
        {"task_destination_id": [detail("not_found", str(destination_id))]},
    )


def _rejected(outcome: Outcome) -> ApiError:
    """400 for input the API refuses, 409 for input that contradicts the library; 500
    for an event a bug could not handle."""
    if outcome.poison:
        # Our bug, not the client's input: journaled, skipped, and said so.
        return ApiError(500, f"the request could not be handled: {outcome.reason}")
    return ApiError(
        # Well-formed, but the library says otherwise: the client's view is out of date.
        status.HTTP_409_CONFLICT if outcome.conflict else status.HTTP_400_BAD_REQUEST,
        [outcome.reason or "The received resource was not correctly formatted."],
        outcome.details or {"body": [detail("invalid", "")]},
    )


class TaskDestinations:
    """What the routes share: the journal, the settings, and how an event is submitted."""

    def __init__(
        self, journal: Journal, settings: Settings, on_change: ChangeListener, clock: Clock
    ) -> None:
        self.journal = journal
        self.settings = settings
        self.clock = clock
        # Concurrent creates, updates and destroys share a transaction; the planner and
        # the state publisher hear of each group's changes once.
        self.commits = GroupCommit(journal, settings.hold_seconds, clock, on_change)
        self.catalog = [(task.id, task.name) for task in settings.http.tasks]
        self.auth = Authenticator(
            journal,
            {name: secret.get_secret_value() for name, secret in settings.http.users.items()},
            settings.http.user_scopes,
            settings.http.admin_users,
        )
        self.may_create = self.auth.require("task_destinations/create")
        # Answers show the tapes and pools of many creates before them.
        self.fragments = ViewFragments()

    def task(self, task_id: str) -> str:
        """The journal's key of a path's task id or name (see `worker.seed.tasks`)."""
        try:
            return resolve_task(task_id, self.catalog)
        except UnknownTaskError as exc:
            raise ApiError(
                status.HTTP_404_NOT_FOUND,
                f"No task named {exc.name!r}.",
                {"task_id": [detail("not_found", exc.name)]},
            ) from exc
        except AmbiguousTaskError as exc:
            ids = ", ".join(str(i) for i in exc.ids)
            raise ApiError(
                status.HTTP_400_BAD_REQUEST,
                f"Task name {exc.name!r} names several tasks ({ids}): use a numeric id.",
                {"task_id": [detail("invalid", exc.name)]},
            ) from exc

    async def submit(
        self,
        verb: Verb,
        task_id: str,
        destination_id: int | None,
        raw: bytes | None,
        within: WithinOne | None = None,
    ) -> Outcome:
        event: DestinationEvent | RejectedInput
        payload = raw.decode("utf-8", "replace") if raw is not None else None
        try:
            parsed = parse_payload(raw) if raw is not None else None
        except RejectedEventError as exc:
            event = RejectedInput(exc.reason, source="http", payload=payload, details=exc.details)
        else:
            event = DestinationEvent(
                verb,
                task_id,
                destination_id,
                parsed.body if parsed else None,
                "http",
                payload=payload,
                size_bytes=parsed.size_bytes if parsed else None,
                nested=parsed.nested if parsed else None,
            )
        if self.commits.has_room:
            # Only the disk is left to wait for. With the next group full, the slot is
            # kept: a flood of creates then waits in admission's fair lines, not ahead
            # of another client's create in the commit queue.
            waiting_for_the_disk()
        return await self.commits.submit(event, within)

    async def create(self, task_id: str, request: Request) -> Response:
        """A create of a known task by a caller allowed to create."""
        _require_json(request)
        view = await self.created(task_id, await request.body())
        return _answer(view, status.HTTP_201_CREATED)

    async def created(self, task_id: str, body: bytes) -> bytes:
        """The view of the destination a create's body makes, once committed."""
        # An Idempotency-Key commits with the create's event (worker/intake/http/idempotency.py).
        outcome = await self.submit("create", task_id, None, body, within=key_of_this_create())
        if outcome.status == "rejected" or outcome.destination_id is None:
            raise _rejected(outcome)
        return await self.shown(task_id, outcome.destination_id)

    async def existing(self, task_id: str, destination_id: int) -> DestinationRecord:
        found = await destinations_by_ids(self.journal, [destination_id])
        record = found[0] if found else None
        if record is None or record.deleted or record.task_id != task_id:
            raise _not_found(task_id, destination_id)
        return record

    async def shown(self, task_id: str, destination_id: int) -> bytes:
        """A destination's view, serialised as the API answers it."""
        record = await self.existing(task_id, destination_id)
        return await destination_answer_of(self.journal, record, self.fragments)


def task_destinations_router(api: TaskDestinations) -> APIRouter:
    """The seed's five endpoints, and the release extension."""
    router = APIRouter()

    # A coroutine: FastAPI would run a plain function in a worker thread, a trip per request.
    async def task(
        task_id: Annotated[
            str,
            Path(
                description="Numeric ID or name of task. Task names are not unique, "
                "it's recommanded to use numeric ID."
            ),
        ],
    ) -> str:
        return api.task(task_id)

    Task = Annotated[str, Depends(task)]

    Index = Annotated[Principal, Depends(api.auth.require("task_destinations/index"))]
    Create = Annotated[Principal, Depends(api.may_create)]
    Show = Annotated[Principal, Depends(api.auth.require("task_destinations/show"))]
    Update = Annotated[Principal, Depends(api.auth.require("task_destinations/update"))]
    Destroy = Annotated[Principal, Depends(api.auth.require("task_destinations/destroy"))]
    Release = Annotated[Principal, Depends(api.auth.require("task_destinations/release"))]

    @router.get(PREFIX)
    async def index(
        task_id: Task,
        request: Request,
        _: Index,
        limit: Annotated[
            int | None,
            Query(ge=0, le=2**53, description="The number of items to display for pagination."),
        ] = None,
        offset: Annotated[
            int, Query(ge=0, le=2**53, description="The number of items to skip for pagination.")
        ] = 0,
        sort_by: Annotated[str | None, Query(description=SORT_DESCRIPTION)] = None,
        id: Annotated[str | None, Query(description="Filter on id")] = None,
        folder_id: Annotated[str | None, Query(description="Filter on folder id")] = None,
        tape_id: Annotated[str | None, Query(description="Filter on tape id")] = None,
        pool_id: Annotated[str | None, Query(description="Filter on a pool id")] = None,
    ) -> StreamingResponse:
        # The declared parameters give the OpenAPI document its types; the parser reads
        # the whole query, so that a repeated filter adds to the others.
        try:
            query = parse_index_query(
                request.query_params.multi_items(), limit=limit, offset=offset
            )
        except QueryError as exc:
            raise ApiError(status.HTTP_400_BAD_REQUEST, describe(exc.details), exc.details) from exc
        _count, chunks = await index_listing(api.journal, task_id, query)
        return StreamingResponse(chunks, media_type="application/json")

    @router.post(PREFIX, status_code=status.HTTP_201_CREATED)
    async def create(task_id: Task, request: Request, _: Create) -> Response:
        # Served by CreateDirectly; declared for the OpenAPI document and the same answers.
        return await api.create(task_id, request)

    @router.get(ITEM)
    async def show(task_id: Task, task_destination_id: DestinationId, _: Show) -> Response:
        return _answer(await api.shown(task_id, task_destination_id))

    @router.put(ITEM)
    async def update(
        task_id: Task, task_destination_id: DestinationId, request: Request, _: Update
    ) -> Response:
        await api.existing(task_id, task_destination_id)
        _require_json(request)
        outcome = await api.submit("update", task_id, task_destination_id, await request.body())
        if outcome.status == "rejected":
            raise _rejected(outcome)
        return _answer(await api.shown(task_id, task_destination_id))

    @router.delete(ITEM, status_code=status.HTTP_204_NO_CONTENT)
    async def destroy(task_id: Task, task_destination_id: DestinationId, _: Destroy) -> Response:
        await api.existing(task_id, task_destination_id)
        await api.submit("destroy", task_id, task_destination_id, None)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(ITEM + "/release", status_code=status.HTTP_204_NO_CONTENT)
    async def release(task_id: Task, task_destination_id: DestinationId, _: Release) -> Response:
        """The data mover is done with the drive (same as the MQTT release topic)."""
        await api.existing(task_id, task_destination_id)
        await api.submit("release", task_id, task_destination_id, None)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router


class CreateDirectly:
    """ASGI app: a create goes straight to `TaskDestinations.created`.

    FastAPI's routing, dependency solving and middleware, and Starlette's request and
    response objects, cost about as much CPU as the create itself, and creates are
    the traffic. The create route's checks are few and fixed; they run here in the
    route's order (task, credentials, media type, then the create) with its answers,
    on the ASGI messages themselves. `TapeworkerApi` hands it the creates it takes
    (within the size limits); an unexpected error is answered and raised as FastAPI's
    outermost middleware would.
    """

    def __init__(self, *, api: TaskDestinations) -> None:
        self.api = api

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        match = CREATE_PATH.fullmatch(scope["path"])
        assert match is not None, "TapeworkerApi hands over creates only"
        response: Response
        try:
            task_id = self.api.task(match["task_id"])
            authorization, content_type = _create_headers(scope["headers"])
            await self.api.auth.authorize(authorization, "task_destinations/create")
            _require_json_type(content_type)
            body = await self.api.created(task_id, await _body(receive))
        except ApiError as exc:
            response = error_response(exc.status_code, exc.messages, exc.details, exc.headers)
        except JournalFaultError as exc:
            response = journal_unavailable(exc.kind, exc.detail)
        except Exception as exc:
            # As FastAPI's outermost middleware does with the app's 500 handler: answered
            # in shape, then raised to the server, which closes the connection.
            await internal_error(scope["path"], exc)(scope, receive, send)
            raise
        else:
            # The bytes and headers of `_answer`'s Response, without building one.
            headers = [(b"content-length", str(len(body)).encode()), _JSON_CONTENT_TYPE]
            await send({"type": "http.response.start", "status": 201, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await response(scope, receive, send)


_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


def _create_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The first Authorization and Content-Type of a request, as Starlette's
    `Request.headers.get` reads them."""
    authorization = content_type = None
    for name, value in headers:
        if name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
    return authorization, content_type


async def _body(receive: "Receive") -> bytes:
    """The whole body, as Starlette's `Request.body` reads it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class TapeworkerApi(FastAPI):
    """FastAPI, with the create served in front of it (see `CreateDirectly`).

    Only `POST /api/v2/tasks/{task_id}/task_destinations` itself goes to `front`; a
    trailing slash, a `root_path` or any other request takes FastAPI's way.
    """

    #: The create's own way: the size limits, then `CreateDirectly` (None: the router's).
    front: "ASGIApp | None" = None

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        front = self.front
        if (
            front is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and CREATE_PATH.fullmatch(scope["path"])
        ):
            scope["app"] = self
            await front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    journal: Journal,
    settings: Settings,
    *,
    on_change: ChangeListener,
    clock: Clock,
) -> TapeworkerApi:
    """The daemon's HTTP app: one router per resource, errors in the one shape."""
    app = TapeworkerApi(
        title="tapeworker",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        exception_handlers={JournalFaultError: journal_fault_response},
        # The daemon's metrics are Prometheus's (worker/ops/metrics.py). FastAPI's own
        # OpenTelemetry would ask the global providers on every request whether they
        # are configured: a fiftieth of a create's CPU, for nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    install_openapi(app)
    api = TaskDestinations(journal, settings, on_change, clock)
    limits = {
        "max_body_bytes": settings.http.max_body_bytes,
        "max_query_bytes": settings.http.max_query_bytes,
    }
    app.add_middleware(RequestLimits, **limits)
    app.include_router(task_destinations_router(api))
    # Within the same limits: a create's body is whole and within them when it arrives.
    app.front = RequestLimits(CreateDirectly(api=api), **limits)
    # The admin routes (added by the service) check credentials the same way.
    app.state.auth = api.auth
    # Idempotency-Key responses are saved with the next group (IdempotentCreates).
    app.state.commits = api.commits
    return app
