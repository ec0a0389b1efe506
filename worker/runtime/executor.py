"""Runs planned actions on the driver, with a write-ahead record in the journal.

Every robot or drive command has its intent committed before it runs and its
outcome after, so a restart knows what was in flight. The changer lock is held
only while a cartridge moves; waiting for a drive to come online happens outside
it, so several mounts overlap as they do on real libraries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from drivers.base import TapeLibrary
from drivers.errors import (
    DriverError,
    HardwareError,
    IncompatibleMediaError,
    InterventionRequiredError,
    OperationError,
    RetryableError,
)
from worker.callbacks import ChangeListener, Clock
from worker.core import drive_health
from worker.core.actions import Attach, Clean, Load, Unload
from worker.core.requests import RequestState
from worker.ops import metrics
from worker.ops.metrics import Stopwatch
from worker.runtime.in_flight import InFlight
from worker.settings import ExecutorSettings
from worker.state.journal import Journal, Transaction

log = structlog.get_logger("tapeworker.executor")


class _Unthreaded(Exception):
    """The cartridge sits in its drive unthreaded (after `mt offline`): it never
    comes online by itself."""


#: A drive's work arrives as one ordered chain (an unload, then the load that needs it).
DriveWork = Load | Unload | Attach | Clean


class ChainNotEndedError(Exception):
    """A drive chain raised, and recording its end failed too (the journal refused
    the write); `cause` is what the chain raised, to record once the journal can."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"the end of a drive chain was not recorded: {cause!r}")
        self.cause = cause


