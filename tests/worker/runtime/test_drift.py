"""Drift: the library changes behind the running daemon; a periodic inventory finds it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from drivers.sim.library import SimulatedLibrary
from tests.worker.harness import Harness, Published, definition, running_worker

REPO = Path(__file__).resolve().parents[3]
#: Often, so that the tests wait for the check's result, never for its period.
PERIOD_S = 0.02


def someone_else(tmp_path: Path) -> SimulatedLibrary:
    """Another program (an operator's `mtx`, the front panel) on the same library."""
    return SimulatedLibrary.open(definition(drives=1), state_file=tmp_path / "sim.json", speed=1000)


async def _published(worker: Harness, wanted: Published) -> bool:
    return wanted in worker.published


async def _surprises(worker: Harness) -> list[str]:
    return [item["what"] for item in await worker.journal.surprises()]


async def test_a_tape_unloaded_by_hand_sends_its_ready_request_back_to_pending(
    tmp_path: Path,
) -> None:
    async with running_worker(
        tmp_path, definition(drives=1), inventory_interval_s=PERIOD_S
    ) as worker:
        await worker.submit("create", 1, tape_barcode="AAA001L9")
        await worker.wait_for(1, "ready")
        await someone_else(tmp_path).unload(0, 1)
        back = Published(1, "pending", None, "tape AAA001L9 left drive 0: now slot 1")
        await worker.wait_until("the request back to pending", lambda: _published(worker, back))
        assert await _surprises(worker) == [
            "tape AAA001L9 found in slot 1; the journal had it in drive 0"
        ]
        # The planner mounts it again from where it now is.
        ready = await worker.wait_for(1, "ready")
        assert ready.drive == 0
        loads = [op for op in await worker.journal.operations("done") if op.kind == "load"]
        assert len(loads) == 2
        # The operator sees it in `tapeworker status`.
        status = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "worker.cli", "status", "--json"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "TAPEWORKER_STATE_DIR": str(tmp_path)},
            timeout=120,
            check=True,
        )
        [surprise] = json.loads(status.stdout)["surprises"]
        assert surprise["what"] == "tape AAA001L9 found in slot 1; the journal had it in drive 0"


async def test_a_cartridge_that_appears_is_recorded(tmp_path: Path) -> None:
    async with running_worker(
        tmp_path, definition(drives=1), inventory_interval_s=PERIOD_S
    ) as worker:
        with someone_else(tmp_path).store.locked() as state:
            state.slot(7).barcode = "NEW001L9"
        found = "tape NEW001L9 found in slot 7: not in the catalog"
        await worker.wait_until("the new cartridge", lambda: _found(worker, found))
        tape = await worker.journal.tape("NEW001L9")
        assert tape is not None
        assert (tape.slot, tape.pool) == (7, None)


async def _found(worker: Harness, what: str) -> bool:
    return what in await _surprises(worker)


async def _checked(worker: Harness, count: int) -> bool:
    return worker.reconciler.inventory_checks >= count


async def test_a_periodic_check_that_finds_nothing_new_writes_nothing(tmp_path: Path) -> None:
    async with running_worker(
        tmp_path, definition(drives=1), inventory_interval_s=PERIOD_S
    ) as worker:
        await worker.submit("create", 1, tape_barcode="AAA001L9")
        await worker.wait_for(1, "ready")
        taken = (await worker.journal.last_inventory() or {})["taken"]
        checks = worker.reconciler.inventory_checks
        await worker.wait_until("three more checks", lambda: _checked(worker, checks + 3))
        assert (await worker.journal.last_inventory() or {})["taken"] == taken
        assert await _surprises(worker) == []
        assert (await worker.request(1)).state.value == "ready"
