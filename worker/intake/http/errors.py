"""The HTTP API's one error shape, the archive manager's own.

Every 4xx and 5xx body the daemon sends is built by `error_body` (in the seed's
vocabulary, where the operator's routes reach it too), so a client parses one shape:
``{"messages": ["..."], "details": {"<attribute>": [{"error": "<kind>", "value": "..."}]}}``.
The handlers installed by `install_error_handlers` turn the framework's own errors
(routing, path and query validation) into that shape too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from worker.seed.error_details import Details, detail, error_body, validation_details

log = structlog.get_logger("tapeworker.http")

#: Status -> the message a client sees when nothing more specific was said.
_MESSAGES = {
    400: "The received resource was not correctly formatted.",
    401: "Authentication required.",
    403: "Forbidden.",
    404: "Not found.",
    405: "Method not allowed.",
    413: "Request body too large.",
    414: "Request query too long.",
    415: "Unsupported media type: send application/json.",
    431: "Request headers too large.",
    500: "Internal error.",
}


class ApiError(Exception):
    """An error the API answers with: a status, messages, per-attribute details."""

    def __init__(
        self,
        status_code: int,
        messages: str | Sequence[str],
        details: Details | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(messages)
        self.status_code = status_code
        self.messages = messages
        self.details = details
        self.headers = headers


def error_response(
    status_code: int,
    messages: str | Sequence[str],
    details: Details | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(messages, details),
        status_code=status_code,
        headers=dict(headers) if headers else None,
    )


#: Seconds a client waits before retrying while the journal refuses writes.
JOURNAL_RETRY_AFTER_S = 5


def journal_unavailable(kind: str, detail: str) -> JSONResponse:
    """503 while the journal refuses writes: nothing was committed, the client retries."""
    return error_response(
        503,
        f"the journal cannot take writes now ({kind}); nothing was changed, retry later",
        {"journal": [{"error": kind, "value": detail}]},
        headers={"Retry-After": str(JOURNAL_RETRY_AFTER_S)},
    )


def internal_error(path: str, exc: Exception) -> JSONResponse:
    """500 for a bug, not the client's fault: logged with its traceback, answered in shape."""
    log.exception("unexpected error", path=path, error=repr(exc))
    return error_response(500, _MESSAGES[500])


#: The methods a 405's Allow header may list.
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves at this request's path.

    The router's own 405 names the first route of the path only; a path has one
    route per method here, so we ask every route about every method.
    """
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app or the framework raises leaves in the one shape."""

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status_code, exc.messages, exc.details, exc.headers)

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = validation_details(exc.errors())
        return error_response(
            400,
            [f"{name}: invalid value" for name in details] or _MESSAGES[400],
            details,
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = exc.detail if isinstance(exc.detail, str) and exc.detail else None
        generic = _MESSAGES.get(exc.status_code)
        if message is None or (generic and message in ("Not Found", "Method Not Allowed")):
            message = generic or "HTTP error."
        headers = dict(exc.headers or {})
        details: dict[str, list[dict[str, str]]] = {}
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
            details["method"] = [detail("invalid", request.method)]
        elif exc.status_code == 404:
            details["path"] = [detail("not_found", request.url.path)]
        return error_response(exc.status_code, message, details, headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request.url.path, exc)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
