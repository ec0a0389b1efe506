"""The index's rows, built by SQLite, are the views of single destinations, field for
field: flat and full events, tapes in slots and in drives, pools, requests in every
state the worker reached, names and reasons that need escaping."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.worker.harness import definition, running_worker
from worker.intake.destinations import DestinationEvent, parse_payload, record_events
from worker.intake.http.listing import CHUNK, index_listing
from worker.intake.views import destination_views
from worker.seed.models import TaskDestination
from worker.seed.query import IndexQuery, SortKey
from worker.state.journal import Journal

FOLDER = {
    "id": 41,
    "name": 'Übersicht "2024"',
    "parent": 3,
    "type": "folder",
    "size": 2048,
    "change_date": "2024-03-01T10:00:00.123Z",
    "checksums": ["md5"],
    "file_path": '/data/Übersicht "2024"',
}
CONTAINER = {"id": 5, "name": "archive", "comment": "nightly\nrun", "quota_total_size": 10**12}

#: Flat bodies: paths with and without a last element, odd characters, no folder at all.
FLAT: list[dict[str, Any]] = [
    {"folder_id": 1, "folder_path": "/container/folder-1"},
    {"folder_id": 2, "folder_path": "/container/trailing/"},
    {"folder_id": 3, "folder_path": "/"},
    {"folder_id": 4, "folder_path": "no-slash"},
    {"folder_id": 5, "folder_path": '/odd/ünï \u2018quoted\u2019 \\ back "x"'},
    {"folder_id": 6, "folder_path": None},
    {"folder_id": 7, "folder_path": ""},
    {"pool_id": 6},
    {"pool_name": "offline-tapes", "folder_id": 8, "folder_path": "/p"},
    {"tape_barcode": "AAA002L9", "folder_id": 9, "folder_path": "/t"},
    {"tape_barcode": "ZZZ999L9"},
    {"tape_barcode": "CLN001CU"},
    {"tape_id": 424242},
    {"pool_id": 999},
    {},
]


async def _events(journal: Journal) -> None:
    now = time.time()
    events = [
        DestinationEvent("create", "7", 100 + n, parse_payload(json.dumps(body)).body, "test")
        for n, body in enumerate(FLAT)
    ]
    full = parse_payload(
        json.dumps(
            {
                "folder_id": 41,
                "folder_path": FOLDER["file_path"],
                "id": 200,
                "folder": FOLDER,
                "container": CONTAINER,
                "pool_id": 6,
            }
        )
    )
    events.append(
        DestinationEvent("create", "7", 200, full.body, "test", nested=full.nested, sequence=9)
    )
    await record_events(journal, list(events), now=now + 0.0004567, hold_seconds=3600)


async def _listed(journal: Journal, query: IndexQuery) -> list[dict[str, Any]]:
    _count, chunks = await index_listing(journal, "7", query)
    body = b"".join([chunk async for chunk in chunks])
    data = json.loads(body)
    assert data["count"] == len(data["task_destinations"])
    rows: list[dict[str, Any]] = data["task_destinations"]
    return rows


async def test_listing_rows_are_the_views_of_single_destinations(tmp_path: Path) -> None:
    async with running_worker(tmp_path, definition(drives=1)) as harness:
        journal = harness.journal
        await harness.submit("create", 1, tape_barcode="AAA001L9", folder_id=1)
        await harness.wait_for(1, "ready")
        await _events(journal)
        # The pool destinations wait for the one drive, which destination 1 holds.
        await harness.wait_until("a request for 108", lambda: journal.latest_request_for(108))
        await harness.submit("destroy", 114)
    # Compared on the journal at rest: the worker moves nothing any more.
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        records = await journal.destinations("7")
        assert 114 not in [record.id for record in records]
        expected = await destination_views(journal, records)
        listed = await _listed(journal, IndexQuery())
    finally:
        await journal.close()
    assert [row["id"] for row in listed] == [record.id for record in records]
    for got, want in zip(listed, expected, strict=True):
        assert got == want, got["id"]
        TaskDestination.model_validate(got)
    # The rows cover the cases: a tape in a drive with its device, a tape in a slot, a
    # nested folder and container, a reason.
    assert {r["tape"]["location"] for r in listed if r["tape"]} >= {"Drive 0", "Slot 2"}
    assert any(r["state"]["device"] == "/dev/nst0" for r in listed)
    assert any(r["container"] for r in listed)
    assert any(r["state"]["reason"] for r in listed)
    # Null only where the README says tapeworker cannot know (a flat create with a path,
    # a tape that has moved, a pool of the definition).
    [flat] = [r for r in listed if r["id"] == 109]
    assert _null(flat["folder"]) == NULL_FOLDER
    assert flat["container"] is None
    assert _null(flat["pool"]) == NULL_POOL
    [mounted] = [r for r in listed if r["id"] == 1]
    assert _null(mounted["tape"]) == NULL_TAPE
    # A tape not moved since tapeworker knows it has no date_move yet.
    assert _null(flat["tape"]) == NULL_TAPE | {"date_move"}


NULL_FOLDER = {
    "parent", "primary_id", "type", "permission", "size", "change_date",
    "modification_date", "access_date", "uid", "gid", "in_cache", "offline", "extern",
}  # fmt: skip
NULL_TAPE = {
    "last_size_update", "last_maintenance", "last_repack", "repack_status",
    "force_import_type",
}  # fmt: skip
NULL_POOL = {"primary_id", "storage_id", "storage_extra_data"}


def _null(view: dict[str, Any]) -> set[str]:
    return {name for name, value in view.items() if value is None}


async def test_a_listing_longer_than_a_chunk_keeps_the_order_asked(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        total = CHUNK + 7
        events = [
            DestinationEvent(
                "create", "7", n, parse_payload(json.dumps({"folder_id": n % 13})).body, "t"
            )
            for n in range(1, total + 1)
        ]
        await record_events(journal, list(events), now=1000.0, hold_seconds=3600)
        query = IndexQuery(sort=(SortKey("folder_id", descending=True), SortKey("id")))
        listed = await _listed(journal, query)
        order = sorted(range(1, total + 1), key=lambda n: (-(n % 13), n))
        assert [row["id"] for row in listed] == order
    finally:
        await journal.close()