class Executor:
    def __init__(
        self,
        library: TapeLibrary,
        journal: Journal,
        settings: ExecutorSettings,
        *,
        hold_seconds: float,
        on_change: ChangeListener,
        clock: Clock = time.time,
    ) -> None:
        self._library = library
        self._journal = journal
        self._settings = settings
        self._hold_seconds = hold_seconds
        self._on_change = on_change
        self._clock = clock
        self._robot = asyncio.Lock()
        #: What is under way: the reconciler asks it, only the executor changes it.
        self.in_flight = InFlight()

    @property
    def robot(self) -> asyncio.Lock:
        """The changer lock: one robot move (or inventory) at a time."""
        return self._robot

    @property
    def robot_busy(self) -> bool:
        return self._robot.locked()

    def claim(self, drive: int, chain: list[DriveWork]) -> None:
        """Hold the drive and the chain's tapes for it until `run_chain` ends."""
        self.in_flight.claim(
            drive,
            {a.barcode for a in chain},
            loading=[a.barcode for a in chain if isinstance(a, Load | Attach)],
        )

    async def run_chain(self, drive: int, chain: list[DriveWork]) -> None:
        """Run one drive's actions in order; stop the chain at the first failure.

        An action that raises anything (a journal error, an OSError of the backend,
        a bug) still ends its requests: see `abandon`. The drive's claim is always
        given back.
        """
        tapes = {a.barcode for a in chain}
        try:
            for action in chain:
                try:
                    ok = await self._run(action)
                except Exception as exc:
                    try:
                        await self.abandon(drive, [action], exc)
                    except Exception as unrecorded:
                        raise ChainNotEndedError(exc) from unrecorded
                    break
                if not ok:
                    break
        finally:
            self.in_flight.release(drive, tapes)

    async def abandon(self, drive: int, actions: list[DriveWork], exc: BaseException) -> None:
        """End actions that raised an unexpected error, as a failed driver command ends.

        The drive's open operation is recorded as failed with the error; the requests
        still mounting go back to pending (failed with the reason once their retry
        budget is spent); the drive starts idling; and since nobody knows where the
        cartridge is now, the changer is re-inventoried before the next move.
        """
        now = self._clock()
        error_class = type(exc).__name__
        message = f"{error_class}: {exc}"
        log.error("drive chain crashed", drive=drive, error=message, exc_info=exc)
        self.in_flight.suspect(a.barcode for a in actions)
        request_ids = tuple(
            rid for a in actions if isinstance(a, Load | Attach) for rid in a.request_ids
        )
        in_flight = await self._journal.operations("intent") + await self._journal.operations(
            "moved"
        )
        async with self._journal.transaction() as tx:
            for op in in_flight:
                if op.drive == drive:
                    await tx.finish_operation(
                        op.id, "failed", now, error=message, error_class=error_class
                    )
            for rid in request_ids:
                await self._retry_or_fail(tx, rid, now, message, give_up=False)
            await tx.drive_freed(drive, now)
        await self._notify(request_ids)

    async def _run(self, action: DriveWork) -> bool:
        if isinstance(action, Load):
            return await self._load(action.barcode, action.slot, action.drive, action.request_ids)
        if isinstance(action, Clean):
            return await self._clean(action)
        if isinstance(action, Unload):
            return await self._unload(action)
        return await self._attach(action)

    # -- moves ---------------------------------------------------------------------

    async def _move(self, kind: str, coro_factory: Callable[[], Awaitable[None]]) -> None:
        """One robot move: under the changer lock, with a timeout and retries."""
        attempt = 0
        while True:
            try:
                # asyncio.timeout, not wait_for: before Python 3.12 wait_for can swallow
                # the cancellation of a bounded shutdown when the move ends at that moment.
                async with self._robot, asyncio.timeout(self._settings.move_timeout_s):
                    moving = Stopwatch()
                    try:
                        await coro_factory()
                    finally:
                        metrics.ROBOT_BUSY.inc(moving.elapsed())
            except RetryableError as exc:
                if exc.outcome_uncertain:
                    self.in_flight.suspect()
                attempt += 1
                if attempt > self._settings.retries:
                    raise
                delay = self._settings.backoff_s * (2 ** (attempt - 1))
                log.warning("retrying", kind=kind, attempt=attempt, delay_s=delay, error=str(exc))
                await asyncio.sleep(delay)
            except TimeoutError as exc:
                self.in_flight.suspect()
                raise HardwareError(
                    f"{kind} did not finish in {self._settings.move_timeout_s}s"
                ) from exc
            else:
                return

    async def _load(
        self, barcode: str, slot: int, drive: int, request_ids: tuple[int, ...]
    ) -> bool:
        now = self._clock()
        mount = Stopwatch()
        request_ids = await self._start_mounting(request_ids, barcode, drive, now)
        if not request_ids:
            return False
        await self._notify(request_ids)
        op = await self._journal.begin_operation(
            "load", now, barcode=barcode, slot=slot, drive=drive, request_ids=request_ids
        )
        log.info("loading", barcode=barcode, slot=slot, drive=drive, operation=op)
        try:
            await self._move("load", lambda: self._library.load(slot, drive))
        except DriverError as exc:
            await self._failed(op, exc, request_ids, barcode=barcode, drive=drive)
            return False
        now = self._clock()
        async with self._journal.transaction() as tx:
            await tx.move_tape(barcode, slot=None, drive=drive, now=now, mounted=True)
            await tx.finish_operation(op, "moved", now)
        return await self._become_ready(op, barcode, drive, request_ids, mount)

    async def _become_ready(
        self,
        op: int | None,
        barcode: str,
        drive: int,
        request_ids: tuple[int, ...],
        mount: Stopwatch | None = None,
    ) -> bool:
        try:
            await self._wait_online(drive, attached=op is None)
        except _Unthreaded:
            return await self._put_back(drive, barcode, request_ids)
        except DriverError as exc:
            if op is None:
                op = await self._journal.begin_operation(
                    "attach", self._clock(), barcode=barcode, drive=drive, request_ids=request_ids
                )
            await self._failed(op, exc, request_ids, barcode=barcode, drive=drive)
            return False
        now = self._clock()
        ready: list[tuple[int, int, float]] = []
        async with self._journal.transaction() as tx:
            if op is not None:
                await tx.finish_operation(op, "done", now)
            await tx.drive_succeeded(drive)
            for rid in request_ids:
                current = await tx.request(rid)
                if current is None or current.state is not RequestState.MOUNTING:
                    # Released or destroyed while we mounted: the tape stays for now.
                    continue
                await tx.make_ready(rid, drive, now, self._hold_seconds)
                ready.append((rid, current.destination_id, now - current.arrival))
            await tx.drive_freed(drive, now)
        mount_s = None
        if mount is not None:
            mount_s = round(mount.elapsed(), 3)
            metrics.MOUNT_SECONDS.observe(mount_s)
        for rid, destination, wait_s in ready:
            log.info(
                "request ready",
                request=rid,
                destination=destination,
                barcode=barcode,
                drive=drive,
                wait_s=round(wait_s, 3),
                mount_s=mount_s,
            )
        await self._notify(request_ids)
        return True

    async def _wait_online(self, drive: int, *, attached: bool = False) -> None:
        """Poll `mt status` until the drive is online, bounded by the ready timeout.

        `attached`: the cartridge was already in the drive, no load just ran. One the
        drive reports as not loaded was unthreaded by `mt offline` (a stop between it
        and the robot's move, or an operator): a drive threads a cartridge only when
        the robot inserts it, so waiting for it would only spend the ready timeout.
        """
        deadline = asyncio.get_running_loop().time() + self._settings.ready_timeout_s
        poll = self._settings.ready_poll_s
        while True:
            try:
                status = await self._library.drive_status(drive)
            except RetryableError:
                status = None
            if status is not None and status.online:
                return
            if attached and status is not None and not status.loaded:
                raise _Unthreaded
            if asyncio.get_running_loop().time() >= deadline:
                raise HardwareError(
                    f"drive {drive} not online {self._settings.ready_timeout_s}s after the load",
                    drive=drive,
                )
            await asyncio.sleep(poll)

    async def _attach(self, action: Attach) -> bool:
        request_ids = await self._start_mounting(
            action.request_ids, action.barcode, action.drive, self._clock()
        )
        if not request_ids:
            return False
        return await self._become_ready(None, action.barcode, action.drive, request_ids)

    async def _put_back(self, drive: int, barcode: str, request_ids: tuple[int, ...]) -> bool:
        """Take an unthreaded cartridge back to its home slot and hand its requests
        back to the planner, which loads it again (a load threads it; neither mtx nor
        every drive offers a reload in place). A home slot taken meanwhile needs a
        person: the requests fail with that reason rather than wait on the drive."""
        tapes = await self._journal.tapes()
        home = next((t.home_slot for t in tapes if t.barcode == barcode), None)
        taken = {t.slot for t in tapes if t.slot is not None}
        free = home is not None and home not in taken
        now = self._clock()
        reason = f"{barcode} was unthreaded in drive {drive}"
        async with self._journal.transaction() as tx:
            for rid in request_ids:
                current = await tx.request(rid)
                if current is None or current.state is not RequestState.MOUNTING:
                    continue
                if free:
                    await tx.set_request_state(
                        rid, RequestState.PENDING, now, drive=None, reason=reason
                    )
                else:
                    await tx.set_request_state(
                        rid,
                        RequestState.FAILED,
                        now,
                        reason=f"{reason} and its home slot is not free: unload it by hand",
                    )
        log.warning("unthreaded cartridge in drive", drive=drive, barcode=barcode, slot=home)
        await self._notify(request_ids)
        if free and home is not None:
            await self._unload(Unload(drive=drive, barcode=barcode, slot=home))
        return False

    async def _start_mounting(
        self, request_ids: tuple[int, ...], barcode: str, drive: int, now: float
    ) -> tuple[int, ...]:
        """Claim the requests still pending; a destroy may have released some since
        the plan was made, and nothing is mounted for nobody."""
        started: list[int] = []
        async with self._journal.transaction() as tx:
            for rid in request_ids:
                current = await tx.request(rid)
                if current is None or current.state is not RequestState.PENDING:
                    continue
                await tx.set_request_state(
                    rid, RequestState.MOUNTING, now, drive=drive, barcode=barcode
                )
                started.append(rid)
            if started:
                await tx.drive_in_use(drive)
        return tuple(started)

    async def _unload(self, action: Unload) -> bool:
        now = self._clock()
        op = await self._journal.begin_operation(
            "unload", now, barcode=action.barcode, slot=action.slot, drive=action.drive
        )
        log.info("unloading", barcode=action.barcode, drive=action.drive, slot=action.slot)
        unload = Stopwatch()
        try:
            await self._move("unload", lambda: self._library.unload(action.drive, action.slot))
        except DriverError as exc:
            await self._failed(
                op, exc, (), barcode=action.barcode, drive=action.drive, kind="unload"
            )
            return False
        now = self._clock()
        async with self._journal.transaction() as tx:
            await tx.move_tape(action.barcode, slot=action.slot, drive=None, now=now)
            await tx.finish_operation(op, "done", now)
            await tx.drive_emptied(action.drive)
        duration = unload.elapsed()
        metrics.UNLOAD_SECONDS.observe(duration)
        log.info(
            "unload done",
            barcode=action.barcode,
            drive=action.drive,
            slot=action.slot,
            duration_s=round(duration, 3),
        )
        return True

    async def _clean(self, action: Clean) -> bool:
        now = self._clock()
        op = await self._journal.begin_operation(
            "clean", now, barcode=action.barcode, slot=action.slot, drive=action.drive
        )
        try:
            await self._move("clean-load", lambda: self._library.load(action.slot, action.drive))
            await self._move(
                "clean-unload", lambda: self._library.unload(action.drive, action.slot)
            )
        except DriverError as exc:
            await self._failed(op, exc, (), barcode=action.barcode, drive=action.drive)
            return False
        now = self._clock()
        async with self._journal.transaction() as tx:
            await tx.finish_operation(op, "done", now)
            await tx.cleaning_done(action.barcode, action.drive, now)
        return True

    # -- failure policy --------------------------------------------------------------

    async def _failed(
        self,
        op: int,
        exc: DriverError,
        request_ids: tuple[int, ...],
        *,
        barcode: str | None,
        drive: int | None,
        kind: str = "load",
    ) -> None:
        now = self._clock()
        log.error("operation failed", operation=op, error=str(exc), kind=type(exc).__name__)
        metrics.FAILURES.labels(kind, type(exc).__name__).inc()
        marked_down: str | None = None
        checks: list[str] = []
        if exc.outcome_uncertain or isinstance(exc, OperationError):
            self.in_flight.suspect()
        async with self._journal.transaction() as tx:
            await tx.finish_operation(
                op, "failed", now, error=str(exc), error_class=type(exc).__name__
            )
            if drive is not None and drive_health.counts_against_drive(exc):
                marked_down = await tx.count_drive_failure(
                    drive, exc.message, self._settings.drive_down_after
                )
            if barcode is not None and isinstance(exc, IncompatibleMediaError):
                await tx.tape_needs_check(barcode)
                checks.append("the drive refused the medium")
            if barcode is not None and (exc.outcome_uncertain or isinstance(exc, OperationError)):
                # Where is the cartridge now? The next inventory tells; one that the
                # library no longer shows anywhere needs an operator.
                self.in_flight.suspect([barcode])
            if barcode is not None and kind == "unload" and isinstance(exc, HardwareError):
                # The drive would not give the cartridge back: it is stuck.
                await tx.tape_needs_check(barcode)
                checks.append("stuck in the drive")
            for rid in request_ids:
                await self._retry_or_fail(
                    tx,
                    rid,
                    now,
                    f"{type(exc).__name__}: {exc.message}",
                    # Retrying cannot help a cartridge no drive takes, nor a library
                    # that waits for a person.
                    give_up=isinstance(exc, IncompatibleMediaError | InterventionRequiredError),
                )
        if marked_down is not None:
            log.error("drive marked down", drive=drive, reason=marked_down)
        for why in checks:
            log.warning("need_to_check set", barcode=barcode, drive=drive, reason=why)
        await self._notify(request_ids)

    async def _retry_or_fail(
        self, tx: Transaction, rid: int, now: float, reason: str, *, give_up: bool
    ) -> None:
        """A request whose mount failed: pending again, or failed with the reason once
        its retry budget is spent (inside the caller's transaction)."""
        current = await tx.request(rid)
        if current is None or current.state not in (RequestState.MOUNTING, RequestState.PENDING):
            return
        attempts = current.attempts + 1
        if give_up or attempts > self._settings.retries:
            await tx.set_request_state(
                rid, RequestState.FAILED, now, attempts=attempts, reason=reason
            )
        else:
            await tx.set_request_state(
                rid,
                RequestState.PENDING,
                now,
                attempts=attempts,
                drive=None,
                reason=f"retrying after {reason}",
            )

    async def _notify(self, request_ids: tuple[int, ...]) -> None:
        # Called with no destinations too: a drive's state may have changed alone.
        destinations: set[int] = set()
        for rid in request_ids:
            record = await self._journal.request(rid)
            if record is not None:
                destinations.add(record.destination_id)
        await self._on_change(destinations)
