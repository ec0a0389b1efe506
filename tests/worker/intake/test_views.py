"""Destination views: the seed's shape, with this library's own identity in it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.worker.harness import CATALOG
from worker.core.requests import RequestState
from worker.intake.destinations import DestinationEvent, RejectedInput, record_events
from worker.intake.views import (
    ViewFragments,
    _when,
    destination_answer,
    destination_answer_of,
    destination_json,
    destination_payload,
    destination_payloads,
    destination_views,
    destinations_by_ids,
)
from worker.seed.models import TaskDestinationBody
from worker.state.journal import Journal
from worker.state.records import (
    DestinationRecord,
    DriveRecord,
    PoolRecord,
    RequestRecord,
    TapeRecord,
    json_text,
)


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


async def journal_with_destination_5(folder: Path, *, in_memory: bool) -> Journal:
    """A journal of the test catalog with destination 5 of task 7 created on NOD400L9,
    its state in memory (`in_memory`) or read from the file."""
    journal = await Journal.open(folder / "journal.sqlite3")
    await journal.sync_catalog(CATALOG, now=1.0)
    if in_memory:
        await journal.load_model()
    body = TaskDestinationBody.model_validate({"folder_id": 1, "tape_barcode": "NOD400L9"})
    await record_events(
        journal, [DestinationEvent("create", "7", 5, body, "test")], now=2.0, hold_seconds=60
    )
    return journal


async def payloads_and_views(
    journal: Journal, fragments: ViewFragments
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state MQTT would publish for destination 5 (parsed), and its view."""
    records = await destinations_by_ids(journal, [5])
    [(destination_id, payload)] = await destination_payloads(journal, records, fragments)
    [view] = await destination_views(journal, records)
    assert destination_id == 5
    assert payload == json.dumps(view).encode(), "the very bytes of the view"
    parsed: dict[str, Any] = json.loads(payload)
    return parsed, view


async def test_a_tape_that_moves_or_changes_is_published_as_it_is_now(tmp_path: Path) -> None:
    journal = await journal_with_destination_5(tmp_path, in_memory=True)
    try:
        fragments = ViewFragments()
        before, _ = await payloads_and_views(journal, fragments)
        assert before["tape"]["location"].startswith("Slot ")
        assert (before["tape"]["mounted"], before["tape"]["mount_count"]) == (0, 0)
        # The same tape record again: its serialised form is reused, and still right.
        again, _ = await payloads_and_views(journal, fragments)
        assert again == before

        async with journal.transaction() as tx:
            await tx.move_tape("NOD400L9", slot=None, drive=0, now=3.0, mounted=True)
        moved, _ = await payloads_and_views(journal, fragments)
        assert moved["tape"]["location"] == "Drive 0"
        assert (moved["tape"]["mounted"], moved["tape"]["mount_count"]) == (1, 1)
        assert moved["tape"]["date_move"] == "1970-01-01T00:00:03.000Z"

        await journal.update_tape("NOD400L9", locked=True, full=True)
        locked, _ = await payloads_and_views(journal, fragments)
        assert locked["tape"]["write_protect"] == ["logical_locked", "full"]
        assert locked["tape"]["locked"] == 1
    finally:
        await journal.close()


