"""`SimulatedLibrary`: the driver interface over the simulated state.

Time passes for real (scaled by the speed factor): a move holds the robot for
its duration, and a loaded drive reports online only once it has threaded, so
the worker polls it exactly as it polls a real drive.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from drivers.base import DriveState, DriveStatus, Inventory, SlotState, TapeLibrary
from drivers.definition import LibraryDefinition
from drivers.media import media_of, validate_barcode
from drivers.sim.state import (
    FaultError,
    Operation,
    RateFault,
    ScriptedFault,
    SimState,
    StateStore,
    make_error,
    now,
)


def inventory_of(state: SimState) -> Inventory:
    drives = tuple(
        DriveState(
            index=d.index,
            full=d.barcode is not None,
            barcode=d.barcode,
            source_slot=d.source_slot if d.barcode is not None else None,
        )
        for d in state.drives
    )
    slots = tuple(
        SlotState(
            number=s.number,
            full=s.barcode is not None,
            barcode=None if s.unreadable else s.barcode,
            import_export=s.import_export,
        )
        for s in state.slots
    )
    return Inventory(drives=drives, slots=slots)


def status_of(state: SimState, drive_index: int, at: float) -> DriveStatus:
    drive = state.drive(drive_index)
    state.check_drive_alive(drive)
    loaded = drive.barcode is not None and drive.threaded
    media = media_of(drive.barcode) if drive.barcode else None
    return DriveStatus(
        online=loaded and at >= drive.ready_at,
        loaded=loaded,
        write_protected=loaded and drive.barcode in state.write_protected,
        at_bot=loaded and at >= drive.ready_at,
        density_code=state.drive_density(drive) if loaded else None,
        generation=media.generation if loaded and media is not None else None,
        needs_cleaning=drive.needs_cleaning,
    )


class SimulatedLibrary(TapeLibrary):
    def __init__(self, definition: LibraryDefinition, store: StateStore) -> None:
        super().__init__(definition)
        self.store = store
        self._robot = asyncio.Lock()

    @classmethod
    def open(
        cls, definition: LibraryDefinition, *, state_file: Path | None = None, speed: float = 1.0
    ) -> SimulatedLibrary:
        """Open the library in `state_file`, creating it from the definition if new."""
        initial = SimState.from_definition(definition, speed)
        store = StateStore(state_file, initial)
        if state_file is not None:
            with store.locked() as state:
                state.speed = speed
        return cls(definition, store)

    @contextlib.asynccontextmanager
    async def _holding_robot(self) -> AsyncIterator[None]:
        """One robot at a time: in this process (asyncio lock) and across processes
        (the robot flock, taken in a thread so the event loop keeps running)."""
        async with self._robot:
            robot = self.store.robot()
            await asyncio.to_thread(robot.__enter__)
            try:
                yield
            finally:
                robot.__exit__(None, None, None)

    async def inventory(self) -> Inventory:
        async with self._holding_robot():
            with self.store.locked() as state:
                state.raise_fault("inventory", "read element status")
                delay = state.timing().inventory() + state.timing().scaled(
                    state.faults.inventory_delay_s
                )
            await asyncio.sleep(delay)
            with self.store.locked() as state:
                return inventory_of(state)

    async def _move(self, begin: str, finish: str, *args: int) -> None:
        async with self._holding_robot():
            with self.store.locked() as state:
                duration: float = getattr(state, begin)(*args)
            await asyncio.sleep(duration)
            with self.store.locked() as state:
                getattr(state, finish)(*args, now())

    async def load(self, slot: int, drive: int) -> None:
        await self._move("begin_load", "finish_load", slot, drive)

    async def unload(self, drive: int, slot: int) -> None:
        if self.definition.offline_before_unload:
            await self.offline(drive)
        await self._move("begin_unload", "finish_unload", drive, slot)

    async def transfer(self, source: int, destination: int) -> None:
        await self._move("begin_transfer", "finish_transfer", source, destination)

    async def drive_status(self, drive: int) -> DriveStatus:
        with self.store.locked() as state:
            state.raise_fault("status", f"status of drive {drive}", drive=drive)
            return status_of(state, drive, now())

    async def rewind(self, drive: int) -> None:
        with self.store.locked() as state:
            d = state.drive(drive)
            state.check_drive_alive(d)
            if d.barcode is None or not d.threaded:
                raise make_error("not_ready", f"drive {drive} has no tape", drive=drive)
            duration = state.timing().rewind(d.generation)
        await asyncio.sleep(duration)

    async def offline(self, drive: int) -> None:
        with self.store.locked() as state:
            duration = state.begin_offline(drive)
        await asyncio.sleep(duration)
        with self.store.locked() as state:
            state.finish_offline(drive)

    # -- fault injection -------------------------------------------------------------

    def inject(
        self,
        op: Operation,
        error: FaultError,
        *,
        drive: int | None = None,
        slot: int | None = None,
        count: int = 1,
    ) -> None:
        """The next `count` matching operations fail with `error`."""
        with self.store.locked() as state:
            state.faults.scripted.append(ScriptedFault(op, error, drive, slot, count))

    def inject_rate(self, op: Operation, error: FaultError, probability: float, seed: int) -> None:
        with self.store.locked() as state:
            state.faults.rates.append(RateFault(op, error, probability))
            state.faults.seed = seed

    def open_door(self) -> None:
        """An operator opened the door: the next changer command gets unit attention."""
        with self.store.locked() as state:
            state.faults.unit_attention = True

    def import_cartridge(self, barcode: str, slot: int) -> None:
        """An operator put a cartridge into an import/export slot: the next changer
        command gets unit attention (medium may have changed)."""
        validate_barcode(barcode)
        with self.store.locked() as state:
            target = state.slot(slot)
            if not target.import_export or target.barcode is not None:
                raise ValueError(f"slot {slot} is not an empty import/export slot")
            target.barcode = barcode
            state.faults.import_attention = True

    def delay_ready(self, drive: int, seconds: float) -> None:
        with self.store.locked() as state:
            state.faults.not_ready_s[drive] = seconds

    def kill_drive(self, drive: int, reason: str = "drive hardware failure") -> None:
        with self.store.locked() as state:
            state.drive(drive).dead = reason

    def stick(self, barcode: str) -> None:
        validate_barcode(barcode)
        with self.store.locked() as state:
            state.faults.stuck.append(barcode)

    def unreadable_label(self, slot: int) -> None:
        with self.store.locked() as state:
            state.slot(slot).unreadable = True

    def slow_inventory(self, seconds: float) -> None:
        with self.store.locked() as state:
            state.faults.inventory_delay_s = seconds

    def need_cleaning(self, drive: int) -> None:
        with self.store.locked() as state:
            state.drive(drive).needs_cleaning = True

    def clear_faults(self) -> None:
        with self.store.locked() as state:
            state.faults.scripted.clear()
            state.faults.rates.clear()
            state.faults.unit_attention = False
            state.faults.import_attention = False
            state.faults.not_ready_s.clear()
            state.faults.stuck.clear()
            state.faults.inventory_delay_s = 0.0
            for drive in state.drives:
                drive.dead = None
