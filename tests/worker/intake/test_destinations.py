"""Destination events against a real SQLite journal: desired state, applied once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from tests.worker.harness import CATALOG as DEFINITION
from worker import logging as worker_logging
from worker.core.requests import ACTIVE, RequestState
from worker.errors import JournalFaultError, RejectedEventError
from worker.intake import destinations
from worker.intake.destinations import (
    DestinationEvent,
    Outcome,
    RejectedInput,
    Verb,
    message_digest,
    parse_body,
    parse_full_payload,
    parse_payload,
    record_events,
)
from worker.seed.models import TaskDestinationBody
from worker.seed.query import Filter, IndexQuery
from worker.state.journal import SCHEMA_VERSION, Journal, UnitOfWork


@pytest.fixture(params=["file", "memory"])
async def journal(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Journal]:
    """Events read what they need from the file, or from the state in memory."""
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    await journal.sync_catalog(DEFINITION, now=1000.0)
    if request.param == "memory":
        await journal.load_model()
    yield journal
    await journal.close()


def event(verb: Verb, destination_id: int | None = 1, **body: object) -> DestinationEvent:
    parsed = TaskDestinationBody.model_validate(body) if verb in ("create", "update") else None
    return DestinationEvent(verb, "7", destination_id, parsed, "test")


async def apply(
    journal: Journal, *events: DestinationEvent | RejectedInput, now: float = 2000.0
) -> list[Outcome]:
    return await record_events(journal, list(events), now=now, hold_seconds=60)


async def test_create_with_a_barcode_asks_for_that_tape(journal: Journal) -> None:
    [outcome] = await apply(journal, event("create", folder_id=1, tape_barcode="NOD400L9"))
    assert outcome.status == "applied"
    [request] = await journal.requests()
    assert (request.barcode, request.pool, request.state) == (
        "NOD400L9",
        "offline-tapes",
        RequestState.PENDING,
    )


async def test_the_same_create_twice_leaves_one_request(journal: Journal) -> None:
    create = event("create", folder_id=1, tape_barcode="NOD400L9")
    await apply(journal, create)
    await apply(journal, create, now=2001.0)
    assert len(await journal.requests()) == 1
    assert len(await journal.events()) == 2


async def test_update_to_a_pool_releases_the_old_request(journal: Journal) -> None:
    await apply(journal, event("create", tape_barcode="NOD400L9"))
    await apply(journal, event("update", pool_name="online-tapes"), now=2001.0)
    old, new = await journal.requests()
    assert old.state is RequestState.RELEASED
    assert (new.barcode, new.pool, new.state) == (None, "online-tapes", RequestState.PENDING)


async def test_update_with_the_same_tape_is_a_no_op(journal: Journal) -> None:
    await apply(journal, event("create", tape_barcode="NOD400L9"))
    await apply(journal, event("update", tape_barcode="NOD400L9", folder_id=3), now=2001.0)
    [request] = await journal.requests()
    assert request.state is RequestState.PENDING


async def test_destroy_releases_and_later_events_change_nothing(journal: Journal) -> None:
    await apply(journal, event("create", tape_barcode="NOD400L9"))
    [destroyed] = await apply(journal, event("destroy"), now=2001.0)
    assert destroyed.status == "applied"
    [late] = await apply(journal, event("update", pool_name="online-tapes"), now=2002.0)
    assert late.status == "ignored"
    [request] = await journal.requests()
    assert request.state is RequestState.RELEASED
    assert await journal.destinations() == []


async def test_unknown_barcode_fails_with_a_clear_reason(journal: Journal) -> None:
    await apply(journal, event("create", tape_barcode="XYZ999L9"))
    [request] = await journal.requests()
    assert request.state is RequestState.FAILED
    assert request.reason == "unknown barcode XYZ999L9: not in this library"


async def test_a_cleaning_cartridge_as_destination_fails_at_once(journal: Journal) -> None:
    [outcome] = await apply(journal, event("create", tape_barcode="CLN001CU"))
    assert outcome.status == "applied"
    [request] = await journal.requests()
    assert request.state is RequestState.FAILED
    assert "CLN001CU is a cleaning cartridge" in (request.reason or "")


async def test_barcode_and_pool_that_disagree_are_rejected(journal: Journal) -> None:
    [outcome] = await apply(
        journal, event("create", tape_barcode="NOD400L9", pool_name="online-tapes")
    )
    assert outcome.status == "rejected"
    assert outcome.reason == "tape NOD400L9 belongs to pool 'offline-tapes', not 'online-tapes'"
    assert await journal.requests() == []
    [stored] = await journal.events()
    assert stored.status == "rejected"


async def test_ids_resolve_through_the_catalog(journal: Journal) -> None:
    tape = await journal.tape("NOD401L9")
    assert tape is not None
    await apply(journal, event("create", tape_id=tape.tape_id, pool_id=7))
    [request] = await journal.requests()
    assert (request.barcode, request.pool) == ("NOD401L9", "online-tapes")


async def test_folder_only_and_foreign_pools_move_nothing(journal: Journal) -> None:
    await apply(journal, event("create", 1, folder_id=1, folder_path="/x"))
    await apply(journal, event("create", 2, pool_name="nas-copies"))
    assert await journal.requests() == []
    first, second = await journal.destinations()
    assert (first.status, second.status) == ("applied", "ignored")
    assert second.reason == "pool 'nas-copies' holds nas, not tape: not ours"


async def test_rejected_input_is_journaled_and_the_batch_goes_on(journal: Journal) -> None:
    outcomes = await apply(
        journal,
        RejectedInput("payload is not JSON", source="test", payload="{"),
        event("create", tape_barcode="NOD400L9"),
    )
    assert [o.status for o in outcomes] == ["rejected", "applied"]
    assert len(await journal.requests()) == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "payload is not JSON"),
        (b"[1]", "payload must be a JSON object, not list"),
        (b'{"tape_barcode": 5}', "invalid body: tape_barcode"),
        (b'{"bogus": 1}', "unknown fields: ['bogus']"),
        (b"\xff\xfe", "payload is not JSON"),
    ],
)
def test_malformed_payloads_name_the_problem(payload: bytes, reason: str) -> None:
    with pytest.raises(RejectedEventError) as caught:
        parse_body(payload)
    assert caught.value.reason.startswith(reason)


async def test_invalid_barcode_characters_are_rejected(journal: Journal) -> None:
    with pytest.raises(RejectedEventError) as caught:
        parse_body(b'{"tape_barcode": "A;rm -rf /"}')
    assert "tape_barcode" in caught.value.reason
    # A body that did not come through the model is checked again before it is applied.
    unchecked = TaskDestinationBody.model_construct(tape_barcode="A;rm -rf /")
    event = DestinationEvent("create", "7", 1, unchecked, "test")
    [outcome] = await apply(journal, event)
    assert outcome.status == "rejected"
    assert "invalid barcode" in (outcome.reason or "")


async def test_a_redelivered_event_is_not_applied_again(journal: Journal) -> None:
    first = DestinationEvent(
        "create", "7", 1, TaskDestinationBody(tape_barcode="NOD400L9"), "mqtt", dedup_key="mqtt:a"
    )
    second = DestinationEvent(
        "update", "7", 1, TaskDestinationBody(pool_name="online-tapes"), "mqtt", dedup_key="mqtt:b"
    )
    await apply(journal, first, second)
    # A crash before the acks: the broker sends both again.
    outcomes = await apply(journal, first, second, now=2001.0)
    assert [o.status for o in outcomes] == ["duplicate", "duplicate"]
    requests = await journal.requests()
    assert [(r.barcode, r.pool, r.state) for r in requests] == [
        ("NOD400L9", "offline-tapes", RequestState.RELEASED),
        (None, "online-tapes", RequestState.PENDING),
    ]
    assert len(await journal.events()) == 2


# -- declared sizes ------------------------------------------------------------------


def _full_destination(size: object) -> bytes:
    """A whole TaskDestination as the archive manager's responses show it."""
    return json.dumps(
        {
            "id": 3,
            "folder_id": 1,
            "tape_barcode": "NOD400L9",
            "folder": {"id": 1, "name": "projects", "type": "folder", "size": size},
        }
    ).encode()


