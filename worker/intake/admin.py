"""The operator's controls, through the daemon: the only writer of its journal.

`/admin/...` on the HTTP listener, authenticated like the task_destinations routes
(HTTP Basic or an API key) with one scope per kind of control: `admin/drives`,
`admin/tapes`, `admin/drain`, `admin/release`, `admin/api_keys`. The users of
`[http] admin_users` hold them all. `tapeworker drive|tape|drain|resume|release|api-key`
are its client. Each action changes the
state, is journaled with who and why (an event of source "operator"), logged, and
published on MQTT (`<prefix>/operator`, and the states it changed).
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures.

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import structlog
from fastapi import APIRouter, Depends, HTTPException, Path, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from drivers.errors import InvalidArgumentError
from drivers.media import validate_barcode
from worker.intake.destinations import DestinationEvent, record_events
from worker.intake.http.auth import Authenticator, Principal, new_key
from worker.intake.http.errors import ApiError, error_response
from worker.seed.error_details import detail
from worker.seed.models import iso_time
from worker.settings import ApiScope

if TYPE_CHECKING:
    from worker.ops.daemon import RunningDaemon

log = structlog.get_logger("tapeworker.operator")


class OperatorRequest(BaseModel):
    """Why, and who at the keyboard (the HTTP user says which account)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)
    by: str | None = Field(default=None, max_length=64, pattern=r"^[\w.@-]+$")


DriveIndex = Annotated[int, Path(ge=0, le=1023)]
KeyName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w.@-]+$")]


class NewApiKey(OperatorRequest):
    """A key to make: its name and the scopes it holds (at most the caller's own)."""

    name: KeyName
    scopes: list[ApiScope] = Field(min_length=1)


def who(user: Principal, body: OperatorRequest) -> str:
    """The authenticated user or key name, and the login name the client sent."""
    return f"{user.name} ({body.by})" if body.by else user.name


