"""The reconciler's own rules, one round at a time (no planning loop running): a real
journal file, the simulated library for the robot, a clock the test moves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.sim.library import SimulatedLibrary
from tests.worker.harness import SETTINGS, Harness, create_for_tape, definition, running_worker
from tests.worker.harness import SettableClock as Clock
from worker.core.actions import Action, Fail, Load, Unload
from worker.core.planner import PlanPolicy, plan
from worker.core.requests import RequestState
from worker.intake.destinations import DestinationEvent, record_events
from worker.runtime.executor import DriveWork, Executor
from worker.runtime.reconciler import (
    COALESCE,
    DEFER_S,
    MAX_REST_S,
    MIN_REST_S,
    Reconciler,
    coalescing_rest,
)
from worker.runtime.service import Service
from worker.seed.models import TaskDestinationBody
from worker.settings import Settings
from worker.state.journal import Journal, RequestRecord

HOLD_S = 600.0


@dataclass
class Rig:
    journal: Journal
    executor: Executor
    reconciler: Reconciler
    clock: Clock
    changed: list[set[int]]

    async def ready(self, destination_id: int, barcode: str, slot: int, drive: int) -> int:
        request = await create_for_tape(
            self.journal, destination_id, barcode, now=self.clock(), hold_seconds=HOLD_S
        )
        chain: list[DriveWork] = [Load(barcode, slot, drive, (request.id,))]
        self.executor.claim(drive, chain)
        await self.executor.run_chain(drive, chain)
        return request.id

    async def request(self, request_id: int) -> RequestRecord:
        record = await self.journal.request(request_id)
        assert record is not None
        return record


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    library_definition = definition(drives=2)
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    library = SimulatedLibrary.open(
        library_definition, state_file=tmp_path / "sim.json", speed=1000.0
    )
    await journal.sync_catalog(library_definition, 1000.0)
    changed: list[set[int]] = []

    async def on_change(destinations: set[int]) -> None:
        changed.append(destinations)

    clock = Clock()
    executor = Executor(
        library, journal, SETTINGS, hold_seconds=HOLD_S, on_change=on_change, clock=clock
    )
    reconciler = Reconciler(
        library_definition,
        library,
        journal,
        executor,
        PlanPolicy(dismount_delay_s=3600),
        on_change=on_change,
        clock=clock,
        retry_delay_s=0.005,
    )
    await reconciler.take_inventory()
    yield Rig(journal, executor, reconciler, clock, changed)
    await reconciler.drain(timeout_s=60)
    await journal.close()


async def test_leases_expire_at_their_end_and_not_before(rig: Rig) -> None:
    first = await rig.ready(1, "AAA001L9", 1, 0)
    rig.clock.now += 100
    second = await rig.ready(2, "AAA002L9", 2, 1)
    rig.clock.now += HOLD_S - 100 - 0.001
    await rig.reconciler.expire_leases()
    assert (await rig.request(first)).state is RequestState.READY
    rig.clock.now += 0.001
    rig.changed.clear()
    await rig.reconciler.expire_leases()
    expired = await rig.request(first)
    assert (expired.state, expired.reason) == (RequestState.RELEASED, "lease expired")
    assert (await rig.request(second)).state is RequestState.READY
    assert rig.changed == [{1}]


async def test_the_planner_sees_a_claimed_tape_where_it_is_headed(rig: Rig) -> None:
    chain: list[DriveWork] = [Load("AAA002L9", 2, 1, ())]
    rig.executor.claim(1, chain)
    snapshot, _ = await rig.reconciler.snapshot()
    moving = snapshot.tapes["AAA002L9"]
    assert (moving.slot, moving.drive) == (None, 1)
    [idle, busy] = snapshot.drives
    assert (idle.busy, busy.busy) == (False, True)
    resting = snapshot.tapes["AAA001L9"]
    assert (resting.slot, resting.drive) == (1, None)
    rig.executor.in_flight.release(1, ["AAA002L9"])
    snapshot, _ = await rig.reconciler.snapshot()
    assert (snapshot.tapes["AAA002L9"].slot, snapshot.tapes["AAA002L9"].drive) == (2, None)


async def test_no_round_moves_anything_while_the_changer_is_in_doubt_and_busy(rig: Rig) -> None:
    body = TaskDestinationBody.model_validate({"tape_barcode": "AAA001L9"})
    await record_events(
        rig.journal,
        [DestinationEvent("create", "7", 1, body, "test")],
        now=rig.clock(),
        hold_seconds=HOLD_S,
    )
    rig.executor.claim(1, [])
    rig.executor.in_flight.suspect()
    assert await rig.reconciler.round() == []
    rig.executor.in_flight.release(1, [])
    assert await rig.reconciler.round() != []
    assert not rig.executor.in_flight.needs_inventory
    await rig.reconciler.drain(timeout_s=60)
    loaded = await rig.journal.latest_request_for(1)
    assert loaded is not None
    assert loaded.state is RequestState.READY


async def test_a_round_with_nothing_changed_does_not_plan_again(rig: Rig) -> None:
    assert await rig.reconciler.round() == []
    plans = rig.reconciler.plans
    rig.clock.now += 10
    assert await rig.reconciler.round() == []
    assert rig.reconciler.plans == plans
    # A new request is a change: the next round plans, and mounts it.
    body = TaskDestinationBody.model_validate({"tape_barcode": "AAA001L9"})
    await record_events(
        rig.journal,
        [DestinationEvent("create", "7", 1, body, "test")],
        now=rig.clock(),
        hold_seconds=HOLD_S,
    )
    actions = await rig.reconciler.round()
    assert rig.reconciler.plans == plans + 1
    assert [type(a) for a in actions] == [Load]


async def test_a_change_of_requests_wakes_the_planner_at_once_while_a_drive_is_free(
    rig: Rig,
) -> None:
    await rig.ready(1, "AAA001L9", 1, 0)
    await rig.reconciler.snapshot()
    rig.reconciler.wake.clear()
    rig.reconciler.requests_changed()
    assert rig.reconciler.wake.is_set()


async def test_changes_of_requests_share_a_round_while_every_drive_is_held(rig: Rig) -> None:
    await rig.ready(1, "AAA001L9", 1, 0)
    await rig.ready(2, "AAA002L9", 2, 1)
    await rig.reconciler.snapshot()  # the state in memory, as a running daemon has it
    rig.reconciler.wake.clear()
    started = time.monotonic()
    for _ in range(3):
        rig.reconciler.requests_changed()
    # Nothing could be mounted now: the round waits for the changes that follow...
    assert not rig.reconciler.wake.is_set()
    # ...but not for long, and once for all of them.
    async with asyncio.timeout(30):
        await rig.reconciler.wake.wait()
    assert time.monotonic() - started >= DEFER_S * 0.9
    await rig.reconciler.wait_for_work(0)
    assert not rig.reconciler.wake.is_set()


async def test_the_daemon_hands_committed_changes_to_the_deferrable_wake_up(
    rig: Rig, tmp_path: Path
) -> None:
    await rig.ready(1, "AAA001L9", 1, 0)
    await rig.ready(2, "AAA002L9", 2, 1)
    await rig.reconciler.snapshot()
    service = Service(Settings(state_dir=tmp_path / "state"))
    service.reconciler = rig.reconciler
    rig.reconciler.wake.clear()
    # What both intakes call after each commit: no round at once, every drive is held.
    await service.destinations_changed({3})
    assert not rig.reconciler.wake.is_set()
    async with asyncio.timeout(30):
        await rig.reconciler.wake.wait()


async def test_a_change_that_frees_a_drive_is_planned_at_once(rig: Rig) -> None:
    first = await rig.ready(1, "AAA001L9", 1, 0)
    await rig.ready(2, "AAA002L9", 2, 1)
    await rig.reconciler.snapshot()
    rig.reconciler.wake.clear()
    rig.reconciler.requests_changed()
    assert not rig.reconciler.wake.is_set()
    async with rig.journal.transaction() as tx:
        await tx.release(await rig.request(first), rig.clock(), "done")
    rig.reconciler.requests_changed()
    assert rig.reconciler.wake.is_set()
    # The deferred wake-up is spent: the round about to run sees the change.
    await rig.reconciler.wait_for_work(0)
    await asyncio.sleep(DEFER_S * 2)
    assert not rig.reconciler.wake.is_set()


async def test_a_dismount_falling_due_is_planned_with_nothing_else_changed(rig: Rig) -> None:
    request = await rig.ready(1, "AAA001L9", 1, 0)
    async with rig.journal.transaction() as tx:
        await tx.release(await rig.request(request), rig.clock(), "done")
    assert await rig.reconciler.round() == []
    plans = rig.reconciler.plans
    # A pool's writable tape goes home after the pool's dismount delay.
    rig.clock.now += PlanPolicy().pool_dismount_delay_s - 1
    assert await rig.reconciler.round() == []
    assert rig.reconciler.plans == plans
    rig.clock.now += 1
    actions = await rig.reconciler.round()
    assert [type(a) for a in actions] == [Unload]


async def test_a_request_handed_to_the_executor_is_not_planned_twice(rig: Rig) -> None:
    body = TaskDestinationBody.model_validate({"tape_barcode": "AAA001L9"})
    await record_events(
        rig.journal,
        [DestinationEvent("create", "7", 1, body, "test")],
        now=rig.clock(),
        hold_seconds=HOLD_S,
    )
    model = rig.journal.model or await rig.journal.load_model()
    [pending] = list(model.pending)
    rig.reconciler._dispatched.add(pending.id)
    assert await rig.reconciler.round() == []
    # ...and the kept queue still has it, for when the chain hands it back.
    assert pending.id in model.pending
    rig.reconciler._dispatched.discard(pending.id)
    assert [type(a) for a in await rig.reconciler.round()] == [Load]


async def test_a_tape_released_by_a_destroy_stays_for_its_dismount_delay(tmp_path: Path) -> None:
    """A destroy's transaction releases the request, then starts the drive's idle
    clock. A round that read the journal between the two (one connection, shared
    by every task) saw a drive with no holder and no idle clock, which the planner
    rightly unloads at once (idle since before start-up). The planner now reads the
    state in memory, which changes only when a transaction commits: the tape stays
    until its dismount delay (a pool's writable tape: `pool_dismount_delay_s`)."""
    policy = PlanPolicy(dismount_delay_s=3600, spare_drives=0)
    async with running_worker(tmp_path, definition(drives=2), policy=policy) as worker:
        # Each cycle races a round (woken by the ready) against the destroy.
        for destination in range(1, 21):
            await worker.submit("create", destination, tape_barcode="AAA001L9")
            await worker.wait_for(destination, "ready")
            await worker.submit("destroy", destination)
            released = await worker.wait_for(destination, "released")
            await _two_rounds_after(worker, time.monotonic())
            kinds = [op.kind for op in await worker.journal.operations()]
            assert "unload" not in kinds, f"unloaded after destroy {destination}: {kinds}"
            [drive, _] = await worker.journal.drives()
            assert drive.barcode == "AAA001L9"
            assert drive.idle_since == released.updated
            snapshot, pending = await worker.reconciler.snapshot()
            # A pool's writable tape: it goes home once idle for the pool's delay.
            stays = released.updated + policy.pool_dismount_delay_s - 1
            assert plan(snapshot, pending, policy, stays) == []
            due = plan(snapshot, pending, policy, stays + 1)
            assert due == [Unload(drive=0, barcode="AAA001L9", slot=1)]


async def _two_rounds_after(worker: Harness, moment: float) -> None:
    """Until a planning round that began after `moment` has ended."""
    reconciler = worker.reconciler
    first = await worker.wait_until(
        "a round after the release", _heartbeat_after(reconciler, moment)
    )
    await worker.wait_until("the next round", _heartbeat_after(reconciler, first))


def _heartbeat_after(
    reconciler: Reconciler, moment: float
) -> Callable[[], Awaitable[float | None]]:
    async def check() -> float | None:
        return reconciler.heartbeat if reconciler.heartbeat > moment else None

    return check


def test_a_round_is_followed_by_a_rest_in_proportion_capped_and_none_when_cheap() -> None:
    # A burst's changes wait for one round instead of starting one each.
    assert coalescing_rest(0.1) == pytest.approx(0.1 * COALESCE)
    assert coalescing_rest(3600.0) == MAX_REST_S
    assert coalescing_rest(MIN_REST_S / COALESCE / 2) == 0.0


async def test_the_tapes_views_are_kept_until_a_tape_changes(rig: Rig) -> None:
    first, _ = await rig.reconciler.snapshot()
    again, _ = await rig.reconciler.snapshot()
    assert again.tapes is first.tapes
    await rig.journal.update_tape("AAA001L9", need_to_check=True)
    changed, _ = await rig.reconciler.snapshot()
    assert changed.tapes["AAA001L9"].need_to_check
    assert not first.tapes["AAA001L9"].need_to_check
    async with rig.journal.transaction() as tx:
        await tx.move_tape("AAA002L9", slot=None, drive=1, now=rig.clock(), mounted=True)
    moved, _ = await rig.reconciler.snapshot()
    assert (moved.tapes["AAA002L9"].slot, moved.tapes["AAA002L9"].drive) == (None, 1)
    assert 2 in moved.free_slots
    assert 2 not in first.free_slots


async def test_a_plan_gone_stale_for_a_request_is_skipped_for_it_not_failed_whole(
    rig: Rig,
) -> None:
    """An event that commits while a round plans (here a destroy) ends the request the
    plan still names: that action is dropped, the rest of the plan is carried out."""
    [gone, kept] = [
        await create_for_tape(rig.journal, d, "AAA001L9", now=rig.clock(), hold_seconds=HOLD_S)
        for d in (1, 2)
    ]
    await record_events(
        rig.journal,
        [DestinationEvent("destroy", "7", 1, None, "test")],
        now=rig.clock(),
        hold_seconds=HOLD_S,
    )
    stale: list[Action] = [Fail(gone.id, "planned before the destroy"), Fail(kept.id, "still true")]
    await rig.reconciler._dispatch(stale, rig.clock())
    assert (await rig.request(gone.id)).state is RequestState.RELEASED
    failed = await rig.request(kept.id)
    assert (failed.state, failed.reason) == (RequestState.FAILED, "still true")
