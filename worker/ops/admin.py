"""The operator's controls, through the daemon: the only writer of its journal.

`/admin/...` on the HTTP listener, for the users of `[http] admin_users` (HTTP Basic);
`tapeworker drive|tape|drain|resume|release` are its client. Each action changes the
state, is journaled with who and why (an event of source "operator"), logged, and
published on MQTT (`<prefix>/operator`, and the states it changed).
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures.

import json
import secrets
import time
from typing import TYPE_CHECKING, Annotated, Any

import structlog
from fastapi import APIRouter, Depends, HTTPException, Path, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict, Field

from drivers.errors import InvalidArgumentError
from drivers.media import validate_barcode
from worker.destinations import DestinationEvent, record_events
from worker.http_errors import error_response

if TYPE_CHECKING:
    from worker.service import Service

log = structlog.get_logger("tapeworker.operator")


class OperatorRequest(BaseModel):
    """Why, and who at the keyboard (the HTTP user says which account)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)
    by: str | None = Field(default=None, max_length=64, pattern=r"^[\w.@-]+$")


DriveIndex = Annotated[int, Path(ge=0, le=1023)]


def admin_router(service: "Service") -> APIRouter:
    router = APIRouter(prefix="/admin")
    security = HTTPBasic(realm="tapeworker")

    def operator(credentials: Annotated[HTTPBasicCredentials, Depends(security)]) -> str:
        http = service.settings.http
        secret = http.users.get(credentials.username)
        expected = secret.get_secret_value() if secret is not None else "\0"
        # Compare in constant time, and also for unknown users, so timing tells nothing.
        same = secrets.compare_digest(credentials.password.encode(), expected.encode())
        if not same or secret is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid credentials",
                headers={"WWW-Authenticate": 'Basic realm="tapeworker"'},
            )
        if credentials.username not in http.admin_users:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"user {credentials.username} may not use the operator's controls",
            )
        return credentials.username

    Operator = Annotated[str, Depends(operator)]

    def who(user: str, body: OperatorRequest) -> str:
        return f"{user} ({body.by})" if body.by else user

    async def act(
        action: str, target: str, user: str, body: OperatorRequest, **change: Any
    ) -> bool:
        journal = service.journal
        assert journal is not None, "routes are served only once the journal is open"
        by = who(user, body)
        done = await journal.operator_action(
            action, who=by, reason=body.reason, now=time.time(), target=target, **change
        )
        if not done:
            return False
        log.info(_LOG_LINES.get(action, action), target=target, by=by, reason=body.reason,
                 **{k: v for k, v in change.items() if k in ("drive", "barcode")})  # fmt: skip
        await service.operator_changed(
            {"action": action, "target": target, "by": by, "reason": body.reason}
        )
        return True

    @router.post("/drives/{index}/up", response_model=None)
    async def drive_up(
        index: DriveIndex, body: OperatorRequest, user: Operator
    ) -> dict[str, Any] | JSONResponse:
        if not await act("drive up", f"drive {index}", user, body, drive=index, drive_up=True):
            return not_found("drive", str(index))
        return {"drive": index, "up": True}

    @router.post("/drives/{index}/down", response_model=None)
    async def drive_down(
        index: DriveIndex, body: OperatorRequest, user: Operator
    ) -> dict[str, Any] | JSONResponse:
        if not await act("drive down", f"drive {index}", user, body, drive=index, drive_up=False):
            return not_found("drive", str(index))
        return {"drive": index, "up": False}

    async def tape_action(
        action: str, barcode: str, body: OperatorRequest, user: str, fields: dict[str, bool]
    ) -> dict[str, Any] | JSONResponse:
        barcode = barcode_of(barcode)
        if not await act(
            action, f"tape {barcode}", user, body, barcode=barcode, tape_fields=fields
        ):
            return not_found("tape", barcode)
        return {"barcode": barcode, **fields}

    @router.post("/tapes/{barcode}/clear-check", response_model=None)
    async def clear_check(
        barcode: str, body: OperatorRequest, user: Operator
    ) -> dict[str, Any] | JSONResponse:
        return await tape_action("tape clear-check", barcode, body, user, {"need_to_check": False})

    @router.post("/tapes/{barcode}/lock", response_model=None)
    async def lock(
        barcode: str, body: OperatorRequest, user: Operator
    ) -> dict[str, Any] | JSONResponse:
        return await tape_action("tape lock", barcode, body, user, {"locked": True})

    @router.post("/tapes/{barcode}/unlock", response_model=None)
    async def unlock(
        barcode: str, body: OperatorRequest, user: Operator
    ) -> dict[str, Any] | JSONResponse:
        return await tape_action("tape unlock", barcode, body, user, {"locked": False})

    @router.post("/drain")
    async def drain(body: OperatorRequest, user: Operator) -> dict[str, Any]:
        await act("drain", "library", user, body, draining=True)
        return {"draining": True}

    @router.post("/resume")
    async def resume(body: OperatorRequest, user: Operator) -> dict[str, Any]:
        await act("resume", "library", user, body, draining=False)
        return {"draining": False}

    @router.post("/destinations/{destination_id}/release", response_model=None)
    async def release(
        destination_id: Annotated[int, Path(ge=0, le=2**53)], body: OperatorRequest, user: Operator
    ) -> dict[str, Any] | JSONResponse:
        journal = service.journal
        assert journal is not None
        record = await journal.destination(destination_id)
        if record is None or record.deleted:
            return not_found("destination", str(destination_id))
        by = who(user, body)
        # The data mover's own release, with who and why in the journaled payload.
        event = DestinationEvent(
            "release",
            record.task_id,
            destination_id,
            None,
            "operator",
            payload=json.dumps({"by": by, "reason": body.reason}),
        )
        [outcome] = await record_events(
            journal, [event], now=time.time(), hold_seconds=service.settings.hold_seconds
        )
        log.info("released by operator", destination=destination_id, by=by, reason=body.reason)
        await service.operator_changed(
            {"action": "release", "target": f"destination {destination_id}", "by": by,
             "reason": body.reason},
        )  # fmt: skip
        await service.destinations_changed({destination_id})
        return {"destination": destination_id, "outcome": outcome.status}

    return router


def not_found(what: str, value: str) -> JSONResponse:
    return error_response(404, f"no {what} {value}", {what: [{"error": "unknown", "value": value}]})


def barcode_of(text: str) -> str:
    try:
        return validate_barcode(text)
    except InvalidArgumentError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc


#: The log line of each action, as the README lists them.
_LOG_LINES = {
    "drive up": "drive marked up",
    "drive down": "drive marked down",
    "tape clear-check": "need_to_check cleared",
    "tape lock": "tape locked",
    "tape unlock": "tape unlocked",
    "drain": "draining: nothing new is mounted",
    "resume": "resumed: mounting again",
}
