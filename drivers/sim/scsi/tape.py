"""The simulated drives as the Linux st driver shows them to `mt`.

mt-st talks to st through ioctls, not CDBs: MTIOCGET fills a `struct mtget`,
MTIOCTOP runs a `struct mtop`, MTIOCPOS answers a block number. The layouts are
those of <linux/mtio.h> on a 64-bit kernel. Failures are what st makes of the
drive's sense data: an errno.
"""

from __future__ import annotations

import errno
import math
import struct
from dataclasses import dataclass

from drivers.errors import DriverError, NotReadyError
from drivers.sim.state import Drive, SimState

#: ioctl request numbers (_IOR/_IOW('m', n, struct ...) on x86-64).
MTIOCTOP = 0x40086D01
MTIOCGET = 0x80306D02
MTIOCPOS = 0x80086D03

#: struct mtget: five longs, then mt_fileno and mt_blkno (ints).
MTGET = struct.Struct("=qqqqqii")
#: struct mtop: short mt_op, (padding), int mt_count.
MTOP = struct.Struct("=hxxi")
#: struct mtpos: long mt_blkno.
MTPOS = struct.Struct("=q")

MT_ISSCSI2 = 0x72
MT_ST_DENSITY_SHIFT = 24

# mt_gstat bits (GMT_*).
GMT_BOT = 0x40000000
GMT_WR_PROT = 0x04000000
GMT_ONLINE = 0x01000000
GMT_DR_OPEN = 0x00040000
GMT_IM_REP_EN = 0x00010000
GMT_CLN = 0x00008000

# mt_op codes.
MTNOP = 8
MTREW = 6
MTOFFL = 7
MTLOCK = 28
MTUNLOCK = 29


@dataclass(frozen=True, slots=True)
class TapeReply:
    """An ioctl's answer: 0 or an errno, the bytes to copy back, and how long the
    drive takes; `offline` asks the shell to unthread the drive afterwards."""

    errno: int = 0
    data: bytes = b""
    delay_s: float = 0.0
    offline: bool = False


def _errno_of(error: DriverError) -> int:
    return errno.ENOMEDIUM if isinstance(error, NotReadyError) else errno.EIO


def gstat(state: SimState, drive: Drive, now: float) -> int:
    """The drive's general status bits."""
    loaded = drive.barcode is not None and drive.threaded
    ready = loaded and now >= drive.ready_at
    bits = GMT_IM_REP_EN
    if ready:
        bits |= GMT_ONLINE | GMT_BOT
    if not loaded:
        bits |= GMT_DR_OPEN
    if loaded and drive.barcode in state.write_protected:
        bits |= GMT_WR_PROT
    if drive.needs_cleaning:
        bits |= GMT_CLN
    return bits


def get_status(state: SimState, drive_index: int, now: float) -> TapeReply:
    """MTIOCGET: type, density (known while loading), position (at BOT once ready)."""
    drive = state.drive(drive_index)
    try:
        state.raise_fault("status", f"status of drive {drive_index}", drive=drive_index)
        state.check_drive_alive(drive)
    except DriverError as exc:
        return TapeReply(errno=_errno_of(exc))
    loaded = drive.barcode is not None and drive.threaded
    density = state.drive_density(drive) if loaded else 0
    position = 0 if loaded and now >= drive.ready_at else -1
    data = MTGET.pack(
        MT_ISSCSI2,
        0,  # mt_resid: st reports the partition here
        density << MT_ST_DENSITY_SHIFT,  # block size 0: variable
        gstat(state, drive, now),
        0,  # no soft errors
        position,
        position,
    )
    return TapeReply(data=data)


def get_position(state: SimState, drive_index: int) -> TapeReply:
    drive = state.drive(drive_index)
    if drive.barcode is None or not drive.threaded:
        return TapeReply(errno=errno.ENOMEDIUM)
    return TapeReply(data=MTPOS.pack(0))


def operate(state: SimState, drive_index: int, request: bytes, now: float) -> TapeReply:
    """MTIOCTOP: rewind, offline, lock and no-op; others are not emulated (EINVAL).

    A command waits until a loading drive is ready, as st's open does.
    """
    op, _count = MTOP.unpack(request[: MTOP.size])
    drive = state.drive(drive_index)
    if op in (MTNOP, MTLOCK, MTUNLOCK):
        return TapeReply()
    if op not in (MTREW, MTOFFL):
        return TapeReply(errno=errno.EINVAL)
    try:
        if op == MTOFFL:
            duration = state.begin_offline(drive_index)
        else:
            state.check_drive_alive(drive)
            duration = state.timing().rewind(drive.generation)
    except DriverError as exc:
        return TapeReply(errno=_errno_of(exc))
    if drive.barcode is None or not drive.threaded:
        return TapeReply(errno=errno.ENOMEDIUM)
    # A command waits for a loading drive; one that is unthreading is not loading.
    wait = max(0.0, drive.ready_at - now) if math.isfinite(drive.ready_at) else 0.0
    if op == MTOFFL:
        # Unthreading from the command on: no longer ONLINE, though the cartridge is
        # in the drive until `finish_offline`, which the shell runs whether or not
        # mt is still waiting (a drive finishes an unload its host gave up on).
        drive.ready_at = math.inf
    return TapeReply(delay_s=wait + duration, offline=op == MTOFFL)
