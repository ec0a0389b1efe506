"""Destination views: the seed's shape, with this library's own identity in it."""

from __future__ import annotations

from pathlib import Path

from tests.worker.harness import CATALOG
from worker.intake.destinations import DestinationEvent, RejectedInput, record_events
from worker.intake.views import destination_views, destinations_by_ids
from worker.seed.models import TaskDestinationBody
from worker.state.journal import Journal


async def test_a_tape_carries_the_library_id_its_definition_gives(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        assert await journal.tape_library_id() == 1  # nothing synced yet
        await journal.sync_catalog(CATALOG.model_copy(update={"tape_library_id": 3}), now=1.0)
        body = TaskDestinationBody.model_validate({"folder_id": 1, "tape_barcode": "NOD400L9"})
        await record_events(
            journal, [DestinationEvent("create", "7", 5, body, "test")], now=2.0, hold_seconds=60
        )
        [view] = await destination_views(journal, await journal.destinations())
        assert view["tape"]["barcode"] == "NOD400L9"
        assert view["tape"]["tape_library_id"] == 3
    finally:
        await journal.close()


async def test_without_a_number_in_the_definition_the_library_is_1(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        await journal.sync_catalog(CATALOG, now=1.0)
        assert await journal.tape_library_id() == 1
    finally:
        await journal.close()


async def test_views_from_memory_are_the_views_from_the_file(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        await journal.sync_catalog(CATALOG, now=1.0)
        bodies = [
            {"folder_id": 1, "tape_barcode": "NOD400L9"},
            {"folder_id": 2, "pool_name": "online-tapes"},
            {"folder_id": 3},
            {"folder_id": 4, "tape_barcode": "CLN001CU"},
        ]
        events: list[DestinationEvent | RejectedInput] = [
            DestinationEvent("create", "7", n, TaskDestinationBody.model_validate(b), "test")
            for n, b in enumerate(bodies, 1)
        ]
        await record_events(journal, events, now=2.0, hold_seconds=60)
        await record_events(
            journal, [DestinationEvent("destroy", "7", 3, None, "test")], now=3.0, hold_seconds=60
        )
        records = await journal.destinations_by_ids([1, 2, 3, 4])
        from_file = await destination_views(journal, records)
        await journal.load_model()
        assert journal.current_model is not None
        assert await destinations_by_ids(journal, [1, 2, 3, 4]) == records
        assert await destination_views(journal, records) == from_file
    finally:
        await journal.close()
