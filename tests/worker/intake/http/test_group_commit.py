"""Group commit on a real journal file: concurrent events share one transaction, each
keeps its own outcome, a journal fault fails the whole group and writes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from tests.worker.harness import CATALOG, plant_bug_in_handling
from worker.errors import JournalFaultError
from worker.intake.destinations import DestinationEvent, Outcome, RejectedInput
from worker.intake.http.app import create_app
from worker.intake.http.group_commit import GroupCommit
from worker.intake.http.idempotency import IdempotentCreates
from worker.seed.models import TaskDestinationBody
from worker.settings import HttpSettings, Settings
from worker.state.journal import Journal, UnitOfWork

NOW = 1_800_000_000.0
URL = "/api/v2/tasks/7/task_destinations"
AUTH = ("archive", "archive-secret")
BARCODES = ("NOD400L9", "NOD401L9", "NOD402L9", "NOD403L9")
#: A payload that a journal with no free page cannot take.
PAD = "x" * 60_000


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    await journal.sync_catalog(CATALOG, NOW)
    commits: list[float] = []
    journal.on_commit = commits.append
    journal.commits = commits  # type: ignore[attr-defined]
    yield journal
    await journal.close()


def commit_count(journal: Journal) -> int:
    return len(journal.commits)  # type: ignore[attr-defined]


def create(barcode: str = "NOD400L9", folder_id: int = 1) -> DestinationEvent:
    body = TaskDestinationBody(folder_id=folder_id, tape_barcode=barcode)
    return DestinationEvent("create", "7", None, body, "http", payload=body.model_dump_json())


class Gate:
    """An on_change listener that holds the committer until released: what arrives
    meanwhile waits for the next transaction."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.changed: list[set[int]] = []

    async def __call__(self, ids: set[int]) -> None:
        self.changed.append(ids)
        self.entered.set()
        await self.release.wait()


async def held_first_commit(group: GroupCommit, gate: Gate) -> asyncio.Task[Outcome]:
    """A first create, committed and held in its change listener: the committer is busy."""
    first = asyncio.create_task(group.submit(create()))
    async with asyncio.timeout(10):
        await gate.entered.wait()
    return first


async def until_queued(group: GroupCommit, count: int) -> None:
    """Until `count` events wait for the next transaction (each loop turn, no clock)."""
    async with asyncio.timeout(10):
        while len(group._queue) < count:
            await asyncio.sleep(0)


async def test_events_arriving_during_a_commit_share_the_next_transaction(
    journal: Journal,
) -> None:
    gate = Gate()
    group = GroupCommit(journal, 60.0, lambda: NOW, gate)
    first = await held_first_commit(group, gate)
    assert commit_count(journal) == 1
    # The committer is busy: these six queue, and then commit together.
    later = [asyncio.create_task(group.submit(create(BARCODES[n % 4], n + 2))) for n in range(6)]
    await until_queued(group, 6)
    assert group.has_room
    group.max_group = 6
    assert not group.has_room
    gate.release.set()
    async with asyncio.timeout(10):
        outcomes = [await first, *await asyncio.gather(*later)]
    assert [o.status for o in outcomes] == ["applied"] * 7
    ids = [o.destination_id or 0 for o in outcomes]
    assert ids == sorted(ids)
    assert len(set(ids)) == 7
    assert commit_count(journal) == 2
    assert (group.groups, group.grouped_events) == (2, 7)
    assert group.has_room  # the queue emptied
    assert gate.changed == [{ids[0]}, set(ids[1:])]
    assert len(await journal.destinations()) == 7
    assert len(await journal.events()) == 7


async def test_a_bad_event_in_a_group_is_refused_alone(journal: Journal) -> None:
    group = GroupCommit(journal, 60.0, lambda: NOW)
    refused = RejectedInput("payload is not JSON", source="http", payload="{")
    async with asyncio.timeout(10):
        outcomes = await asyncio.gather(
            group.submit(create("NOD400L9")),
            group.submit(refused),
            group.submit(create("NOD400L9", folder_id=2)),
        )
    assert [o.status for o in outcomes] == ["applied", "rejected", "applied"]
    assert outcomes[1].reason == "payload is not JSON"
    assert commit_count(journal) == 1
    assert len(await journal.destinations()) == 2


@pytest.fixture
def planted_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """Handling any event for tape NOD401L9 raises, as a bug would."""
    plant_bug_in_handling(monkeypatch, ZeroDivisionError("a bug in the handling of this event"))


@pytest.mark.usefixtures("planted_bug")
async def test_a_poison_event_in_a_group_fails_only_itself(journal: Journal) -> None:
    group = GroupCommit(journal, 60.0, lambda: NOW)
    async with asyncio.timeout(10):
        outcomes = await asyncio.gather(*(group.submit(create(b)) for b in BARCODES[:3]))
    assert [o.status for o in outcomes] == ["applied", "rejected", "applied"]
    assert outcomes[1].poison
    assert commit_count(journal) == 1
    assert sorted(d.barcode or "" for d in await journal.destinations()) == [
        "NOD400L9",
        "NOD402L9",
    ]


