"""A stand-in `mtx` (1.3.12) over the simulated library's state file.

It prints what the real mtx prints, on the same streams and with the same exit
codes (FORMATS.md 1-3), so that the mtx backend runs end to end against the
simulator. Physics and faults are `SimState`'s (begin_*/finish_* under the state
lock, the robot lock held for the whole move, scaled time slept for real); this
module only translates them into mtx's words.

SCSI element addresses (printed in mtx's error messages, never in its status):
drives 256+index, storage slots 1024+number, import/export slots 768+k (k from 1).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from drivers.errors import DriverError, Sense
from drivers.sim.state import Drive, SimState, StateStore, make_error, now

ENV_STATE = "TAPEWORKER_SIM_STATE"
VERSION = "1.3.12"

#: mtx.c usage(), as the Debian 12 binary prints it.
USAGE = (
    "Usage:\n"
    "\tmtx --version\n"
    "\tmtx [ -f <loader-dev> ] noattach <more commands>\n"
    "\tmtx [ -f <loader-dev> ] inquiry | inventory \n"
    "\tmtx [ -f <loader-dev> ] [altres] [nobarcode] status\n"
    "\tmtx [ -f <loader-dev> ] [altres] first [<drive#>]\n"
    "\tmtx [ -f <loader-dev> ] [altres] last [<drive#>]\n"
    "\tmtx [ -f <loader-dev> ] [altres] previous [<drive#>]\n"
    "\tmtx [ -f <loader-dev> ] [altres] next [<drive#>]\n"
    "\tmtx [ -f <loader-dev> ] [altres] [invert] load <storage-element-number> [<drive#>]\n"
    "\tmtx [ -f <loader-dev> ] [altres] [invert] unload [<storage-element-number>][<drive#>]\n"
    "\tmtx [ -f <loader-dev> ] [altres] [eepos eepos-number] transfer"
    " <storage-element-number> <storage-element-number>\n"
    "\tmtx [ -f <loader-dev> ] [altres] [eepos eepos-number][invert][invert2] exchange"
    " <storage-element-number> <storage-element-number>\n"
    "\tmtx [ -f <loader-dev> ] [altres] position <storage-element-number>\n"
    "\tmtx [ -f <loader-dev> ] eject\n"
)

#: mtxl.c sense_keys[].
SENSE_KEYS = (
    "No Sense",
    "Recovered Error",
    "Not Ready",
    "Medium Error",
    "Hardware Error",
    "Illegal Request",
    "Unit Attention",
    "Data Protect",
    "Blank Check",
    "0x09",
    "0x0a",
    "Aborted Command",
    "0x0c",
    "Volume Overflow",
    "Miscompare",
    "0x0f",
)

#: mtx.c command_table: words mtx knows (the ones we do not simulate are no-ops
#: that need the device, which is what matters for error paths).
COMMANDS = frozenset(
    {
        "inquiry",
        "status",
        "invert",
        "noattach",
        "eepos",
        "load",
        "unload",
        "transfer",
        "first",
        "last",
        "previous",
        "next",
        "--version",
        "inventory",
        "eject",
        "erase",
        "nobarcode",
        "position",
        "invert2",
        "exchange",
        "altres",
    }
)
#: Modifiers and commands that need no device.
_NO_DEVICE = frozenset({"--version", "invert", "invert2", "noattach", "nobarcode", "altres"})

DRIVE_BASE = 256
IE_BASE = 768
SLOT_BASE = 1024
#: Real libraries pad volume tags to the 32-byte identifier (FORMATS.md 1.2).
TAG_WIDTH = 32

VENDOR = "TAPEWORK"
PRODUCT = "SIMULATED LIB"
REVISION = "0001"


class MtxExit(Exception):
    """mtx ends: `text` goes to stderr, then exit with `code`."""

    def __init__(self, text: str, code: int = 1) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


def fatal(message: str) -> MtxExit:
    # FatalError's prefix is overwritten by the message (FORMATS.md 3.1): no "mtx: ".
    return MtxExit(message + "\n")


def usage() -> MtxExit:
    return MtxExit(USAGE)


def request_sense(sense: Sense) -> str:
    """mtxl.c PrintRequestSense for a current, fixed-format sense without SKSV."""
    key = SENSE_KEYS[sense.key & 0xF]
    lines = [
        "Long Report=yes",
        "Valid Residual=no",
        "Error Code=70 (Current)",
        f"Sense Key={key}",
        "FileMark=no",
        "EOM=no",
        "ILI=no",
        f"Additional Sense Code = {sense.asc:02X}",
        f"Additional Sense Qualifier = {sense.ascq:02X}",
        "BPV=no",
        "Error in CDB=no",
        "SKSV=no",
    ]
    return "".join(f"mtx: Request Sense: {line}\n" for line in lines)


def element_address(state: SimState, slot: int) -> int:
    """The SCSI address of a 1-based mtx storage element number."""
    storage = sum(1 for s in state.slots if not s.import_export)
    if slot > storage:
        return IE_BASE + slot - storage
    return SLOT_BASE + slot


def drive_address(drive: int) -> int:
    return DRIVE_BASE + drive


def move_failure(error: DriverError, source: int, destination: int) -> MtxExit:
    """mtx.c Move(): specific messages for four ASC/ASCQ pairs, else the sense block."""
    sense = error.sense or Sense(0x4, 0x44, 0x00)
    pair = (sense.asc, sense.ascq)
    if pair == (0x30, 0x03):
        return fatal("Cleaning Cartridge Installed and Ejected")
    if pair == (0x3A, 0x00):
        return fatal("Drive needs offline before move")
    if pair == (0x3B, 0x0D):
        return fatal(f"Destination Element Address {destination} is Already Full")
    if pair == (0x3B, 0x0E):
        return fatal(f"Source Element Address {source} is Empty")
    return MtxExit(
        request_sense(sense)
        + f"MOVE MEDIUM from Element Address {source} to {destination} Failed\n"
    )


def drive_sources(state: SimState) -> dict[int, int | None]:
    """mtx's two passes over the drives' source elements (FORMATS.md 1.4).

    Pass 1 keeps a source only if that slot is empty now; pass 2 hands each drive
    still without one the next empty storage slot, even one already claimed.
    """
    sources: dict[int, int | None] = {}
    for drive in state.drives:
        if drive.barcode is None:
            continue
        source = drive.source_slot
        if source is not None and 1 <= source <= len(state.slots):
            sources[drive.index] = source if state.slot(source).barcode is None else None
        else:
            sources[drive.index] = None
    empty = [s.number for s in state.slots if s.barcode is None and not s.import_export]
    for index, source in sources.items():
        if source is None and empty:
            sources[index] = empty.pop(0)
    return sources


def render_status(state: SimState, device: str, *, barcodes: bool = True) -> str:
    """mtx.c Status(): header, drives from 0, slots from 1 (import/export last)."""
    ie = sum(1 for s in state.slots if s.import_export)
    out = [
        f"  Storage Changer {device}:{len(state.drives)} Drives,"
        f" {len(state.slots)} Slots ( {ie} Import/Export )\n"
    ]
    sources = drive_sources(state)
    for position, drive in enumerate(sorted(state.drives, key=lambda d: d.index)):
        line = f"Data Transfer Element {position}:"
        if drive.barcode is None:
            line += "Empty"
        else:
            source = sources.get(drive.index)
            line += (
                f"Full (Storage Element {source} Loaded)"
                if source is not None
                else "Full (Unknown Storage Element Loaded)"
            )
            if barcodes:
                line += f":VolumeTag = {drive.barcode:<{TAG_WIDTH}}"
        out.append(line + "\n")
    for slot in state.slots:
        line = (
            f"      Storage Element {slot.number}"
            f"{' IMPORT/EXPORT' if slot.import_export else ''}:"
            f"{'Full ' if slot.barcode is not None else 'Empty'}"
        )
        if barcodes and slot.barcode is not None and not slot.unreadable:
            line += f":VolumeTag={slot.barcode:<{TAG_WIDTH}}"
        out.append(line + "\n")
    return "".join(out)


def render_degraded_status(state: SimState, device: str, *, barcodes: bool = True) -> str:
    """Status after MODE SENSE failed: built-in defaults, no import/export query (F3.4)."""
    storage = [s for s in state.slots if not s.import_export]
    reduced = SimState(
        changer=state.changer,
        speed=state.speed,
        offline_before_unload=state.offline_before_unload,
        slots=storage,
        drives=state.drives,
    )
    return render_status(reduced, device, barcodes=barcodes)


def render_inquiry() -> str:
    return (
        "Product Type: Medium Changer\n"
        f"Vendor ID: '{VENDOR:<8.8}'\n"
        f"Product ID: '{PRODUCT:<16.16}'\n"
        f"Revision: '{REVISION:<4.4}'\n"
        "Attached Changer API: No\n"
    )


def _get_arg(args: Sequence[str], i: int) -> tuple[int, int]:
    """mtx.c get_arg: a number only if its first character is a digit (atoi)."""
    if i < len(args) and args[i][:1].isdigit():
        digits = ""
        for ch in args[i]:
            if not ch.isdigit():
                break
            digits += ch
        return int(digits), i + 1
    return -1, i


class Mtx:
    """One mtx invocation: commands run in order, like mtx.c parse_args."""

    def __init__(self, path: Path | None, out: TextIO, err: TextIO) -> None:
        self.path = path
        self.out = out
        self.err = err
        self.device: str | None = None
        self.barcodes = True

    @property
    def store(self) -> StateStore:
        if self.path is None or not self.path.exists():
            raise MtxExit(f"mtx stand-in: no simulated library state (set {ENV_STATE})\n")
        return StateStore(self.path)

    # -- the device --------------------------------------------------------------

    def open_device(self, device: str) -> None:
        state = self.store.read()
        if device == state.changer:
            self.device = device
            return
        path = Path(device)
        if state.drive_by_device(device) is not None:
            # A tape drive's st node: it opens, but it is no sg device.
            raise fatal(f"{device} is not an sg device, or old sg driver")
        if path.is_dir():
            raise fatal(f"cannot open SCSI device '{device}' - Is a directory")
        if path.exists():
            raise fatal(f"{device} is not an sg device, or old sg driver")
        raise fatal(f"cannot open SCSI device '{device}' - No such file or directory")

    def need_device(self) -> str:
        if self.device is None:
            default = os.environ.get("CHANGER") or os.environ.get("TAPE") or "/dev/changer"
            self.open_device(default)
        assert self.device is not None
        return self.device

    # -- the command line --------------------------------------------------------

    def run(self, args: Sequence[str]) -> None:
        i = 0
        while i < len(args):
            word = args[i]
            if word == "-f":
                if i + 1 >= len(args):
                    raise usage()
                self.open_device(args[i + 1])
                i += 2
                continue
            if word not in COMMANDS:
                raise usage()
            i += 1
            if word == "--version":
                raise MtxExit(f"mtx version {VERSION}\n\n" + USAGE)
            if word == "nobarcode":
                self.barcodes = False
                continue
            if word in _NO_DEVICE:
                continue
            if word == "eepos":
                value, i = _get_arg(args, i)
                if not 0 <= value <= 3:
                    raise fatal("eepos equires argument between 0 and 3.")
                continue
            device = self.need_device()
            if word == "status":
                self.status(device)
            elif word == "inquiry":
                self.out.write(render_inquiry())
            elif word == "load":
                slot, i = _get_arg(args, i)
                drive, i = _get_arg(args, i)
                self.load(slot, 0 if drive < 0 else drive)
            elif word == "unload":
                slot, i = _get_arg(args, i)
                drive, i = _get_arg(args, i)
                self.unload(slot, 0 if drive < 0 else drive)
            elif word == "transfer":
                source, i = _get_arg(args, i)
                destination, i = _get_arg(args, i)
                self.transfer(source, destination)
            elif word == "inventory":
                self.inventory()
            else:
                # Other commands exist in mtx but are not simulated: they do nothing.
                for _ in range(3):
                    _, i = _get_arg(args, i)

    # -- commands ----------------------------------------------------------------

    def status(self, device: str) -> None:
        with self.store.robot():
            with self.store.locked() as state:
                kind = state.take_fault("inventory")
                delay = state.timing().inventory() + state.timing().scaled(
                    state.faults.inventory_delay_s
                )
            if kind is not None and kind != "unit_attention":
                sense = make_error(kind, "read element status").sense
                assert sense is not None
                raise MtxExit(request_sense(sense) + "READ ELEMENT STATUS Command Failed\n")
            time.sleep(delay)
            state = self.store.read()
        if kind == "unit_attention":
            # MODE SENSE got the unit attention: mtx carries on with defaults, exit 0.
            sense = make_error(kind, "mode sense").sense
            assert sense is not None
            self.err.write(request_sense(sense) + "Mode sense (0x1A) for Page 0x1D failed\n")
            self.err.flush()
            self.out.write(render_degraded_status(state, device, barcodes=self.barcodes))
            return
        self.out.write(render_status(state, device, barcodes=self.barcodes))

    def inventory(self) -> None:
        with self.store.robot():
            with self.store.locked() as state:
                kind = state.take_fault("inventory")
                delay = state.timing().inventory()
            if kind is not None:
                self.err.write("Initialize Element Status (0x07) failed\n")
                raise MtxExit("mtx:inventory failed\n")
            time.sleep(delay)

    def _progress(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def load(self, slot: int, drive_number: int) -> None:
        with self.store.robot():
            with self.store.locked() as state:
                if not 1 <= slot <= len(state.slots):
                    raise fatal(
                        f"Invalid <storage-element-number> argument '{slot}' to 'load' command"
                    )
                drive = self._drive_at(state, drive_number)
                if drive is None:
                    raise fatal(
                        f"illegal <drive-number> argument '{drive_number}' to 'load' command"
                    )
                if drive.barcode is not None:
                    source = drive_sources(state).get(drive.index)
                    raise fatal(f"Drive {drive_number} Full (Storage Element {source or 0} loaded)")
                self._progress(
                    f"Loading media from Storage Element {slot} into drive {drive_number}..."
                )
                try:
                    duration = state.begin_load(slot, drive.index)
                except DriverError as exc:
                    raise move_failure(
                        exc, element_address(state, slot), drive_address(drive_number)
                    ) from exc
            time.sleep(duration)
            with self.store.locked() as state:
                state.finish_load(slot, drive.index, now())
        self.out.write("done\n")

    def unload(self, slot: int, drive_number: int) -> None:
        with self.store.robot():
            with self.store.locked() as state:
                if slot == 0 or slot > len(state.slots):
                    raise fatal(
                        f"illegal <storage-element-number> argument '{slot}' to 'unload' command"
                    )
                drive = self._drive_at(state, drive_number)
                if drive is None:
                    raise fatal(
                        f"illegal <drive-number> argument '{drive_number}' to 'unload' command"
                    )
                if drive.barcode is None:
                    raise fatal(f"Data Transfer Element {drive_number} is Empty")
                if slot < 0:
                    source = drive_sources(state).get(drive.index)
                    if source is None:
                        raise fatal(f"No Source for tape in drive {drive_number}!")
                    slot = source
                if state.slot(slot).barcode is not None:
                    raise fatal(f"Storage Element {slot} is Already Full")
                self._progress(f"Unloading drive {drive_number} into Storage Element {slot}...")
                try:
                    duration = state.begin_unload(drive.index, slot)
                except DriverError as exc:
                    raise move_failure(
                        exc, drive_address(drive_number), element_address(state, slot)
                    ) from exc
            time.sleep(duration)
            with self.store.locked() as state:
                state.finish_unload(drive.index, slot, now())
        self.out.write("done\n")

    def transfer(self, source: int, destination: int) -> None:
        with self.store.robot():
            with self.store.locked() as state:
                if source < 0:
                    raise fatal("No source specified")
                if destination < 0:
                    raise fatal("No destination specified")
                if not 1 <= source <= len(state.slots):
                    raise fatal("Invalid source")
                if not 1 <= destination <= len(state.slots):
                    raise fatal("Invalid destination")
                try:
                    duration = state.begin_transfer(source, destination)
                except DriverError as exc:
                    raise move_failure(
                        exc, element_address(state, source), element_address(state, destination)
                    ) from exc
            time.sleep(duration)
            with self.store.locked() as state:
                state.finish_transfer(source, destination, now())

    @staticmethod
    def _drive_at(state: SimState, position: int) -> Drive | None:
        """mtx's data transfer element N: the N-th drive the changer reports."""
        drives = sorted(state.drives, key=lambda d: d.index)
        return drives[position] if 0 <= position < len(drives) else None


def state_path(state_file: Path | None) -> Path | None:
    if state_file is not None:
        return state_file
    env = os.environ.get(ENV_STATE)
    return Path(env) if env else None


def main(argv: Sequence[str] | None = None, *, state_file: Path | None = None) -> int:
    """Run like mtx; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    tool = Mtx(state_path(state_file), sys.stdout, sys.stderr)
    try:
        tool.run(args)
    except MtxExit as exc:
        sys.stdout.flush()
        sys.stderr.write(exc.text)
        sys.stderr.flush()
        return exc.code
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
