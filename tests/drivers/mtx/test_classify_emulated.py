"""What Debian's mtx and mt print for each simulated fault, and what `classify` and
the backend make of it: the faults are sense data of the SCSI emulation, the text
is the real tools'."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.definition import DriveDefinition, LibraryDefinition, TapeDefinition
from drivers.errors import (
    DestinationFullError,
    DriverError,
    HardwareError,
    InterventionRequiredError,
    MediumRemovalPreventedError,
    NotReadyError,
    Sense,
    SourceEmptyError,
)
from drivers.mtx.backend import MtxLibrary
from drivers.mtx.classify import classify
from drivers.sim.library import SimulatedLibrary
from drivers.sim.scsi.emulator import EmulatedDevices
from drivers.sim.state import StateStore

MTX = "/usr/sbin/mtx"
MT = "/bin/mt"
TIMEOUT_S = 60.0
PATH_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def definition(*, offline_before_unload: bool = True) -> LibraryDefinition:
    return LibraryDefinition(
        changer="/dev/sg5",
        slots=4,
        import_export=1,
        offline_before_unload=offline_before_unload,
        drives=(DriveDefinition(index=0, device="/dev/nst0", generation=8),),
        tapes=(
            TapeDefinition(barcode="A00001L8", slot=1),
            TapeDefinition(barcode="A00002L8", slot=2),
        ),
    )


@dataclass
class Emulated:
    sim: SimulatedLibrary
    devices: EmulatedDevices
    state_file: Path

    def mtx(self, *args: str) -> tuple[DriverError | None, subprocess.CompletedProcess[str]]:
        argv = (MTX, "-f", "/dev/sg5", *args)
        run = subprocess.run(
            argv,
            env=self.devices.env(PATH_ENV),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        return classify("mtx", argv, run.returncode, run.stdout, run.stderr), run

    def library(self) -> MtxLibrary:
        return MtxLibrary(
            definition(offline_before_unload=self.sim.definition.offline_before_unload),
            mtx=MTX,
            mt=MT,
            env=self.devices.env(PATH_ENV),
            timeout_s=TIMEOUT_S,
            retry_delay_s=0.01,
            kill_grace_s=5.0,
        )


def open_emulated(tmp_path: Path, defn: LibraryDefinition) -> Iterator[Emulated]:
    state_file = tmp_path / "library.json"
    sim = SimulatedLibrary.open(defn, state_file=state_file, speed=1000.0)
    with EmulatedDevices(state_file) as devices:
        yield Emulated(sim, devices, state_file)


@pytest.fixture
def emulated(tmp_path: Path) -> Iterator[Emulated]:
    yield from open_emulated(tmp_path, definition())


def test_door_opened_unit_attention_is_cleared_by_mtx_itself(emulated: Emulated) -> None:
    """29/00 reaches mtx's MODE SENSE; mtx clears it and carries on."""
    emulated.sim.open_door()
    error, run = emulated.mtx("load", "1", "0")
    assert error is None, run.stderr
    state = StateStore(emulated.state_file).read()
    assert not state.faults.unit_attention
    assert state.drive(0).barcode == "A00001L8"


def test_imported_cartridge_shows_after_the_unit_attention(emulated: Emulated) -> None:
    emulated.sim.import_cartridge("A00009L8", 5)
    error, run = emulated.mtx("status")
    assert error is None, run.stderr
    assert "Storage Element 5 IMPORT/EXPORT:Full :VolumeTag=A00009L8" in run.stdout
    assert not StateStore(emulated.state_file).read().faults.import_attention