async def test_a_journal_fault_fails_the_whole_group_and_writes_nothing(
    journal: Journal,
) -> None:
    row = next(iter(await journal._db.execute_fetchall("PRAGMA page_count")), None)
    assert row is not None
    await journal._db.execute(f"PRAGMA max_page_count={row[0]}")
    group = GroupCommit(journal, 60.0, lambda: NOW)
    big = [
        DestinationEvent("create", "7", None, TaskDestinationBody(folder_id=n), "http", payload=PAD)
        for n in range(1, 9)
    ]
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(group.submit(e) for e in big), return_exceptions=True)
    assert all(isinstance(r, JournalFaultError) for r in results), results
    assert group.groups == 0
    assert await journal.events() == []
    assert await journal.destinations() == []
    # Room again: the next group commits.
    await journal._db.execute("PRAGMA max_page_count=1073741823")
    async with asyncio.timeout(10):
        outcome = await group.submit(create())
    assert outcome.status == "applied"


async def test_a_request_cancelled_before_its_group_formed_writes_nothing(
    journal: Journal,
) -> None:
    gate = Gate()
    group = GroupCommit(journal, 60.0, lambda: NOW, gate)
    first = await held_first_commit(group, gate)
    gone = asyncio.create_task(group.submit(create("NOD401L9")))
    stays = asyncio.create_task(group.submit(create("NOD402L9")))
    await until_queued(group, 2)
    gone.cancel()
    gate.release.set()
    async with asyncio.timeout(10):
        await first
        assert (await stays).status == "applied"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert sorted(d.barcode or "" for d in await journal.destinations()) == [
        "NOD400L9",
        "NOD402L9",
    ]


async def test_a_deferred_write_rides_with_the_next_group(journal: Journal) -> None:
    group = GroupCommit(journal, 60.0, lambda: NOW, flush_after_s=30)
    done: list[str] = []
    written: list[int] = []

    def write(unit: UnitOfWork) -> None:
        written.append(commit_count(journal))

    group.defer(write, lambda: done.append("saved"))
    async with asyncio.timeout(10):
        outcome = await group.submit(create())
    assert outcome.status == "applied"
    # Written inside the create's transaction, the only one.
    assert written == [0]
    assert commit_count(journal) == 1
    assert done == ["saved"]


async def test_a_deferred_write_alone_is_committed_after_a_while(journal: Journal) -> None:
    group = GroupCommit(journal, 60.0, lambda: NOW, flush_after_s=0.01)
    done = asyncio.Event()

    def write(unit: UnitOfWork) -> None:
        return None

    group.defer(write, done.set)
    async with asyncio.timeout(10):
        await done.wait()
    assert commit_count(journal) == 1
    assert group.groups == 0


async def test_concurrent_keyed_creates_through_the_app_commit_their_keys_together(
    journal: Journal,
) -> None:
    users = {AUTH[0]: SecretStr(AUTH[1])}
    http = HttpSettings(users=users)
    changed: list[set[int]] = []

    async def on_change(ids: set[int]) -> None:
        changed.append(ids)
        # The first group's committer waits here until every other create has queued:
        # they share the next transaction, however fast the first commit was.
        while commits.grouped_events + len(commits._queue) < 8:
            await asyncio.sleep(0)

    app = create_app(journal, Settings(http=http), on_change=on_change, clock=lambda: NOW)
    commits: GroupCommit = app.state.commits
    commits.flush_after_s = 30
    guarded = IdempotentCreates(app, journal, http, clock=lambda: NOW, commits=commits)
    transport = httpx.ASGITransport(app=guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", auth=AUTH) as client:

        async def post(n: int) -> httpx.Response:
            body = {"folder_id": n, "tape_barcode": BARCODES[n % 4]}
            return await client.post(URL, json=body, headers={"Idempotency-Key": f"k-{n}"})

        async with asyncio.timeout(30):
            answers = await asyncio.gather(*(post(n) for n in range(8)))
        assert [a.status_code for a in answers] == [201] * 8
        # Two transactions for eight creates; every key is in the journal with its create.
        assert commits.groups <= 2
        assert commits.grouped_events == 8
        rows = await journal._all("SELECT key, destination_id FROM idempotency_keys")
        ids = {a.json()["id"] for a in answers}
        assert {r["key"]: r["destination_id"] for r in rows} == {
            f"k-{n}": answers[n].json()["id"] for n in range(8)
        }
        assert set().union(*changed) == ids
        # A retry before the response bodies are saved gets the first answer, from memory.
        again = await post(3)
        assert again.status_code == 201
        assert again.json() == answers[3].json()
        assert again.headers["idempotent-replayed"] == "true"
        async with asyncio.timeout(30):
            await commits.flush()
        saved = await journal._all("SELECT response FROM idempotency_keys WHERE response NOTNULL")
        assert len(saved) == 8
    assert len(await journal.destinations()) == 8
