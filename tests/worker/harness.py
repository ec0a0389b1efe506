"""The worker in-process against the simulated library: a real journal file, the
real executor and reconciler, the simulator for the robot that is not here."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.definition import LibraryDefinition
from drivers.sim.library import SimulatedLibrary
from worker.core.planner import PlanPolicy
from worker.intake import destinations
from worker.intake.destinations import DestinationEvent, Verb, record_events
from worker.runtime.executor import Executor
from worker.runtime.reconciler import Reconciler
from worker.seed.models import TaskDestinationBody
from worker.settings import ExecutorSettings
from worker.state.journal import Journal, RequestRecord, UnitOfWork

SETTINGS = ExecutorSettings(
    move_timeout_s=5,
    ready_timeout_s=1.0,
    ready_poll_s=0.005,
    retries=2,
    backoff_s=0.005,
    drive_down_after=2,
)


#: The tape whose events a planted bug fails (see `plant_bug_in_handling`).
BUGGY_BARCODE = "NOD401L9"


def plant_bug_in_handling(monkeypatch: Any, bug: Exception) -> None:
    """Handling any event for tape BUGGY_BARCODE raises `bug`, inside the journal's
    guard of each event, as a bug would."""
    real = destinations.resolve_target

    def buggy(unit: UnitOfWork, body: TaskDestinationBody) -> destinations.Target:
        if body.tape_barcode == BUGGY_BARCODE:
            raise bug
        return real(unit, body)

    monkeypatch.setattr(destinations, "resolve_target", buggy)

#: A small catalog for the intake tests: pools of every kind, a cleaning cartridge.
CATALOG = LibraryDefinition.model_validate(
    {
        "slots": 10,
        "import_export": 1,
        "drives": [{"index": 0, "device": "/dev/nst0", "generation": "LTO-9"}],
        "pools": [
            {"id": 6, "name": "offline-tapes"},
            {"id": 7, "name": "online-tapes"},
            {"id": 8, "name": "nas-copies", "content": "nas"},
        ],
        "tapes": [
            {"barcode": "NOD400L9", "slot": 1, "pool": "offline-tapes"},
            {"barcode": "NOD401L9", "slot": 2, "pool": "online-tapes"},
            {"barcode": "CLN001CU", "slot": 3},
        ],
    }
)


async def create_for_tape(
    journal: Journal, destination_id: int, barcode: str, *, now: float, hold_seconds: float
) -> RequestRecord:
    """A barcode destination created in task 7; its request as the journal made it."""
    body = TaskDestinationBody.model_validate({"tape_barcode": barcode})
    await record_events(
        journal,
        [DestinationEvent("create", "7", destination_id, body, "test")],
        now=now,
        hold_seconds=hold_seconds,
    )
    record = await journal.latest_request_for(destination_id)
    assert record is not None
    return record


def definition(drives: int = 2, **extra: Any) -> LibraryDefinition:
    return LibraryDefinition.model_validate(
        {
            "slots": 12,
            "import_export": 1,
            "drives": [
                {"index": i, "device": f"/dev/nst{i}", "generation": "LTO-9"} for i in range(drives)
            ],
            "pools": [{"id": 6, "name": "offline-tapes"}],
            "tapes": [
                {"barcode": "AAA001L9", "slot": 1, "pool": "offline-tapes"},
                {"barcode": "AAA002L9", "slot": 2, "pool": "offline-tapes"},
                {"barcode": "AAA003L8", "slot": 3, "pool": "offline-tapes"},
                {"barcode": "OLD001L5", "slot": 4, "pool": "offline-tapes"},
                {"barcode": "CLN001CU", "slot": 5},
            ],
            **extra,
        }
    )


@dataclass(frozen=True)
class Published:
    """A destination's request as the daemon would publish it at a change."""

    destination_id: int
    state: str
    drive: int | None
    reason: str | None


@dataclass
class Harness:
    journal: Journal
    library: SimulatedLibrary
    reconciler: Reconciler
    executor: Executor
    #: Every change announced, in order (what MQTT would carry).
    published: list[Published] = field(default_factory=list)

    async def submit(
        self, verb: Verb, destination_id: int, size_bytes: int | None = None, **body: Any
    ) -> None:
        parsed = TaskDestinationBody.model_validate(body) if verb in ("create", "update") else None
        await record_events(
            self.journal,
            [DestinationEvent(verb, "7", destination_id, parsed, "test", size_bytes=size_bytes)],
            now=time.time(),
            hold_seconds=3600,
        )
        self.reconciler.wake.set()

    async def request(self, destination_id: int) -> RequestRecord:
        record = await self.journal.latest_request_for(destination_id)
        assert record is not None
        return record

    # The waits' timeouts are bounds, not speeds: on a busy machine a console log line
    # with a traceback alone can take seconds.
    async def wait_for(self, destination_id: int, state: str, timeout: float = 60) -> RequestRecord:
        async with asyncio.timeout(timeout):
            while True:
                record = await self.journal.latest_request_for(destination_id)
                if record is not None and record.state.value == state:
                    return record
                await asyncio.sleep(0.005)

    async def wait_until(self, what: str, check: Any, timeout: float = 60) -> Any:
        try:
            async with asyncio.timeout(timeout):
                while not (value := await check()):
                    await asyncio.sleep(0.005)
                return value
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None


@contextlib.asynccontextmanager
async def running_worker(
    tmp_path: Path,
    library_definition: LibraryDefinition,
    *,
    speed: float = 1000.0,
    settings: ExecutorSettings = SETTINGS,
    policy: PlanPolicy | None = None,
    prepare: Any = None,
    inventory_interval_s: float = 300.0,
) -> AsyncIterator[Harness]:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    library = SimulatedLibrary.open(
        library_definition, state_file=tmp_path / "sim.json", speed=speed
    )
    if prepare is not None:
        prepare(library)

    published: list[Published] = []

    async def changed(destination_ids: set[int]) -> None:
        for destination_id in sorted(destination_ids):
            record = await journal.latest_request_for(destination_id)
            if record is not None:
                published.append(
                    Published(destination_id, record.state.value, record.drive, record.reason)
                )
        reconciler.wake.set()

    await journal.sync_catalog(library_definition, time.time())
    executor = Executor(library, journal, settings, hold_seconds=3600, on_change=changed)
    reconciler = Reconciler(
        library_definition,
        library,
        journal,
        executor,
        policy or PlanPolicy(dismount_delay_s=3600),
        on_change=changed,
        retry_delay_s=0.005,
        inventory_interval_s=inventory_interval_s,
    )
    await reconciler.recover()
    task = asyncio.create_task(reconciler.run(tick_s=0.01))
    try:
        yield Harness(journal, library, reconciler, executor, published)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await reconciler.drain(timeout_s=60)
        await journal.close()


@dataclass
class SettableClock:
    """A clock a test moves by hand: leases and delays end when the test says."""

    now: float = 5000.0

    def __call__(self) -> float:
        return self.now