def test_unit_attention_that_mode_sense_cannot_clear_is_context(emulated: Emulated) -> None:
    """MODE SENSE fails twice (tolerated: mtx uses defaults), then READ ELEMENT
    STATUS fails for real: the cause is the last failure, the first is context."""
    emulated.sim.inject("mode_sense", "unit_attention", count=2)
    # mtx reads the elements again without volume tags after a failure: fail both.
    emulated.sim.inject("inventory", "hardware", count=2)
    error, run = emulated.mtx("status")
    assert run.returncode == 1
    assert "Mode sense (0x1A) for Page 0x1D failed" in run.stderr
    assert run.stderr.endswith("READ ELEMENT STATUS Command Failed\n")
    assert isinstance(error, HardwareError)
    assert error.sense == Sense(0x4, 0x15, 0x01)
    assert error.message.startswith("mtx failed: READ ELEMENT STATUS Command Failed (after: ")
    assert "Mode sense (0x1A) for Page 0x1D failed (sense key 0x6, ASC 0x28" in error.message
    # What an operator reads ends with the cause, however long the context.
    assert str(error).rstrip().endswith("READ ELEMENT STATUS Command Failed")


def test_illegal_element_type_after_a_tolerated_mode_sense_failure(emulated: Emulated) -> None:
    """mtx's fatal-error path: the listing answers GOOD with an element type no
    standard defines. The fatal line is the cause, the MODE SENSE block context."""
    emulated.sim.inject("mode_sense", "unit_attention", count=2)
    emulated.sim.inject("inventory", "bad_element_type")
    error, run = emulated.mtx("status")
    assert run.returncode != 0
    assert "Mode sense (0x1A) for Page 0x1D failed" in run.stderr
    assert run.stderr.splitlines()[-1] == "illegal Element Type Code 83 reported"
    # A firmware fault, and the MODE SENSE block is not taken for its sense.
    assert type(error) is HardwareError
    assert error.sense is None
    assert error.message.startswith("mtx failed: illegal Element Type Code 83 reported (after: ")
    assert "Mode sense (0x1A) for Page 0x1D failed (sense key 0x6, ASC 0x28" in error.message
    assert str(error).rstrip().endswith("illegal Element Type Code 83 reported")


def test_mode_sense_failure_alone_is_a_degraded_status(emulated: Emulated) -> None:
    emulated.sim.inject("mode_sense", "unit_attention", count=2)
    error, run = emulated.mtx("status")
    assert run.returncode == 0
    assert error is not None
    assert type(error).__name__ == "DegradedStatusError"
    assert error.sense == Sense(0x6, 0x28, 0x00)


def test_drive_still_becoming_ready(tmp_path: Path) -> None:
    for emulated in open_emulated(tmp_path, definition(offline_before_unload=False)):
        emulated.sim.delay_ready(0, 3600.0)
        assert emulated.mtx("load", "1", "0")[0] is None
        error, run = emulated.mtx("unload", "1", "0")
        assert isinstance(error, NotReadyError), run.stderr
        assert error.sense == Sense(0x2, 0x04, 0x01)
        assert run.stderr.endswith("MOVE MEDIUM from Element Address 256 to 1025 Failed\n")


@pytest.mark.parametrize(
    ("kind", "cls", "sense", "last_line"),
    [
        (
            "destination_full",
            DestinationFullError,
            None,
            "Destination Element Address 256 is Already Full",
        ),
        ("source_empty", SourceEmptyError, None, "Source Element Address 1025 is Empty"),
        (
            "hardware",
            HardwareError,
            Sense(0x4, 0x15, 0x01),
            "MOVE MEDIUM from Element Address 1025 to 256 Failed",
        ),
        (
            "manual_intervention",
            InterventionRequiredError,
            Sense(0x2, 0x04, 0x03),
            "MOVE MEDIUM from Element Address 1025 to 256 Failed",
        ),
        (
            "removal_prevented",
            MediumRemovalPreventedError,
            Sense(0x5, 0x53, 0x02),
            "MOVE MEDIUM from Element Address 1025 to 256 Failed",
        ),
    ],
)
def test_move_faults_as_mtx_prints_them(
    emulated: Emulated,
    kind: str,
    cls: type[DriverError],
    sense: Sense | None,
    last_line: str,
) -> None:
    emulated.sim.inject("load", kind, drive=0)  # type: ignore[arg-type]
    error, run = emulated.mtx("load", "1", "0")
    assert run.returncode == 1
    assert run.stderr.splitlines()[-1] == last_line
    assert type(error) is cls
    assert error.sense == sense
    if sense is not None:
        assert f"Additional Sense Code = {sense.asc:02X}\n" in run.stderr


