"""Policy under injected hardware faults: retry, mark down, need_to_check, fail with a reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.worker.harness import SETTINGS, Harness, definition, running_worker
from worker.core.actions import Load
from worker.core.requests import RequestState
from worker.runtime.executor import DriveWork
from worker.state.journal import DriveRecord, RequestRecord, TapeRecord


async def test_a_dead_drive_is_marked_down_and_its_work_goes_elsewhere(tmp_path: Path) -> None:
    async with running_worker(tmp_path, definition(drives=2)) as worker:
        worker.library.kill_drive(0)
        await worker.submit("create", 1, tape_barcode="AAA001L9")
        await worker.submit("create", 2, tape_barcode="AAA002L9")
        drives = await worker.wait_until(
            "drive 0 marked down",
            lambda: _down(worker),
        )
        assert drives[0].failures >= 2
        assert "down after repeated failures" in (drives[0].reason or "")
        # One of the two is ready on drive 1; the other waits for it.
        holder = await worker.wait_until("a request ready on drive 1", lambda: _on_drive(worker, 1))
        waiting = 3 - holder.destination_id
        assert (await worker.request(waiting)).state is RequestState.PENDING
        await worker.submit("destroy", holder.destination_id)
        served = await worker.wait_for(waiting, "ready")
        assert served.drive == 1


async def _on_drive(worker: Harness, drive: int) -> RequestRecord | None:
    for destination in (1, 2):
        record = await worker.journal.latest_request_for(destination)
        if record is not None and record.state is RequestState.READY and record.drive == drive:
            return record
    return None


async def _down(worker: Harness) -> list[DriveRecord] | None:
    drives = await worker.journal.drives()
    return drives if not drives[0].up else None


async def test_unit_attention_is_retried_and_the_changer_reinventoried(tmp_path: Path) -> None:
    async with running_worker(tmp_path, definition(drives=1)) as worker:
        before = (await worker.journal.last_inventory() or {})["taken"]
        worker.library.open_door()
        await worker.submit("create", 1, tape_barcode="AAA001L9")
        ready = await worker.wait_for(1, "ready")
        assert ready.drive == 0
        inventory = await worker.wait_until(
            "a fresh inventory",
            lambda: _inventory_after(worker, before),
        )
        assert inventory["drives"][0]["barcode"] == "AAA001L9"


async def _inventory_after(worker: Harness, taken: float) -> dict[str, Any] | None:
    inventory = await worker.journal.last_inventory()
    return inventory if inventory and inventory["taken"] > taken else None


async def test_a_slow_drive_gets_a_second_chance_then_is_ready(tmp_path: Path) -> None:
    async with running_worker(tmp_path, definition(drives=1), speed=100.0) as worker:
        # Not ready for 150 s (1.5 s here): longer than the 1 s ready timeout.
        worker.library.delay_ready(0, 150.0)
        await worker.submit("create", 1, tape_barcode="AAA001L9")
        ready = await worker.wait_for(1, "ready", timeout=15)
        assert ready.attempts == 1
        assert ready.drive == 0
        [failed] = await worker.journal.operations("failed")
        assert "not online" in (failed.error or "")


async def test_a_stuck_tape_is_marked_need_to_check(tmp_path: Path) -> None:
    async with running_worker(tmp_path, definition(drives=1)) as worker:
        await worker.submit("create", 1, tape_barcode="AAA001L9")
        await worker.wait_for(1, "ready")
        worker.library.stick("AAA001L9")
        await worker.submit("destroy", 1)
        await worker.submit("create", 2, tape_barcode="AAA002L9")
        tape = await worker.wait_until(
            "the stuck tape flagged", lambda: _flagged(worker, "AAA001L9")
        )
        assert tape.drive == 0
        [failed, *_] = await worker.journal.operations("failed")
        assert failed.kind == "unload"
        assert failed.error_class == "HardwareError"
        assert "stuck" in (failed.error or "")
        assert (await worker.request(2)).state is RequestState.PENDING


async def _flagged(worker: Harness, barcode: str) -> TapeRecord | None:
    tape = await worker.journal.tape(barcode)
    return tape if tape is not None and tape.need_to_check else None


async def test_an_unreadable_label_makes_the_tape_unknown(tmp_path: Path) -> None:
    async with running_worker(
        tmp_path, definition(drives=1), prepare=lambda lib: lib.unreadable_label(2)
    ) as worker:
        await worker.submit("create", 1, tape_barcode="AAA002L9")
        failed = await worker.wait_for(1, "failed")
        assert "AAA002L9" in (failed.reason or "")
        tape = await worker.journal.tape("AAA002L9")
        assert tape is not None
        assert not tape.known
        assert await worker.journal.operations() == []


async def test_a_tape_no_drive_can_write_fails_with_the_reason(tmp_path: Path) -> None:
    async with running_worker(tmp_path, definition(drives=1)) as worker:
        await worker.submit("create", 1, tape_barcode="OLD001L5")
        failed = await worker.wait_for(1, "failed")
        assert "OLD001L5" in (failed.reason or "")
        assert await worker.journal.operations() == []


async def test_retry_budget_ends_in_failed_with_the_reason(tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(update={"drive_down_after": 10})
    async with running_worker(tmp_path, definition(drives=1), settings=settings) as worker:
        worker.library.inject("load", "hardware", count=100)
        await worker.submit("create", 1, tape_barcode="AAA001L9")
        failed = await worker.wait_for(1, "failed")
        assert failed.attempts == 3
        assert failed.reason is not None
        assert failed.reason.startswith("HardwareError")
        state = json.loads((tmp_path / "sim.json").read_text())
        assert state["slots"][0]["barcode"] == "AAA001L9", "the tape never left its slot"


async def test_a_load_planned_for_a_destroyed_destination_moves_nothing(tmp_path: Path) -> None:
    async with running_worker(tmp_path, definition(drives=1)) as worker:
        worker.library.kill_drive(0)  # keeps the running planner's hands off
        await worker.submit("create", 1, tape_barcode="AAA001L9")
        request = await worker.request(1)
        await worker.submit("destroy", 1)
        worker.library.clear_faults()
        chain: list[DriveWork] = [Load("AAA001L9", 1, 0, (request.id,))]
        worker.executor.claim(0, chain)
        await worker.executor.run_chain(0, chain)
        assert (await worker.request(1)).state is RequestState.RELEASED
        assert await worker.journal.operations("done") == []
        state = json.loads((tmp_path / "sim.json").read_text())
        assert state["slots"][0]["barcode"] == "AAA001L9"


async def test_no_move_before_the_changer_is_reinventoried(tmp_path: Path) -> None:
    async with running_worker(tmp_path, definition(drives=2)) as worker:
        taken = (await worker.journal.last_inventory() or {})["taken"]
        # A move is in flight on drive 1 and an earlier error left the changer suspect.
        worker.executor.claim(1, [])
        worker.executor.in_flight.suspect()
        await worker.submit("create", 1, tape_barcode="AAA001L9")
        assert await worker.reconciler.round() == []
        assert (await worker.request(1)).state is RequestState.PENDING
        assert (await worker.journal.last_inventory() or {})["taken"] == taken
        worker.executor.in_flight.release(1, [])
        await worker.wait_for(1, "ready")
        assert (await worker.journal.last_inventory() or {})["taken"] > taken
