"""The planner's view of the library: frozen values, and the one builder of them that
the daemon (from the state model) and the simulator both use. The planner never sees
a driver."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Protocol

from drivers.media import Media, media_of


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
class Tape:
    """A tape's facts as plain values: the one declaration of them. The planner's
    `TapeView` is these facts and what its media gives; a library with no records of
    its own (the simulator, a benchmark's scenario) states its tapes with this."""

    barcode: str
    _: KW_ONLY
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
    cleaning_uses_left: int = 0


@dataclass(frozen=True, slots=True)
class TapeView(Tape):
    """A tape as the planner sees it: its facts, its media and that media's native
    capacity (0 when the label names no media)."""

    media: Media | None
    capacity_bytes: int = 0

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


# -- building the snapshot -----------------------------------------------------------
# One builder for the daemon (from the journal's records, through the state model) and
# the simulator (from its own tapes and drives): both hand the planner the same input
# for the same library.


class TapeFacts(Protocol):
    """What the builder reads of a tape (the journal's TapeRecord has it all)."""

    @property
    def barcode(self) -> str: ...
    @property
    def pool(self) -> str | None: ...
    @property
    def cleaning(self) -> bool: ...
    @property
    def locked(self) -> bool: ...
    @property
    def write_protected(self) -> bool: ...
    @property
    def need_to_check(self) -> bool: ...
    @property
    def ejected(self) -> bool: ...
    @property
    def full(self) -> bool: ...
    @property
    def used_bytes(self) -> int: ...
    @property
    def cleaning_uses_left(self) -> int: ...
    @property
    def slot(self) -> int | None: ...
    @property
    def home_slot(self) -> int | None: ...
    @property
    def drive(self) -> int | None: ...


class DriveFacts(Protocol):
    """What the builder reads of a drive (the journal's DriveRecord has it all)."""

    @property
    def index(self) -> int: ...
    @property
    def generation(self) -> int: ...
    @property
    def barcode(self) -> str | None: ...
    @property
    def up(self) -> bool: ...
    @property
    def idle_since(self) -> float | None: ...
    @property
    def needs_cleaning(self) -> bool: ...


def tape_view(
    tape: TapeFacts,
    *,
    where: tuple[int | None, int | None] | None = None,
    capacity_bytes: int | None = None,
) -> TapeView:
    """The planner's view of a tape: `where` (slot, drive) when it is on its way
    somewhere else than its facts say; the capacity its media gives unless told."""
    media = media_of(tape.barcode)
    slot, drive = (tape.slot, tape.drive) if where is None else where
    if capacity_bytes is None:
        capacity_bytes = media.capacity_bytes if media is not None else 0
    return TapeView(
        barcode=tape.barcode,
        media=media,
        slot=slot,
        drive=drive,
        home_slot=tape.home_slot,
        pool=tape.pool,
        cleaning=tape.cleaning,
        locked=tape.locked,
        write_protected=tape.write_protected,
        need_to_check=tape.need_to_check,
        ejected=tape.ejected,
        full=tape.full,
        used_bytes=tape.used_bytes,
        capacity_bytes=capacity_bytes,
        cleaning_uses_left=tape.cleaning_uses_left,
    )


def drive_view(drive: DriveFacts, *, holders: Sequence[int] = (), busy: bool = False) -> DriveView:
    """The planner's view of a drive: the requests using its tape, and whether an
    operation is running on it."""
    return DriveView(
        index=drive.index,
        generation=drive.generation,
        barcode=drive.barcode,
        holders=tuple(holders),
        busy=busy,
        idle_since=drive.idle_since,
        available=drive.up,
        needs_cleaning=drive.needs_cleaning,
    )


def build_snapshot(
    drives: Iterable[DriveView],
    tapes: Mapping[str, TapeView],
    *,
    free_slots: Iterable[int],
    robot_busy: bool = False,
    pool_drive_caps: Mapping[str, int] | None = None,
) -> LibrarySnapshot:
    """The planner's input: drives in index order, the free slots in order."""
    return LibrarySnapshot(
        drives=tuple(sorted(drives, key=lambda d: d.index)),
        tapes=tapes,
        free_slots=tuple(sorted(free_slots)),
        robot_busy=robot_busy,
        pool_drive_caps=pool_drive_caps if pool_drive_caps is not None else {},
    )


class TapeViews:
    """The planner's view of every tape, kept from round to round: a view is built
    again only when its tape's facts changed (facts are frozen records, replaced on
    change, so the same object means the same facts)."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[TapeFacts, TapeView]] = {}

    def views(
        self,
        tapes: Iterable[TapeFacts],
        moving: Mapping[str, tuple[int | None, int | None]] | None = None,
    ) -> dict[str, TapeView]:
        """A view for each tape; `moving` gives the (slot, drive) of tapes on their way."""
        kept = self._kept
        fresh: dict[str, tuple[TapeFacts, TapeView]] = {}
        views: dict[str, TapeView] = {}
        for tape in tapes:
            barcode = tape.barcode
            pair = kept.get(barcode)
            if pair is None or pair[0] is not tape:
                pair = (tape, tape_view(tape))
            fresh[barcode] = pair
            views[barcode] = pair[1]
        self._kept = fresh
        if moving:
            for barcode, where in moving.items():
                facts = fresh.get(barcode)
                if facts is not None and where != (facts[0].slot, facts[0].drive):
                    views[barcode] = tape_view(facts[0], where=where)
        return views
