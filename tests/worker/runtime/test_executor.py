"""The executor on its own (no planning loop): a real journal file, the simulated
library for the robot; each chain is handed to it as the reconciler would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.sim.library import SimulatedLibrary
from tests.worker.harness import SETTINGS, create_for_tape, definition
from tests.worker.harness import SettableClock as Clock
from worker.core.actions import Load, Unload
from worker.core.requests import RequestState
from worker.runtime.executor import DriveWork, Executor
from worker.state.journal import Journal, RequestRecord

HOLD_S = 600.0


@dataclass
class Rig:
    journal: Journal
    library: SimulatedLibrary
    executor: Executor
    clock: Clock
    changed: list[set[int]]

    async def create(self, destination_id: int, barcode: str) -> RequestRecord:
        return await create_for_tape(
            self.journal, destination_id, barcode, now=self.clock(), hold_seconds=HOLD_S
        )

    async def run(self, drive: int, chain: list[DriveWork]) -> None:
        self.executor.claim(drive, chain)
        assert self.executor.in_flight.drive_busy(drive)
        await self.executor.run_chain(drive, chain)
        assert not self.executor.in_flight.drive_busy(drive)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    library_definition = definition(drives=2)
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    library = SimulatedLibrary.open(
        library_definition, state_file=tmp_path / "sim.json", speed=1000.0
    )
    await journal.sync_catalog(library_definition, 1000.0)
    await journal.apply_inventory(await library.inventory(), 1000.0)
    changed: list[set[int]] = []

    async def on_change(destinations: set[int]) -> None:
        changed.append(destinations)

    clock = Clock()
    executor = Executor(
        library, journal, SETTINGS, hold_seconds=HOLD_S, on_change=on_change, clock=clock
    )
    yield Rig(journal, library, executor, clock, changed)
    await journal.close()


async def test_a_load_makes_the_request_ready_for_one_lease(rig: Rig) -> None:
    request = await rig.create(1, "AAA001L9")
    await rig.run(0, [Load("AAA001L9", 1, 0, (request.id,))])
    ready = await rig.journal.request(request.id)
    assert ready is not None
    assert (ready.state, ready.drive, ready.lease_expires) == (
        RequestState.READY,
        0,
        rig.clock.now + HOLD_S,
    )
    tape = await rig.journal.tape("AAA001L9")
    assert tape is not None
    assert (tape.slot, tape.drive, tape.mount_count) == (None, 0, 1)
    assert [op.kind for op in await rig.journal.operations("done")] == ["load"]
    assert {1} in rig.changed


async def test_an_unload_puts_the_tape_back_and_leaves_a_sound_idle_drive(rig: Rig) -> None:
    request = await rig.create(1, "AAA001L9")
    await rig.run(0, [Load("AAA001L9", 1, 0, (request.id,))])
    async with rig.journal.transaction() as tx:
        await tx.release(request, rig.clock.now, "done")
    await rig.run(0, [Unload(drive=0, barcode="AAA001L9", slot=1)])
    tape = await rig.journal.tape("AAA001L9")
    assert tape is not None
    assert (tape.slot, tape.drive) == (1, None)
    [drive] = [d for d in await rig.journal.drives() if d.index == 0]
    assert (drive.barcode, drive.failures, drive.idle_since, drive.up) == (None, 0, None, True)


async def test_failures_of_a_dead_drive_count_until_it_is_down(rig: Rig) -> None:
    rig.library.kill_drive(0)
    request = await rig.create(1, "AAA001L9")
    for attempt in range(1, SETTINGS.drive_down_after + 1):
        await rig.run(0, [Load("AAA001L9", 1, 0, (request.id,))])
        [drive] = [d for d in await rig.journal.drives() if d.index == 0]
        assert drive.failures == attempt
        assert drive.up is (attempt < SETTINGS.drive_down_after)
        again = await rig.journal.request(request.id)
        assert again is not None
        assert again.attempts == attempt
    assert drive.reason is not None
    assert drive.reason.startswith("down after repeated failures")
    [other] = [d for d in await rig.journal.drives() if d.index == 1]
    assert (other.failures, other.up) == (0, True)
