"""Task ids are canonical numbers; names resolve through the configured catalog: the
rule on its own, then as both intakes apply it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.worker.intake.http.api_client import api_client, assert_error_shape
from worker.intake.mqtt import parse_topic
from worker.seed.tasks import (
    MAX_ID,
    AmbiguousTaskError,
    UnknownTaskError,
    canonical_task_id,
    resolve_task,
)
from worker.settings import TaskEntry

CATALOG = [
    TaskEntry(id=7, name="nightly-backup"),
    TaskEntry(id=9, name="archive"),
    TaskEntry(id=12, name="archive"),
]

PAIRS = [(entry.id, entry.name) for entry in CATALOG]


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("7", "7"), ("07", "7"), ("0000", "0"), (str(MAX_ID), str(MAX_ID)), ("9" * 19, None)],
)
def test_a_numeric_id_has_one_canonical_form(given: str, canonical: str | None) -> None:
    assert canonical_task_id(given) == canonical


@pytest.mark.parametrize(
    "given", ["", "-7", "+7", "7.0", " 7", "7 ", "\u0667", str(MAX_ID + 1), "1" * 20]
)
def test_anything_else_is_not_a_numeric_id(given: str) -> None:
    assert canonical_task_id(given) is None


def test_a_name_resolves_through_the_catalog_and_ids_stay_ids() -> None:
    assert resolve_task("nightly-backup", PAIRS) == "7"
    assert resolve_task("007", PAIRS) == "7"
    # An id needs no catalog entry: the catalog names tasks, it does not limit them.
    assert resolve_task("42", PAIRS) == "42"


def test_without_a_catalog_a_name_is_kept_as_the_client_wrote_it() -> None:
    assert resolve_task("nightly-backup", []) == "nightly-backup"


def test_an_unknown_name_and_a_shared_name_are_refused() -> None:
    with pytest.raises(UnknownTaskError) as unknown:
        resolve_task("nobody", PAIRS)
    assert unknown.value.name == "nobody"
    with pytest.raises(AmbiguousTaskError) as shared:
        resolve_task("archive", [*PAIRS, (9, "archive")])
    assert shared.value.name == "archive"
    assert shared.value.ids == (9, 12), "each id once, in order"


def url(task: str) -> str:
    return f"/api/v2/tasks/{task}/task_destinations"


async def test_07_and_7_are_one_task(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, journal):
        created = await client.post(url("07"), json={"folder_id": 1})
        assert created.status_code == 201, created.text
        destination = created.json()["id"]
        assert (await client.get(f"{url('7')}/{destination}")).status_code == 200
        assert (await client.get(url("0007"))).json()["count"] == 1
        record = await journal.destination(destination)
        assert record is not None
        assert record.task_id == "7"


async def test_a_catalogued_name_stands_for_its_id(tmp_path: Path) -> None:
    async with api_client(tmp_path, tasks=CATALOG) as (client, _):
        created = await client.post(url("nightly-backup"), json={"folder_id": 1})
        assert created.status_code == 201, created.text
        index = (await client.get(url("7"))).json()
        assert [d["id"] for d in index["task_destinations"]] == [created.json()["id"]]


async def test_an_unknown_name_is_a_404_and_a_shared_name_lists_its_tasks(tmp_path: Path) -> None:
    async with api_client(tmp_path, tasks=CATALOG) as (client, journal):
        body = assert_error_shape(await client.get(url("nobody")), 404)
        assert body["details"] == {"task_id": [{"error": "not_found", "value": "nobody"}]}
        body = assert_error_shape(await client.post(url("archive"), json={"folder_id": 1}), 400)
        assert body["details"]["task_id"] == [{"error": "invalid", "value": "archive"}]
        assert "9, 12" in body["messages"][0]
        assert await journal.events() == [], "nothing journaled"


def test_mqtt_topics_name_the_same_canonical_task() -> None:
    assert parse_topic("tw", "tw/tasks/007/task_destinations/3/create") == ("7", 3, "create")
