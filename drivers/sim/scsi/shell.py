"""The umockdev shell: device nodes for the simulated library, answered by the emulation.

    /usr/bin/python3 -m drivers.sim.scsi.shell --state STATE_FILE

Creates a umockdev testbed with the state's changer (a generic SCSI device) and
drives (non-rewinding st devices), answers their ioctls (SG_IO and the other sg
ioctls mtx uses; MTIOCGET, MTIOCTOP, MTIOCPOS for mt) from `changer` and `tape`
over the state file, prints `ready UMOCKDEV_DIR` and serves until its standard
input closes. Programs see the nodes when run with
`LD_PRELOAD=libumockdev-preload.so.0 UMOCKDEV_DIR=...` (see `emulator.py`).

It runs under Debian's python3, whose python3-gi provides the UMockdev bindings;
it imports nothing but the standard library and `drivers.sim`.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import signal
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gi  # type: ignore[import-not-found, unused-ignore]

gi.require_version("UMockdev", "1.0")
from gi.repository import GLib, UMockdev  # type: ignore[import-not-found, unused-ignore]  # noqa: E402

from drivers.sim.scsi import changer, tape  # noqa: E402
from drivers.sim.scsi.sense import CHECK_CONDITION, Reply  # noqa: E402
from drivers.sim.standin_mt import device_lock_path  # noqa: E402
from drivers.sim.state import StateStore, now  # noqa: E402

log = logging.getLogger("tapeworker.scsi-shell")

# sg ioctls (<scsi/sg.h>).
SG_SET_TIMEOUT = 0x2201
SG_GET_TIMEOUT = 0x2202
SG_GET_VERSION_NUM = 0x2282
SG_IO = 0x2285
#: struct { int four_in_one; int host_unique_id; }: mtx reads the LUN from it.
SCSI_IOCTL_GET_IDLUN = 0x5382
#: sg driver 3.5.36, what current kernels report.
SG_VERSION = 30536

#: struct sg_io_hdr on x86-64: the fields we read and write, by offset.
HDR_SIZE = 88
HDR_CMD_LEN = 8
HDR_MX_SB_LEN = 9
HDR_DXFER_LEN = 12
HDR_DXFERP = 16
HDR_CMDP = 24
HDR_SBP = 32
HDR_STATUS = 64
HDR_SB_LEN_WR = 67
HDR_DRIVER_STATUS = 70
HDR_RESID = 72
DRIVER_SENSE = 0x08

#: Major numbers of the emulated nodes (sg, st).
SG_MAJOR = 21
ST_MAJOR = 9
#: st's non-rewinding nodes have minor 128 + N.
ST_NOREWIND = 128


def _bytes(data: Any) -> bytes:
    """The bytes of an IoctlData (`.data` reads as one byte through PyGObject)."""
    return bytes(data.retrieve())


def _node_name(device: str) -> str:
    if not device.startswith("/dev/") or ".." in device:
        raise ValueError(f"{device}: an emulated device must be under /dev/")
    return device[len("/dev/") :]


class Shell:
    """The testbed and the two kinds of handlers over one state file."""

    def __init__(self, state_file: Path) -> None:
        self.store = StateStore(state_file)
        self.testbed = UMockdev.Testbed.new()
        self.handlers: list[Any] = []
        state = self.store.read()
        self.identity = changer.Identity(vendor=state.vendor, product=state.product)
        self._add(state.changer, "scsi_generic", SG_MAJOR, 0, self._changer_ioctl)
        for drive in state.drives:
            self._add(
                drive.device,
                "scsi_tape",
                ST_MAJOR,
                ST_NOREWIND + drive.index,
                self._tape_ioctl(drive.index),
            )

    @property
    def root(self) -> str:
        return str(self.testbed.get_root_dir())

    def _add(
        self, device: str, subsystem: str, major: int, minor: int, answer: Callable[[Any], bool]
    ) -> None:
        name = _node_name(device)
        sysname = name.replace("/", "!")
        self.testbed.add_from_string(
            f"P: /devices/tapeworker/{sysname}\n"
            f"N: {name}\n"
            f"E: DEVNAME={device}\n"
            f"E: SUBSYSTEM={subsystem}\n"
            f"A: dev={major}:{minor}\n"
        )
        handler = _Handler(answer)
        self.testbed.attach_ioctl(device, handler)
        self.handlers.append(handler)

    # -- the changer --------------------------------------------------------------

    def _changer_ioctl(self, client: Any) -> bool:
        request = client.get_request()
        arg = client.get_arg()
        if request == SG_GET_VERSION_NUM:
            arg.resolve(0, 4).update(0, list(struct.pack("=i", SG_VERSION)))
            client.complete(0, 0)
        elif request == SCSI_IOCTL_GET_IDLUN:
            # Target 0, LUN 0, channel 0, host 0.
            arg.resolve(0, 8).update(0, [0] * 8)
            client.complete(0, 0)
        elif request in (SG_SET_TIMEOUT, SG_GET_TIMEOUT):
            client.complete(0, 0)
        elif request == SG_IO:
            self._sg_io(client, arg)
        else:
            client.complete(-1, errno.ENOTTY)
        return True

    def _sg_io(self, client: Any, arg: Any) -> None:
        hdr = arg.resolve(0, HDR_SIZE)
        raw = _bytes(hdr)
        cmd_len, mx_sb_len = raw[HDR_CMD_LEN], raw[HDR_MX_SB_LEN]
        (dxfer_len,) = struct.unpack_from("=I", raw, HDR_DXFER_LEN)
        cdb = _bytes(hdr.resolve(HDR_CMDP, cmd_len))
        with self.store.locked() as state:
            reply = changer.execute(cdb, state, self.identity, now())
        log.debug("CDB %s -> status %d %s", cdb.hex(), reply.status, reply.sense)

        def done() -> None:
            if reply.finish is not None:
                with self.store.locked() as state:
                    changer.finish(state, reply.finish, now())
            self._answer_sg(hdr, reply, dxfer_len, mx_sb_len)
            client.complete(0, 0)

        self._after(reply.delay_s, done)

    @staticmethod
    def _answer_sg(hdr: Any, reply: Reply, dxfer_len: int, mx_sb_len: int) -> None:
        data = reply.data[:dxfer_len]
        if data:
            hdr.resolve(HDR_DXFERP, dxfer_len).update(0, list(data))
        sense = reply.sense_bytes[:mx_sb_len]
        if sense:
            hdr.resolve(HDR_SBP, mx_sb_len).update(0, list(sense))
        hdr.update(HDR_STATUS, [reply.status, reply.status >> 1])
        hdr.update(HDR_SB_LEN_WR, [len(sense)])
        driver_status = DRIVER_SENSE if reply.status == CHECK_CONDITION else 0
        hdr.update(HDR_DRIVER_STATUS, list(struct.pack("=H", driver_status)))
        hdr.update(HDR_RESID, list(struct.pack("=i", dxfer_len - len(data))))

    # -- the drives ---------------------------------------------------------------

    def _tape_ioctl(self, index: int) -> Callable[[Any], bool]:
        def answer(client: Any) -> bool:
            request = client.get_request()
            arg = client.get_arg()
            if self._held_elsewhere(index):
                # st allows one open per device: a data mover has it.
                client.complete(-1, errno.EBUSY)
            elif request == tape.MTIOCGET:
                with self.store.locked() as state:
                    reply = tape.get_status(state, index, now())
                self._answer_tape(client, arg, reply, tape.MTGET.size)
            elif request == tape.MTIOCPOS:
                with self.store.locked() as state:
                    reply = tape.get_position(state, index)
                self._answer_tape(client, arg, reply, tape.MTPOS.size)
            elif request == tape.MTIOCTOP:
                op = arg.resolve(0, tape.MTOP.size)
                with self.store.locked() as state:
                    reply = tape.operate(state, index, _bytes(op), now())

                def done() -> None:
                    if reply.offline and reply.errno == 0:
                        with self.store.locked() as state:
                            state.finish_offline(index)
                    self._answer_tape(client, arg, reply, 0)

                self._after(reply.delay_s, done)
            else:
                client.complete(-1, errno.ENOTTY)
            return True

        return answer

    def _held_elsewhere(self, index: int) -> bool:
        """Whether another process holds the drive open (`standin_mt.hold_device`)."""
        assert self.store.path is not None
        try:
            fd = os.open(device_lock_path(self.store.path, index), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    @staticmethod
    def _answer_tape(client: Any, arg: Any, reply: tape.TapeReply, size: int) -> None:
        if reply.errno:
            client.complete(-1, reply.errno)
            return
        if size:
            arg.resolve(0, size).update(0, list(reply.data))
        client.complete(0, 0)

    # -- time ---------------------------------------------------------------------

    @staticmethod
    def _after(delay_s: float, action: Callable[[], None]) -> None:
        """Run `action` after `delay_s` without blocking other clients' ioctls."""
        if delay_s <= 0:
            action()
            return

        def fire() -> bool:
            action()
            return False

        GLib.timeout_add(max(1, round(delay_s * 1000)), fire)


