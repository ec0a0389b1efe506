"""Every HTTP error in the archive manager's one shape, with the status each case has."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.worker.intake.http.api_client import BASE, api_client, assert_error_shape


async def test_unknown_path_is_a_404_in_shape(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, _):
        body = assert_error_shape(await client.get("/api/v2/nothing-here"), 404)
        assert body["details"]["path"][0] == {"error": "not_found", "value": "/api/v2/nothing-here"}


async def test_unknown_destination_is_a_404_naming_it(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, _):
        for method in ("GET", "PUT", "DELETE"):
            response = await client.request(method, BASE + "/41", json={"folder_id": 1})
            body = assert_error_shape(response, 404)
            assert body["details"] == {
                "task_destination_id": [{"error": "not_found", "value": "41"}]
            }


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        (BASE, "GET, POST"),
        (BASE + "/1", "DELETE, GET, PUT"),
        (BASE + "/1/release", "POST"),
    ],
)
async def test_wrong_method_is_a_405_with_every_allowed_method(
    tmp_path: Path, path: str, allow: str
) -> None:
    async with api_client(tmp_path) as (client, _):
        response = await client.patch(path, json={})
        body = assert_error_shape(response, 405)
        assert response.headers["allow"] == allow
        assert body["details"]["method"] == [{"error": "invalid", "value": "PATCH"}]


@pytest.mark.parametrize("bad_id", ["abc", "-1", "9" * 30, "1.5", str(2**53 + 1)])
async def test_malformed_path_id_is_a_400_naming_the_parameter(tmp_path: Path, bad_id: str) -> None:
    async with api_client(tmp_path) as (client, journal):
        for method, suffix in (("GET", ""), ("PUT", ""), ("DELETE", ""), ("POST", "/release")):
            response = await client.request(method, f"{BASE}/{bad_id}{suffix}", json={})
            body = assert_error_shape(response, 400)
            [item] = body["details"]["task_destination_id"]
            assert item["value"] == bad_id
            assert item["error"] in ("invalid", "greater_than_or_equal_to", "less_than_or_equal_to")
        assert await journal.events() == [], "a refused path journals nothing"


async def test_missing_or_wrong_credentials_are_a_401_in_shape(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, _):
        response = await client.get(BASE, auth=None)
        body = assert_error_shape(response, 401)
        assert response.headers["www-authenticate"].startswith("Basic")
        assert body["details"]["Authorization"][0]["error"] == "blank"
        response = await client.get(BASE, auth=("archive", "wrong"))
        assert (
            assert_error_shape(response, 401)["details"]["Authorization"][0]["error"] == "invalid"
        )


async def test_body_not_json_is_a_400_and_journaled(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, journal):
        response = await client.post(
            BASE, content=b"{not json", headers={"Content-Type": "application/json"}
        )
        body = assert_error_shape(response, 400)
        assert body["details"]["body"] == [{"error": "invalid", "value": "{not json"}]
        [event] = await journal.events()
        assert (event.status, event.reason) == ("rejected", body["messages"][0])


async def test_invalid_attributes_are_named_with_their_kind(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, _):
        response = await client.post(
            BASE, json={"folder_id": -3, "tape_barcode": "x" * 65, "colour": "red"}
        )
        body = assert_error_shape(response, 400)
        assert body["details"] == {"colour": [{"error": "unknown_attribute", "value": "red"}]}
        response = await client.post(BASE, json={"folder_id": -3, "tape_barcode": "x" * 65})
        body = assert_error_shape(response, 400)
        assert body["details"]["folder_id"] == [
            {"error": "greater_than_or_equal_to", "value": "-3"}
        ]
        assert body["details"]["tape_barcode"] == [{"error": "too_long", "value": "x" * 65}]
        response = await client.post(BASE, json={"tape_barcode": "$(reboot)"})
        body = assert_error_shape(response, 400)
        assert body["details"]["tape_barcode"] == [{"error": "invalid", "value": "$(reboot)"}]


async def test_a_body_that_contradicts_the_library_is_a_409_and_journaled(
    tmp_path: Path,
) -> None:
    """Well-formed (no schema can say which tape id is which barcode), but out of date."""
    async with api_client(tmp_path) as (client, journal):
        cases = [
            ({"tape_id": 1, "tape_barcode": "NOD401L9"}, "tape_id"),
            ({"pool_id": 6, "pool_name": "online-tapes"}, "pool_id"),
            ({"tape_barcode": "NOD400L9", "pool_name": "online-tapes"}, "pool_name"),
        ]
        for body, attribute in cases:
            response = await client.post(BASE, json=body)
            error = assert_error_shape(response, 409)
            assert error["details"][attribute][0]["error"] == "invalid", error
            [event] = await journal.events(limit=1)
            assert (event.status, event.reason) == ("rejected", error["messages"][0])
        created = await client.post(BASE, json={"tape_id": 1})
        assert created.status_code == 201, created.text
        url = f"{BASE}/{created.json()['id']}"
        response = await client.put(url, json={"tape_id": 1, "tape_barcode": "NOD401L9"})
        assert_error_shape(response, 409)
        assert (await client.get(url)).json()["tape_id"] == 1


async def test_body_declared_as_another_media_type_is_a_415(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, journal):
        for declared in ("application/x-www-form-urlencoded", "text/plain"):
            response = await client.post(
                BASE, content=b'{"folder_id": 1}', headers={"Content-Type": declared}
            )
            body = assert_error_shape(response, 415)
            assert body["details"]["Content-Type"] == [{"error": "invalid", "value": declared}]
        assert await journal.destinations() == []
        ok = await client.post(
            BASE,
            content=b'{"folder_id": 1}',
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert ok.status_code == 201, ok.text


async def test_a_server_bug_is_a_500_in_shape(tmp_path: Path) -> None:
    async with api_client(tmp_path, raise_app_exceptions=False) as (client, journal):
        await journal.close()  # every handler now fails on a closed connection
        response = await client.get(BASE + "/1")
        assert_error_shape(response, 500)


async def test_values_a_client_cannot_encode_are_escaped_not_a_500(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, _):
        response = await client.post(
            BASE,
            content=b'{"folder_path": "\\ud800", "\\udfff": 1}',
            headers={"Content-Type": "application/json"},
        )
        body = assert_error_shape(response, 400)
        assert body["details"] == {"\\udfff": [{"error": "unknown_attribute", "value": "1"}]}


async def test_a_server_bug_in_a_create_is_a_500_in_shape_and_reaches_the_server(
    tmp_path: Path,
) -> None:
    # The create is served in front of FastAPI's middleware: its bug is answered and
    # raised as that middleware does (the server then logs it and closes the connection).
    async with api_client(tmp_path, raise_app_exceptions=False) as (client, journal):
        await journal.close()
        response = await client.post(BASE, json={"folder_id": 1})
        assert_error_shape(response, 500)
    async with api_client(tmp_path / "raised") as (client, journal):
        await journal.close()
        with pytest.raises(sqlite3.ProgrammingError):
            await client.post(BASE, json={"folder_id": 1})