async def test_a_full_destination_tells_the_size_the_task_will_write(journal: Journal) -> None:
    parsed = parse_payload(_full_destination(1063457))
    assert parsed.size_bytes == 1063457
    assert parse_payload(b'{"tape_barcode": "NOD400L9"}').size_bytes is None
    create = DestinationEvent("create", "7", 1, parsed.body, "test", size_bytes=parsed.size_bytes)
    await apply(journal, create)
    [request] = await journal.requests()
    assert request.size_bytes == 1063457


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["NOD400L9", "7", " 7", "1_000", "-0", "/a/b", "CLN001CU", "\x00"])
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=4,
)
_payloads = st.dictionaries(
    st.sampled_from([*TaskDestinationBody.model_fields, "id", "folder", "state", "other"]),
    _json_values,
    max_size=7,
).map(json.dumps).map(str.encode) | st.binary(max_size=40)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_payloads)
def test_the_one_pass_parse_of_a_body_agrees_with_the_full_one(payload: bytes) -> None:
    def parsed(parse: Any) -> Any:
        try:
            return parse(payload)
        except RejectedEventError as exc:
            return (exc.reason, exc.details)

    assert parsed(parse_payload) == parsed(parse_full_payload)


@pytest.mark.parametrize("size", [-1, "big", True, 2**64, 1.5])
def test_a_folder_size_that_is_not_a_byte_count_is_rejected(size: object) -> None:
    with pytest.raises(RejectedEventError, match=r"folder\.size"):
        parse_payload(_full_destination(size))


