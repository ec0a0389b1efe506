"""The driver contract: one suite, run against every backend.

`sim`: the SimulatedLibrary in-process. `mtx`: MtxLibrary driving the simulator's
stand-in `mtx`/`mt` executables, on the same kind of state file. `scsi`: MtxLibrary
driving Debian's own /usr/sbin/mtx and mt-st against the SCSI emulation of the same
state (the umockdev shell). All see the same library, the same physics and the
same injected faults, so whatever differs here is a difference between the
backends, not between the setups.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.base import DriveStatus, Inventory, TapeLibrary
from drivers.definition import DriveDefinition, LibraryDefinition, TapeDefinition
from drivers.errors import (
    DestinationFullError,
    DriverError,
    HardwareError,
    IllegalRequestError,
    IncompatibleMediaError,
    InterventionRequiredError,
    MediumRemovalPreventedError,
    NotReadyError,
    RetryableError,
    SourceEmptyError,
    UnitAttentionError,
)
from drivers.mtx.backend import MtxLibrary
from drivers.sim.library import SimulatedLibrary
from drivers.sim.scsi.emulator import EmulatedDevices
from drivers.sim.standins import install_standins
from drivers.sim.state import FaultError

SPEED = 1000.0
#: A bound for a drive to come online (17 ms of simulated time here), generous
#: for tools started on a busy machine.
READY_TIMEOUT_S = 60.0


def definition(*, offline_before_unload: bool = True) -> LibraryDefinition:
    return LibraryDefinition(
        name="contract",
        changer="/dev/sg7",
        slots=6,
        import_export=1,
        offline_before_unload=offline_before_unload,
        drives=(
            DriveDefinition(index=0, device="/dev/nst0", generation=8),
            DriveDefinition(index=1, device="/dev/nst1", generation=9),
        ),
        tapes=(
            TapeDefinition(barcode="A00001L8", slot=1),
            TapeDefinition(barcode="A00002L9", slot=2),
            TapeDefinition(barcode="A00003L6", slot=3),
            TapeDefinition(barcode="A00004L8", slot=4, write_protected=True),
        ),
    )


@dataclass
class Backend:
    name: str
    library: TapeLibrary
    #: The simulator behind the backend: faults go in here.
    sim: SimulatedLibrary


BACKENDS = ["sim", "mtx", "scsi"]


@contextlib.contextmanager
def open_backend(name: str, tmp_path: Path, defn: LibraryDefinition) -> Iterator[Backend]:
    state = tmp_path / "library.json"
    sim = SimulatedLibrary.open(defn, state_file=state, speed=SPEED)
    if name == "sim":
        yield Backend(name, sim, sim)
        return
    if name == "mtx":
        bin_dir = tmp_path / "bin"
        install_standins(bin_dir, state)
        yield Backend(name, mtx_library(defn, str(bin_dir / "mtx"), str(bin_dir / "mt")), sim)
        return
    with EmulatedDevices(state) as devices:
        env = devices.env({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        yield Backend(name, mtx_library(defn, "/usr/sbin/mtx", "/bin/mt", env), sim)


def mtx_library(
    defn: LibraryDefinition, mtx: str, mt: str, env: dict[str, str] | None = None
) -> MtxLibrary:
    return MtxLibrary(
        defn, mtx=mtx, mt=mt, env=env, timeout_s=30.0, retry_delay_s=0.01, kill_grace_s=5.0
    )


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    with open_backend(request.param, tmp_path, definition()) as opened:
        async with opened.library:
            yield opened


@pytest.fixture(params=BACKENDS)
async def self_unloading(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A library that rewinds and unthreads by itself when the robot takes a tape."""
    with open_backend(request.param, tmp_path, definition(offline_before_unload=False)) as opened:
        async with opened.library:
            yield opened


