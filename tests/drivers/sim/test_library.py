"""SimulatedLibrary: persistence, physics, readiness, every fault, and a state file
shared with another process (the stand-in tools, the fault CLI)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from drivers.base import DriveStatus
from drivers.definition import DriveDefinition, LibraryDefinition, TapeDefinition
from drivers.errors import (
    DestinationFullError,
    DriverError,
    HardwareError,
    IllegalRequestError,
    IncompatibleMediaError,
    MediumRemovalPreventedError,
    NotReadyError,
    SourceEmptyError,
    UnitAttentionError,
)
from drivers.sim.library import SimulatedLibrary
from drivers.sim.standins import install_standins
from drivers.sim.state import FaultError, Operation

REPO = Path(__file__).resolve().parents[3]
SPEED = 1000.0
READY_TIMEOUT_S = 5.0


def small(*, offline_before_unload: bool = True) -> LibraryDefinition:
    return LibraryDefinition(
        changer="/dev/sg7",
        slots=4,
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
            TapeDefinition(barcode="CLN001CU", slot=5),
        ),
    )


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "library.json"


@pytest.fixture
def library(state_file: Path) -> SimulatedLibrary:
    return SimulatedLibrary.open(small(), state_file=state_file, speed=SPEED)


async def wait_online(library: SimulatedLibrary, drive: int) -> DriveStatus:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        status = await library.drive_status(drive)
        if status.online:
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"drive {drive} not online within {READY_TIMEOUT_S}s")
        await asyncio.sleep(0.002)


# -- persistence ------------------------------------------------------------------------


async def test_state_survives_reopening(state_file: Path, library: SimulatedLibrary) -> None:
    await library.load(1, 0)
    reopened = SimulatedLibrary.open(small(), state_file=state_file, speed=500.0)
    inventory = await reopened.inventory()
    assert inventory.drive(0).barcode == "A00001L8"
    assert not inventory.slot(1).full
    # Reopening keeps the cartridges where they are but takes the new speed.
    assert reopened.store.read().speed == 500.0
    assert reopened.store.read().moves == 1


async def test_in_memory_library_has_no_file() -> None:
    library = SimulatedLibrary.open(small(), speed=SPEED)
    await library.load(2, 1)
    assert (await library.inventory()).drive(1).barcode == "A00002L9"
    assert library.store.path is None


async def test_tape_defined_in_a_drive_goes_home_to_a_free_slot(state_file: Path) -> None:
    definition = small().model_copy(
        update={"tapes": (TapeDefinition(barcode="A00009L9", drive=1),)}
    )
    library = SimulatedLibrary.open(definition, state_file=state_file, speed=SPEED)
    drive = (await library.inventory()).drive(1)
    assert (drive.barcode, drive.source_slot) == ("A00009L9", 1)
    assert (await library.drive_status(1)).online


# -- physics ----------------------------------------------------------------------------


async def test_load_and_ready(library: SimulatedLibrary) -> None:
    library.delay_ready(0, 200.0)  # 0.2 s: long enough to see it loading
    await library.load(1, 0)
    loading = await library.drive_status(0)
    assert (loading.loaded, loading.online, loading.at_bot) == (True, False, False)
    ready = await wait_online(library, 0)
    assert (ready.at_bot, ready.generation, ready.density_code) == (True, 8, 0x5E)
    assert library.store.read().mount_counts == {"A00001L8": 1}


async def test_every_move_stamps_the_cartridge(tmp_path: Path, library: SimulatedLibrary) -> None:
    """The tape's date_move: load, unload and transfer each stamp it, in either process."""
    before = time.time()
    await library.load(1, 0)
    loaded_at = library.store.read().last_moved["A00001L8"]
    assert loaded_at >= before
    await wait_online(library, 0)
    await library.unload(0, 1)
    assert library.store.read().last_moved["A00001L8"] > loaded_at
    assert "A00002L9" not in library.store.read().last_moved
    bin_dir = tmp_path / "bin"
    install_standins(bin_dir, library.store.path or tmp_path)
    moved = run_tool(bin_dir, "mtx", "-f", "/dev/sg7", "transfer", "2", "4")
    assert moved.returncode == 0, moved.stderr
    assert library.store.read().last_moved["A00002L9"] >= before