async def test_a_released_write_counts_its_size_onto_its_tape(journal: Journal) -> None:
    before = {t.barcode: t.used_bytes for t in await journal.tapes()}
    for destination_id in (1, 2):
        parsed = parse_payload(_full_destination(10**9))
        await apply(
            journal,
            DestinationEvent("create", "7", destination_id, parsed.body, "test", size_bytes=10**9),
        )
    first, _ = await journal.requests()
    async with journal.transaction() as tx:
        await tx.set_request_state(first.id, RequestState.MOUNTING, 2001.0, drive=0)
        await tx.set_request_state(first.id, RequestState.READY, 2002.0)
    # The first was written (ready, then released); the second never reached the tape.
    await apply(journal, event("destroy", 1), event("destroy", 2), now=2003.0)
    after = {t.barcode: t.used_bytes for t in await journal.tapes()}
    assert after["NOD400L9"] == before["NOD400L9"] + 10**9
    assert {b: u for b, u in after.items() if b != "NOD400L9"} == {
        b: u for b, u in before.items() if b != "NOD400L9"
    }


async def test_a_journal_of_schema_1_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    journal = await Journal.open(path)
    await journal.sync_catalog(DEFINITION, now=1000.0)
    await apply(journal, event("create", tape_barcode="NOD400L9"))
    await journal.close()
    with sqlite3.connect(path) as old:  # what a journal written before sizes looked like
        _drop_flat_columns(old)
        old.execute("ALTER TABLE requests DROP COLUMN size_bytes")
        old.execute("DROP TABLE idempotency_keys")  # schema 3
        # schema 4
        old.execute("ALTER TABLE events DROP COLUMN digest")
        old.execute("ALTER TABLE destinations DROP COLUMN sequence")
        old.execute("UPDATE meta SET value='1' WHERE key='schema'")
    journal = await Journal.open(path)
    try:
        [request] = await journal.requests()
        assert (request.barcode, request.size_bytes) == ("NOD400L9", None)
        await apply(journal, event("create", 2, tape_barcode="NOD400L9"), now=2001.0)
        assert len(await journal.requests()) == 2
    finally:
        await journal.close()
    with sqlite3.connect(path) as reopened:
        version = reopened.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        assert version == (str(SCHEMA_VERSION),)
        assert reopened.execute("SELECT COUNT(*) FROM idempotency_keys").fetchone() == (0,)


async def test_a_journal_of_schema_3_keeps_its_destinations_and_learns_their_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    journal = await Journal.open(path)
    await journal.sync_catalog(DEFINITION, now=1000.0)
    await apply(journal, event("create", tape_barcode="NOD400L9"))
    await journal.close()
    with sqlite3.connect(path) as old:  # what a journal written before event order looked like
        _drop_flat_columns(old)
        old.execute("ALTER TABLE events DROP COLUMN digest")
        old.execute("ALTER TABLE destinations DROP COLUMN sequence")
        old.execute("UPDATE meta SET value='3' WHERE key='schema'")
    journal = await Journal.open(path)
    try:
        destination = await journal.destination(1)
        assert destination is not None
        assert (destination.barcode, destination.sequence) == ("NOD400L9", None)
        await apply(journal, ordered("update", 5, pool_name="online-tapes"), now=2001.0)
        await apply(journal, ordered("update", 4, tape_barcode="NOD400L9"), now=2002.0)
        destination = await journal.destination(1)
        assert destination is not None
        assert (destination.pool, destination.sequence) == ("online-tapes", 5)
    finally:
        await journal.close()


# -- order and event-ids ---------------------------------------------------------------


def ordered(
    verb: Verb, sequence: int, destination_id: int = 1, event_id: str | None = None, **body: object
) -> DestinationEvent:
    """An MQTT event that carries the publisher's order (and, if given, an event-id)."""
    parsed = TaskDestinationBody.model_validate(body) if verb in ("create", "update") else None
    topic = f"tw/tasks/7/task_destinations/{destination_id}/{verb}"
    payload = json.dumps(body) if parsed else ""
    return DestinationEvent(
        verb,
        "7",
        destination_id,
        parsed,
        "mqtt",
        topic=topic,
        payload=payload,
        dedup_key=f"mqtt:{event_id}" if event_id else None,
        sequence=sequence,
        digest=message_digest(topic, payload.encode()),
    )


