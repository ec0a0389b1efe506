"""The planner's view of the library: frozen values, built by the shell from the
journal and the last inventory. The planner never sees a driver."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from drivers.media import Media


@dataclass(frozen=True, slots=True)
class DriveView:
    index: int
    generation: int
    #: The cartridge in the drive, if any.
    barcode: str | None = None
    #: Requests currently using the tape in this drive (ready or being mounted).
    holders: tuple[int, ...] = ()
    #: A robot or drive operation is in flight on this drive.
    busy: bool = False
    #: When the drive last became idle (holders dropped to none); None = never used.
    idle_since: float | None = None
    #: Down drives get no work.
    available: bool = True
    needs_cleaning: bool = False

    @property
    def idle(self) -> bool:
        return self.available and not self.busy and not self.holders


@dataclass(frozen=True, slots=True)
class TapeView:
    barcode: str
    media: Media | None
    #: Where the cartridge is now: a storage slot or a drive (exactly one).
    slot: int | None = None
    drive: int | None = None
    #: The slot it returns to on unload.
    home_slot: int | None = None
    pool: str | None = None
    cleaning: bool = False
    locked: bool = False
    write_protected: bool = False
    need_to_check: bool = False
    ejected: bool = False
    full: bool = False
    used_bytes: int = 0
    capacity_bytes: int = 0
    cleaning_uses_left: int = 0

    @property
    def writable(self) -> bool:
        return not (
            self.cleaning
            or self.locked
            or self.write_protected
            or self.need_to_check
            or self.ejected
            or self.full
        )

    @property
    def usable(self) -> bool:
        """Can be mounted at all (for reading)."""
        return not (self.cleaning or self.need_to_check or self.ejected)

    @property
    def scratch(self) -> bool:
        return self.used_bytes == 0


@dataclass(frozen=True, slots=True)
class LibrarySnapshot:
    drives: tuple[DriveView, ...]
    tapes: Mapping[str, TapeView]
    #: Empty storage slots, for an unload whose home slot is taken.
    free_slots: tuple[int, ...] = ()
    #: A robot move is in flight (the changer is one robot).
    robot_busy: bool = False
    pool_drive_caps: Mapping[str, int] = field(default_factory=dict)
