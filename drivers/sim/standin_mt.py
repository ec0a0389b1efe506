"""A stand-in `mt` (mt-st 1.7) for the simulated library's drives.

`-f DEV` must be a drive's device in the state file; anything else fails the way
mt-st fails on a missing file (open: exit 1) or a node that is no tape (ioctl:
exit 2), with `perror(DEV)` texts (FORMATS.md 4.2). `status` opens without
waiting (O_NONBLOCK), so it answers for an empty or loading drive; the other
commands wait until a loading drive is ready, like st's open does, and fail with
`No medium found` when the drive holds no threaded tape.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TextIO

from drivers.errors import DriverError, NotReadyError
from drivers.sim.standin_mtx import ENV_STATE, state_path
from drivers.sim.state import Drive, SimState, StateStore, now

VERSION_TEXT = "mt-st v. 1.7\ndefault tape device: /dev/tape\n"
USAGE_SHORT = (
    "usage: mt [-v] [--version] [-h] [ -f device ] command [ count ]\n"
    "default tape device: /dev/tape\n"
)
USAGE = USAGE_SHORT + (
    "commands: weof, wset, eof, fsf, fsfm, bsf, bsfm, fsr, bsr, fss, bss, rewind, \n"
    "          offline, rewoffl, eject, retension, eod, seod, seek, tell, status, \n"
    "          erase, setblk, lock, unlock, load, compression, setdensity, \n"
    "          drvbuffer, stwrthreshold, stoptions, stsetoptions, stclearoptions, \n"
    "          defblksize, defdensity, defdrvbuffer, defcompression, stsetcln, \n"
    "          sttimeout, stlongtimeout, densities, setpartition, mkpartition, \n"
    "          partseek, asf, stshowoptions.\n"
)
#: mt.c cmds[], in table order (prefixes resolve against it).
COMMANDS = (
    "weof",
    "wset",
    "eof",
    "fsf",
    "fsfm",
    "bsf",
    "bsfm",
    "fsr",
    "bsr",
    "fss",
    "bss",
    "rewind",
    "offline",
    "rewoffl",
    "eject",
    "retension",
    "eod",
    "seod",
    "seek",
    "tell",
    "status",
    "erase",
    "setblk",
    "lock",
    "unlock",
    "load",
    "compression",
    "setdensity",
    "drvbuffer",
    "stwrthreshold",
    "stoptions",
    "stsetoptions",
    "stclearoptions",
    "defblksize",
    "defdensity",
    "defdrvbuffer",
    "defcompression",
    "stsetcln",
    "sttimeout",
    "stlongtimeout",
    "densities",
    "setpartition",
    "mkpartition",
    "partseek",
    "asf",
    "stshowoptions",
)
#: Commands that take no count argument.
NO_ARGUMENT = frozenset(
    {
        "rewind",
        "offline",
        "rewoffl",
        "eject",
        "retension",
        "eod",
        "seod",
        "tell",
        "status",
        "lock",
        "unlock",
        "load",
        "densities",
        "stshowoptions",
    }
)
OFFLINE = frozenset({"offline", "rewoffl", "eject"})

#: mt-st 1.7 density_tbl entries a tape library shows (FORMATS.md 4.1).
DENSITY_NAMES = {
    0x00: "default",
    0x40: "DLT1 40 GB, or Ultrium",
    0x41: "DLT 40GB, or Ultrium2",
    0x42: "LTO-2",
    0x44: "LTO-3",
    0x46: "LTO-4",
    0x58: "LTO-5",
    0x5A: "LTO-6",
    0x5C: "LTO-7",
    0x5D: "LTO-7-M8",
    0x5E: "LTO-8",
}

# mtio.h GMT_* bits.
BOT = 0x40000000
WR_PROT = 0x04000000
ONLINE = 0x01000000
DR_OPEN = 0x00040000
IM_REP_EN = 0x00010000
CLN = 0x00008000
FLAG_NAMES = (
    ("EOF", 0x80000000),
    ("BOT", BOT),
    ("EOT", 0x20000000),
    ("SM", 0x10000000),
    ("EOD", 0x08000000),
    ("WR_PROT", WR_PROT),
    ("ONLINE", ONLINE),
    ("D_6250", 0x00800000),
    ("D_1600", 0x00400000),
    ("D_800", 0x00200000),
    ("DR_OPEN", DR_OPEN),
    ("IM_REP_EN", IM_REP_EN),
    ("CLN", CLN),
)

#: The longest we wait in open() for a loading drive, in (unscaled) seconds.
OPEN_WAIT_S = 300.0


class MtExit(Exception):
    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


def device_lock_path(state_file: Path, drive_index: int) -> Path:
    """The lock a process holds while it has the drive's device open."""
    return Path(f"{state_file}.drive{drive_index}")