async def test_load_source_empty(library: SimulatedLibrary) -> None:
    with pytest.raises(SourceEmptyError) as caught:
        await library.load(4, 0)
    assert caught.value.sense is not None
    assert (caught.value.sense.asc, caught.value.sense.ascq) == (0x3B, 0x0E)


async def test_load_destination_full(library: SimulatedLibrary) -> None:
    await library.load(1, 0)
    with pytest.raises(DestinationFullError):
        await library.load(2, 0)


@pytest.mark.parametrize(("slot", "drive"), [(3, 1), (2, 0)])
async def test_load_incompatible_media(library: SimulatedLibrary, slot: int, drive: int) -> None:
    # LTO-6 in an LTO-9 drive (one generation back only from LTO-8 on); LTO-9 in LTO-8.
    with pytest.raises(IncompatibleMediaError):
        await library.load(slot, drive)


async def test_cleaning_cartridge_loads_anywhere_and_cleans(library: SimulatedLibrary) -> None:
    library.need_cleaning(1)
    assert (await library.drive_status(1)).needs_cleaning
    await library.load(5, 1)
    assert not (await library.drive_status(1)).needs_cleaning


async def test_bad_element_numbers(library: SimulatedLibrary) -> None:
    with pytest.raises(IllegalRequestError):
        await library.load(9, 0)
    with pytest.raises(IllegalRequestError):
        await library.load(1, 5)


async def test_removal_prevented_until_offlined(library: SimulatedLibrary) -> None:
    await library.load(1, 0)
    await wait_online(library, 0)
    with library.store.locked() as state, pytest.raises(MediumRemovalPreventedError):
        state.begin_unload(0, 1)
    await library.offline(0)
    assert not (await library.drive_status(0)).loaded
    with library.store.locked() as state:
        assert state.begin_unload(0, 1) > 0


async def test_unload_offlines_first_where_the_definition_says(library: SimulatedLibrary) -> None:
    await library.load(1, 0)
    await library.unload(0, 4)
    inventory = await library.inventory()
    assert (inventory.slot(4).barcode, inventory.drive(0).full) == ("A00001L8", False)


async def test_self_unloading_library(state_file: Path) -> None:
    library = SimulatedLibrary.open(
        small(offline_before_unload=False), state_file=state_file, speed=SPEED
    )
    await library.load(2, 1)
    with library.store.locked() as state:
        threaded = state.begin_unload(1, 2)
    assert threaded > state.timing().move()  # rewind and unthread come first
    await library.unload(1, 2)
    assert (await library.inventory()).slot(2).barcode == "A00002L9"


async def test_unload_errors(library: SimulatedLibrary) -> None:
    with pytest.raises(SourceEmptyError):
        await library.unload(0, 4)
    await library.load(1, 0)
    with pytest.raises(DestinationFullError):
        await library.unload(0, 2)


async def test_transfer(library: SimulatedLibrary) -> None:
    await library.transfer(1, 4)
    await library.transfer(4, 1)
    with pytest.raises(SourceEmptyError):
        await library.transfer(4, 1)
    with pytest.raises(DestinationFullError):
        await library.transfer(1, 2)
    assert (await library.inventory()).where("A00001L8") == ("slot", 1)


async def test_rewind_needs_a_tape(library: SimulatedLibrary) -> None:
    with pytest.raises(NotReadyError):
        await library.rewind(0)
    await library.load(1, 0)
    await library.rewind(0)


async def test_one_robot_move_at_a_time(library: SimulatedLibrary) -> None:
    move = library.store.read().timing().move()
    started = time.monotonic()
    await asyncio.gather(library.load(1, 0), library.load(2, 1))
    assert time.monotonic() - started >= 2 * move


