"""The state model against the journal file it mirrors: what a commit changes shows
in memory, what a rollback undoes never does, and any run of transactions leaves a
model equal to one read anew from the file."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.worker.harness import CATALOG
from worker.core.requests import ACTIVE, RequestState
from worker.errors import IllegalTransitionError, JournalFaultError
from worker.state.journal import DestinationWrite, Journal, Transaction
from worker.state.model import StateModel
from worker.state.records import RequestRecord

_COUNTED = (RequestState.PENDING, RequestState.MOUNTING, RequestState.READY)


class Undo(Exception):
    """Raised inside a transaction to roll it back."""


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    await journal.sync_catalog(CATALOG, now=1000.0)
    await journal.load_model()
    yield journal
    await journal.close()


def _model(journal: Journal) -> StateModel:
    assert journal.model is not None
    return journal.model


async def _same_as_file(journal: Journal) -> None:
    assert _model(journal).export() == (await journal.read_model()).export()


async def test_loaded_from_the_catalog(journal: Journal) -> None:
    model = _model(journal)
    assert sorted(model.tapes) == ["CLN001CU", "NOD400L9", "NOD401L9"]
    assert list(model.drives) == [0]
    assert sorted(model.pools) == ["nas-copies", "offline-tapes", "online-tapes"]
    tape = model.tape("NOD400L9")
    assert tape is not None
    assert model.tape_by_id(tape.tape_id) == tape
    assert len(model.pending) == 0


async def test_a_committed_request_is_pending_in_memory(journal: Journal) -> None:
    model = _model(journal)
    version = model.version
    async with journal.transaction() as tx:
        rid = await tx.add_request(1, barcode="NOD400L9", pool=None, now=1000.0, size_bytes=5)
    assert model.version == version + 1
    assert rid in model.pending
    assert [r.id for r in model.pending.by_tape["NOD400L9"].ordered()] == [rid]
    record = model.active_request_for(1)
    assert record is not None
    assert (record.id, record.state, record.size_bytes) == (rid, RequestState.PENDING, 5)
    assert model.latest_request_for(1) == record == await journal.request(rid)


async def _mount_then_undo(journal: Journal) -> None:
    async with journal.transaction() as tx:
        await tx.add_request(1, barcode="NOD400L9", pool=None, now=1000.0)
        await tx.move_tape("NOD400L9", slot=None, drive=0, now=1001.0, mounted=True)
        raise Undo


async def test_a_rolled_back_transaction_changes_nothing(journal: Journal) -> None:
    model = _model(journal)
    before, version = model.export(), model.version
    with pytest.raises(Undo):
        await _mount_then_undo(journal)
    assert (model.export(), model.version) == (before, version)
    await _same_as_file(journal)


async def test_a_savepoint_rolled_back_drops_only_its_part(journal: Journal) -> None:
    model = _model(journal)
    async with journal.transaction() as tx:
        kept = await tx.add_request(1, barcode=None, pool="offline-tapes", now=1000.0)
        with contextlib.suppress(Undo):
            async with tx.savepoint():
                await tx.add_request(2, barcode="NOD401L9", pool=None, now=1000.0)
                await tx.tape_needs_check("NOD401L9")
                raise Undo
    assert [r.id for r in model.pending] == [kept]
    tape = model.tape("NOD401L9")
    assert tape is not None
    assert not tape.need_to_check
    await _same_as_file(journal)


async def test_a_request_through_its_life(journal: Journal) -> None:
    model = _model(journal)
    async with journal.transaction() as tx:
        rid = await tx.add_request(1, barcode="NOD400L9", pool=None, now=1000.0, size_bytes=9)
    async with journal.transaction() as tx:
        await tx.set_request_state(rid, RequestState.MOUNTING, 1001.0, drive=0)
        await tx.drive_in_use(0)
        await tx.move_tape("NOD400L9", slot=None, drive=0, now=1002.0, mounted=True)
        await tx.make_ready(rid, 0, 1003.0, 60.0)
    assert rid not in model.pending
    assert model.holders(0) == (rid,)
    assert [r.id for r in model.requests((RequestState.READY,))] == [rid]
    assert model.drives[0].barcode == "NOD400L9"
    ready = model.request(rid)
    assert ready is not None
    assert ready.lease_expires == 1063.0
    async with journal.transaction() as tx:
        await tx.release(ready, 1010.0, "released by the data mover")
    assert model.holders(0) == ()
    assert model.active_request_for(1) is None
    latest = model.latest_request_for(1)
    assert latest is not None
    assert latest.state is RequestState.RELEASED
    assert model.drives[0].idle_since == 1010.0
    tape = model.tape("NOD400L9")
    assert tape is not None
    assert tape.used_bytes == 9
    assert tape.mount_count == 1
    await _same_as_file(journal)


async def test_counts_and_the_oldest_pending_follow_each_commit(journal: Journal) -> None:
    model = _model(journal)
    assert model.request_counts() == dict.fromkeys(
        (RequestState.PENDING, RequestState.MOUNTING, RequestState.READY), 0
    )
    assert model.oldest_pending_arrival() is None
    async with journal.transaction() as tx:
        first = await tx.add_request(1, barcode="NOD400L9", pool=None, now=1000.0)
        await tx.add_request(2, barcode=None, pool="offline-tapes", now=990.0)
        await tx.add_request(3, barcode=None, pool=None, now=1005.0)
    assert model.request_counts()[RequestState.PENDING] == 3
    assert model.oldest_pending_arrival() == 990.0
    # NOD400L9 is a tape of offline-tapes; the request naming neither counts for none.
    assert model.pending_by_pool() == {"offline-tapes": 2}
    async with journal.transaction() as tx:
        await tx.set_request_state(first, RequestState.MOUNTING, 1001.0, drive=0)
    counts = model.request_counts()
    assert (counts[RequestState.PENDING], counts[RequestState.MOUNTING]) == (2, 1)
    await _same_as_file(journal)


async def test_an_older_ended_request_is_forgotten(journal: Journal) -> None:
    model = _model(journal)
    async with journal.transaction() as tx:
        first = await tx.add_request(1, barcode="NOD400L9", pool=None, now=1000.0)
        await tx.set_request_state(first, RequestState.FAILED, 1000.0, reason="no")
        second = await tx.add_request(1, barcode="NOD401L9", pool=None, now=1001.0)
    assert model.request(first) is None
    latest = model.latest_request_for(1)
    assert latest is not None
    assert latest.id == second
    await _same_as_file(journal)


async def test_destinations_as_the_table_holds_them(journal: Journal) -> None:
    model = _model(journal)
    async with journal.transaction() as tx:
        await tx.insert_destination(
            DestinationWrite(
                3,
                "7",
                {"folder_id": 1, "tape_barcode": "NOD400L9"},
                {"folder": {"id": 1}},
                "NOD400L9",
                None,
                "pending",
                None,
                sequence=4,
            ),
            1000.0,
        )
        await tx.update_destination(
            DestinationWrite(3, "7", {"folder_id": 2}, None, None, None, "applied", None),
            1001.0,
        )
        await tx.destroy_unknown_destination(4, task_id="7", sequence=None, now=1002.0)
    live = model.destination(3)
    assert live is not None
    assert (live.body, live.sequence, live.nested, live.updated) == (
        {"folder_id": 2},
        4,
        {"folder": {"id": 1}},
        1001.0,
    )
    assert [d.id for d in model.destinations("7")] == [3]
    gone = model.destination(4)
    assert gone is not None
    assert gone.deleted
    await _same_as_file(journal)


async def test_operator_and_inventory_writes_show(journal: Journal) -> None:
    model = _model(journal)
    await journal.operator_action(
        "drive down", who="op", reason="noisy", now=1000.0, target="drive 0", drive=0,
        drive_up=False,
    )  # fmt: skip
    await journal.update_tape("NOD401L9", full=True, used_bytes=77)
    assert not model.drives[0].up
    assert model.drives[0].reason == "operator: noisy"
    tape = model.tape("NOD401L9")
    assert tape is not None
    assert tape.full
    assert tape.used_bytes == 77
    await _same_as_file(journal)


async def test_a_change_the_model_cannot_take_rebuilds_it(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: object) -> None:
        raise RuntimeError("a model bug")

    monkeypatch.setattr(StateModel, "apply_tape_fields", refuse)
    async with journal.transaction() as tx:
        await tx.tape_needs_check("NOD400L9")
    tape = _model(journal).tape("NOD400L9")
    assert tape is not None
    assert tape.need_to_check
    await _same_as_file(journal)


async def _too_big_for_the_disk(journal: Journal) -> None:
    async with journal.transaction() as tx:
        for i in range(40):
            await tx.insert_event(source="test", received=1000.0, payload="x" * 60_000)
            await tx.add_request(i + 1, barcode="NOD400L9", pool=None, now=1000.0)


async def test_after_a_journal_fault_the_model_is_read_from_the_file_again(
    journal: Journal,
) -> None:
    model = _model(journal)
    row = next(iter(await journal._db.execute_fetchall("PRAGMA page_count")), None)
    assert row is not None
    # A disk that is full for this journal: no page beyond those it has.
    await journal._db.execute(f"PRAGMA max_page_count={row[0]}")
    before = model.export()
    with pytest.raises(JournalFaultError):
        await _too_big_for_the_disk(journal)
    assert journal.fault is not None
    assert model.export() == before
    version = model.version
    await journal._db.execute("PRAGMA max_page_count=1073741823")
    assert await journal.probe(1001.0)
    assert journal.fault is None
    # Read anew once the fault cleared (the same object: readers keep theirs).
    assert journal.model is model
    assert model.version > version
    await _same_as_file(journal)
    async with journal.transaction() as tx:
        rid = await tx.add_request(1, barcode="NOD400L9", pool=None, now=1002.0)
    assert rid in model.pending


async def test_requests_of_ended_states_are_not_kept(journal: Journal) -> None:
    with pytest.raises(ValueError, match="active requests only"):
        _model(journal).requests((RequestState.RELEASED,))


# -- any sequence of transactions ---------------------------------------------------

BARCODES = ("NOD400L9", "NOD401L9", "CLN001CU", "NOPE00L9")
STATES = tuple(RequestState)


@dataclass(frozen=True)
class Step:
    kind: str
    a: int
    b: int


#: One transaction: its steps, and how it ends (commit, rollback, or a savepoint
#: around its second half rolled back).
Transactions = st.lists(
    st.tuples(
        st.lists(
            st.builds(
                Step,
                st.sampled_from(
                    [
                        "add",
                        "add",
                        "add_many",
                        "state",
                        "state",
                        "ready",
                        "release",
                        "assign",
                        "renew",
                        "move",
                        "drive",
                        "failure",
                        "check",
                        "clean",
                        "insert",
                        "insert_many",
                        "update",
                        "destroy",
                        "destroy_unknown",
                    ]
                ),
                st.integers(0, 7),
                st.integers(0, 7),
            ),
            min_size=1,
            max_size=6,
        ),
        st.sampled_from(["commit", "commit", "rollback", "savepoint"]),
        st.sampled_from(["none", "none", "update_tape", "operator", "prune"]),
    ),
    min_size=1,
    max_size=10,
)


async def _step(journal: Journal, tx: Transaction, step: Step, now: float) -> None:
    ids = [r.id for r in await journal.requests()]
    rid = ids[step.a % len(ids)] if ids else 1
    barcode = BARCODES[step.b % len(BARCODES)]
    match step.kind:
        case "add":
            await tx.add_request(
                1 + step.a % 4,
                barcode=barcode if step.b % 3 else None,
                pool="offline-tapes" if step.b % 2 else None,
                now=now,
                size_bytes=step.b or None,
            )
        case "add_many":
            await tx.add_requests(
                [
                    (1 + (step.a + n) % 4, barcode if n % 2 else None, "offline-tapes", step.b)
                    for n in range(1 + step.b % 3)
                ],
                now,
            )
        case "state":
            await tx.set_request_state(
                rid, STATES[step.b % len(STATES)], now, drive=0 if step.b % 2 else None
            )
        case "ready":
            await tx.make_ready(rid, 0, now, 30.0)
        case "release":
            record = await tx.request(rid)
            if record is not None:
                await tx.release(record, now, "done")
        case "assign":
            await tx.assign_tape(rid, barcode, now)
        case "renew":
            await tx.renew_lease(rid, now, 45.0)
        case "move":
            await tx.move_tape(
                barcode,
                slot=None if step.a % 2 else 1 + step.a,
                drive=0 if step.a % 2 else None,
                now=now,
                mounted=bool(step.b % 2),
            )
        case "drive":
            write = (tx.drive_in_use, tx.drive_succeeded, tx.drive_emptied)[step.a % 3]
            await write(0)
            await tx.drive_freed(0, now)
        case "failure":
            await tx.count_drive_failure(0, "no answer", down_after=2)
        case "check":
            await tx.tape_needs_check(barcode)
        case "clean":
            await tx.cleaning_done(barcode, 0, now)
        case "insert":
            await tx.insert_destination(
                DestinationWrite(
                    10 + step.a,
                    str(step.b % 2),
                    {"folder_id": step.b},
                    {"folder": {"id": step.b}} if step.b % 2 else None,
                    barcode,
                    None,
                    "pending",
                    None,
                    sequence=step.b or None,
                ),
                now,
            )
        case "insert_many":
            await tx.insert_destinations(
                [
                    DestinationWrite(
                        30 + step.a * 3 + n,
                        str(n % 2),
                        {"folder_id": n},
                        {"folder": {"id": n}} if n % 2 else None,
                        barcode,
                        None,
                        "active",
                        None,
                    )
                    for n in range(1 + step.b % 3)
                ],
                now,
            )
        case "update":
            await tx.update_destination(
                DestinationWrite(
                    10 + step.a,
                    str(step.b % 2),
                    {"folder_id": step.b + 100},
                    {"container": {"id": step.b}} if step.b % 2 else None,
                    None,
                    "offline-tapes",
                    "applied",
                    "why",
                    sequence=step.b or None,
                ),
                now,
            )
        case "destroy":
            await tx.destroy_destination(10 + step.a, sequence=None, now=now)
        case "destroy_unknown":
            await tx.destroy_unknown_destination(20 + step.a, task_id="1", sequence=step.b, now=now)


async def _outside(journal: Journal, kind: str, step: Step, now: float) -> None:
    """The writes that do not go through a Transaction."""
    if kind == "update_tape":
        barcode = BARCODES[step.b % len(BARCODES)]
        await journal.update_tape(barcode, full=bool(step.a % 2), used_bytes=step.a)
    elif kind == "operator":
        await journal.operator_action(
            "drive up" if step.a % 2 else "drive down",
            who="op",
            reason="test",
            now=now,
            target="drive 0",
            drive=0,
            drive_up=bool(step.a % 2),
            barcode=BARCODES[step.b % 2],
            tape_fields={"locked": bool(step.b % 2)},
        )
    elif kind == "prune":
        await journal.prune(now + 1.0, batch=2)


async def _pending_by_pool(journal: Journal, pending: list[RequestRecord]) -> dict[str, int]:
    """Pending requests per pool, counted from the file's rows."""
    counted: Counter[str] = Counter()
    for request in pending:
        if request.barcode is not None:
            tape = await journal.tape(request.barcode)
            pool = tape.pool if tape is not None else None
        else:
            pool = request.pool
        if pool is not None:
            counted[pool] += 1
    return dict(sorted(counted.items()))


