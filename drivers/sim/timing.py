"""How long things take in a real library (SCHEDULING.md 2.1, 2.3 and 4.1), in seconds.

The one timing table: the simulated library behind the daemon (`Timing`, scaled
by its speed factor so tests run in milliseconds with the same proportions) and
the discrete-event benchmark (`worker.simulation.model`) both read it, so they
cannot disagree about physics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

GB = 10**9

#: A robot move between a slot and a drive: two grips and a travel (an enterprise
#: accessor, calibrated to Diamondback's 270 exchanges per hour).
GRIP_S = 1.0
TRAVEL_MIN_S = 2.0
TRAVEL_MAX_S = 8.0
#: The mean move, 7 s.
ROBOT_MOVE_S = 2 * GRIP_S + (TRAVEL_MIN_S + TRAVEL_MAX_S) / 2
#: Nominal load-to-ready per generation (the drive threads after the robot lets go).
LOAD_TO_READY_S: Mapping[int, float] = MappingProxyType(
    {5: 12.0, 6: 12.0, 7: 15.0, 8: 15.0, 9: 17.0}
)
#: Nominal unload (unthread and eject, after the rewind) per generation.
UNLOAD_S: Mapping[int, float] = MappingProxyType({5: 17.0, 6: 17.0, 7: 20.0, 8: 24.0, 9: 30.0})
#: Generations the tables do not know take the newest generation's figures.
NEWEST_GENERATION = 9
#: Locate: a constant plus a share of the whole tape's length (SCHEDULING.md 4.1).
LOCATE_BASE_S = 4.0
LOCATE_PER_LENGTH_S = 100.0
#: A cleaning cycle in the drive, after the robot inserted the cartridge.
CLEAN_MIN_S = 120.0
CLEAN_MAX_S = 340.0
#: Reading element status of the small simulated library.
INVENTORY_S = 2.0


def load_to_ready_s(generation: int) -> float:
    return LOAD_TO_READY_S.get(generation, LOAD_TO_READY_S[NEWEST_GENERATION])


def unload_s(generation: int) -> float:
    return UNLOAD_S.get(generation, UNLOAD_S[NEWEST_GENERATION])


def locate_s(head: float, target: float) -> float:
    """From one position to another, as fractions of the tape's length."""
    if head == target:
        return 0.0  # streaming on: an append right after an append
    return LOCATE_BASE_S + LOCATE_PER_LENGTH_S * abs(target - head)


def rewind_s(generation: int, moved_bytes: int, head: float) -> float:
    """The rewind inside UNLOAD: IBM's LTO-9 steps by the data the mount moved
    (55/110/165 s); older generations by the distance back (SCHEDULING.md 4.1)."""
    if generation >= 9:
        if moved_bytes < 5 * GB:
            return 55.0
        if moved_bytes < 50 * GB:
            return 110.0
        return 165.0
    return 5.0 + 50.0 * head


@dataclass(frozen=True, slots=True)
class Timing:
    """The daemon's simulated library: the table's nominal figures divided by `speed`."""

    speed: float = 1.0

    def scaled(self, seconds: float) -> float:
        return seconds / self.speed

    def move(self) -> float:
        return self.scaled(ROBOT_MOVE_S)

    def load_to_ready(self, generation: int) -> float:
        return self.scaled(load_to_ready_s(generation))

    def unload(self, generation: int) -> float:
        return self.scaled(unload_s(generation))

    def rewind(self, generation: int = NEWEST_GENERATION) -> float:
        """`mt rewind`: the simulated drive keeps no head position or data count, so
        this is the rewind of a mount that moved little, from the middle of the tape."""
        return self.scaled(rewind_s(generation, 0, 0.5))

    def inventory(self) -> float:
        return self.scaled(INVENTORY_S)
