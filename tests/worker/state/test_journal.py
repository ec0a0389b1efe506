"""The journal's unit of work on a real SQLite file: each named write does what its
name says, and a transaction commits all of it or none of it."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.worker.harness import CATALOG
from worker.core.requests import RequestState
from worker.errors import IllegalTransitionError, JournalFaultError
from worker.seed.query import Filter, IndexQuery
from worker.state.journal import (
    DestinationRecord,
    DestinationWrite,
    DriveRecord,
    Journal,
    PoolWatchRecord,
    RequestRecord,
    UnitOfWork,
    salvage,
)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    await journal.sync_catalog(CATALOG, now=1000.0)
    yield journal
    await journal.close()


async def _request(journal: Journal, rid: int) -> RequestRecord:
    record = await journal.request(rid)
    assert record is not None
    return record


async def _drive(journal: Journal, index: int = 0) -> DriveRecord:
    [drive] = [d for d in await journal.drives() if d.index == index]
    return drive


async def _ready_request(journal: Journal, *, hold_seconds: float = 60.0) -> int:
    async with journal.transaction() as tx:
        rid = await tx.add_request(1, barcode="NOD400L9", pool=None, now=1000.0)
        await tx.set_request_state(rid, RequestState.MOUNTING, 1001.0, drive=0)
        await tx.make_ready(rid, 0, 1002.0, hold_seconds)
    return rid


async def test_a_new_request_is_pending_with_what_it_asks_for(journal: Journal) -> None:
    async with journal.transaction() as tx:
        rid = await tx.add_request(1, barcode=None, pool="offline-tapes", now=1000.0, size_bytes=7)
    record = await _request(journal, rid)
    assert (record.state, record.pool, record.barcode, record.size_bytes, record.arrival) == (
        RequestState.PENDING,
        "offline-tapes",
        None,
        7,
        1000.0,
    )


async def test_ready_holds_the_drive_for_one_lease(journal: Journal) -> None:
    rid = await _ready_request(journal, hold_seconds=60.0)
    record = await _request(journal, rid)
    assert (record.state, record.drive, record.lease_expires) == (RequestState.READY, 0, 1062.0)


async def test_renew_lease_extends_a_ready_request_only(journal: Journal) -> None:
    rid = await _ready_request(journal, hold_seconds=60.0)
    async with journal.transaction() as tx:
        pending = await tx.add_request(2, barcode="NOD401L9", pool=None, now=1000.0)
        await tx.renew_lease(rid, 2000.0, 60.0)
        await tx.renew_lease(pending, 2000.0, 60.0)
    assert (await _request(journal, rid)).lease_expires == 2060.0
    assert (await _request(journal, pending)).lease_expires is None


async def test_assign_tape_changes_a_pending_request_only(journal: Journal) -> None:
    rid = await _ready_request(journal)
    async with journal.transaction() as tx:
        pending = await tx.add_request(2, barcode=None, pool="online-tapes", now=1000.0)
        await tx.assign_tape(pending, "NOD401L9", 1003.0)
        await tx.assign_tape(rid, "NOD401L9", 1003.0)
    assert (await _request(journal, pending)).barcode == "NOD401L9"
    assert (await _request(journal, rid)).barcode == "NOD400L9"


async def test_an_illegal_transition_is_refused_and_commits_nothing(journal: Journal) -> None:
    async with journal.transaction() as tx:
        rid = await tx.add_request(1, barcode="NOD400L9", pool=None, now=1000.0)
        await tx.set_request_state(rid, RequestState.FAILED, 1001.0, reason="no")

    async def back_to_pending() -> None:
        async with journal.transaction() as tx:
            await tx.add_request(2, barcode="NOD401L9", pool=None, now=1002.0)
            await tx.set_request_state(rid, RequestState.PENDING, 1002.0)

    with pytest.raises(IllegalTransitionError):
        await back_to_pending()
    assert [r.id for r in await journal.requests()] == [rid]
    assert (await _request(journal, rid)).state is RequestState.FAILED


async def test_unknown_request_fields_are_refused(journal: Journal) -> None:
    async with journal.transaction() as tx:
        rid = await tx.add_request(1, barcode="NOD400L9", pool=None, now=1000.0)
    async with journal.transaction() as tx:
        with pytest.raises(ValueError, match="not request fields"):
            await tx.set_request_state(rid, RequestState.MOUNTING, 1001.0, state="ready")
    assert (await _request(journal, rid)).state is RequestState.PENDING


async def test_release_of_a_ready_write_counts_its_size_and_starts_the_idle_clock(
    journal: Journal,
) -> None:
    before = await journal.tape("NOD400L9")
    assert before is not None
    async with journal.transaction() as tx:
        rid = await tx.add_request(1, barcode="NOD400L9", pool=None, now=1000.0, size_bytes=500)
        await tx.set_request_state(rid, RequestState.MOUNTING, 1001.0, drive=0)
        await tx.drive_in_use(0)
        await tx.make_ready(rid, 0, 1002.0, 60.0)
    assert (await _drive(journal)).idle_since is None
    async with journal.transaction() as tx:
        await tx.release(await _request(journal, rid), 1003.0, "done")
    after = await journal.tape("NOD400L9")
    assert after is not None
    assert after.used_bytes == before.used_bytes + 500
    assert (await _drive(journal)).idle_since == 1003.0
    assert (await _request(journal, rid)).state is RequestState.RELEASED


async def test_a_drive_goes_down_at_the_failure_the_rule_names(journal: Journal) -> None:
    reasons = []
    for _ in range(3):
        async with journal.transaction() as tx:
            reasons.append(await tx.count_drive_failure(0, "not online", down_after=2))
    assert reasons == [None, "down after repeated failures: not online", None]
    drive = await _drive(journal)
    assert (drive.up, drive.failures, drive.reason) == (
        False,
        3,
        "down after repeated failures: not online",
    )


async def test_a_success_restarts_the_count_of_failures(journal: Journal) -> None:
    async with journal.transaction() as tx:
        assert await tx.count_drive_failure(0, "busy", down_after=2) is None
        await tx.drive_succeeded(0)
        assert await tx.count_drive_failure(0, "busy", down_after=2) is None
    drive = await _drive(journal)
    assert (drive.up, drive.failures) == (True, 1)
    async with journal.transaction() as tx:
        await tx.drive_emptied(0)
    assert (await _drive(journal)).failures == 0


async def test_tape_and_cleaning_facts(journal: Journal) -> None:
    cleaner = await journal.tape("CLN001CU")
    assert cleaner is not None
    async with journal.transaction() as tx:
        await tx.tape_needs_check("NOD401L9")
        await tx.cleaning_done("CLN001CU", 0, 1005.0)
    checked = await journal.tape("NOD401L9")
    cleaned = await journal.tape("CLN001CU")
    assert checked is not None
    assert checked.need_to_check
    assert cleaned is not None
    assert cleaned.cleaning_uses_left == max(cleaner.cleaning_uses_left - 1, 0)
    assert cleaned.mount_count == cleaner.mount_count + 1
    assert not (await _drive(journal)).needs_cleaning


async def test_a_savepoint_undoes_its_part_only(journal: Journal) -> None:
    async with journal.transaction() as tx:
        kept = await tx.add_request(1, barcode="NOD400L9", pool=None, now=1000.0)

        async def part() -> None:
            async with tx.savepoint():
                await tx.add_request(2, barcode="NOD401L9", pool=None, now=1000.0)
                raise RuntimeError("this part only")

        with pytest.raises(RuntimeError):
            await part()
    assert [r.id for r in await journal.requests()] == [kept]


async def _count(journal: Journal, task_id: str) -> int:
    count, _ = await journal.destination_page(task_id, IndexQuery())
    return count


async def _create(journal: Journal, destination_id: int, task_id: str = "7") -> None:
    async with journal.transaction() as tx:
        await tx.insert_destination(
            DestinationWrite(
                destination_id, task_id, {"folder_id": 1}, None, None, None, "applied", None
            ),
            1000.0,
        )


async def test_a_tasks_count_follows_creates_destroys_and_pruning(journal: Journal) -> None:
    for destination_id in (1, 2, 3):
        await _create(journal, destination_id)
    await _create(journal, 4, task_id="8")
    assert (await _count(journal, "7"), await _count(journal, "8")) == (3, 1)
    async with journal.transaction() as tx:
        await tx.destroy_destination(2, sequence=None, now=1001.0)
        # Destroyed twice, counted once.
        await tx.destroy_destination(2, sequence=None, now=1002.0)
        await tx.destroy_unknown_destination(9, task_id="7", sequence=None, now=1001.0)
    assert await _count(journal, "7") == 2
    await journal.prune(before=5000.0)
    assert await _count(journal, "7") == 2
    assert await _count(journal, "nothing here") == 0
    # The same count as a filter that every destination matches, which counts rows.
    filtered = IndexQuery(filters=(Filter("id", ">=", (0,)),))
    assert (await journal.destination_page("7", filtered))[0] == 2


async def test_an_older_journal_and_a_salvaged_one_count_their_destinations(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    for destination_id in (1, 2):
        await _create(journal, destination_id)
    await journal.close()
    # A journal of schema 5 had no counts.
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE task_counts")
        db.execute("UPDATE meta SET value='5' WHERE key='schema'")
        db.commit()
    journal = await Journal.open(path)
    try:
        assert await _count(journal, "7") == 2
    finally:
        await journal.close()
    # A salvaged copy counts what it saved, not what the copied counts said.
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE task_counts SET live = 40")
        db.commit()
    salvage(path, tmp_path / "salvaged.sqlite3")
    journal = await Journal.open(tmp_path / "salvaged.sqlite3")
    try:
        assert await _count(journal, "7") == 2
    finally:
        await journal.close()


async def test_pool_watches_are_kept_once_until_forgotten_and_survive_a_reopening(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    watch = PoolWatchRecord(
        "e1", "p", 7, "tw/pools/p/tasks/9/task_destinations/7/create", "{}", "1", 5.0
    )
    try:
        await journal.watch_pool_event(watch)
        # A redelivery keeps the first copy.
        await journal.watch_pool_event(dataclasses.replace(watch, received=6.0))
        await journal.watch_pool_event(dataclasses.replace(watch, event_id="e2", received=7.0))
    finally:
        await journal.close()
    # A journal of schema 6 had no watches: the migration makes the table.
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE meta SET value='6' WHERE key='schema'")
        db.commit()
    journal = await Journal.open(path)
    try:
        assert [w.event_id for w in await journal.pool_watches()] == ["e1", "e2"]
        assert (await journal.pool_watches())[0] == watch
        await journal.forget_pool_watch("e1")
        assert [w.event_id for w in await journal.pool_watches()] == ["e2"]
    finally:
        await journal.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE pool_watches")
        db.execute("UPDATE meta SET value='6' WHERE key='schema'")
        db.commit()
    journal = await Journal.open(path)
    try:
        assert await journal.pool_watches() == []
    finally:
        await journal.close()


# -- a whole unit of work in one trip (`Journal.apply`) -----------------------------------


def _write(destination_id: int, barcode: str | None = "NOD400L9") -> DestinationWrite:
    return DestinationWrite(
        destination_id, "7", {"folder_id": destination_id}, None, barcode, None, "active", None
    )


@pytest.mark.parametrize("in_memory", [False, True])
async def test_applied_work_reads_its_own_writes_and_commits_in_one_trip(
    journal: Journal, in_memory: bool
) -> None:
    if in_memory:
        await journal.load_model()
    await _create(journal, 1)

    seen: list[DestinationRecord | RequestRecord | None] = []

    def work(unit: UnitOfWork) -> RequestRecord:
        seen.extend((unit.destination(1), unit.active_request_for(1)))
        unit.update_destination(_write(1), 1001.0)
        rid = unit.add_request(1, barcode="NOD400L9", pool=None, now=1001.0)
        seen.extend((unit.destination(1), unit.active_request_for(1)))
        failed = unit.set_request_state(rid, RequestState.FAILED, 1001.0, reason="no")
        seen.append(unit.active_request_for(1))
        return failed

    trips = journal.round_trips
    failed = await journal.apply(work)
    assert journal.round_trips - trips == 1
    before, no_request, after, active, none_left = seen
    assert isinstance(before, DestinationRecord)
    assert before.barcode is None
    assert no_request is None
    assert isinstance(after, DestinationRecord)
    assert after.barcode == "NOD400L9"
    assert isinstance(active, RequestRecord)
    assert active.state is RequestState.PENDING
    assert failed == await journal.request(active.id)
    assert none_left is None
    if in_memory:
        assert journal.model is not None
        assert journal.model.export() == (await journal.read_model()).export()


async def test_applied_work_that_raises_commits_nothing_and_leaves_the_model(
    journal: Journal,
) -> None:
    model = await journal.load_model()
    before = model.export()

    def work(unit: UnitOfWork) -> None:
        unit.insert_destination(_write(1), 1001.0)
        with contextlib.suppress(KeyError), unit.savepoint():
            unit.insert_destination(_write(2), 1001.0)
            raise KeyError("this part only")
        unit.add_request(1, barcode="NOD400L9", pool=None, now=1001.0)
        raise RuntimeError("all of it")

    with pytest.raises(RuntimeError):
        await journal.apply(work)
    assert model.export() == before
    assert await journal.destinations() == []

    def kept(unit: UnitOfWork) -> None:
        unit.insert_destination(_write(1), 1001.0)
        with contextlib.suppress(KeyError), unit.savepoint():
            unit.insert_destination(_write(2), 1001.0)
            raise KeyError("this part only")

    await journal.apply(kept)
    assert [d.id for d in await journal.destinations()] == [1]
    assert [d.id for d in model.destinations()] == [1]


async def test_a_refused_write_in_applied_work_is_a_fault(journal: Journal) -> None:
    [[pages]] = await journal._db.execute_fetchall("PRAGMA page_count")
    await journal._db.execute(f"PRAGMA max_page_count={pages}")

    def work(unit: UnitOfWork) -> None:
        for n in range(50):
            unit.insert_event(source="test", received=1000.0, payload=f"{n}" * 60_000)

    with pytest.raises(JournalFaultError):
        await journal.apply(work)
    assert journal.fault is not None
    await journal._db.execute("PRAGMA max_page_count=1073741823")
    assert await journal.events() == []
    await journal.apply(work)
    assert journal.fault is None


def _indexes(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type='index'").fetchall()
    return {name for (name,) in rows}


async def test_destinations_have_one_index_by_task_and_a_lookup_by_task_uses_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    await _create(journal, 1)
    await journal.close()
    assert "destinations_task" not in _indexes(path)
    # A journal of schema 7 had a second index on task_id alone: the migration drops it.
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE INDEX destinations_task ON destinations(task_id)")
        db.execute("UPDATE meta SET value='7' WHERE key='schema'")
        db.commit()
    journal = await Journal.open(path)
    try:
        assert [d.id for d in await journal.destinations("7")] == [1]
    finally:
        await journal.close()
    assert "destinations_task" not in _indexes(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM destinations WHERE deleted=0 AND task_id=? "
            "ORDER BY id",
            ("7",),
        ).fetchall()
    assert any("destinations_task_live" in str(row[-1]) for row in plan), plan