async def test_a_stale_update_is_not_applied_after_a_newer_one(journal: Journal) -> None:
    await apply(journal, ordered("create", 1, tape_barcode="NOD400L9"))
    await apply(journal, ordered("update", 3, pool_name="online-tapes"), now=2001.0)
    # The update of sequence 2 was delayed (a redelivery) behind the one of sequence 3.
    [outcome] = await apply(journal, ordered("update", 2, tape_barcode="NOD401L9"), now=2002.0)
    assert outcome.status == "rejected"
    assert outcome.reason == (
        "stale update: sequence 2 is older than sequence 3 already applied to destination 1"
    )
    destination = await journal.destination(1)
    assert destination is not None
    assert (destination.barcode, destination.pool, destination.sequence) == (
        None,
        "online-tapes",
        3,
    )
    assert [(r.barcode, r.pool, r.state) for r in await journal.requests()] == [
        ("NOD400L9", "offline-tapes", RequestState.RELEASED),
        (None, "online-tapes", RequestState.PENDING),
    ]
    [stale] = await journal.events("rejected")
    assert (stale.verb, stale.destination_id, stale.reason) == ("update", 1, outcome.reason)


async def test_a_stale_create_does_not_go_back_over_an_update(journal: Journal) -> None:
    await apply(journal, ordered("create", 1, tape_barcode="NOD400L9"))
    await apply(journal, ordered("update", 2, pool_name="online-tapes"), now=2001.0)
    [outcome] = await apply(journal, ordered("update", 2, pool_name="online-tapes"), now=2002.0)
    assert outcome.status == "applied", "the same change again renews the lease"
    [outcome] = await apply(journal, ordered("create", 0, tape_barcode="NOD400L9"), now=2003.0)
    assert (outcome.status, outcome.reason) == (
        "rejected",
        "stale create: sequence 0 is older than sequence 2 already applied to destination 1",
    )
    [request] = [r for r in await journal.requests() if r.state is RequestState.PENDING]
    assert request.pool == "online-tapes"


async def test_the_same_sequence_repeats_a_change_or_contradicts_it(journal: Journal) -> None:
    await apply(journal, ordered("create", 4, tape_barcode="NOD400L9"))
    [repeat] = await apply(journal, ordered("update", 4, tape_barcode="NOD400L9"), now=2001.0)
    assert repeat.status == "applied"
    [other] = await apply(journal, ordered("update", 4, pool_name="online-tapes"), now=2002.0)
    assert other.status == "rejected"
    assert "differs from the change of the same sequence" in (other.reason or "")
    [request] = await journal.requests()
    assert (request.barcode, request.state) == ("NOD400L9", RequestState.PENDING)


async def test_events_without_an_order_apply_in_arrival_order(journal: Journal) -> None:
    await apply(journal, ordered("create", 7, tape_barcode="NOD400L9"))
    await apply(journal, event("update", pool_name="online-tapes"), now=2001.0)
    destination = await journal.destination(1)
    assert destination is not None
    assert (destination.pool, destination.sequence) == ("online-tapes", 7)
    [outcome] = await apply(journal, ordered("update", 6, tape_barcode="NOD400L9"), now=2002.0)
    assert outcome.status == "rejected", "the order seen last still holds"


async def test_a_destroy_that_overtakes_its_create_stays_final(journal: Journal) -> None:
    [destroyed] = await apply(journal, ordered("destroy", 2))
    assert destroyed.status == "applied"
    assert "destroyed before it was created" in (destroyed.reason or "")
    [late] = await apply(journal, ordered("create", 1, tape_barcode="NOD400L9"), now=2001.0)
    assert (late.status, late.reason) == ("ignored", "destination 1 was destroyed")
    assert await journal.requests() == []
    assert await journal.destinations() == []


async def test_an_ordered_update_that_overtakes_its_create_applies(journal: Journal) -> None:
    [update] = await apply(journal, ordered("update", 2, pool_name="online-tapes"))
    assert update.status == "applied"
    [create] = await apply(journal, ordered("create", 1, tape_barcode="NOD400L9"), now=2001.0)
    assert create.status == "rejected"
    [request] = await journal.requests()
    assert (request.pool, request.state) == ("online-tapes", RequestState.PENDING)
    # Without an order, an update of a destination nobody created is still an error.
    [unordered] = await apply(journal, event("update", 3, pool_name="online-tapes"))
    assert (unordered.status, unordered.reason) == (
        "rejected",
        "update of unknown destination 3",
    )