# -- faults -----------------------------------------------------------------------------

FAULT_CLASSES: dict[FaultError, type[DriverError]] = {
    "hardware": HardwareError,
    "source_empty": SourceEmptyError,
    "destination_full": DestinationFullError,
    "unit_attention": UnitAttentionError,
    "not_ready": NotReadyError,
    "removal_prevented": MediumRemovalPreventedError,
    "illegal_request": IllegalRequestError,
}


@pytest.mark.parametrize("kind", list(FAULT_CLASSES))
@pytest.mark.parametrize("op", ["load", "inventory", "status", "transfer", "offline"])
async def test_every_fault_kind_on_every_operation(
    library: SimulatedLibrary, op: Operation, kind: FaultError
) -> None:
    library.inject(op, kind)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "load": lambda: library.load(1, 0),
        "inventory": library.inventory,
        "status": lambda: library.drive_status(0),
        "transfer": lambda: library.transfer(1, 4),
        "offline": lambda: library.offline(0),
    }
    with pytest.raises(FAULT_CLASSES[kind]):
        await calls[op]()
    await calls[op]()  # consumed


async def test_unload_fault_and_count(library: SimulatedLibrary) -> None:
    await library.load(1, 0)
    library.inject("unload", "hardware", count=2)
    for _ in range(2):
        with pytest.raises(HardwareError):
            await library.unload(0, 1)
    await library.unload(0, 1)


async def test_fault_matches_its_drive_and_slot(library: SimulatedLibrary) -> None:
    library.inject("load", "hardware", drive=1)
    library.inject("load", "not_ready", slot=3)
    await library.load(1, 0)
    with pytest.raises(HardwareError):
        await library.load(2, 1)
    assert [f.slot for f in library.store.read().faults.scripted] == [3]


async def test_fault_rates_are_seeded(state_file: Path) -> None:
    outcomes: list[list[bool]] = []
    for run in range(2):
        path = state_file.with_name(f"rate{run}.json")
        library = SimulatedLibrary.open(small(), state_file=path, speed=SPEED)
        library.inject_rate("status", "not_ready", 0.5, seed=7)
        seen: list[bool] = []
        for _ in range(20):
            try:
                await library.drive_status(0)
                seen.append(True)
            except NotReadyError:
                seen.append(False)
        outcomes.append(seen)
    assert outcomes[0] == outcomes[1]
    assert True in outcomes[0]
    assert False in outcomes[0]


async def test_open_door_gives_one_unit_attention(library: SimulatedLibrary) -> None:
    library.open_door()
    # The drives do not see the changer's door.
    await library.drive_status(0)
    with pytest.raises(UnitAttentionError):
        await library.inventory()
    await library.inventory()


async def test_an_import_gives_one_unit_attention_then_shows(library: SimulatedLibrary) -> None:
    await library.transfer(5, 4)  # empty the mail slot
    library.import_cartridge("B00009L8", 5)
    with pytest.raises(UnitAttentionError):
        await library.load(1, 0)
    assert (await library.inventory()).where("B00009L8") == ("slot", 5)
    with pytest.raises(ValueError, match="not an empty import/export slot"):
        library.import_cartridge("B00010L8", 5)


async def test_kill_drive(library: SimulatedLibrary) -> None:
    library.kill_drive(0, "fan failure")
    with pytest.raises(HardwareError, match="fan failure"):
        await library.drive_status(0)
    with pytest.raises(HardwareError):
        await library.load(1, 0)
    library.clear_faults()
    await library.load(1, 0)


async def test_stuck_cartridge(library: SimulatedLibrary) -> None:
    await library.load(1, 0)
    library.stick("A00001L8")
    with pytest.raises(HardwareError, match="stuck"):
        await library.unload(0, 1)
    library.clear_faults()
    await library.unload(0, 1)


