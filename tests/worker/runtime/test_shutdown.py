"""Stopping is bounded: a move that never ends does not hold a shutdown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from drivers.sim.library import SimulatedLibrary
from tests.worker.harness import Harness, definition, running_worker
from worker.core.actions import Action
from worker.core.planner import PlanPolicy
from worker.intake.destinations import DestinationEvent, record_events
from worker.runtime.reconciler import Reconciler
from worker.seed.models import TaskDestinationBody
from worker.state.journal import OperationRecord


def _robot_never_finishes(worker: Harness) -> None:
    # A move of 7 s takes 7e9 s at this speed: as good as a robot that hangs.
    with worker.library.store.locked() as state:
        state.speed = 1e-9


async def _load_in_flight(worker: Harness) -> OperationRecord | None:
    begun = await worker.journal.operations("intent")
    return begun[0] if begun else None


async def test_drain_stops_waiting_for_a_move_that_never_ends(tmp_path: Path) -> None:
    async with running_worker(tmp_path, definition(drives=1)) as worker:
        _robot_never_finishes(worker)
        await worker.submit("create", 1, tape_barcode="AAA001L9")
        op = await worker.wait_until("the load to begin", lambda: _load_in_flight(worker))
        assert op.kind == "load"
        left = await worker.reconciler.drain(timeout_s=0.2)
        assert left == ["drive 0: load AAA001L9 from slot 1"]
        assert not worker.reconciler.busy
        assert not worker.executor.robot_busy
        # The journal still says the load was begun and not finished: the next start
        # marks it interrupted. The cancelled move gave the robot back.
        assert [o.id for o in await worker.journal.operations("intent")] == [op.id]
        with worker.library.store.locked() as state:
            state.speed = 1000.0
        async with asyncio.timeout(30):
            inventory = await worker.library.inventory()
        assert inventory.slot(1).barcode == "AAA001L9"


async def test_drain_with_nothing_in_flight_returns_at_once(tmp_path: Path) -> None:
    async with running_worker(tmp_path, definition(drives=1)) as worker:
        assert await worker.reconciler.drain(timeout_s=0) == []


class ObservedReconciler(Reconciler):
    """The real reconciler, telling the test when a planning round is over."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.round_over = asyncio.Event()

    async def round(self) -> list[Action]:
        planned = await super().round()
        self.round_over.set()
        return planned


async def test_stopping_the_planning_loop_is_never_lost(tmp_path: Path) -> None:
    """A cancellation that arrives just as the loop is woken still ends it (the
    teardown of a test once hung on this for 25 minutes)."""
    async with running_worker(tmp_path, definition(drives=1)) as worker:

        async def changed(_: set[int]) -> None:
            reconciler.wake.set()

        reconciler = ObservedReconciler(
            definition(drives=1),
            worker.library,
            worker.journal,
            worker.executor,
            PlanPolicy(),
            on_change=changed,
        )
        planning = asyncio.create_task(reconciler.run(tick_s=3600))
        await reconciler.round_over.wait()
        # The loop now waits for work: wake it, and stop it while it wakes.
        reconciler.wake.set()
        await asyncio.sleep(0)
        planning.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(30):
                await planning


def _ejected_in_drive_0(library: SimulatedLibrary) -> None:
    """As a stop between `mt offline` and the robot's move leaves it: the cartridge
    of slot 1 in drive 0, unthreaded."""
    with library.store.locked() as state:
        state.slot(1).barcode = None
        drive = state.drive(0)
        drive.barcode, drive.source_slot, drive.threaded = "AAA001L9", 1, False


async def test_an_unload_cut_after_offline_is_finished_at_start_up(tmp_path: Path) -> None:
    async with running_worker(
        tmp_path, definition(drives=1), prepare=_ejected_in_drive_0
    ) as worker:
        [unload] = await worker.journal.operations("done")
        assert (unload.kind, unload.barcode, unload.slot) == ("unload", "AAA001L9", 1)
        await worker.submit("create", 1, tape_barcode="AAA001L9")
        ready = await worker.wait_for(1, "ready")
        assert (ready.drive, ready.attempts) == (0, 0)
        [drive] = await worker.journal.drives()
        assert (drive.up, drive.failures) == (True, 0)


async def test_a_cartridge_unthreaded_in_its_drive_is_put_back_and_loaded_again(
    tmp_path: Path,
) -> None:
    """`mt offline` without the robot's move (a stop the start-up did not see, or an
    operator): the next request for the tape must not wait on the unthreaded
    cartridge for the ready timeout, nor count it against a sound drive."""
    async with running_worker(tmp_path, definition(drives=1)) as worker:
        await worker.submit("create", 1, tape_barcode="AAA001L9")
        await worker.wait_for(1, "ready", timeout=60)
        await worker.library.offline(0)
        # One commit hands the tape from one destination to the next, so that no
        # planning round sees it idle (an idle tape may go home on its own).
        body = TaskDestinationBody.model_validate({"tape_barcode": "AAA001L9"})
        await record_events(
            worker.journal,
            [
                DestinationEvent("destroy", "7", 1, None, "test"),
                DestinationEvent("create", "7", 2, body, "test"),
            ],
            now=time.time(),
            hold_seconds=3600,
        )
        worker.reconciler.wake.set()
        ready = await worker.wait_for(2, "ready", timeout=60)
        assert (ready.drive, ready.attempts) == (0, 0)
        done = [(o.kind, o.slot) for o in await worker.journal.operations("done")]
        assert done == [("load", 1), ("unload", 1), ("load", 1)]
        assert not await worker.journal.operations("failed")
        [drive] = await worker.journal.drives()
        assert (drive.up, drive.failures) == (True, 0)
