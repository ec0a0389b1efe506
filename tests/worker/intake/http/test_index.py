"""The index as the seed and its SDK define it: paging, sorting, filters with operators."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.worker.intake.http.api_client import BASE, api_client, assert_error_shape
from worker.seed.models import TaskDestinationIndex

#: (folder_id, pool_id, tape_id): pool 6 and 7 of the catalog, tape 1 (NOD400L9, pool 6).
ROWS = [
    (10, 6, None),
    (11, 7, None),
    (12, 6, 1),
    (10, 7, None),
    (13, None, None),
    (11, 6, None),
    (12, 6, 1),
    (14, 7, None),
]


async def _fill(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    created = []
    for folder_id, pool_id, tape_id in ROWS:
        body: dict[str, Any] = {"folder_id": folder_id, "folder_path": f"/c/f{folder_id}"}
        if pool_id is not None:
            body["pool_id"] = pool_id
        if tape_id is not None:
            body["tape_id"] = tape_id
        response = await client.post(BASE, json=body)
        assert response.status_code == 201, response.text
        created.append(response.json())
    # Another task's destination never shows in task 7's index.
    other = await client.post("/api/v2/tasks/8/task_destinations", json={"folder_id": 10})
    assert other.status_code == 201
    return created


async def _index(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get(BASE, params=params)
    assert response.status_code == 200, response.text
    data = response.json()
    TaskDestinationIndex.model_validate(data)  # the seed's collection shape
    return dict(data)


def _ids(data: dict[str, Any]) -> list[int]:
    return [d["id"] for d in data["task_destinations"]]


async def test_limit_and_offset_page_and_count_tells_when_to_stop(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, _):
        created = await _fill(client)
        everything = await _index(client)
        assert everything["count"] == len(ROWS)
        assert _ids(everything) == [d["id"] for d in created]
        seen: list[int] = []
        offset = 0
        while True:
            page = await _index(client, limit=3, offset=offset)
            assert page["count"] == len(ROWS)
            assert len(page["task_destinations"]) <= 3
            if not page["task_destinations"]:
                break
            seen += _ids(page)
            offset += 3
        assert seen == _ids(everything)
        assert _ids(await _index(client, limit=0)) == []
        assert (await _index(client, offset=100))["count"] == len(ROWS)


@pytest.mark.parametrize(
    ("sort_by", "key"),
    [
        ("id:desc", lambda d: -d["id"]),
        ("folder_id", lambda d: (d["folder_id"], d["id"])),
        ("folder_id:desc|id", lambda d: (-d["folder_id"], d["id"])),
        # The archive manager's Python SDK joins a sort_by list with commas.
        ("folder_id:desc,id:desc", lambda d: (-d["folder_id"], -d["id"])),
        ("folder_id:asc|id:desc", lambda d: (d["folder_id"], -d["id"])),
        (
            "pool_id:desc|folder_id:desc",
            lambda d: (-(d["pool_id"] or -1), -d["folder_id"], d["id"]),
        ),
        ("folder_path:desc", lambda d: (tuple(-ord(c) for c in d["folder_path"]), d["id"])),
    ],
)
async def test_sort_by_orders_totally_by_each_key_in_turn(
    tmp_path: Path, sort_by: str, key: Any
) -> None:
    async with api_client(tmp_path) as (client, _):
        created = await _fill(client)
        data = await _index(client, sort_by=sort_by)
        assert _ids(data) == [d["id"] for d in sorted(created, key=key)]
        # Pages of the same order never overlap or skip.
        pages = [_ids(await _index(client, sort_by=sort_by, limit=3, offset=o)) for o in (0, 3, 6)]
        assert list(itertools.chain(*pages)) == _ids(data)


def _matching(created: list[dict[str, Any]], test: Any) -> list[int]:
    return [d["id"] for d in created if test(d)]


async def test_filters_with_every_operator(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, _):
        created = await _fill(client)
        cases: list[tuple[dict[str, str], Any]] = [
            ({"pool_id": "6"}, lambda d: d["pool_id"] == 6),
            ({"pool_id": "=6"}, lambda d: d["pool_id"] == 6),
            ({"pool_id": "!=6"}, lambda d: d["pool_id"] != 6),
            ({"folder_id": ">11"}, lambda d: d["folder_id"] > 11),
            ({"folder_id": ">=11"}, lambda d: d["folder_id"] >= 11),
            ({"folder_id": "<11"}, lambda d: d["folder_id"] < 11),
            ({"folder_id": "<=11"}, lambda d: d["folder_id"] <= 11),
            ({"folder_id": "><10|13"}, lambda d: d["folder_id"] in (10, 13)),
            ({"folder_id": "!><10|13"}, lambda d: d["folder_id"] not in (10, 13)),
            ({"pool_id": "!><6"}, lambda d: d["pool_id"] != 6),
            ({"folder_id": "~1_"}, lambda d: True),
            ({"folder_id": "~%3"}, lambda d: str(d["folder_id"]).endswith("3")),
            ({"folder_id": "!~%3"}, lambda d: not str(d["folder_id"]).endswith("3")),
            ({"tape_id": "1"}, lambda d: d["tape_id"] == 1),
            (
                {"id": f"><{created[0]['id']}|{created[5]['id']}"},
                lambda d: d in (created[0], created[5]),
            ),
            (
                {"pool_id": "6", "folder_id": "12"},
                lambda d: d["pool_id"] == 6 and d["folder_id"] == 12,
            ),
        ]
        for params, test in cases:
            data = await _index(client, **params)
            expected = _matching(created, test)
            assert _ids(data) == expected, params
            assert data["count"] == len(expected), params


async def test_a_repeated_filter_adds_to_the_others(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, _):
        created = await _fill(client)
        response = await client.get(BASE + "?folder_id=>10&folder_id=<13")
        assert _ids(response.json()) == _matching(created, lambda d: 10 < d["folder_id"] < 13)


@pytest.mark.parametrize(
    ("params", "attribute", "kind"),
    [
        ({"limit": "-1"}, "limit", "greater_than_or_equal_to"),
        ({"limit": "two"}, "limit", "invalid"),
        ({"offset": "-5"}, "offset", "greater_than_or_equal_to"),
        ({"offset": "1.5"}, "offset", "invalid"),
        ({"sort_by": "colour"}, "sort_by", "invalid"),
        ({"sort_by": "id:up"}, "sort_by", "invalid"),
        ({"sort_by": "id:"}, "sort_by", "invalid"),
        ({"sort_by": "folder"}, "sort_by", "invalid"),
        ({"pool_id": "six"}, "pool_id", "invalid"),
        ({"pool_id": ">=six"}, "pool_id", "invalid"),
        ({"pool_id": ""}, "pool_id", "invalid"),
        ({"pool_id": "><1|"}, "pool_id", "invalid"),
        ({"folder_id": "~a%"}, "folder_id", "invalid"),
        ({"id": "9" * 30}, "id", "invalid"),
        ({"tape_id": "1' OR 1=1 --"}, "tape_id", "invalid"),
        ({"pool": "6"}, "pool", "unknown_attribute"),
    ],
)
async def test_a_malformed_query_is_a_400_naming_the_parameter(
    tmp_path: Path, params: dict[str, str], attribute: str, kind: str
) -> None:
    async with api_client(tmp_path) as (client, _):
        response = await client.get(BASE, params=params)
        body = assert_error_shape(response, 400)
        assert body["details"][attribute][0]["error"] == kind
        assert body["details"][attribute][0]["value"] == params[attribute]


async def test_full_views_validate_against_the_seed_models(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, _):
        await _fill(client)
        data = await _index(client)
        for view in data["task_destinations"]:
            assert set(view) >= {"folder", "container", "tape", "pool", "state"}
