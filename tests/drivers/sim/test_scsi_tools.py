"""Debian's own mtx and mt against the emulated library (umockdev shell).

What the real tools print for the emulation is compared with what the stand-ins
print for the same state: the stand-ins were written from the tools' source, the
emulation from the SCSI standards, so agreement checks both.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.definition import DriveDefinition, LibraryDefinition, TapeDefinition
from drivers.sim import standin_mt, standin_mtx
from drivers.sim.library import SimulatedLibrary
from drivers.sim.scsi.emulator import EmulatedDevices
from drivers.sim.standins import install_standins
from drivers.sim.state import StateStore, now

MTX = "/usr/sbin/mtx"
MT = "/bin/mt"
SPEED = 1000.0
TIMEOUT_S = 60.0


def definition(*, offline_before_unload: bool = True) -> LibraryDefinition:
    return LibraryDefinition(
        changer="/dev/sg7",
        slots=6,
        import_export=1,
        offline_before_unload=offline_before_unload,
        vendor="ACME",
        product="ROBOT 3000",
        drives=(
            DriveDefinition(index=0, device="/dev/nst0", generation=8),
            DriveDefinition(index=1, device="/dev/nst1", generation=9),
        ),
        tapes=(
            TapeDefinition(barcode="A00001L8", slot=1),
            TapeDefinition(barcode="A00002L9", slot=2),
            TapeDefinition(barcode="A00004L8", slot=4, write_protected=True),
            TapeDefinition(barcode="A00007L9", slot=7),
        ),
    )


@dataclass
class Emulated:
    sim: SimulatedLibrary
    devices: EmulatedDevices
    state_file: Path

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            env=self.devices.env({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )

    def mtx(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(MTX, "-f", "/dev/sg7", *args)

    def mt(self, drive: int, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(MT, "-f", f"/dev/nst{drive}", *args)

    def standin_status(self) -> str:
        return standin_mtx.render_status(StateStore(self.state_file).read(), "/dev/sg7")

    def standin_mt_status(self, drive: int) -> str:
        state = StateStore(self.state_file).read()
        return standin_mt.render_status(state, state.drive(drive), now())

    def wait_online(self, drive: int) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while "ONLINE" not in self.mt(drive, "status").stdout:
            assert time.monotonic() < deadline, f"drive {drive} not online"


def open_emulated(tmp_path: Path, defn: LibraryDefinition) -> Iterator[Emulated]:
    state_file = tmp_path / "library.json"
    sim = SimulatedLibrary.open(defn, state_file=state_file, speed=SPEED)
    with EmulatedDevices(state_file) as devices:
        yield Emulated(sim, devices, state_file)


@pytest.fixture
def emulated(tmp_path: Path) -> Iterator[Emulated]:
    yield from open_emulated(tmp_path, definition())


@pytest.fixture
def self_unloading(tmp_path: Path) -> Iterator[Emulated]:
    yield from open_emulated(tmp_path, definition(offline_before_unload=False))


def test_inquiry_names_the_definitions_changer(emulated: Emulated) -> None:
    run = emulated.mtx("inquiry")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[:4] == [
        "Product Type: Medium Changer",
        "Vendor ID: 'ACME    '",
        "Product ID: 'ROBOT 3000      '",
        "Revision: '0001'",
    ]


def test_status_is_what_the_standin_prints(emulated: Emulated) -> None:
    run = emulated.mtx("status")
    assert (run.returncode, run.stderr) == (0, "")
    assert "Storage Element 7 IMPORT/EXPORT:Full :VolumeTag=A00007L9" in run.stdout
    assert run.stdout == emulated.standin_status()


def test_load_rewind_offline_unload_cycle(emulated: Emulated) -> None:
    load = emulated.mtx("load", "1", "0")
    assert (load.returncode, load.stderr) == (0, "")
    assert load.stdout == "Loading media from Storage Element 1 into drive 0...done\n"
    assert "Data Transfer Element 0:Full (Storage Element 1 Loaded):VolumeTag = A00001L8" in (
        emulated.mtx("status").stdout
    )
    emulated.wait_online(0)
    status = emulated.mt(0, "status")
    assert status.returncode == 0
    assert status.stdout == emulated.standin_mt_status(0)
    assert "Density code 0x5e (LTO-8)" in status.stdout
    assert emulated.mt(0, "rewind").returncode == 0
    assert emulated.mt(0, "offline").returncode == 0
    assert "DR_OPEN" in emulated.mt(0, "status").stdout
    unload = emulated.mtx("unload", "1", "0")
    assert (unload.returncode, unload.stderr) == (0, "")
    assert unload.stdout == "Unloading drive 0 into Storage Element 1...done\n"
    assert emulated.mtx("status").stdout == emulated.standin_status()
    assert StateStore(emulated.state_file).read().moves == 2


def test_transfer_to_the_mailslot(emulated: Emulated) -> None:
    emulated.sim.clear_faults()
    emulated.mtx("transfer", "7", "6")
    run = emulated.mtx("transfer", "2", "7")
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    state = StateStore(emulated.state_file).read()
    assert (state.slot(2).barcode, state.slot(7).barcode) == (None, "A00002L9")


def test_write_protected_tape_status(emulated: Emulated) -> None:
    assert emulated.mtx("load", "4", "1").returncode == 0
    emulated.wait_online(1)
    status = emulated.mt(1, "status").stdout
    assert " WR_PROT ONLINE" in status
    assert status == emulated.standin_mt_status(1)


def test_empty_drive_status_is_what_the_standin_prints(emulated: Emulated) -> None:
    run = emulated.mt(1, "status")
    assert run.returncode == 0
    assert run.stdout == emulated.standin_mt_status(1)


def test_a_drive_held_open_elsewhere_is_busy(emulated: Emulated) -> None:
    with standin_mt.hold_device(emulated.state_file, 0):
        run = emulated.mt(0, "status")
    assert run.returncode == 2
    assert run.stderr == "/dev/nst0: Device or resource busy\n"
    assert emulated.mt(0, "status").returncode == 0


def test_offline_without_a_tape(emulated: Emulated) -> None:
    run = emulated.mt(1, "offline")
    assert run.returncode == 2
    assert run.stderr.startswith("/dev/nst1: No medium found\n")


def test_threaded_tape_cannot_be_unloaded_by_the_robot(emulated: Emulated) -> None:
    assert emulated.mtx("load", "1", "0").returncode == 0
    run = emulated.mtx("unload", "1", "0")
    assert run.returncode == 1
    assert "Additional Sense Code = 53\n" in run.stderr
    assert "Additional Sense Qualifier = 02\n" in run.stderr
    assert run.stderr.endswith("MOVE MEDIUM from Element Address 256 to 1025 Failed\n")


def test_self_unloading_library_takes_a_ready_tape(self_unloading: Emulated) -> None:
    assert self_unloading.mtx("load", "1", "0").returncode == 0
    self_unloading.wait_online(0)
    run = self_unloading.mtx("unload", "1", "0")
    assert (run.returncode, run.stderr) == (0, "")


def test_source_empty_and_destination_full(emulated: Emulated) -> None:
    empty = emulated.mtx("load", "3", "0")
    assert (empty.returncode, empty.stderr) == (1, "Source Element Address 1027 is Empty\n")
    emulated.sim.inject("load", "destination_full", drive=0)
    full = emulated.mtx("load", "1", "0")
    assert (full.returncode, full.stderr) == (
        1,
        "Destination Element Address 256 is Already Full\n",
    )


def test_a_move_holds_only_its_own_client(tmp_path: Path) -> None:
    """While the robot moves, other ioctls are answered (mt of another drive)."""
    state_file = tmp_path / "library.json"
    # At this speed the listing before the move takes 4 s and the move 14 s: mt
    # must answer long before the move ends.
    SimulatedLibrary.open(definition(), state_file=state_file, speed=0.5)
    with EmulatedDevices(state_file) as devices:
        env = devices.env({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
        move = subprocess.Popen(
            [MTX, "-f", "/dev/sg7", "load", "1", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            progress = b"Loading media from Storage Element 1 into drive 0..."
            assert move.stdout is not None
            # mtx prints this just before it sends MOVE MEDIUM.
            assert move.stdout.read(len(progress)) == progress
            status = subprocess.run(
                [MT, "-f", "/dev/nst1", "status"],
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                check=True,
            )
            assert "DR_OPEN" in status.stdout
            assert move.poll() is None, "the move ended before mt answered"
        finally:
            move.kill()
            move.wait(timeout=TIMEOUT_S)
            if move.stdout is not None:
                move.stdout.close()


STANDIN_CASES: dict[str, tuple[Callable[[SimulatedLibrary], None], tuple[str, ...]]] = {
    "source empty": (lambda sim: None, ("load", "3", "0")),
    "hardware error": (lambda sim: sim.inject("load", "hardware", drive=0), ("load", "1", "0")),
    "manual intervention": (
        lambda sim: sim.inject("load", "manual_intervention", drive=0),
        ("load", "1", "0"),
    ),
    "removal prevented": (lambda sim: None, ("load", "1", "0", "unload", "1", "0")),
    "listing fails": (lambda sim: sim.inject("inventory", "hardware", count=2), ("status",)),
    "incompatible": (lambda sim: None, ("load", "2", "0")),
    "unload an empty drive": (lambda sim: None, ("unload", "1", "0")),
    "destination full": (lambda sim: None, ("transfer", "1", "2")),
}


@pytest.mark.parametrize("case", list(STANDIN_CASES))
def test_failures_print_what_the_standin_prints(tmp_path: Path, case: str) -> None:
    """The same failure, byte for byte: exit status, stdout and stderr."""
    setup, args = STANDIN_CASES[case]
    runs = []
    for kind in ("real", "standin"):
        state_file = tmp_path / f"{kind}.json"
        setup(SimulatedLibrary.open(definition(), state_file=state_file, speed=1000.0))
        if kind == "real":
            with EmulatedDevices(state_file) as devices:
                env = devices.env({"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
                run = subprocess.run(
                    [MTX, "-f", "/dev/sg7", *args],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=TIMEOUT_S,
                    check=False,
                )
        else:
            install_standins(tmp_path / "bin", state_file)
            run = subprocess.run(
                [str(tmp_path / "bin" / "mtx"), "-f", "/dev/sg7", *args],
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                check=False,
            )
        runs.append((run.returncode, run.stdout, run.stderr))
    assert runs[0][0] == 1
    assert runs[0] == runs[1]