async def test_a_reused_event_id_with_another_payload_is_rejected_and_journaled(
    journal: Journal,
) -> None:
    first = ordered("create", 1, event_id="e-1", tape_barcode="NOD400L9")
    await apply(journal, first)
    # The same event-id again, for another change: not the broker's redelivery.
    reused = ordered("update", 2, event_id="e-1", pool_name="online-tapes")
    [outcome] = await apply(journal, reused, now=2001.0)
    assert outcome.status == "rejected"
    assert outcome.reason is not None
    assert outcome.reason.startswith("event-id 'e-1' was already used by journal event 1")
    [rejected] = await journal.events("rejected")
    assert (rejected.topic, rejected.payload, rejected.reason) == (
        reused.topic,
        reused.payload,
        outcome.reason,
    )
    [request] = await journal.requests()
    assert (request.barcode, request.state) == ("NOD400L9", RequestState.PENDING)
    # The broker's redelivery of the first message stays a harmless duplicate.
    [again] = await apply(journal, first, now=2002.0)
    assert again.status == "duplicate"
    assert len(await journal.events()) == 2


async def test_a_reused_event_id_is_told_apart_in_a_journal_without_digests(
    journal: Journal,
) -> None:
    first = ordered("create", 1, event_id="e-1", tape_barcode="NOD400L9")
    await apply(journal, first)
    # As a journal written before digests, by a connection of its own.
    with contextlib.closing(sqlite3.connect(journal.path)) as db, db:
        db.execute("UPDATE events SET digest=NULL")
    [again] = await apply(journal, first, now=2001.0)
    assert again.status == "duplicate"
    other = ordered("create", 1, event_id="e-1", tape_barcode="NOD401L9")
    [outcome] = await apply(journal, other, now=2002.0)
    assert outcome.status == "rejected"


def _drop_flat_columns(db: sqlite3.Connection) -> None:
    """Undo schema 5: no flat destination columns, no pool setting."""
    for index in ("destinations_task_folder", "destinations_task_tape", "destinations_task_pool"):
        db.execute(f"DROP INDEX {index}")
    for column in (
        "folder_id",
        "folder_path",
        "tape_id",
        "tape_barcode",
        "pool_id",
        "pool_name",
        "nested",
    ):
        db.execute(f"ALTER TABLE destinations DROP COLUMN {column}")
    db.execute("ALTER TABLE pools DROP COLUMN write_protect_when_full")