#: Any JSON a body or a nested object might hold, awkward strings above all.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
bodies = st.dictionaries(
    st.sampled_from(["folder_id", "tape_id", "tape_barcode", "pool_id", "pool_name", "x"]),
    json_values,
).flatmap(
    lambda body: st.one_of(st.none(), st.text()).map(
        lambda path: body if path is None else {**body, "folder_path": path}
    )
)
nested_objects = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "folder": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
        "container": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    },
)
times = st.floats(min_value=0, max_value=4e9)
small = st.integers(min_value=0, max_value=10)
tape_records = st.builds(
    TapeRecord,
    barcode=st.sampled_from(["NOD400L9", "NOD500L8", "CLN001CU", "ODD1"]),
    tape_id=small,
    pool=st.sampled_from([None, "offline-tapes", "gone"]),
    media=st.none(),
    cleaning=st.booleans(),
    locked=st.booleans(),
    write_protected=st.booleans(),
    full=st.booleans(),
    need_to_check=st.booleans(),
    ejected=st.booleans(),
    used_bytes=st.integers(min_value=0, max_value=10**13),
    cleaning_uses_left=small,
    slot=st.none() | small,
    home_slot=st.none() | small,
    drive=st.none() | small,
    mount_count=small,
    date_in=st.none() | times,
    date_move=st.none() | times,
    known=st.booleans(),
)
request_records = st.none() | st.builds(
    RequestRecord,
    id=small,
    barcode=st.sampled_from([None, "NOD400L9", "NOD500L8"]),
    pool=st.none(),
    arrival=times,
    destination_id=small,
    state=st.sampled_from(list(RequestState)),
    drive=st.sampled_from([None, 0, 3]),
    reason=st.none() | st.text(),
    attempts=small,
    updated=times,
    lease_expires=st.none(),
)
destination_records = st.builds(
    DestinationRecord,
    id=st.integers(min_value=0, max_value=10**15),
    task_id=st.just("7"),
    body_json=bodies.map(json_text),
    barcode=st.sampled_from([None, "NOD400L9", "NOD500L8", "CLN001CU", "ODD1"]),
    pool=st.sampled_from([None, "offline-tapes", "gone"]),
    status=st.sampled_from(["pending", "applied", "not ours"]),
    reason=st.none() | st.text(),
    deleted=st.booleans(),
    created=times,
    updated=times,
    sequence=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    nested_json=nested_objects.map(lambda nested: json_text(nested) if nested else None),
)
POOLS = {
    "offline-tapes": PoolRecord("offline-tapes", 6, "tape", "Offline", 'a "quoted" one'),
}
DRIVES = {0: DriveRecord(0, 9, "/dev/nst0", None, True, 0, None, None, False)}
#: Shared by every example: fragments of earlier examples' records must never be used.
FRAGMENTS = ViewFragments()


@settings(max_examples=300, deadline=None)
@given(
    destination=destination_records,
    request=request_records,
    tapes=st.lists(tape_records, max_size=3),
    library=st.integers(min_value=1, max_value=5),
)
def test_the_published_state_is_the_very_json_of_the_view(
    destination: DestinationRecord,
    request: RequestRecord | None,
    tapes: list[TapeRecord],
    library: int,
) -> None:
    by_barcode = {tape.barcode: tape for tape in tapes}
    view = destination_json(destination, request, by_barcode, POOLS, DRIVES, library)
    for _ in range(2):  # serialised, then from the fragments kept
        payload = destination_payload(
            destination, request, by_barcode, POOLS, DRIVES, library, FRAGMENTS
        )
        assert payload == json.dumps(view).encode()


#: As `json_values`, within what orjson serialises (integers of 64 bits): the API's
#: answers are orjson's bytes.
orjson_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
pool_records = st.builds(
    PoolRecord,
    name=st.sampled_from(["offline-tapes", "gone"]),
    pool_id=small,
    content=st.sampled_from(["tape", "nas"]),
    type=st.none() | st.text(max_size=8),
    comment=st.none() | st.text(max_size=8),
    write_protect_when_full=st.booleans(),
)
drive_records = st.builds(
    DriveRecord,
    index=st.sampled_from([0, 3]),
    generation=st.integers(min_value=5, max_value=9),
    device=st.sampled_from(["/dev/nst0", "/dev/nst3"]),
    barcode=st.none() | st.sampled_from(["NOD400L9"]),
    up=st.booleans(),
    failures=small,
    reason=st.none() | st.text(max_size=8),
    idle_since=st.none() | times,
    needs_cleaning=st.booleans(),
)
#: Shared by every example, as `FRAGMENTS`.
ANSWER_FRAGMENTS = ViewFragments()