def _claim(state_file: Path, drive_index: int) -> IO[bytes] | None:
    """st allows one open per device: the open file, or None when someone holds it."""
    handle = open(device_lock_path(state_file, drive_index), "a+b")  # noqa: SIM115 - held open
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextlib.contextmanager
def hold_device(state_file: Path, drive_index: int) -> Iterator[None]:
    """Hold a drive's device open, as a data mover writing to it does: `mt` on
    that drive then fails with `Device or resource busy`."""
    handle = _claim(state_file, drive_index)
    if handle is None:
        raise BlockingIOError(f"drive {drive_index} is held by another process")
    try:
        yield
    finally:
        handle.close()


def render_status(state: SimState, drive: Drive, at: float) -> str:
    """mt.c do_status for a Linux st SCSI-2 drive: six lines."""
    loaded = drive.barcode is not None and drive.threaded
    ready = loaded and at >= drive.ready_at
    gstat = IM_REP_EN
    if ready:
        gstat |= ONLINE | BOT
    if not loaded:
        gstat |= DR_OPEN
    if loaded and drive.barcode in state.write_protected:
        gstat |= WR_PROT
    if drive.needs_cleaning:
        gstat |= CLN
    # The density of a loading tape is known before it is ready; the position is not.
    density = state.drive_density(drive) if loaded else 0
    name = DENSITY_NAMES.get(density, "no translation")
    position = 0 if ready else -1
    flags = "".join(f" {flag}" for flag, bit in FLAG_NAMES if gstat & bit)
    return (
        "SCSI 2 tape drive:\n"
        f"File number={position}, block number={position}, partition=0.\n"
        f"Tape block size 0 bytes. Density code 0x{density:x} ({name}).\n"
        "Soft error count since last status=0\n"
        f"General status bits on ({gstat:x}):\n"
        f"{flags}\n"
    )


def _errno_for(error: DriverError) -> str:
    """What st turns a failed SCSI command into (errno text)."""
    if isinstance(error, NotReadyError):
        return "No medium found"
    return "Input/output error"


