"""The one driver interface: what tapeworker needs of a tape library.

Both backends (the simulated library and mtx/mt) implement `TapeLibrary`; the
worker only ever sees this module, `drivers.errors` and the definition.
Element numbers are mtx's: storage slots 1-based (import/export slots after the
storage slots), drives 0-based data transfer elements.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from drivers.definition import LibraryDefinition


@dataclass(frozen=True, slots=True)
class SlotState:
    number: int
    full: bool
    barcode: str | None = None
    import_export: bool = False


@dataclass(frozen=True, slots=True)
class DriveState:
    index: int
    full: bool
    barcode: str | None = None
    #: The home slot the changer reports; mtx may invent it (FORMATS.md 1.4).
    source_slot: int | None = None


@dataclass(frozen=True, slots=True)
class Inventory:
    drives: tuple[DriveState, ...]
    slots: tuple[SlotState, ...]

    def where(self, barcode: str) -> tuple[str, int] | None:
        """('drive', N) or ('slot', N) for a barcode, or None."""
        for drive in self.drives:
            if drive.barcode == barcode:
                return ("drive", drive.index)
        for slot in self.slots:
            if slot.barcode == barcode and slot.full:
                return ("slot", slot.number)
        return None

    def drive(self, index: int) -> DriveState:
        for drive in self.drives:
            if drive.index == index:
                return drive
        raise KeyError(index)

    def slot(self, number: int) -> SlotState:
        for slot in self.slots:
            if slot.number == number:
                return slot
        raise KeyError(number)

    def as_json(self) -> dict[str, Any]:
        """The stable JSON shape (`tapeworker inventory --json`, the journal's copy)."""
        return {
            "drives": [
                {
                    "index": d.index,
                    "full": d.full,
                    "barcode": d.barcode,
                    "source_slot": d.source_slot,
                }
                for d in self.drives
            ],
            "slots": [
                {
                    "number": s.number,
                    "full": s.full,
                    "barcode": s.barcode,
                    "import_export": s.import_export,
                }
                for s in self.slots
            ],
        }

    def empty_storage_slots(self) -> list[int]:
        return [s.number for s in self.slots if not s.full and not s.import_export]


@dataclass(frozen=True, slots=True)
class DriveStatus:
    """What `mt status` tells about a drive."""

    online: bool
    loaded: bool
    write_protected: bool = False
    at_bot: bool = False
    density_code: int | None = None
    generation: int | None = None
    needs_cleaning: bool = False


class TapeLibrary(ABC):
    """One media changer and its drives. One robot move at a time per changer."""

    def __init__(self, definition: LibraryDefinition) -> None:
        self.definition = definition

    def device(self, drive: int) -> str:
        """The tape device the data mover opens for a drive."""
        return self.definition.drive(drive).device

    @abstractmethod
    async def inventory(self) -> Inventory:
        """A fresh element status of the changer."""

    @abstractmethod
    async def load(self, slot: int, drive: int) -> None:
        """Move a cartridge from a slot into a drive (the drive threads it)."""

    @abstractmethod
    async def unload(self, drive: int, slot: int) -> None:
        """Move a cartridge from a drive back to a slot (after offline where needed)."""

    @abstractmethod
    async def transfer(self, source: int, destination: int) -> None:
        """Move a cartridge from one slot to another (import/export included)."""

    @abstractmethod
    async def drive_status(self, drive: int) -> DriveStatus:
        """The drive's status as `mt status` reports it."""

    @abstractmethod
    async def rewind(self, drive: int) -> None: ...

    @abstractmethod
    async def offline(self, drive: int) -> None:
        """Rewind and unthread, so the robot may take the cartridge."""

    async def check(self) -> list[str]:
        """Problems found at start-up (missing devices, wrong tools); empty when fine."""
        return []

    async def aclose(self) -> None:
        """Release what the backend holds."""

    async def __aenter__(self) -> TapeLibrary:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
