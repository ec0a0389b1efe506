"""MtxLibrary end to end against the simulator's stand-in `mtx` and `mt`: the
start-up check passes, the listing equals the simulator's own view, a load is
followed by polling `mt status` until online, the unload is verified, and failures
arrive as the right classes with command, exit status and sense attached.
(The backend-neutral contract lives in tests/drivers/test_contract.py.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from drivers.definition import DriveDefinition, LibraryDefinition, TapeDefinition
from drivers.errors import (
    DestinationFullError,
    HardwareError,
    SourceEmptyError,
    UnitAttentionError,
)
from drivers.mtx.backend import MtxLibrary
from drivers.sim.library import SimulatedLibrary
from drivers.sim.standins import install_standins

pytestmark = pytest.mark.integration

DEFINITION = LibraryDefinition(
    name="standins",
    changer="/dev/sg5",
    slots=5,
    import_export=1,
    drives=(
        DriveDefinition(index=0, device="/dev/nst1", generation=8),
        DriveDefinition(index=1, device="/dev/nst0", generation=9),
    ),
    tapes=(
        TapeDefinition(barcode="B00001L8", slot=1),
        TapeDefinition(barcode="B00002L9", slot=3),
    ),
)


def open_pair(tmp_path: Path) -> tuple[MtxLibrary, SimulatedLibrary]:
    state = tmp_path / "state.json"
    sim = SimulatedLibrary.open(DEFINITION, state_file=state, speed=1000.0)
    install_standins(tmp_path / "bin", state)
    lib = MtxLibrary(
        DEFINITION,
        mtx=str(tmp_path / "bin" / "mtx"),
        mt=str(tmp_path / "bin" / "mt"),
        timeout_s=30.0,
        retry_delay_s=0.01,
    )
    return lib, sim


async def wait_online(lib: MtxLibrary, drive: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (await lib.drive_status(drive)).online:
        assert time.monotonic() < deadline, f"drive {drive} not online in {timeout_s}s"
        await asyncio.sleep(0.05)


async def test_check_inventory_load_poll_unload(tmp_path: Path) -> None:
    lib, sim = open_pair(tmp_path)
    assert await lib.check() == []
    assert await lib.inventory() == await sim.inventory()

    # Drive index 1 is /dev/nst0 here: the element, not the st number, counts.
    await lib.load(3, 1)
    await wait_online(lib, 1)
    status = await lib.drive_status(1)
    assert (status.loaded, status.generation) == (True, 9)
    inventory = await lib.inventory()
    assert inventory.where("B00002L9") == ("drive", 1)
    assert inventory.drive(1).source_slot == 3
    assert inventory == await sim.inventory()

    await lib.unload(1, 3)
    inventory = await lib.inventory()
    assert inventory.where("B00002L9") == ("slot", 3)
    assert not inventory.drive(1).full


async def test_physical_errors_arrive_classified(tmp_path: Path) -> None:
    lib, _ = open_pair(tmp_path)
    with pytest.raises(SourceEmptyError) as empty:
        await lib.load(2, 0)
    assert empty.value.command is not None
    assert empty.value.command[1:] == ("-f", "/dev/sg5", "load", "2", "0")
    assert empty.value.returncode == 1
    await lib.load(1, 0)
    with pytest.raises(DestinationFullError):
        await lib.load(3, 0)


async def test_injected_faults_carry_their_sense(tmp_path: Path) -> None:
    lib, sim = open_pair(tmp_path)
    sim.inject("load", "hardware", drive=0)
    with pytest.raises(HardwareError) as hardware:
        await lib.load(1, 0)
    assert hardware.value.sense is not None
    assert hardware.value.sense.key == 0x4
    assert hardware.value.outcome_uncertain
    sim.clear_faults()
    sim.open_door()
    with pytest.raises(UnitAttentionError) as attention:
        await lib.load(1, 0)
    assert attention.value.sense is not None
    assert attention.value.sense.key == 0x6
