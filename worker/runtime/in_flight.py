"""What the executor has under way: the one owner of in-flight facts.

The drives and tapes claimed by running chains (the planner must not touch them),
where a tape in flight is headed, the cartridges whose position a failed command
left uncertain, and whether the changer must be re-inventoried before the next
move. The executor records; the reconciler asks. Pure: no awaits, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable


class InFlight:
    """Claims of running drive chains and the changer's doubts."""

    def __init__(self) -> None:
        self._drives: set[int] = set()
        self._tapes: set[str] = set()
        self._heading: dict[str, int] = {}
        self._to_verify: set[str] = set()
        self._suspect = False
        #: Bumped by every change: equal values mean the planner's view is unchanged.
        self.changes = 0

    # -- claims ----------------------------------------------------------------------

    def claim(self, drive: int, tapes: Iterable[str], *, loading: Iterable[str] = ()) -> None:
        """A chain starts on `drive` with `tapes`; those in `loading` are headed there."""
        self.changes += 1
        self._drives.add(drive)
        self._tapes.update(tapes)
        for barcode in loading:
            self._heading[barcode] = drive

    def release(self, drive: int, tapes: Iterable[str]) -> None:
        """The chain on `drive` ended: its drive and tapes are the planner's again."""
        self.changes += 1
        self._drives.discard(drive)
        for barcode in tapes:
            self._tapes.discard(barcode)
            self._heading.pop(barcode, None)

    def drive_busy(self, drive: int) -> bool:
        return drive in self._drives

    def tape_busy(self, barcode: str) -> bool:
        return barcode in self._tapes

    @property
    def moving(self) -> bool:
        """Whether any chain is running."""
        return bool(self._drives)

    @property
    def busy_drives(self) -> frozenset[int]:
        return frozenset(self._drives)

    @property
    def claimed_tapes(self) -> frozenset[str]:
        return frozenset(self._tapes)

    def position(
        self, barcode: str, slot: int | None, drive: int | None
    ) -> tuple[int | None, int | None]:
        """Where the planner sees a tape the journal has at (slot, drive): a tape on
        its way is already in the drive it is headed to, so that no second move is
        planned for it."""
        if barcode not in self._tapes:
            return slot, drive
        return None, self._heading.get(barcode, drive)

    # -- doubts ----------------------------------------------------------------------

    def suspect(self, barcodes: Iterable[str] = ()) -> None:
        """A command's outcome is uncertain: re-inventory before the next move, and
        look for these cartridges then."""
        self.changes += 1
        self._suspect = True
        self._to_verify.update(barcodes)

    @property
    def needs_inventory(self) -> bool:
        return self._suspect

    @property
    def to_verify(self) -> frozenset[str]:
        return frozenset(self._to_verify)

    def inventory_taken(self) -> None:
        """The changer answered an inventory: no move waits for another."""
        self.changes += 1
        self._suspect = False

    def verified(self, barcodes: Iterable[str]) -> None:
        """These cartridges were looked for in an inventory."""
        self._to_verify.difference_update(barcodes)