def test_dead_drive_is_a_hardware_error(emulated: Emulated) -> None:
    emulated.sim.kill_drive(0)
    error, run = emulated.mtx("load", "1", "0")
    assert isinstance(error, HardwareError), run.stderr
    assert error.sense == Sense(0x4, 0x44, 0x00)


def test_threaded_tape_is_removal_prevented(emulated: Emulated) -> None:
    assert emulated.mtx("load", "1", "0")[0] is None
    error, _run = emulated.mtx("unload", "1", "0")
    assert isinstance(error, MediumRemovalPreventedError)
    assert error.sense == Sense(0x5, 0x53, 0x02)


async def test_manual_intervention_fails_at_once_without_retries(emulated: Emulated) -> None:
    emulated.sim.inject("inventory", "manual_intervention", count=5)
    library = emulated.library()
    started = time.monotonic()
    with pytest.raises(InterventionRequiredError) as caught:
        await library.inventory()
    assert caught.value.sense == Sense(0x2, 0x04, 0x03)
    assert caught.value.message.startswith(
        "the library needs a person (not ready, manual intervention required): READ ELEMENT"
    )
    # One mtx run (which reads twice: with volume tags, then without).
    faults = StateStore(emulated.state_file).read().faults.scripted
    assert [f.count for f in faults] == [3]
    assert time.monotonic() - started < TIMEOUT_S


@pytest.mark.parametrize(
    ("kind", "sense", "meaning"),
    [
        ("manual_intervention", Sense(0x2, 0x04, 0x03), "manual intervention required"),
        ("power_cycle_required", Sense(0x2, 0x04, 0x22), "power cycle required"),
        ("magazine_not_accessible", Sense(0x2, 0x3B, 0x11), "medium magazine not accessible"),
        ("magazine_removed", Sense(0x2, 0x3B, 0x12), "medium magazine removed"),
    ],
)
async def test_a_sense_that_needs_a_person_fails_a_move_at_once(
    emulated: Emulated, kind: str, sense: Sense, meaning: str
) -> None:
    """The standard's "a person must act" codes: one mtx run, no retry, the reason first."""
    emulated.sim.inject("load", kind, drive=0, count=5)  # type: ignore[arg-type]
    with pytest.raises(InterventionRequiredError) as caught:
        await emulated.library().load(1, 0)
    assert caught.value.sense == sense
    assert caught.value.message.startswith("the library needs a person (")
    assert meaning in caught.value.message.split(":")[0]
    faults = StateStore(emulated.state_file).read().faults.scripted
    assert [f.count for f in faults] == [4]


async def test_not_ready_is_retried_by_the_caller(emulated: Emulated) -> None:
    """02/04/01 is transient: the backend says so (the caller retries it)."""
    emulated.sim.inject("inventory", "not_ready", count=2)
    with pytest.raises(NotReadyError):
        await emulated.library().inventory()
    assert len((await emulated.library().inventory()).slots) == 5


async def test_a_listing_without_volume_tags_is_not_trusted(emulated: Emulated) -> None:
    """One failed READ ELEMENT STATUS: mtx lists again without volume tags and exits
    0 with nothing on stderr; the backend retries instead of losing the labels."""
    emulated.sim.inject("inventory", "not_ready")
    error, run = emulated.mtx("status")
    assert (error, run.stderr) == (None, "")
    assert "Storage Element 1:Full \n" in run.stdout
    emulated.sim.inject("inventory", "not_ready")
    inventory = await emulated.library().inventory()
    assert inventory.where("A00001L8") == ("slot", 1)