async def _run(transactions: list[tuple[list[Step], str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        journal = await Journal.open(Path(tmp) / "journal.sqlite3")
        try:
            await journal.sync_catalog(CATALOG, now=1000.0)
            await journal.load_model()
            now = 1000.0
            for steps, ending, outside in transactions:
                try:
                    async with journal.transaction() as tx:
                        half = len(steps) // 2
                        for step in steps[:half]:
                            now += 1.0
                            await _step(journal, tx, step, now)
                        if ending == "savepoint":
                            with contextlib.suppress(Undo):
                                async with tx.savepoint():
                                    for step in steps[half:]:
                                        now += 1.0
                                        await _step(journal, tx, step, now)
                                    raise Undo
                        else:
                            for step in steps[half:]:
                                now += 1.0
                                await _step(journal, tx, step, now)
                        if ending == "rollback":
                            raise Undo
                except (Undo, IllegalTransitionError, KeyError, sqlite3.IntegrityError):
                    pass  # rolled back: the model must not show any of it
                now += 1.0
                await _outside(journal, outside, steps[0], now)
                model = journal.model
                assert model is not None
                assert model.export() == (await journal.read_model()).export()
                active = await journal.requests(ACTIVE)
                assert {r.id for r in model.requests()} == {r.id for r in active}
                # The kept counts against a recount of the file's requests.
                recount = Counter(r.state for r in active)
                assert model.request_counts() == {s: recount[s] for s in _COUNTED}
                pending = [r for r in active if r.state is RequestState.PENDING]
                assert model.oldest_pending_arrival() == min(
                    (r.arrival for r in pending), default=None
                )
                assert model.pending_by_pool() == await _pending_by_pool(journal, pending)
        finally:
            await journal.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(Transactions)
def test_any_transactions_leave_the_model_as_the_file_says(
    transactions: list[tuple[list[Step], str, str]],
) -> None:
    asyncio.run(_run(transactions))
