"""`MtxLibrary`: the TapeLibrary that drives real hardware through `mtx` and `mt`.

The thin I/O shell around the pure parsers: it builds argument lists (never a
shell), runs one tool per call with `LC_ALL=C`, keeps stdout and stderr apart,
kills a child that overruns its timeout or whose caller is cancelled, and hands
the text to `classify` and the parsers. Changer commands go one at a time through
a lock per changer device; `mt` queries of different drives run in parallel.

Drive numbers are mtx's data transfer elements (0-based), not /dev/nstN numbers
(FORMATS.md 7.12): the library definition maps each element to its device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from drivers.base import DriveStatus, Inventory, TapeLibrary
from drivers.definition import DriveDefinition, LibraryDefinition, validate_device
from drivers.errors import (
    CommandTimeoutError,
    DegradedStatusError,
    DeviceBusyError,
    DriverError,
    HardwareError,
    InvalidArgumentError,
    NotReadyError,
    ParseError,
    UnsupportedToolError,
)
from drivers.lockfile import file_lock
from drivers.mtx.classify import Tool, classify
from drivers.mtx.parse_inquiry import parse_inquiry
from drivers.mtx.parse_move import check_move_output
from drivers.mtx.parse_mt_status import parse_mt_status
from drivers.mtx.parse_status import parse_status
from drivers.mtx.parse_version import parse_mt_version, parse_mtx_version

log = logging.getLogger(__name__)

# One lock per changer device and event loop: asyncio locks belong to a loop, and
# two MtxLibrary objects (or a symlink and its target) must still share the robot.
_CHANGER_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _changer_lock(changer: str) -> asyncio.Lock:
    locks = _CHANGER_LOCKS.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(os.path.realpath(changer), asyncio.Lock())


@dataclass(frozen=True, slots=True)
class Completed:
    """One finished tool run, decoded."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class MtxLibrary(TapeLibrary):
    """A SCSI tape library driven by mtx 1.3.x (changer) and mt-st (drives)."""

    def __init__(
        self,
        definition: LibraryDefinition,
        *,
        mtx: str = "mtx",
        mt: str = "mt",
        timeout_s: float = 900.0,
        query_timeout_s: float = 120.0,
        env: Mapping[str, str] | None = None,
        degraded_retries: int = 2,
        retry_delay_s: float = 1.0,
        kill_grace_s: float = 30.0,
        lock_file: Path | None = None,
    ) -> None:
        super().__init__(definition)
        validate_device(definition.changer)
        for drive in definition.drives:
            validate_device(drive.device)
        if timeout_s <= 0 or query_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        self._mtx_exe = mtx
        self._mt_exe = mt
        #: Moves, rewind, offline: a robot move plus unthreading can take minutes.
        self._timeout_s = timeout_s
        #: Status, inquiry, versions: seconds, even for an 1840-slot listing.
        self._query_timeout_s = min(query_timeout_s, timeout_s)
        self._degraded_retries = degraded_retries
        self._retry_delay_s = retry_delay_s
        self._kill_grace_s = kill_grace_s
        child_env = dict(os.environ if env is None else env)
        # strerror texts are what classify reads (FORMATS.md 7.24).
        child_env["LC_ALL"] = "C"
        child_env["LANG"] = "C"
        self._env = child_env
        self._drive_locks: dict[int, asyncio.Lock] = {}
        #: Shared with other processes (a manual `tapeworker inventory`).
        self._lock_file = lock_file

    # -- validation ------------------------------------------------------------------

    def _slot(self, slot: int) -> int:
        last = self.definition.slots + self.definition.import_export
        if type(slot) is not int or not 1 <= slot <= last:
            raise InvalidArgumentError(f"slot must be an integer 1..{last}, got {slot!r}")
        return slot

    def _drive(self, drive: int) -> DriveDefinition:
        if type(drive) is not int or drive < 0:
            raise InvalidArgumentError(f"drive must be an integer >= 0, got {drive!r}")
        try:
            definition = self.definition.drive(drive)
        except KeyError:
            raise InvalidArgumentError(f"no drive {drive} in the library definition") from None
        validate_device(definition.device)
        return definition

    @contextlib.asynccontextmanager
    async def _changer(self) -> AsyncIterator[None]:
        """The robot: one command at a time in this process, then across processes."""
        async with _changer_lock(self.definition.changer), file_lock(self._lock_file):
            yield

    def _drive_lock(self, drive: int) -> asyncio.Lock:
        # st allows one open per device: two `mt` at once on one drive is EBUSY.
        return self._drive_locks.setdefault(drive, asyncio.Lock())

    # -- running the tools -----------------------------------------------------------

    async def _run(self, executable: str, *args: str, timeout_s: float) -> Completed:
        argv = (executable, *args)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                # Its own process group, so that a kill reaches anything it started.
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise UnsupportedToolError(
                f"cannot run {executable}: {exc.strerror or exc}", command=argv
            ) from exc
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError as exc:
            await self._kill(proc, argv)
            raise CommandTimeoutError(
                f"no answer within {timeout_s:g}s; the command was killed", command=argv
            ) from exc
        except BaseException:
            # Likely the caller's own timeout cancelled us: the child must not
            # outlive the request that started it.
            await self._kill(proc, argv)
            raise
        assert proc.returncode is not None  # communicate() waited for it
        return Completed(
            argv=argv,
            returncode=proc.returncode,
            stdout=stdout.decode("utf-8", errors="replace"),
            stderr=stderr.decode("utf-8", errors="replace"),
        )

    async def _kill(self, proc: asyncio.subprocess.Process, argv: tuple[str, ...]) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        try:
            # A process inside a SCSI ioctl dies only when the ioctl returns; we
            # wait a while so that the robot is not handed a second command early.
            await asyncio.wait_for(proc.wait(), self._kill_grace_s)
        except TimeoutError:
            log.error("killed tool did not exit in %ss: %s", self._kill_grace_s, " ".join(argv))

    async def _mtx_run(self, *args: str, timeout_s: float) -> Completed:
        return await self._run(
            self._mtx_exe, "-f", self.definition.changer, *args, timeout_s=timeout_s
        )

    async def _mt_run(self, drive: DriveDefinition, *args: str, timeout_s: float) -> Completed:
        return await self._run(self._mt_exe, "-f", drive.device, *args, timeout_s=timeout_s)

    @staticmethod
    def _raise_for(
        tool: Tool, run: Completed, *, slot: int | None = None, drive: int | None = None
    ) -> DegradedStatusError | None:
        """Raise the run's error; hand back a degraded-status error for the caller."""
        error = classify(tool, run.argv, run.returncode, run.stdout, run.stderr)
        if error is None:
            return None
        error.slot = slot if error.slot is None else error.slot
        error.drive = drive if error.drive is None else error.drive
        if isinstance(error, DegradedStatusError):
            return error
        raise error

    # -- the changer -----------------------------------------------------------------

    async def inventory(self) -> Inventory:
        async with self._changer():
            return await self._inventory_locked()

    async def _inventory_locked(self) -> Inventory:
        attempt = 0
        while True:
            run = await self._mtx_run("status", timeout_s=self._query_timeout_s)
            degraded = self._raise_for("mtx", run) or self._without_tags(run)
            if degraded is None:
                break
            # A degraded listing may lack the mailslots (FORMATS.md 3.4): retry it a
            # couple of times, and never use it.
            attempt += 1
            if attempt > self._degraded_retries:
                raise degraded
            log.warning("mtx status degraded, retrying (%d): %s", attempt, degraded.message)
            await asyncio.sleep(self._retry_delay_s * attempt)
        status = parse_status(run.stdout, command=run.argv)
        if status.device != self.definition.changer:
            raise ParseError(
                f"mtx status names changer {status.device!r}, we asked {self.definition.changer!r}",
                line=run.stdout.splitlines()[0] if run.stdout else "",
                command=run.argv,
            )
        for note in status.notes:
            log.warning("mtx status: %s", note)
        return status.inventory

    def _without_tags(self, run: Completed) -> DegradedStatusError | None:
        """A listing of full elements without a single volume tag, from a library
        whose definition has labelled cartridges: when READ ELEMENT STATUS with
        volume tags fails, mtx asks again without them and exits 0 in silence."""
        if not any(t.barcode for t in self.definition.tapes):
            return None
        lines = run.stdout.splitlines()
        full = [line for line in lines if ":Full" in line]
        if not full or any("VolumeTag" in line for line in full):
            return None
        return DegradedStatusError(
            "mtx status shows no volume tags (its first READ ELEMENT STATUS failed)",
            command=run.argv,
            returncode=run.returncode,
            stderr=run.stderr,
        )

    async def _move(self, kind: Literal["load", "unload"], slot: int, drive: int) -> None:
        run = await self._mtx_run(kind, str(slot), str(drive), timeout_s=self._timeout_s)
        degraded = self._raise_for("mtx", run, slot=slot, drive=drive)
        try:
            check_move_output(run.stdout, kind, slot=slot, drive=drive, command=run.argv)
        except ParseError as exc:
            # Exit 0 without mtx's own `done` for this move: we cannot tell what moved.
            exc.outcome_uncertain = True
            exc.slot, exc.drive = slot, drive
            raise exc from degraded
        if degraded is not None:
            # mtx read the element status with defaults but moved (`done`).
            log.warning("mtx %s succeeded after: %s", kind, degraded.message)

    async def load(self, slot: int, drive: int) -> None:
        self._slot(slot)
        self._drive(drive)
        async with self._changer():
            await self._move("load", slot, drive)

    async def unload(self, drive: int, slot: int) -> None:
        self._slot(slot)
        self._drive(drive)
        if self.definition.offline_before_unload and (await self.drive_status(drive)).loaded:
            # Rewinding and unthreading take a minute; the robot is not needed yet.
            # Only a threaded tape is offlined: mt-st answers "No medium found" for
            # an empty or already unthreaded drive, which would fail every retry.
            await self.offline(drive)
        async with self._changer():
            await self._move("unload", slot, drive)
            after = await self._inventory_locked()
        if not after.slot(slot).full or after.drive(drive).full:
            error = HardwareError(
                f"mtx unload said done, but slot {slot} is"
                f" {'full' if after.slot(slot).full else 'empty'} and drive {drive} is"
                f" {'full' if after.drive(drive).full else 'empty'}",
                drive=drive,
                slot=slot,
            )
            raise error

    async def transfer(self, source: int, destination: int) -> None:
        self._slot(source)
        self._slot(destination)
        async with self._changer():
            run = await self._mtx_run(
                "transfer", str(source), str(destination), timeout_s=self._timeout_s
            )
        degraded = self._raise_for("mtx", run, slot=source)
        if degraded is not None:
            log.warning("mtx transfer succeeded after: %s", degraded.message)

    # -- the drives ------------------------------------------------------------------

    async def _mt(self, drive: int, command: str, timeout_s: float) -> Completed:
        definition = self._drive(drive)
        async with self._drive_lock(drive):
            run = await self._mt_run(definition, command, timeout_s=timeout_s)
        self._raise_for("mt", run, drive=drive)
        return run

    async def drive_status(self, drive: int) -> DriveStatus:
        run = await self._mt(drive, "status", self._query_timeout_s)
        return parse_mt_status(run.stdout, command=run.argv)

    async def rewind(self, drive: int) -> None:
        await self._mt(drive, "rewind", self._timeout_s)

    async def offline(self, drive: int) -> None:
        await self._mt(drive, "offline", self._timeout_s)

    # -- start-up --------------------------------------------------------------------

    async def check(self) -> list[str]:
        """Missing tools or devices, GNU mt, a changer path that is not a changer."""
        problems: list[str] = []
        try:
            run = await self._run(self._mtx_exe, "--version", timeout_s=self._query_timeout_s)
            parse_mtx_version(run.stdout, run.stderr, command=run.argv)
        except DriverError as exc:
            problems.append(f"mtx: {exc}")
        mt_ok = True
        try:
            run = await self._run(self._mt_exe, "--version", timeout_s=self._query_timeout_s)
            parse_mt_version(run.stdout, command=run.argv)
        except DriverError as exc:
            mt_ok = False
            problems.append(f"mt: {exc}")
        if not problems:
            problems.extend(await self._check_changer())
        if mt_ok:
            problems.extend(await self._check_drives())
        return problems

    async def _check_changer(self) -> list[str]:
        changer = self.definition.changer
        try:
            async with self._changer():
                run = await self._mtx_run("inquiry", timeout_s=self._query_timeout_s)
            self._raise_for("mtx", run)
            inquiry = parse_inquiry(run.stdout, command=run.argv)
            if not inquiry.is_changer:
                return [
                    f"changer {changer} answers as a {inquiry.product_type}"
                    f" ({inquiry.vendor} {inquiry.product}), not a medium changer"
                ]
            inventory = await self.inventory()
        except DriverError as exc:
            return [f"changer {changer}: {exc}"]
        problems: list[str] = []
        reported = len(inventory.drives)
        for drive in self.definition.drives:
            if drive.index >= reported:
                problems.append(
                    f"drive {drive.index} ({drive.device}) is not on changer {changer},"
                    f" which reports {reported} drive(s)"
                )
        ie = sum(1 for s in inventory.slots if s.import_export)
        storage = len(inventory.slots) - ie
        if (storage, ie) != (self.definition.slots, self.definition.import_export):
            problems.append(
                f"changer {changer} reports {storage} storage and {ie} import/export slots;"
                f" the definition says {self.definition.slots} and"
                f" {self.definition.import_export}"
            )
        return problems

    async def _check_drives(self) -> list[str]:
        problems: list[str] = []
        for drive in self.definition.drives:
            try:
                await self.drive_status(drive.index)
            except (DeviceBusyError, NotReadyError):
                # Busy: a data mover holds it, so it exists; not ready: no tape yet.
                continue
            except DriverError as exc:
                problems.append(f"drive {drive.index} ({drive.device}): {exc}")
        return problems