def admin_router(service: "RunningDaemon", auth: Authenticator) -> APIRouter:
    router = APIRouter(prefix="/admin")

    Drives = Annotated[Principal, Depends(auth.require("admin/drives"))]
    Tapes = Annotated[Principal, Depends(auth.require("admin/tapes"))]
    Drain = Annotated[Principal, Depends(auth.require("admin/drain"))]
    Release = Annotated[Principal, Depends(auth.require("admin/release"))]

    async def act(
        action: str, target: str, user: Principal, body: OperatorRequest, **change: Any
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
        index: DriveIndex, body: OperatorRequest, user: Drives
    ) -> dict[str, Any] | JSONResponse:
        if not await act("drive up", f"drive {index}", user, body, drive=index, drive_up=True):
            return not_found("drive", str(index))
        return {"drive": index, "up": True}

    @router.post("/drives/{index}/down", response_model=None)
    async def drive_down(
        index: DriveIndex, body: OperatorRequest, user: Drives
    ) -> dict[str, Any] | JSONResponse:
        if not await act("drive down", f"drive {index}", user, body, drive=index, drive_up=False):
            return not_found("drive", str(index))
        return {"drive": index, "up": False}

    async def tape_action(
        action: str, barcode: str, body: OperatorRequest, user: Principal, fields: dict[str, bool]
    ) -> dict[str, Any] | JSONResponse:
        barcode = barcode_of(barcode)
        if not await act(
            action, f"tape {barcode}", user, body, barcode=barcode, tape_fields=fields
        ):
            return not_found("tape", barcode)
        return {"barcode": barcode, **fields}

    @router.post("/tapes/{barcode}/clear-check", response_model=None)
    async def clear_check(
        barcode: str, body: OperatorRequest, user: Tapes
    ) -> dict[str, Any] | JSONResponse:
        return await tape_action("tape clear-check", barcode, body, user, {"need_to_check": False})

    @router.post("/tapes/{barcode}/lock", response_model=None)
    async def lock(
        barcode: str, body: OperatorRequest, user: Tapes
    ) -> dict[str, Any] | JSONResponse:
        return await tape_action("tape lock", barcode, body, user, {"locked": True})

    @router.post("/tapes/{barcode}/unlock", response_model=None)
    async def unlock(
        barcode: str, body: OperatorRequest, user: Tapes
    ) -> dict[str, Any] | JSONResponse:
        return await tape_action("tape unlock", barcode, body, user, {"locked": False})

    @router.post("/drain")
    async def drain(body: OperatorRequest, user: Drain) -> dict[str, Any]:
        await act("drain", "library", user, body, draining=True)
        return {"draining": True}

    @router.post("/resume")
    async def resume(body: OperatorRequest, user: Drain) -> dict[str, Any]:
        await act("resume", "library", user, body, draining=False)
        return {"draining": False}

    @router.post("/destinations/{destination_id}/release", response_model=None)
    async def release(
        destination_id: Annotated[int, Path(ge=0, le=2**53)], body: OperatorRequest, user: Release
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

    add_api_key_routes(router, service, auth)
    return router


def add_api_key_routes(router: APIRouter, service: "RunningDaemon", auth: Authenticator) -> None:
    """`/admin/api_keys`: make, list and revoke API keys (scope admin/api_keys)."""
    ApiKeys = Annotated[Principal, Depends(auth.require("admin/api_keys"))]

    @router.post("/api_keys", status_code=201, response_model=None)
    async def create_api_key(body: NewApiKey, user: ApiKeys) -> dict[str, Any] | JSONResponse:
        # A key never holds more than who made it, so admin/api_keys is no way up.
        beyond = sorted(set(body.scopes) - user.scopes)
        if beyond:
            raise ApiError(
                403,
                f"{user.name!r} may not give scopes it lacks: {', '.join(beyond)}.",
                {"scope": [detail("missing", scope) for scope in beyond]},
            )
        journal = service.journal
        assert journal is not None
        key = new_key()
        if not await journal.add_api_key(
            body.name,
            key.key_id,
            key.digest,
            body.scopes,
            time.time(),
            who=who(user, body),
            reason=body.reason,
        ):
            return error_response(
                409,
                f"an API key named {body.name!r} exists",
                {"name": [detail("taken", body.name)]},
            )
        await announce_key_action("api-key create", body.name, user, body)
        return {"name": body.name, "scopes": sorted(body.scopes), "key": key.token}

    @router.get("/api_keys")
    async def list_api_keys(user: ApiKeys) -> dict[str, Any]:
        journal = service.journal
        assert journal is not None
        return {
            "api_keys": [
                {
                    "name": k.name,
                    "scopes": list(k.scopes),
                    "created": iso_time(k.created),
                    "revoked": iso_time(k.revoked) if k.revoked is not None else None,
                }
                for k in await journal.api_keys()
            ]
        }

    @router.post("/api_keys/{name}/revoke", response_model=None)
    async def revoke_api_key(
        name: Annotated[str, Path(max_length=64)], body: OperatorRequest, user: ApiKeys
    ) -> dict[str, Any] | JSONResponse:
        journal = service.journal
        assert journal is not None
        if not await journal.revoke_api_key(
            name, time.time(), who=who(user, body), reason=body.reason
        ):
            return not_found("live API key", name)
        await announce_key_action("api-key revoke", name, user, body)
        return {"name": name, "revoked": True}

    async def announce_key_action(
        action: str, name: str, user: Principal, body: OperatorRequest
    ) -> None:
        # Journaled with the key's change itself; here it is logged and published.
        by = who(user, body)
        target = f"api key {name}"
        log.info(_LOG_LINES[action], target=target, by=by, reason=body.reason)
        await service.operator_changed(
            {"action": action, "target": target, "by": by, "reason": body.reason}
        )


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
    "api-key create": "API key created",
    "api-key revoke": "API key revoked",
}