@settings(max_examples=300, deadline=None)
@given(
    destination=st.builds(
        DestinationRecord,
        id=st.integers(min_value=0, max_value=10**15),
        task_id=st.just("7"),
        body_json=st.dictionaries(
            st.sampled_from(["folder_id", "tape_id", "tape_barcode", "pool_id", "pool_name"]),
            orjson_values,
        )
        .flatmap(
            lambda body: st.one_of(st.none(), st.text()).map(
                lambda path: body if path is None else {**body, "folder_path": path}
            )
        )
        .map(json_text),
        barcode=st.sampled_from([None, "NOD400L9", "NOD500L8", "CLN001CU", "ODD1"]),
        pool=st.sampled_from([None, "offline-tapes", "gone"]),
        status=st.sampled_from(["pending", "applied", "not ours"]),
        reason=st.none() | st.text(),
        deleted=st.booleans(),
        created=times,
        updated=times,
        sequence=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
        nested_json=st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "folder": st.dictionaries(st.text(max_size=8), orjson_values, max_size=4),
                "container": st.dictionaries(st.text(max_size=8), orjson_values, max_size=4),
            },
        ).map(lambda nested: json_text(nested) if nested else None),
    ),
    request=request_records,
    tapes=st.lists(tape_records, max_size=3),
    pools=st.lists(pool_records, max_size=2),
    drives=st.lists(drive_records, max_size=2),
    library=st.integers(min_value=1, max_value=5),
)
def test_the_answer_is_the_very_bytes_of_the_view(
    destination: DestinationRecord,
    request: RequestRecord | None,
    tapes: list[TapeRecord],
    pools: list[PoolRecord],
    drives: list[DriveRecord],
    library: int,
) -> None:
    by_barcode = {tape.barcode: tape for tape in tapes}
    by_name = {pool.name: pool for pool in pools}
    by_index = {drive.index: drive for drive in drives}
    view = destination_json(destination, request, by_barcode, by_name, by_index, library)
    for _ in range(2):  # serialised, then from the fragments kept
        answer = destination_answer(
            destination, request, by_barcode, by_name, by_index, library, ANSWER_FRAGMENTS
        )
        assert answer == orjson.dumps(view)


async def answer_and_view(journal: Journal, fragments: ViewFragments) -> dict[str, Any]:
    """Destination 5 as the API answers it (parsed), checked against its view."""
    [record] = await destinations_by_ids(journal, [5])
    answer = await destination_answer_of(journal, record, fragments)
    [view] = await destination_views(journal, [record])
    assert answer == orjson.dumps(view), "the very bytes of the view"
    parsed: dict[str, Any] = orjson.loads(answer)
    return parsed


async def test_a_changed_tape_or_pool_is_answered_as_it_is_now(tmp_path: Path) -> None:
    journal = await journal_with_destination_5(tmp_path, in_memory=True)
    try:
        fragments = ViewFragments()
        before = await answer_and_view(journal, fragments)
        assert before["tape"]["location"].startswith("Slot ")
        assert before["pool"]["comment"] == ""
        assert await answer_and_view(journal, fragments) == before

        async with journal.transaction() as tx:
            await tx.move_tape("NOD400L9", slot=None, drive=0, now=3.0, mounted=True)
        moved = await answer_and_view(journal, fragments)
        assert (moved["tape"]["location"], moved["tape"]["mount_count"]) == ("Drive 0", 1)

        await journal.update_tape("NOD400L9", locked=True, full=True)
        locked = await answer_and_view(journal, fragments)
        assert locked["tape"]["write_protect"] == ["logical_locked", "full"]

        # The catalog gives the pool a comment: a new pool record, answered anew.
        definition = CATALOG.model_dump()
        definition["pools"][0]["comment"] = "vault B"
        await journal.sync_catalog(type(CATALOG).model_validate(definition), now=4.0)
        await journal.load_model()
        assert (await answer_and_view(journal, fragments))["pool"]["comment"] == "vault B"
    finally:
        await journal.close()


async def test_without_the_model_the_answer_is_the_view_read_from_the_file(
    tmp_path: Path,
) -> None:
    journal = await journal_with_destination_5(tmp_path, in_memory=False)
    try:
        assert journal.current_model is None
        answer = await answer_and_view(journal, ViewFragments())
        assert answer["tape"]["barcode"] == "NOD400L9"
    finally:
        await journal.close()


@settings(max_examples=2000, deadline=None)
@given(
    st.floats(min_value=0, max_value=2.5e11)
    | st.integers(min_value=0, max_value=4 * 10**9).flatmap(
        # Halves of a microsecond and the edge of a second: where rounding decides.
        lambda second: st.sampled_from([0.0000005, 0.0000015, 0.9999995, 0.9999999]).map(
            lambda fraction: second + fraction
        )
    )
)
def test_an_instant_is_written_as_datetime_writes_it(epoch: float) -> None:
    value = datetime.fromtimestamp(epoch, UTC)
    expected = value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    assert _when(epoch) == expected