class _Handler(UMockdev.IoctlBase):  # type: ignore[misc]
    def __init__(self, answer: Callable[[Any], bool]) -> None:
        super().__init__()
        self._answer = answer

    def do_handle_ioctl(self, client: Any) -> bool:
        try:
            return self._answer(client)
        except Exception:
            # A bug here must not hang the tool: it gets EIO, the log gets the cause.
            log.exception("ioctl %#x failed", client.get_request())
            client.complete(-1, errno.EIO)
            return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m drivers.sim.scsi.shell")
    parser.add_argument("--state", type=Path, required=True, help="the simulator's state file")
    parser.add_argument("--verbose", action="store_true", help="log every CDB on stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="scsi-shell: %(message)s",
    )
    if not args.state.exists():
        print(f"scsi-shell: {args.state}: no simulated library state", file=sys.stderr)
        return 2
    shell = Shell(args.state)
    loop = GLib.MainLoop()

    def stdin_closed(*_: object) -> bool:
        loop.quit()
        return False

    GLib.io_add_watch(
        GLib.IOChannel.unix_new(sys.stdin.fileno()),
        GLib.PRIORITY_DEFAULT,
        GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
        stdin_closed,
    )
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print(f"ready {shell.root}", flush=True)
    loop.run()
    del shell
    os.environ.pop("UMOCKDEV_DIR", None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
