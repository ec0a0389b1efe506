"""The simulated library's state, its physical rules and its faults.

Rule: every change to the simulated hardware happens here, under the state file's
lock, in two phases around the time it takes (`begin_*` checks and reserves,
`finish_*` applies). The async backend and the stand-in executables both call
these, so they cannot disagree about physics.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from drivers.errors import (
    DestinationFullError,
    DriverError,
    HardwareError,
    IllegalRequestError,
    IncompatibleMediaError,
    InterventionRequiredError,
    MediumRemovalPreventedError,
    NotReadyError,
    Sense,
    SourceEmptyError,
    UnitAttentionError,
)
from drivers.media import can_read, is_cleaning, media_of
from drivers.sim.timing import Timing

if TYPE_CHECKING:
    # Not at run time: the SCSI shell imports this module under an interpreter
    # without the daemon's dependencies (the definition needs pydantic).
    from drivers.definition import LibraryDefinition

FaultError = Literal[
    "hardware",
    "source_empty",
    "destination_full",
    "unit_attention",
    "not_ready",
    "removal_prevented",
    "illegal_request",
    "manual_intervention",
    "power_cycle_required",
    "magazine_not_accessible",
    "magazine_removed",
    "bad_element_type",
]
#: `mode_sense` is the changer's MODE SENSE, seen only through the SCSI emulation
#: (mtx works around its failure with built-in defaults).
Operation = Literal["load", "unload", "transfer", "inventory", "status", "offline", "mode_sense"]

#: Sense data a real changer or drive returns for each injected failure.
_ERRORS: dict[str, tuple[type[DriverError], Sense, str]] = {
    "hardware": (HardwareError, Sense(0x4, 0x15, 0x01), "mechanical positioning error"),
    "source_empty": (SourceEmptyError, Sense(0x5, 0x3B, 0x0E), "medium source element empty"),
    "destination_full": (
        DestinationFullError,
        Sense(0x5, 0x3B, 0x0D),
        "medium destination element full",
    ),
    "unit_attention": (
        UnitAttentionError,
        Sense(0x6, 0x28, 0x00),
        "not ready to ready change, medium may have changed",
    ),
    "not_ready": (NotReadyError, Sense(0x2, 0x04, 0x01), "becoming ready"),
    "removal_prevented": (
        MediumRemovalPreventedError,
        Sense(0x5, 0x53, 0x02),
        "medium removal prevented",
    ),
    "illegal_request": (IllegalRequestError, Sense(0x5, 0x21, 0x01), "invalid element address"),
    "manual_intervention": (
        InterventionRequiredError,
        Sense(0x2, 0x04, 0x03),
        "not ready, manual intervention required",
    ),
    "power_cycle_required": (
        InterventionRequiredError,
        Sense(0x2, 0x04, 0x22),
        "not ready, power cycle required",
    ),
    "magazine_not_accessible": (
        InterventionRequiredError,
        Sense(0x2, 0x3B, 0x11),
        "medium magazine not accessible",
    ),
    "magazine_removed": (
        InterventionRequiredError,
        Sense(0x2, 0x3B, 0x12),
        "medium magazine removed",
    ),
    # Not sense data: through the SCSI emulation, the READ ELEMENT STATUS answer
    # carries an element type code no standard defines (mtx's fatal-error path);
    # elsewhere the inventory fails as a firmware fault does.
    "bad_element_type": (
        HardwareError,
        Sense(0x4, 0x44, 0x00),
        "element status of an unknown element type",
    ),
}

#: mt-st density codes per media (FORMATS.md 4.1).
DENSITY = {5: 0x58, 6: 0x5A, 7: 0x5C, 8: 0x5E, 9: 0x60}
DENSITY_M8 = 0x5D


def make_error(kind: str, message: str, **where: Any) -> DriverError:
    cls, sense, text = _ERRORS[kind]
    return cls(f"{message}: {text}", sense=sense, **where)


@dataclass
class Slot:
    number: int
    barcode: str | None = None
    import_export: bool = False
    #: The label cannot be read: the slot shows full, without a volume tag.
    unreadable: bool = False


@dataclass
class Drive:
    index: int
    device: str
    generation: int
    barcode: str | None = None
    source_slot: int | None = None
    #: The tape is threaded (loaded at the head); the robot cannot take it.
    threaded: bool = False
    #: When the threaded tape becomes ready (epoch seconds).
    ready_at: float = 0.0
    needs_cleaning: bool = False
    #: Why the drive is dead, or None.
    dead: str | None = None


@dataclass
class ScriptedFault:
    """The next `count` matching operations fail with `error`."""

    op: Operation
    error: FaultError
    drive: int | None = None
    slot: int | None = None
    count: int = 1


@dataclass
class RateFault:
    """Each matching operation fails with `error` with this probability."""

    op: Operation
    error: FaultError
    probability: float


@dataclass
class Faults:
    scripted: list[ScriptedFault] = field(default_factory=list)
    rates: list[RateFault] = field(default_factory=list)
    seed: int = 0
    draws: int = 0
    #: Pending unit attention (a door was opened): the next changer command gets it.
    unit_attention: bool = False
    #: Pending unit attention of an import (a cartridge was put in a mail slot).
    import_attention: bool = False
    #: Extra seconds (unscaled) a drive stays not-ready after its next load.
    not_ready_s: dict[int, float] = field(default_factory=dict)
    #: Cartridges that stick in their drive: unloading them fails.
    stuck: list[str] = field(default_factory=list)
    #: Extra seconds (unscaled) every inventory takes.
    inventory_delay_s: float = 0.0


@dataclass
class SimState:
    changer: str
    speed: float
    offline_before_unload: bool
    slots: list[Slot]
    drives: list[Drive]
    mount_counts: dict[str, int] = field(default_factory=dict)
    #: When each cartridge last moved (epoch seconds): the tape's `date_move`.
    last_moved: dict[str, float] = field(default_factory=dict)
    write_protected: list[str] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    #: Moves done, for tests and operators.
    moves: int = 0
    #: What the changer answers to INQUIRY.
    vendor: str = "TAPEWORK"
    product: str = "SIMULATED LIB"

    @classmethod
    def from_definition(cls, definition: LibraryDefinition, speed: float) -> SimState:
        slots = [
            Slot(n, import_export=n > definition.slots)
            for n in range(1, definition.slots + definition.import_export + 1)
        ]
        drives = [Drive(d.index, d.device, d.generation) for d in definition.drives]
        state = cls(
            changer=definition.changer,
            speed=speed,
            offline_before_unload=definition.offline_before_unload,
            slots=slots,
            drives=drives,
            write_protected=[t.barcode for t in definition.tapes if t.write_protected],
            vendor=definition.vendor,
            product=definition.product,
        )
        for tape in definition.tapes:
            if tape.slot is not None:
                state.slot(tape.slot).barcode = tape.barcode
            elif tape.drive is not None:
                drive = state.drive(tape.drive)
                drive.barcode = tape.barcode
                drive.threaded = True
                drive.source_slot = None
        # A cartridge defined in a drive returns to the first free storage slot.
        for drive in state.drives:
            if drive.barcode is not None:
                free = next(s for s in state.slots if s.barcode is None and not s.import_export)
                drive.source_slot = free.number
        return state

    # -- lookups ---------------------------------------------------------------------

    def slot(self, number: int) -> Slot:
        if not 1 <= number <= len(self.slots):
            raise IllegalRequestError(
                f"no storage element {number} (1..{len(self.slots)})",
                sense=Sense(0x5, 0x21, 0x01),
                slot=number,
            )
        return self.slots[number - 1]

    def drive(self, index: int) -> Drive:
        for drive in self.drives:
            if drive.index == index:
                return drive
        raise IllegalRequestError(
            f"no data transfer element {index}", sense=Sense(0x5, 0x21, 0x01), drive=index
        )

    def drive_by_device(self, device: str) -> Drive | None:
        return next((d for d in self.drives if d.device == device), None)

    def timing(self) -> Timing:
        return Timing(self.speed)

    # -- faults ----------------------------------------------------------------------

    def take_fault(
        self, op: Operation, *, drive: int | None = None, slot: int | None = None
    ) -> str | None:
        """The injected error for this operation, if any (consumes scripted ones)."""
        attention = self.faults.unit_attention or self.faults.import_attention
        if attention and op in ("load", "unload", "transfer", "inventory"):
            self.faults.unit_attention = self.faults.import_attention = False
            return "unit_attention"
        for fault in self.faults.scripted:
            if fault.op != op:
                continue
            if fault.drive is not None and fault.drive != drive:
                continue
            if fault.slot is not None and fault.slot != slot:
                continue
            fault.count -= 1
            if fault.count <= 0:
                self.faults.scripted.remove(fault)
            return fault.error
        for rate in self.faults.rates:
            if rate.op != op:
                continue
            draw = random.Random(self.faults.seed * 1_000_003 + self.faults.draws).random()  # noqa: S311
            self.faults.draws += 1
            if draw < rate.probability:
                return rate.error
        return None

    def raise_fault(
        self, op: Operation, message: str, *, drive: int | None = None, slot: int | None = None
    ) -> None:
        kind = self.take_fault(op, drive=drive, slot=slot)
        if kind is not None:
            raise make_error(kind, message, drive=drive, slot=slot)

    # -- physics ---------------------------------------------------------------------

    def check_drive_alive(self, drive: Drive) -> None:
        if drive.dead is not None:
            raise HardwareError(
                f"drive {drive.index} failed: {drive.dead}",
                sense=Sense(0x4, 0x44, 0x00),
                drive=drive.index,
            )

    def begin_load(self, slot_number: int, drive_index: int) -> float:
        """Check a load and return how long the robot takes."""
        slot = self.slot(slot_number)
        drive = self.drive(drive_index)
        where = {"drive": drive_index, "slot": slot_number}
        self.raise_fault("load", f"load slot {slot_number} into drive {drive_index}", **where)
        self.check_drive_alive(drive)
        if slot.barcode is None:
            raise make_error("source_empty", f"slot {slot_number} is empty", **where)
        if drive.barcode is not None:
            raise make_error(
                "destination_full", f"drive {drive_index} holds {drive.barcode}", **where
            )
        media = media_of(slot.barcode)
        if not is_cleaning(slot.barcode) and (
            media is None or not can_read(drive.generation, media)
        ):
            raise IncompatibleMediaError(
                f"drive {drive_index} (LTO-{drive.generation}) cannot use {slot.barcode}",
                sense=Sense(0x5, 0x30, 0x00),
                barcode=slot.barcode,
                drive=drive_index,
                slot=slot_number,
            )
        return self.timing().move()

    def finish_load(self, slot_number: int, drive_index: int, now: float) -> None:
        slot = self.slot(slot_number)
        drive = self.drive(drive_index)
        assert slot.barcode is not None
        drive.barcode, slot.barcode = slot.barcode, None
        drive.source_slot = slot_number
        drive.threaded = True
        extra = self.faults.not_ready_s.pop(drive_index, 0.0)
        drive.ready_at = (
            now + self.timing().load_to_ready(drive.generation) + self.timing().scaled(extra)
        )
        self.mount_counts[drive.barcode] = self.mount_counts.get(drive.barcode, 0) + 1
        if is_cleaning(drive.barcode):
            drive.needs_cleaning = False
        self.last_moved[drive.barcode] = now
        self.moves += 1

    def begin_unload(self, drive_index: int, slot_number: int) -> float:
        drive = self.drive(drive_index)
        slot = self.slot(slot_number)
        where = {"drive": drive_index, "slot": slot_number}
        self.raise_fault("unload", f"unload drive {drive_index} to slot {slot_number}", **where)
        if drive.barcode is None:
            raise make_error("source_empty", f"drive {drive_index} is empty", **where)
        if drive.barcode in self.faults.stuck:
            raise make_error(
                "hardware", f"cartridge {drive.barcode} stuck in drive {drive_index}", **where
            )
        if slot.barcode is not None:
            raise make_error(
                "destination_full", f"slot {slot_number} holds {slot.barcode}", **where
            )
        duration = self.timing().move()
        if drive.threaded:
            if self.offline_before_unload:
                raise make_error(
                    "removal_prevented",
                    f"drive {drive_index} still holds {drive.barcode} threaded (offline it first)",
                    **where,
                )
            # Libraries that unload by themselves rewind and unthread first.
            duration += self.timing().unload(drive.generation)
        return duration

    def finish_unload(self, drive_index: int, slot_number: int, now: float) -> None:
        drive = self.drive(drive_index)
        slot = self.slot(slot_number)
        slot.barcode, drive.barcode = drive.barcode, None
        if slot.barcode is not None:
            self.last_moved[slot.barcode] = now
        drive.source_slot = None
        drive.threaded = False
        drive.ready_at = 0.0
        self.moves += 1

    def begin_transfer(self, source: int, destination: int) -> float:
        src = self.slot(source)
        dst = self.slot(destination)
        where = {"slot": source}
        self.raise_fault("transfer", f"transfer slot {source} to slot {destination}", **where)
        if src.barcode is None:
            raise make_error("source_empty", f"slot {source} is empty", **where)
        if dst.barcode is not None:
            raise make_error("destination_full", f"slot {destination} holds {dst.barcode}", **where)
        return self.timing().move()

    def finish_transfer(self, source: int, destination: int, now: float) -> None:
        src = self.slot(source)
        dst = self.slot(destination)
        dst.barcode, src.barcode = src.barcode, None
        if dst.barcode is not None:
            self.last_moved[dst.barcode] = now
        dst.unreadable, src.unreadable = src.unreadable, False
        self.moves += 1

    def begin_offline(self, drive_index: int) -> float:
        drive = self.drive(drive_index)
        self.raise_fault("offline", f"offline drive {drive_index}", drive=drive_index)
        self.check_drive_alive(drive)
        if drive.barcode is None or not drive.threaded:
            return 0.0
        return self.timing().unload(drive.generation)

    def finish_offline(self, drive_index: int) -> None:
        drive = self.drive(drive_index)
        drive.threaded = False
        drive.ready_at = 0.0

    def drive_density(self, drive: Drive) -> int:
        if drive.barcode is None:
            return 0
        media = media_of(drive.barcode)
        if media is None:
            return 0
        return DENSITY_M8 if media.type_m else DENSITY.get(media.generation, 0)

    # -- persistence -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimState:
        faults = data.get("faults", {})
        return cls(
            changer=data["changer"],
            speed=float(data["speed"]),
            offline_before_unload=bool(data["offline_before_unload"]),
            slots=[Slot(**s) for s in data["slots"]],
            drives=[Drive(**d) for d in data["drives"]],
            mount_counts=dict(data.get("mount_counts", {})),
            last_moved=dict(data.get("last_moved", {})),
            write_protected=list(data.get("write_protected", [])),
            faults=Faults(
                scripted=[ScriptedFault(**f) for f in faults.get("scripted", [])],
                rates=[RateFault(**f) for f in faults.get("rates", [])],
                seed=faults.get("seed", 0),
                draws=faults.get("draws", 0),
                unit_attention=faults.get("unit_attention", False),
                import_attention=faults.get("import_attention", False),
                not_ready_s={int(k): v for k, v in faults.get("not_ready_s", {}).items()},
                stuck=list(faults.get("stuck", [])),
                inventory_delay_s=faults.get("inventory_delay_s", 0.0),
            ),
            moves=data.get("moves", 0),
            vendor=data.get("vendor", "TAPEWORK"),
            product=data.get("product", "SIMULATED LIB"),
        )


class StateStore:
    """The state, in memory or in a file shared with other processes.

    `locked()` is a read-modify-write under an exclusive flock; keep it short (no
    sleeping inside). `robot()` serialises robot moves across processes.
    """

    def __init__(self, path: Path | None, initial: SimState | None = None) -> None:
        self.path = path
        self._memory = initial
        if path is not None and initial is not None and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with self.locked() as state:
                # First writer wins: another process may have created it meanwhile.
                del state

    @contextlib.contextmanager
    def _flock(self, suffix: str) -> Iterator[None]:
        assert self.path is not None
        with open(str(self.path) + suffix, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def locked(self) -> Iterator[SimState]:
        if self.path is None:
            assert self._memory is not None
            yield self._memory
            return
        with self._flock(".lock"):
            if self.path.exists():
                state = SimState.from_json(json.loads(self.path.read_text(encoding="utf-8")))
            elif self._memory is not None:
                state = self._memory
            else:
                raise FileNotFoundError(f"{self.path}: no simulated library state")
            try:
                yield state
            finally:
                # Saved on errors too: an injected fault is consumed even when it fires.
                self._write(state)

    def read(self) -> SimState:
        with self.locked() as state:
            return state

    def _write(self, state: SimState) -> None:
        assert self.path is not None
        tmp = self.path.with_suffix(self.path.suffix + f".{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(state.to_json(), handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def robot(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        with self._flock(".robot"):
            yield


def now() -> float:
    """Wall-clock time: ready times are shared between processes."""
    return time.time()