class Mt:
    def __init__(self, path: Path | None, out: TextIO) -> None:
        self.path = path
        self.out = out
        self._held: list[IO[bytes]] = []

    @property
    def store(self) -> StateStore:
        if self.path is None or not self.path.exists():
            raise MtExit(f"mt stand-in: no simulated library state (set {ENV_STATE})\n", 1)
        return StateStore(self.path)

    def _resolve(self, word: str) -> str:
        if word in COMMANDS:
            return word
        matches = [c for c in COMMANDS if c.startswith(word)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise MtExit(f'mt: unknown command "{word}"\n' + USAGE, 1)
        raise MtExit(f'mt: ambiguous command "{word}"\n' + USAGE, 1)

    def run(self, args: Sequence[str]) -> None:
        try:
            self._run(args)
        finally:
            for handle in self._held:
                handle.close()
            self._held.clear()

    def _run(self, args: Sequence[str]) -> None:
        device: str | None = None
        i = 0
        while i < len(args) and args[i].startswith("-"):
            flag = args[i]
            if flag in ("-f", "-t"):
                if i + 1 >= len(args):
                    raise MtExit(USAGE_SHORT, 1)
                device = args[i + 1]
                i += 2
            elif flag in ("-v", "--version"):
                self.out.write(VERSION_TEXT)
                return
            elif flag == "-h":
                raise MtExit(USAGE, 0)
            else:
                raise MtExit(USAGE_SHORT, 1)
        if i >= len(args):
            raise MtExit(USAGE_SHORT, 1)
        command = self._resolve(args[i])
        rest = args[i + 1 :]
        if command in NO_ARGUMENT and rest:
            raise MtExit(f"mt: too many arguments for the command '{command}'.\n", 1)
        if device is None:
            device = os.environ.get("TAPE") or "/dev/tape"
        if command == "densities":
            self.out.write("Some SCSI tape density codes:\n")
            return
        drive_index = self._open(device, nonblock=command == "status")
        if command == "status":
            self.status(device, drive_index)
        elif command == "rewind":
            self.rewind(drive_index)
        elif command in OFFLINE:
            self.offline(device, drive_index)
        elif command == "tell":
            self.out.write("At block 0.\n")
        # Other commands succeed without changing the simulated drive.

    def _open(self, device: str, *, nonblock: bool) -> int:
        """open(2) of the device: the drive's index, or MtExit like mt-st."""
        state = self.store.read()
        drive = state.drive_by_device(device)
        if drive is None:
            path = Path(device)
            if device == state.changer or path.exists():
                # It opens, but MTIOCGET/MTIOCTOP is no ioctl for it.
                raise MtExit(f"{device}: Inappropriate ioctl for device\n", 2)
            raise MtExit(f"{device}: No such file or directory\n", 1)
        assert self.path is not None  # store found the state
        handle = _claim(self.path, drive.index)
        if handle is None:
            raise MtExit(f"{device}: Device or resource busy\n", 1)
        self._held.append(handle)
        if drive.dead is not None:
            raise MtExit(f"{device}: Input/output error\n", 1)
        if nonblock:
            return drive.index
        if drive.barcode is None or not drive.threaded:
            raise MtExit(f"{device}: No medium found\n", 1)
        # st's open waits while the drive is becoming ready.
        deadline = now() + state.timing().scaled(OPEN_WAIT_S)
        while now() < drive.ready_at:
            if now() >= deadline:
                raise MtExit(f"{device}: Input/output error\n", 1)
            time.sleep(min(drive.ready_at - now(), 0.05) + 0.001)
            drive = self.store.read().drive(drive.index)
            if drive.barcode is None or not drive.threaded:
                raise MtExit(f"{device}: No medium found\n", 1)
        return drive.index

    def status(self, device: str, drive_index: int) -> None:
        with self.store.locked() as state:
            try:
                state.raise_fault("status", f"status of drive {drive_index}", drive=drive_index)
            except DriverError as exc:
                raise MtExit(f"{device}: {_errno_for(exc)}\n", 2) from exc
            text = render_status(state, state.drive(drive_index), now())
        self.out.write(text)

    def rewind(self, drive_index: int) -> None:
        state = self.store.read()
        time.sleep(state.timing().rewind(state.drive(drive_index).generation))

    def offline(self, device: str, drive_index: int) -> None:
        with self.store.locked() as state:
            try:
                duration = state.begin_offline(drive_index)
            except DriverError as exc:
                raise MtExit(f"{device}: {_errno_for(exc)}\n", 2) from exc
        time.sleep(duration)
        with self.store.locked() as state:
            state.finish_offline(drive_index)


def main(argv: Sequence[str] | None = None, *, state_file: Path | None = None) -> int:
    """Run like mt-st; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    tool = Mt(state_path(state_file), sys.stdout)
    try:
        tool.run(args)
    except MtExit as exc:
        sys.stdout.flush()
        sys.stderr.write(exc.text)
        sys.stderr.flush()
        return exc.code
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