async def test_a_journal_of_schema_4_gets_its_flat_columns_filled(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    journal = await Journal.open(path)
    await journal.sync_catalog(DEFINITION, now=1000.0)
    await apply(journal, event("create", 4, folder_id=9, pool_id=6))
    await journal.close()
    with sqlite3.connect(path) as old:
        _drop_flat_columns(old)
        old.execute("UPDATE meta SET value='4' WHERE key='schema'")
    journal = await Journal.open(path)
    try:
        count, ids = await journal.destination_page(
            "7", IndexQuery(filters=(Filter("pool_id", "=", (6,)), Filter("folder_id", "=", (9,))))
        )
        assert (count, ids) == (1, [4])
        [pool] = [p for p in await journal.pools() if p.pool_id == 6]
        assert pool.write_protect_when_full
    finally:
        await journal.close()


async def test_a_batch_sees_its_own_changes_of_a_destination(journal: Journal) -> None:
    """What a batch reads up front serves each destination's first event only."""
    outcomes = await apply(
        journal,
        event("create", folder_id=1, tape_barcode="NOD400L9"),
        event("update", folder_id=1, tape_barcode="NOD401L9"),
        event("create", 2, folder_id=2, tape_barcode="NOD401L9"),
        event("destroy", 2),
        event("update", 2, folder_id=2, tape_barcode="NOD400L9"),
    )
    assert [o.status for o in outcomes] == ["applied"] * 4 + ["ignored"]
    [active] = await journal.requests(ACTIVE)
    assert (active.destination_id, active.barcode) == (1, "NOD401L9")
    destination = await journal.destination(1)
    assert destination is not None
    assert destination.barcode == "NOD401L9"


def creates(first: int, count: int) -> list[DestinationEvent | RejectedInput]:
    barcodes = ("NOD400L9", "NOD401L9")
    return [
        event("create", first + n, folder_id=n, tape_barcode=barcodes[n % 2]) for n in range(count)
    ]


async def test_a_batch_is_one_trip_to_the_database_whatever_its_size(journal: Journal) -> None:
    """BEGIN, every event with its savepoint, and COMMIT: one trip for the batch."""
    trips = []
    for first, count in ((1, 1), (10, 200)):
        before = journal.round_trips
        outcomes = await record_events(journal, creates(first, count), now=2000.0, hold_seconds=60)
        trips.append(journal.round_trips - before)
        assert [o.status for o in outcomes] == ["applied"] * count
    assert trips == [1, 1]
    assert len(await journal.requests(ACTIVE)) == 201


def handling_raises_for_folder(monkeypatch: pytest.MonkeyPatch, folder_id: int) -> None:
    """A bug in the handling of the events whose body names `folder_id`: it raises."""
    real = destinations.resolve_target

    def buggy(unit: UnitOfWork, body: TaskDestinationBody) -> destinations.Target:
        if body.folder_id == folder_id:
            raise ZeroDivisionError("a bug in the handling of this event")
        return real(unit, body)

    monkeypatch.setattr(destinations, "resolve_target", buggy)


async def test_a_poison_event_is_undone_alone_and_the_model_follows_the_file(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    handling_raises_for_folder(monkeypatch, 2)
    outcomes = await apply(journal, *creates(1, 4))
    assert [o.status for o in outcomes] == ["applied", "applied", "rejected", "applied"]
    assert outcomes[2].poison
    assert [d.id for d in await journal.destinations()] == [1, 2, 4]
    [rejected] = await journal.events("rejected")
    assert (rejected.destination_id, rejected.reason) == (3, outcomes[2].reason)
    if journal.model is not None:
        assert [d.id for d in journal.model.destinations()] == [1, 2, 4]
        assert sorted(r.destination_id for r in journal.model.requests()) == [1, 2, 4]


def _mixed_batch(poison: bool) -> list[DestinationEvent | RejectedInput]:
    """Every kind of event, runs of plain creates between them; with `poison`, two
    events whose folder_id the buggy handling trips on."""
    with_id = DestinationEvent(
        "create",
        "7",
        20,
        TaskDestinationBody(folder_id=5, tape_barcode="NOD401L9"),
        "mqtt",
        topic="t/20",
        payload="{}",
        dedup_key="mqtt:e-20",
        digest="d-20",
    )
    trip = 666 if poison else 1
    return [
        *creates(1, 3),
        event("update", 1, pool_name="online-tapes"),
        event("create", 10, folder_id=trip, tape_barcode="NOD400L9"),
        event("destroy", 2),
        event("release", 3),
        with_id,
        dataclasses.replace(with_id, digest="another message"),  # a reused event-id
        with_id,  # a redelivery
        RejectedInput("payload is not JSON", "mqtt", topic="t/x", payload="{"),
        event("create", 11, folder_id=trip, pool_name="online-tapes"),
        event("update", 12, tape_barcode="NOD400L9"),  # unknown: rejected
        *creates(30, 3),
        event("create", 30, folder_id=1, tape_barcode="NOD401L9"),  # the same again
        event("create", 40, tape_barcode="XYZ999L9"),  # unknown barcode: failed
        event("create", 41, tape_barcode="NOD400L9", pool_name="online-tapes"),  # conflict
        event("create", 42, pool_name="nas-copies"),  # not ours
        event("create", 43, folder_id=2),  # no tape asked for
        *creates(50, 2),
        # HTTP creates: the next ids, after and between those of MQTT creates.
        event("create", None, folder_id=1, tape_barcode="NOD400L9"),
        event("create", None, folder_id=2, pool_name="online-tapes"),
        event("create", 60, folder_id=3, tape_barcode="NOD401L9"),
        event("create", None, folder_id=4, tape_barcode="NOD401L9"),
        event("create", None, folder_id=5, tape_barcode="XYZ999L9"),
        event("create", None, folder_id=6, tape_barcode="NOD401L9"),
    ]


async def _file_rows(journal: Journal) -> dict[str, list[tuple[Any, ...]]]:
    tables = ("events", "destinations", "requests", "task_counts", "sqlite_sequence")
    return {
        table: [tuple(row) for row in await journal._db.execute_fetchall(f"SELECT * FROM {table}")]
        for table in tables
    }


def _apply_each_event(
    batch: list[DestinationEvent | RejectedInput], unit: UnitOfWork, *, now: float
) -> list[Outcome]:
    return destinations._apply_each(batch, unit, now, 60)


async def _batch_and_each(
    folder: Path, batch: list[DestinationEvent | RejectedInput], *, redone: bool = False
) -> list[tuple[list[Outcome], dict[str, list[tuple[Any, ...]]], dict[str, Any]]]:
    """The batch applied as a batch, and event by event, each on a journal of its own
    holding the same earlier destination: outcomes, rows and model of each. `redone`
    says whether the batch is to be done again event by event (a poison in it)."""
    results = []
    for name in ("batch", "each"):
        journal = await Journal.open(folder / f"{name}.sqlite3")
        try:
            await journal.sync_catalog(DEFINITION, now=1000.0)
            await journal.load_model()
            await apply(journal, event("create", 3, tape_barcode="NOD400L9"), now=1500.0)
            if name == "batch":
                again: list[int] = []
                real_each = destinations._apply_each

                def each(
                    *args: Any, _again: list[int] = again, _real: Any = real_each
                ) -> list[Outcome]:
                    _again.append(1)
                    result: list[Outcome] = _real(*args)
                    return result

                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(destinations, "_apply_each", each)
                    outcomes = await apply(journal, *batch)
                assert bool(again) is redone
            else:
                outcomes = await journal.apply(
                    functools.partial(_apply_each_event, batch, now=2000.0)
                )
            assert journal.model is not None
            model = journal.model.export()
            assert model == (await journal.read_model()).export()
            results.append((outcomes, await _file_rows(journal), model))
        finally:
            await journal.close()
    return results


@pytest.mark.parametrize("poison", [True, False], ids=["poison", "no-poison"])
async def test_a_batch_leaves_what_applying_each_event_alone_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, poison: bool
) -> None:
    """The batch runs in one savepoint, its plain creates a run at a time; a poison
    event undoes it and it is done again event by event. Either way the outcomes, the
    file and the model are those of the event-by-event path."""
    handling_raises_for_folder(monkeypatch, 666)
    batch = _mixed_batch(poison)
    (outcomes, rows, model), each = await _batch_and_each(tmp_path, batch, redone=poison)
    assert (outcomes, rows, model) == each
    statuses = [o.status for o in outcomes]
    assert statuses[8:10] == ["rejected", "duplicate"]
    # Only the create whose barcode and pool disagree is rejected among the last ones.
    assert statuses[-16:] == ["applied"] * 5 + ["rejected"] + ["applied"] * 10
    assert [o.destination_id for o in outcomes[-6:]] == [52, 53, 60, 61, 62, 63]
    ids = [row[0] for row in rows["destinations"]]
    if poison:
        assert statuses[4] == statuses[11] == "rejected"
        assert outcomes[4].poison
        assert outcomes[11].poison
        # The poison events left nothing of their own but their rejection.
        assert 10 not in ids
        assert 11 not in ids
    else:
        assert statuses[4] == statuses[11] == "applied"
        assert {10, 11} <= set(ids)


_batch_events = st.lists(
    st.tuples(
        st.sampled_from(["create", "create", "create", "update", "destroy", "release"]),
        st.sampled_from([1, 2, 3, 4, 5, 6, 9, None]),
        st.sampled_from(["NOD400L9", "NOD401L9", "CLN001CU", "XYZ999L9", None]),
        st.sampled_from([None, None, "online-tapes", "nas-copies"]),
        st.sampled_from([None, None, None, "e-1", "e-2"]),
        st.sampled_from([None, None, 1, 2, 3]),
    ),
    min_size=2,
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_batch_events)
def test_any_batch_leaves_what_applying_each_event_alone_leaves(
    spec: list[tuple[str, int | None, str | None, str | None, str | None, int | None]],
) -> None:
    batch: list[DestinationEvent | RejectedInput] = []
    for verb, destination_id, barcode, pool, event_id, sequence in spec:
        body = {"folder_id": destination_id, "tape_barcode": barcode, "pool_name": pool}
        if destination_id is None:
            # An HTTP create: the journal gives the id.
            batch.append(event("create", None, **body))
        elif verb in ("create", "update"):
            batch.append(
                ordered(verb, sequence, destination_id, event_id, **body)  # type: ignore[arg-type]
                if sequence is not None or event_id is not None
                else event(verb, destination_id, **body)  # type: ignore[arg-type]
            )
        else:
            batch.append(event(verb, destination_id))  # type: ignore[arg-type]

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            batched, each = await _batch_and_each(Path(tmp), batch)
            assert batched == each

    asyncio.run(run())


async def test_a_run_of_plain_creates_is_one_statement_a_table(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creates of new destinations with nothing else to check are written together:
    the destinations, their requests and their events, one statement each."""
    calls: list[str] = []
    for name in (
        "insert_destination",
        "add_request",
        "insert_event",
        "insert_destinations",
        "add_requests",
        "insert_events",
    ):
        real = getattr(UnitOfWork, name)

        def counted(
            self: UnitOfWork, *args: Any, _real: Any = real, _name: str = name, **kwargs: Any
        ) -> Any:
            calls.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(UnitOfWork, name, counted)
    batch = [*creates(1, 40), event("destroy", 5), *creates(100, 10)]
    outcomes = await apply(journal, *batch)
    assert [o.status for o in outcomes] == ["applied"] * 51
    run = ["insert_destinations", "add_requests", "insert_events"]
    assert calls == [*run, "insert_event", *run]
    assert len(await journal.requests(ACTIVE)) == 49
    if journal.model is not None:
        assert journal.model.export() == (await journal.read_model()).export()


async def test_a_batch_without_poison_takes_one_savepoint(journal: Journal) -> None:
    """Not one savepoint an event: the statements of a batch of creates are its rows."""
    statements: list[str] = []
    journal._db.connection.set_trace_callback(statements.append)
    try:
        outcomes = await apply(journal, *creates(1, 50))
    finally:
        journal._db.connection.set_trace_callback(None)
    assert [o.status for o in outcomes] == ["applied"] * 50
    assert sum(s.startswith("SAVEPOINT") for s in statements) == 1
    assert sum(s.startswith("RELEASE") for s in statements) == 1
    assert len(await journal.requests(ACTIVE)) == 50


async def test_a_journal_fault_mid_batch_commits_nothing_and_leaves_the_model(
    journal: Journal,
) -> None:
    await apply(journal, *creates(1, 2))
    before = journal.model.export() if journal.model is not None else None
    [[pages]] = await journal._db.execute_fetchall("PRAGMA page_count")
    # A disk that is full for this journal: no page beyond those it has.
    await journal._db.execute(f"PRAGMA max_page_count={pages}")
    big = [
        DestinationEvent(
            "create",
            "7",
            100 + n,
            TaskDestinationBody(folder_id=n, folder_path="/f" * 2000, tape_barcode="NOD400L9"),
            "test",
            payload="x" * 60_000,
        )
        for n in range(20)
    ]
    with pytest.raises(JournalFaultError):
        await record_events(journal, list(big), now=2001.0, hold_seconds=60)
    assert journal.fault is not None
    if journal.model is not None:
        assert journal.model.export() == before
    await journal._db.execute("PRAGMA max_page_count=1073741823")
    assert [d.id for d in await journal.destinations()] == [1, 2]
    assert len(await journal.events()) == 2


async def test_what_commits_with_the_batch_goes_with_it_when_it_fails(journal: Journal) -> None:
    """`within` writes in the batch's transaction: an error there undoes the events too,
    and the model takes none of them."""
    before = journal.model.export() if journal.model is not None else None

    def remember(unit: UnitOfWork, outcomes: list[Outcome]) -> None:
        unit.remember_idempotent_result(
            scope="s",
            key="k",
            fingerprint="f",
            status=201,
            destination_id=outcomes[0].destination_id,
            reason=None,
            now=2000.0,
            keep_s=60,
        )

    def remember_then_fail(unit: UnitOfWork, outcomes: list[Outcome]) -> None:
        remember(unit, outcomes)
        raise RuntimeError("after the writes")

    with pytest.raises(RuntimeError):
        await record_events(
            journal, creates(1, 3), now=2000.0, hold_seconds=60, within=remember_then_fail
        )
    assert await journal.destinations() == []
    assert await journal.events() == []
    assert await journal.idempotent_result("s", "k", 2000.0) is None
    if journal.model is not None:
        assert journal.model.export() == before

    await record_events(journal, creates(1, 1), now=2000.0, hold_seconds=60, within=remember)
    kept = await journal.idempotent_result("s", "k", 2000.0)
    assert kept is not None
    assert kept.destination_id == 1


# -- What a commit logs ---------------------------------------------------------------


def mixed_batch() -> list[DestinationEvent | RejectedInput]:
    bad = RejectedInput("payload is not JSON", source="test", topic="t/x", payload="{")
    return [*creates(1, 2), bad, event("destroy", 2)]


def events_counted(status: str) -> float:
    labels = {"intake": "test", "outcome": status}
    return REGISTRY.get_sample_value("tapeworker_events_total", labels) or 0.0


async def test_a_batch_logs_one_line_at_info_and_each_rejected_event_its_own(
    journal: Journal, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    assert json_lines() == []
    applied_before = events_counted("applied")
    await record_events(journal, mixed_batch(), now=2000.0, hold_seconds=60, lines="batch")
    lines = json_lines()
    assert [line["event"] for line in lines] == ["event rejected", "events committed"]
    rejected, committed = lines
    assert (rejected["level"], rejected["reason"]) == ("warning", "payload is not JSON")
    assert {k: committed[k] for k in committed if k not in ("timestamp", "logger")} == {
        "event": "events committed",
        "level": "info",
        "intake": "test",
        "events": 4,
        "applied": 3,
        "rejected": 1,
        "create": 2,
        "destroy": 1,
        "first_destination": 1,
        "last_destination": 2,
    }
    # Counted once a batch, by outcome.
    assert events_counted("applied") == applied_before + 3

    worker_logging.set_level("debug")
    await record_events(journal, creates(3, 2), now=2000.0, hold_seconds=60, lines="batch")
    lines = json_lines()
    assert [(line["event"], line["level"]) for line in lines] == [
        ("event received", "debug"),
        ("event received", "debug"),
        ("events committed", "info"),
    ]
    assert [line["destination"] for line in lines[:2]] == [3, 4]


async def test_by_default_each_event_has_its_line_at_info(
    journal: Journal, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    assert json_lines() == []
    await record_events(journal, mixed_batch(), now=2000.0, hold_seconds=60)
    lines = json_lines()
    assert [(line["event"], line["level"]) for line in lines] == [
        ("event received", "info"),
        ("event received", "info"),
        ("event rejected", "warning"),
        ("event received", "info"),
    ]
    assert [line.get("destination") for line in lines] == [1, 2, None, 2]