async def test_unreadable_label(library: SimulatedLibrary) -> None:
    library.unreadable_label(2)
    slot = (await library.inventory()).slot(2)
    assert (slot.full, slot.barcode) == (True, None)


async def test_slow_inventory(library: SimulatedLibrary) -> None:
    library.slow_inventory(100.0)  # 0.1 s at this speed
    started = time.monotonic()
    await library.inventory()
    assert time.monotonic() - started >= 0.1


async def test_clear_faults(library: SimulatedLibrary) -> None:
    library.inject("load", "hardware", count=5)
    library.inject_rate("inventory", "hardware", 1.0, seed=1)
    library.open_door()
    library.slow_inventory(1000.0)
    library.delay_ready(0, 1000.0)
    library.clear_faults()
    await library.inventory()
    await library.load(1, 0)
    await wait_online(library, 0)


# -- two processes, one library -------------------------------------------------------------


def run_tool(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_standin_and_library_share_the_state(
    tmp_path: Path, state_file: Path, library: SimulatedLibrary
) -> None:
    bin_dir = tmp_path / "bin"
    install_standins(bin_dir, state_file)
    await library.load(1, 0)
    status = run_tool(bin_dir, "mtx", "-f", "/dev/sg7", "status")
    assert "Data Transfer Element 0:Full (Storage Element 1 Loaded):VolumeTag = A00001L8" in (
        status.stdout
    )
    moved = run_tool(bin_dir, "mtx", "-f", "/dev/sg7", "transfer", "2", "4")
    assert moved.returncode == 0, moved.stderr
    assert (await library.inventory()).where("A00002L9") == ("slot", 4)
    # A fault injected in-process fires in the other process, and only once.
    library.inject("transfer", "hardware")
    failed = run_tool(bin_dir, "mtx", "-f", "/dev/sg7", "transfer", "4", "2")
    assert failed.returncode == 1
    assert "Sense Key=Hardware Error" in failed.stderr
    assert library.store.read().faults.scripted == []


async def test_fault_cli_reaches_the_library(state_file: Path, library: SimulatedLibrary) -> None:
    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "drivers.sim", "fault", "--state", str(state_file), *args],
            cwd=REPO,
            check=check,
            capture_output=True,
            text=True,
            timeout=30,
        )

    cli("inject", "load", "not_ready", "--drive", "0", "--count", "2")
    cli("kill-drive", "1", "--reason", "smoke")
    cli("unreadable-label", "3")
    faults = library.store.read().faults
    assert [(f.op, f.error, f.drive, f.count) for f in faults.scripted] == [
        ("load", "not_ready", 0, 2)
    ]
    with pytest.raises(HardwareError, match="smoke"):
        await library.drive_status(1)
    assert (await library.inventory()).slot(3).barcode is None
    cli("clear")
    await library.load(1, 0)
    await library.transfer(5, 4)  # empty the mail slot
    cli("import", "B00009L8", "5")
    assert library.store.read().faults.import_attention
    refused = cli("import", "B00010L8", "5", check=False)
    assert refused.returncode == 1
    assert "slot 5 is not an empty import/export slot" in refused.stderr


def test_robot_is_shared_across_processes(tmp_path: Path, state_file: Path) -> None:
    library = SimulatedLibrary.open(small(), state_file=state_file, speed=SPEED)
    bin_dir = tmp_path / "bin"
    install_standins(bin_dir, state_file)
    with library.store.robot():
        child = subprocess.Popen(
            [str(bin_dir / "mtx"), "-f", "/dev/sg7", "load", "1", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The child cannot move while we hold the robot; half a second is ample
        # for it to start and reach the lock.
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.5)
        assert library.store.read().moves == 0
    out, err = child.communicate(timeout=30)
    assert (child.returncode, out, err) == (
        0,
        "Loading media from Storage Element 1 into drive 0...done\n",
        "",
    )
    assert library.store.read().moves == 1
