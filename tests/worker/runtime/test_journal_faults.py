"""Journal faults in-process, on real SQLite files: a refused write is a state the
journal reports and recovers from, a poison event is undone alone and journaled,
a damaged file is refused at open and salvaged, and retention keeps the file flat."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from tests.worker.harness import CATALOG, plant_bug_in_handling
from worker.core.requests import RequestState
from worker.errors import JournalDamagedError, JournalFaultError, StartupError
from worker.intake.destinations import DestinationEvent, RejectedInput, record_events
from worker.intake.http.app import create_app
from worker.runtime.service import listen
from worker.seed.models import TaskDestinationBody
from worker.settings import HttpSettings, Settings
from worker.state.journal import Journal, salvage

NOW = 1_800_000_000.0


async def _journal(path: Path) -> Journal:
    journal = await Journal.open(path)
    await journal.sync_catalog(CATALOG, NOW)
    return journal


def _create(
    destination_id: int,
    barcode: str = "NOD400L9",
    *,
    payload: str = '{"folder_id": 1}',
    dedup_key: str | None = None,
) -> DestinationEvent:
    return DestinationEvent(
        "create",
        "7",
        destination_id,
        TaskDestinationBody(folder_id=1, tape_barcode=barcode),
        "mqtt",
        topic=f"tw/tasks/7/task_destinations/{destination_id}/create",
        payload=payload,
        dedup_key=dedup_key,
    )


def _destroy(destination_id: int) -> DestinationEvent:
    return DestinationEvent("destroy", "7", destination_id, None, "mqtt")


async def _fill_up(journal: Journal) -> None:
    """A disk that is full for this journal: no page beyond those it has."""
    row = next(iter(await journal._db.execute_fetchall("PRAGMA page_count")), None)
    assert row is not None
    await journal._db.execute(f"PRAGMA max_page_count={row[0]}")


async def test_disk_full_is_a_fault_that_clears_by_itself(tmp_path: Path) -> None:
    journal = await _journal(tmp_path / "journal.sqlite3")
    try:
        await _fill_up(journal)
        big: list[DestinationEvent | RejectedInput] = [
            _create(i, payload="x" * 60_000) for i in range(1, 30)
        ]
        with pytest.raises(JournalFaultError) as caught:
            await record_events(journal, big, now=NOW, hold_seconds=60)
        assert caught.value.kind == "disk full"
        assert journal.fault is not None
        assert journal.fault.kind == "disk full"
        # Nothing of the batch was committed: it is held back, not half-applied.
        assert await journal.events() == []
        assert await journal.destinations() == []
        # The disk gets room again: the journal says so at the next write.
        await journal._db.execute("PRAGMA max_page_count=1073741823")
        assert await journal.probe(NOW)
        assert journal.fault is None
        outcomes = await record_events(journal, big, now=NOW, hold_seconds=60)
        assert {o.status for o in outcomes} == {"applied"}
        assert len(await journal.events()) == len(big)
    finally:
        await journal.close()


@pytest.fixture
def planted_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """Handling any event for tape NOD401L9 raises, as a bug would."""
    plant_bug_in_handling(monkeypatch, ZeroDivisionError("a bug in the handling of this event"))


@pytest.mark.usefixtures("planted_bug")
async def test_a_poison_event_is_journaled_and_skipped_and_the_rest_applied(
    tmp_path: Path,
) -> None:
    """A bug that raises on one event: that event alone is undone and journaled as
    rejected with the reason; its neighbours in the batch are applied."""
    journal = await _journal(tmp_path / "journal.sqlite3")
    try:
        batch: list[DestinationEvent | RejectedInput] = [
            _create(1),
            _create(2, "NOD401L9", dedup_key="mqtt:poison-1"),
            _create(3),
        ]
        outcomes = await record_events(journal, batch, now=NOW, hold_seconds=60)
        assert [o.status for o in outcomes] == ["applied", "rejected", "applied"]
        assert outcomes[1].reason is not None
        assert "poison event" in outcomes[1].reason
        assert "ZeroDivisionError" in outcomes[1].reason
        [rejected] = await journal.events("rejected")
        assert rejected.destination_id == 2
        assert rejected.reason == outcomes[1].reason
        # Undone alone: no destination 2, the others are there with their requests.
        assert [d.id for d in await journal.destinations()] == [1, 3]
        assert await journal.active_request_for(2) is None
        # A redelivery of the same message is a duplicate, not a second crash.
        again = await record_events(journal, [batch[1]], now=NOW, hold_seconds=60)
        assert again[0].status == "duplicate"
        assert journal.fault is None
    finally:
        await journal.close()


@pytest.mark.usefixtures("planted_bug")
async def test_an_http_create_a_bug_cannot_handle_answers_500_and_is_journaled(
    tmp_path: Path,
) -> None:
    journal = await _journal(tmp_path / "journal.sqlite3")

    async def changed(_: set[int]) -> None:
        return None

    settings = Settings(http=HttpSettings(users={"u": SecretStr("p")}))
    app = create_app(journal, settings, on_change=changed, clock=lambda: NOW)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://tapeworker", auth=("u", "p")
        ) as client:
            url = "/api/v2/tasks/7/task_destinations"
            poisoned = await client.post(url, json={"folder_id": 1, "tape_barcode": "NOD401L9"})
            assert poisoned.status_code == 500
            assert "poison event" in poisoned.json()["messages"][0]
            served = await client.post(url, json={"folder_id": 1, "tape_barcode": "NOD400L9"})
            assert served.status_code == 201
        [rejected] = await journal.events("rejected")
        assert rejected.reason is not None
        assert "ZeroDivisionError" in rejected.reason
    finally:
        await journal.close()


async def test_a_stored_payload_is_capped_with_a_digest_of_the_whole(tmp_path: Path) -> None:
    journal = await _journal(tmp_path / "journal.sqlite3")
    try:
        journal.max_payload_bytes = 4096
        huge = '{"folder_id": 1, "folder": {"name": "' + "x" * 5_000_000 + '"}}'
        event = DestinationEvent(
            "create",
            "7",
            1,
            TaskDestinationBody(folder_id=1, tape_barcode="NOD400L9"),
            "mqtt",
            payload=huge,
        )
        before = journal.size_bytes()
        await record_events(journal, [event], now=NOW, hold_seconds=60)
        [stored] = await journal.events()
        assert stored.payload is not None
        assert len(stored.payload) < 4096 + 200
        assert stored.payload.startswith(huge[:4000])
        digest = hashlib.sha256(huge.encode()).hexdigest()
        assert f"{len(huge)} bytes in all, sha256 {digest}" in stored.payload
        # The 5 MB message grew the journal by far less than its size.
        assert journal.size_bytes() - before < 500_000
    finally:
        await journal.close()


async def test_a_damaged_journal_is_refused_at_open_and_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = await _journal(path)
    await record_events(journal, [_create(i) for i in range(1, 40)], now=NOW, hold_seconds=60)
    row = next(
        iter(
            await journal._db.execute_fetchall(
                "SELECT rootpage FROM sqlite_master WHERE name='events'"
            )
        ),
        None,
    )
    assert row is not None
    events_root = int(row[0])
    await journal.close()  # the last connection checkpoints the WAL into the file

    with path.open("r+b") as raw:
        raw.seek((events_root - 1) * 4096)
        raw.write(b"\xa5" * 4096)
    with pytest.raises(JournalDamagedError) as caught:
        await Journal.open(path)
    message = str(caught.value)
    assert str(path) in message
    assert "tapeworker journal recover" in message

    recovered = tmp_path / "recovered.sqlite3"
    copied = salvage(path, recovered)
    # The damaged table is lost; every other table comes through whole.
    assert copied["destinations"] == 39
    assert copied["requests"] == 39
    assert copied["tapes"] == len(CATALOG.tapes)
    assert path.exists()  # the damaged file is kept
    salvaged = await Journal.open(recovered)
    try:
        assert len(await salvaged.destinations()) == 39
        assert await salvaged.quick_check() == []
    finally:
        await salvaged.close()


async def test_retention_keeps_the_journal_flat_under_a_steady_stream(tmp_path: Path) -> None:
    """An hour of simulated time, one create and one destroy every 10 s, a retention
    of 5 minutes pruned every minute: after the first retention window the file
    stops growing. Without pruning the same stream keeps adding rows."""
    journal = await _journal(tmp_path / "journal.sqlite3")
    retention_s = 300.0
    sizes: dict[int, int] = {}
    try:
        for destination, second in enumerate(range(0, 3600, 10), start=1):
            now = NOW + second
            stream: list[DestinationEvent | RejectedInput] = [
                _create(destination, payload="p" * 2000),
                _destroy(destination - 1) if destination > 1 else _destroy(0),
            ]
            await record_events(journal, stream, now=now, hold_seconds=60)
            if second % 60 == 0:
                await journal.prune(now - retention_s)
                sizes[second] = journal.size_bytes()
        counts = {
            "events": len(await journal.events(limit=100_000)),
            "destinations": len(await journal.destinations()),
            "requests": len(await journal.requests()),
        }
    finally:
        await journal.close()
    after_warmup = sizes[1200]
    largest_later = max(size for second, size in sizes.items() if second >= 1200)
    print(
        f"journal size at 20 min {after_warmup} bytes, largest from 20 to 60 min "
        f"{largest_later} bytes, at 60 min {sizes[max(sizes)]} bytes"
    )
    # Flat: the last 40 minutes add at most a few pages to the size at 20 minutes
    # (the same stream unpruned would triple it).
    assert largest_later <= after_warmup * 1.1
    # What is kept is the retention window (and the minute since the last pruning),
    # not the hour: a create and a destroy every 10 s.
    window = (retention_s + 60) / 10 + 1
    assert counts["events"] <= 2 * window
    assert counts["destinations"] == 1  # the one not yet destroyed
    assert counts["requests"] <= window


async def test_pruning_keeps_live_state_and_takes_turns_with_intake(tmp_path: Path) -> None:
    journal = await _journal(tmp_path / "journal.sqlite3")
    try:
        old = NOW - 86400 * 10
        # A live destination with an active request, from long ago, and a destroyed one
        # with the highest id.
        await record_events(
            journal, [_create(1), _create(5), _destroy(5)], now=old, hold_seconds=60
        )
        # Many old events to prune.
        await record_events(
            journal,
            [RejectedInput("malformed", source="mqtt", payload=str(i)) for i in range(3000)],
            now=old,
            hold_seconds=60,
        )
        pruning = asyncio.create_task(journal.prune(NOW - 86400, batch=100))
        await asyncio.sleep(0)  # let it take its first batch
        # An event arriving meanwhile commits between two batches, not after all.
        await record_events(journal, [_create(2, "NOD401L9")], now=NOW, hold_seconds=60)
        assert not pruning.done()
        counts = await pruning
        assert counts.events == 3003
        assert counts.destinations == 1
        [kept] = await journal.events()
        assert kept.destination_id == 2
        assert [d.id for d in await journal.destinations()] == [1, 2]
        active = await journal.active_request_for(1)
        assert active is not None
        assert active.state is RequestState.PENDING
        # An id is never given twice, also after its destination was pruned.
        assert await journal.next_destination_id() == 6
    finally:
        await journal.close()


def test_a_taken_port_stops_the_start_up_with_a_message() -> None:
    first = listen("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        first.listen()
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port)
    finally:
        first.close()