async def wait_online(library: TapeLibrary, drive: int) -> DriveStatus:
    """Poll like the worker does, until the drive is online or the timeout."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        status = await library.drive_status(drive)
        if status.online:
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"drive {drive} not online within {READY_TIMEOUT_S}s: {status}")
        await asyncio.sleep(0.005)


def labels(inventory: Inventory) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    for barcode in ("A00001L8", "A00002L9", "A00003L6", "A00004L8"):
        where = inventory.where(barcode)
        assert where is not None, barcode
        found[barcode] = where
    return found


# -- inventory --------------------------------------------------------------------------


async def test_inventory_shows_the_definition(backend: Backend) -> None:
    inventory = await backend.library.inventory()
    assert [(d.index, d.full) for d in inventory.drives] == [(0, False), (1, False)]
    assert [(s.number, s.full, s.barcode, s.import_export) for s in inventory.slots] == [
        (1, True, "A00001L8", False),
        (2, True, "A00002L9", False),
        (3, True, "A00003L6", False),
        (4, True, "A00004L8", False),
        (5, False, None, False),
        (6, False, None, False),
        (7, False, None, True),
    ]
    assert inventory.empty_storage_slots() == [5, 6]


async def test_unreadable_label_is_a_full_slot_without_barcode(backend: Backend) -> None:
    backend.sim.unreadable_label(2)
    slot = (await backend.library.inventory()).slot(2)
    assert (slot.full, slot.barcode) == (True, None)


# -- load, ready, unload, transfer --------------------------------------------------------


async def test_load_then_drive_comes_online(backend: Backend) -> None:
    library = backend.library
    await library.load(1, 0)
    inventory = await library.inventory()
    drive = inventory.drive(0)
    assert (drive.full, drive.barcode, drive.source_slot) == (True, "A00001L8", 1)
    assert not inventory.slot(1).full
    status = await wait_online(library, 0)
    assert status.loaded
    assert status.at_bot
    assert status.generation == 8
    assert status.density_code == 0x5E
    assert not status.write_protected
    await library.rewind(0)


async def test_load_is_not_online_before_ready(backend: Backend) -> None:
    # The drive stays not ready until the test says so, however slowly the tools
    # start on a busy machine: the first status after the move sees it loading.
    backend.sim.delay_ready(1, 1e9)
    await backend.library.load(2, 1)
    first = await backend.library.drive_status(1)
    assert first.loaded
    assert not first.online
    assert not first.at_bot
    with backend.sim.store.locked() as state:
        state.drive(1).ready_at = 0.0  # threaded now: the poll then sees it online
    status = await wait_online(backend.library, 1)
    assert status.generation == 9


async def test_empty_drive_status(backend: Backend) -> None:
    status = await backend.library.drive_status(1)
    assert (status.online, status.loaded, status.density_code) == (False, False, None)


async def test_write_protected_tape(backend: Backend) -> None:
    await backend.library.load(4, 0)
    status = await wait_online(backend.library, 0)
    assert status.write_protected


async def test_drive_asks_for_cleaning(backend: Backend) -> None:
    backend.sim.need_cleaning(0)
    assert (await backend.library.drive_status(0)).needs_cleaning


async def test_unload_returns_the_tape(backend: Backend) -> None:
    library = backend.library
    await library.load(1, 0)
    await wait_online(library, 0)
    await library.unload(0, 5)
    inventory = await library.inventory()
    assert not inventory.drive(0).full
    assert (inventory.slot(5).full, inventory.slot(5).barcode) == (True, "A00001L8")
    assert not (await library.drive_status(0)).loaded


async def test_unload_after_an_explicit_offline(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    """The worker (or a retry after a crash) may have offlined the drive already."""
    library = backend.library
    await library.load(1, 0)
    await wait_online(library, 0)
    await library.offline(0)
    assert not (await library.drive_status(0)).online
    await library.unload(0, 1)
    assert labels(await library.inventory())["A00001L8"] == ("slot", 1)


async def test_self_unloading_library_unloads_a_threaded_tape(self_unloading: Backend) -> None:
    library = self_unloading.library
    await library.load(2, 1)
    await wait_online(library, 1)
    await library.unload(1, 2)
    assert labels(await library.inventory())["A00002L9"] == ("slot", 2)


async def test_transfer_between_slots_and_to_the_mailslot(backend: Backend) -> None:
    library = backend.library
    await library.transfer(1, 6)
    await library.transfer(2, 7)
    found = labels(await library.inventory())
    assert found["A00001L8"] == ("slot", 6)
    assert found["A00002L9"] == ("slot", 7)


async def test_a_full_cycle_keeps_every_tape(backend: Backend) -> None:
    library = backend.library
    await library.load(1, 0)
    await library.load(2, 1)
    await asyncio.gather(wait_online(library, 0), wait_online(library, 1))
    await library.unload(1, 1)
    await library.unload(0, 2)
    found = labels(await library.inventory())
    assert found["A00001L8"] == ("slot", 2)
    assert found["A00002L9"] == ("slot", 1)


# -- physical errors -----------------------------------------------------------------------


async def test_load_from_an_empty_slot(backend: Backend) -> None:
    with pytest.raises(SourceEmptyError):
        await backend.library.load(5, 0)


async def test_load_into_a_full_drive(backend: Backend) -> None:
    await backend.library.load(1, 0)
    with pytest.raises(DestinationFullError):
        await backend.library.load(4, 0)


async def test_load_incompatible_media(backend: Backend) -> None:
    with pytest.raises(IncompatibleMediaError):
        await backend.library.load(3, 1)  # LTO-6 in an LTO-9 drive
    assert (await backend.library.inventory()).slot(3).full


async def test_unload_an_empty_drive(backend: Backend, request: pytest.FixtureRequest) -> None:
    with pytest.raises(SourceEmptyError):
        await backend.library.unload(0, 5)


async def test_unload_into_a_full_slot(backend: Backend) -> None:
    await backend.library.load(1, 0)
    await wait_online(backend.library, 0)
    with pytest.raises(DestinationFullError):
        await backend.library.unload(0, 2)
    assert (await backend.library.inventory()).drive(0).barcode == "A00001L8"


async def test_transfer_from_an_empty_slot(backend: Backend) -> None:
    with pytest.raises(SourceEmptyError):
        await backend.library.transfer(5, 6)


async def test_transfer_to_a_full_slot(backend: Backend) -> None:
    with pytest.raises(DestinationFullError):
        await backend.library.transfer(1, 2)


# -- injected faults -------------------------------------------------------------------------

FAULT_CLASSES: dict[FaultError, type[DriverError]] = {
    "hardware": HardwareError,
    "source_empty": SourceEmptyError,
    "destination_full": DestinationFullError,
    "unit_attention": UnitAttentionError,
    "not_ready": NotReadyError,
    "removal_prevented": MediumRemovalPreventedError,
    "illegal_request": IllegalRequestError,
    "manual_intervention": InterventionRequiredError,
    "power_cycle_required": InterventionRequiredError,
    "magazine_not_accessible": InterventionRequiredError,
    "magazine_removed": InterventionRequiredError,
}


@pytest.mark.parametrize("kind", list(FAULT_CLASSES))
async def test_injected_load_fault(backend: Backend, kind: FaultError) -> None:
    backend.sim.inject("load", kind, drive=0)
    with pytest.raises(FAULT_CLASSES[kind]):
        await backend.library.load(1, 0)
    # Nothing moved, and the fault fired once.
    assert labels(await backend.library.inventory())["A00001L8"] == ("slot", 1)
    await backend.library.load(1, 0)


async def test_injected_transfer_hardware_fault(backend: Backend) -> None:
    backend.sim.inject("transfer", "hardware")
    with pytest.raises(HardwareError):
        await backend.library.transfer(1, 5)


async def test_stuck_cartridge(backend: Backend) -> None:
    await backend.library.load(1, 0)
    await wait_online(backend.library, 0)
    backend.sim.stick("A00001L8")
    with pytest.raises(HardwareError):
        await backend.library.unload(0, 1)


async def test_dead_drive_refuses_a_load(backend: Backend) -> None:
    backend.sim.kill_drive(1)
    with pytest.raises(HardwareError):
        await backend.library.load(2, 1)


async def test_unit_attention_after_the_door_opened(backend: Backend) -> None:
    """The simulator and the stand-in report it on the move; Debian's mtx meets it
    on its MODE SENSE and clears it itself. Either way the tape is loaded once."""
    backend.sim.open_door()
    try:
        await backend.library.load(1, 0)
    except UnitAttentionError:
        assert backend.name != "scsi"
        await backend.library.load(1, 0)
    else:
        assert backend.name == "scsi"
    assert labels(await backend.library.inventory())["A00001L8"] == ("drive", 0)


async def test_inventory_after_the_door_opened(backend: Backend) -> None:
    """A backend may recover by itself (mtx retries a degraded listing) or report
    the unit attention; either way it never returns a wrong inventory."""
    backend.sim.open_door()
    try:
        inventory = await backend.library.inventory()
    except UnitAttentionError:
        inventory = await backend.library.inventory()
    assert len(inventory.slots) == 7
    assert labels(inventory)["A00004L8"] == ("slot", 4)


INVENTORY_FAULTS: list[FaultError] = [k for k in FAULT_CLASSES if k != "unit_attention"]


@pytest.mark.parametrize("kind", INVENTORY_FAULTS)
async def test_injected_inventory_fault(backend: Backend, kind: FaultError) -> None:
    # Debian's mtx reads the elements again without volume tags after a failure.
    backend.sim.inject("inventory", kind, count=2 if backend.name == "scsi" else 1)
    with pytest.raises(FAULT_CLASSES[kind]):
        await backend.library.inventory()
    assert len((await backend.library.inventory()).slots) == 7


async def test_unit_attention_that_does_not_clear(backend: Backend) -> None:
    """Retrying is the caller's business once the backend's own retries are spent."""
    backend.sim.inject("inventory", "unit_attention", count=10)
    with pytest.raises(RetryableError):
        await backend.library.inventory()


async def test_drive_status_not_ready(backend: Backend) -> None:
    backend.sim.inject("status", "not_ready", drive=0)
    with pytest.raises(NotReadyError):
        await backend.library.drive_status(0)
    assert not (await backend.library.drive_status(0)).loaded


async def test_offline_hardware_fault_stops_the_unload(backend: Backend) -> None:
    await backend.library.load(1, 0)
    await wait_online(backend.library, 0)
    backend.sim.inject("offline", "hardware", drive=0)
    with pytest.raises(HardwareError):
        await backend.library.unload(0, 1)
    assert (await backend.library.inventory()).drive(0).barcode == "A00001L8"
