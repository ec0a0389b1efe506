"""The OpenAPI document the daemon serves: the seed's task_destinations resource.

FastAPI describes the routes and their parameters; this module adds what the routes
read by hand (the create/update body), the seed's schemas under the seed's names
(TaskDestinationUp, TaskDestination and its nested objects, TaskDestinationCollection,
Error), both security schemes with each operation's scope, every status the daemon
answers, and marks the release extension as ours.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from worker.intake.http.idempotency import HEADER, KEY
from worker.seed.models import TaskDestination, TaskDestinationBody, TaskDestinationIndex
from worker.seed.query import MAX_LIST, SORTABLE

#: Our model names -> the seed's.
_NAMES = {
    "TaskDestinationBody": "TaskDestinationUp",
    "TaskDestinationIndex": "TaskDestinationCollection",
    "ErrorBody": "Error",
}


class AttributeError_(BaseModel):
    error: str = Field(description="The kind: blank, invalid, not_found, too_long, ...")
    value: str = Field(description="The value received (cut to 200 characters)")


class ErrorBody(BaseModel):
    messages: list[str]
    details: dict[str, list[AttributeError_]]


_NAMES["AttributeError_"] = "AttributeError"

_INT = r"[+-]?[0-9]{1,18}"
#: What a filter parameter accepts, as a pattern (see `worker.seed.query`).
FILTER_PATTERN = (
    rf"^((=|!=|>=|<=|>|<)?{_INT}"
    rf"|(><|!><){_INT}(\|{_INT}){{0,{MAX_LIST - 1}}}"
    r"|(~|!~)[0-9%_]{1,64})$"
)
_KEY = "(" + "|".join(SORTABLE) + ")(:(asc|desc))?"
SORT_PATTERN = rf"^{_KEY}([|,]{_KEY})*$"

_ERRORS = {
    "400": "The received resource or a parameter was not correctly formatted.",
    "401": "Missing or wrong credentials, or an unknown or revoked API key.",
    "403": "The API key lacks the operation's scope.",
    "408": "The request did not arrive in time.",
    "413": "The request body is too large.",
    "414": "The query string is too long.",
    "431": "The request headers are too large.",
    "503": "The journal cannot take writes now, or the daemon is busy: retry after Retry-After.",
    "500": "A bug in tapeworker: logged with its traceback, answered in the same shape.",
}
_NOT_FOUND = "No such task destination in this task, or no task of that name."
_CONFLICT = (
    "The body contradicts the library: a tape_id that is another barcode's, a pool_id "
    "that is another pool's, a tape of another pool than the one named."
)

#: operationId (FastAPI's function name) -> scope, statuses beyond the common errors.
_OPERATIONS: dict[str, tuple[str, dict[str, str]]] = {
    "index": ("index", {"404": "No task of that name."}),
    "create": (
        "create",
        {
            "404": "No task of that name.",
            "409": f"{_CONFLICT} Or a create with the same Idempotency-Key is still running.",
            "415": "The body is declared as something else than application/json.",
            "422": "The Idempotency-Key was used for another request.",
        },
    ),
    "show": ("show", {"404": _NOT_FOUND}),
    "update": (
        "update",
        {
            "404": _NOT_FOUND,
            "409": _CONFLICT,
            "415": "The body is declared as something else than JSON.",
        },
    ),
    "destroy": ("destroy", {"404": _NOT_FOUND}),
    "release": ("release", {"404": _NOT_FOUND}),
}


def _schemas() -> dict[str, Any]:
    _, top = models_json_schema(
        [
            (TaskDestinationBody, "validation"),
            (TaskDestination, "serialization"),
            (TaskDestinationIndex, "serialization"),
            (ErrorBody, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = top.get("$defs", {})
    return {_NAMES.get(name, name): schema for name, schema in schemas.items()}


def _renamed(value: Any) -> Any:
    """Every $ref under the seed's names."""
    if isinstance(value, dict):
        return {k: _renamed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v) for v in value]
    if isinstance(value, str) and value.startswith("#/components/schemas/"):
        name = value.rsplit("/", 1)[1]
        return f"#/components/schemas/{_NAMES.get(name, name)}"
    return value


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _operation(operation: dict[str, Any], path: str, method: str) -> None:
    name = operation.get("operationId", "").split("_", 1)[0]
    scope_name, extra = _OPERATIONS[name]
    scope = f"task_destinations/{scope_name}"
    operation["operationId"] = f"{name}_task_destination{'s' if name == 'index' else ''}"
    operation["security"] = [{"BasicAuth": []}, {"BearerAuth": [scope]}]
    operation["x-api-key-scope"] = scope
    note = f"**API Key Scope**: task_destinations / {scope_name}"
    operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)  # the framework's own validation error: we answer 400
    for code, text in {**_ERRORS, **extra}.items():
        responses[code] = _json("Error", text)
    if name == "index":
        responses["200"] = _json("TaskDestinationCollection", "List of task destinations.")
    elif name in ("create", "show", "update"):
        code = "201" if name == "create" else "200"
        responses.pop("200" if name == "create" else "201", None)
        responses[code] = _json("TaskDestination", "A specific task destination.")
    else:
        responses.pop("200", None)
        responses["204"] = {"description": "Done. No content."}
    if name == "create":
        operation.setdefault("parameters", []).append(
            {
                "name": HEADER,
                "in": "header",
                "required": False,
                "description": "Makes a retried create safe: the same key with the same "
                "request gets the first answer (Idempotent-Replayed: true) and creates "
                "nothing; with another request, a 422.",
                "schema": {"type": "string", "pattern": KEY.pattern},
            }
        )
    if name in ("create", "update"):
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref("TaskDestinationUp")}},
        }
        if name == "update":
            operation["description"] += (
                "\n\nReplaces the destination's body: fields left out become null."
            )
    if name == "release":
        operation["x-tapeworker-extension"] = True
        operation["description"] = (
            "Extension of tapeworker, not part of the archive manager's API: the data "
            f"mover is done with the drive.\n\n{note}"
        )
    for parameter in operation.get("parameters", []):
        schema = parameter.setdefault("schema", {})
        if parameter["name"] in ("id", "folder_id", "tape_id", "pool_id"):
            schema.pop("anyOf", None)
            schema.update({"type": "string", "pattern": FILTER_PATTERN})
        elif parameter["name"] == "sort_by":
            schema.pop("anyOf", None)
            schema.update({"type": "string", "pattern": SORT_PATTERN})
        elif parameter["name"] == "limit":
            schema.pop("anyOf", None)
            schema.update({"type": "integer", "minimum": 0, "maximum": 2**53})
    del path, method


def install_openapi(app: FastAPI) -> None:
    """Serve the document described above at /openapi.json."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = get_openapi(
            title="tapeworker: task destinations",
            version=app.version,
            description=(
                "The archive manager's task_destinations resource (API v2), as tapeworker "
                "applies it to a tape library. Errors have one shape (Error). Added "
                "response attributes (`state`) are backwards compatible, as the archive "
                "manager's API defines them."
            ),
            routes=app.routes,
        )
        components = spec.setdefault("components", {})
        schemas = {
            name: schema
            for name, schema in components.get("schemas", {}).items()
            if name not in ("HTTPValidationError", "ValidationError")
        }
        schemas.update(_schemas())
        components["schemas"] = _renamed(schemas)
        components["securitySchemes"] = {
            "BasicAuth": {"type": "http", "scheme": "basic"},
            "BearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key made by `tapeworker api-key create`; each "
                "operation names the scope it needs.",
            },
        }
        for path, methods in spec.get("paths", {}).items():
            if not re.match(r"^/api/v2/tasks/", path):
                continue
            for method, operation in methods.items():
                _operation(operation, path, method)
        app.openapi_schema = spec
        return spec

    app.openapi = document  # type: ignore[method-assign]
