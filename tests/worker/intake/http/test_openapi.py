"""The served OpenAPI document describes the seed: schemas, parameters, scopes, statuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.worker.intake.http.api_client import api_client

INDEX = "/api/v2/tasks/{task_id}/task_destinations"
ITEM = INDEX + "/{task_destination_id}"


async def _document(tmp_path: Path) -> dict[str, Any]:
    async with api_client(tmp_path) as (client, _):
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        return dict(response.json())


async def test_the_seed_schemas_under_the_seed_names(tmp_path: Path) -> None:
    spec = await _document(tmp_path)
    schemas = spec["components"]["schemas"]
    for name in (
        "TaskDestinationUp",
        "TaskDestination",
        "TaskDestinationCollection",
        "Folder",
        "Container",
        "Tape",
        "Pool",
        "StorageExtraData",
        "Error",
        "AttributeError",
    ):
        assert name in schemas, name
    assert "HTTPValidationError" not in schemas
    up = schemas["TaskDestinationUp"]["properties"]
    assert set(up) == {
        "folder_id",
        "folder_path",
        "tape_id",
        "tape_barcode",
        "pool_id",
        "pool_name",
    }
    assert schemas["Folder"]["properties"]["type"]["anyOf"][0]["enum"] == ["file", "folder"]
    text = str(spec)
    assert "#/components/schemas/TaskDestinationBody" not in text


async def test_every_operation_names_its_scope_and_its_statuses(tmp_path: Path) -> None:
    spec = await _document(tmp_path)
    assert set(spec["components"]["securitySchemes"]) == {"BasicAuth", "BearerAuth"}
    expected = {
        (INDEX, "get"): ("index", "200"),
        (INDEX, "post"): ("create", "201"),
        (ITEM, "get"): ("show", "200"),
        (ITEM, "put"): ("update", "200"),
        (ITEM, "delete"): ("destroy", "204"),
        (ITEM + "/release", "post"): ("release", "204"),
    }
    for (path, method), (scope, success) in expected.items():
        operation = spec["paths"][path][method]
        assert operation["security"] == [
            {"BasicAuth": []},
            {"BearerAuth": [f"task_destinations/{scope}"]},
        ]
        responses = operation["responses"]
        assert success in responses
        assert {"400", "401", "403", "404", "413", "500", "503"} <= set(responses)
        assert "422" not in responses or method == "post"
        # A body that contradicts the library, and a body declared as something else.
        assert (
            {"409", "415"} <= set(responses) or method not in ("post", "put") or scope == "release"
        )
        assert responses["400"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
    assert spec["paths"][ITEM + "/release"]["post"]["x-tapeworker-extension"] is True
    create = spec["paths"][INDEX]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TaskDestinationUp"
    }
    assert "Replaces" in spec["paths"][ITEM]["put"]["description"]
    [header] = [p for p in create["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key"


async def test_the_index_declares_the_seed_parameters(tmp_path: Path) -> None:
    spec = await _document(tmp_path)
    parameters = {p["name"]: p for p in spec["paths"][INDEX]["get"]["parameters"]}
    assert set(parameters) == {
        "task_id",
        "limit",
        "offset",
        "sort_by",
        "id",
        "folder_id",
        "tape_id",
        "pool_id",
    }
    assert parameters["limit"]["description"] == "The number of items to display for pagination."
    assert parameters["pool_id"]["description"] == "Filter on a pool id"
    assert parameters["task_id"]["in"] == "path"
    assert "pattern" in parameters["folder_id"]["schema"]
    assert parameters["sort_by"]["description"].startswith("Sort results by attribute.")
