"""The simulated library: drives, cartridges, robots and the timing model.

Timings are the one table of `drivers.sim.timing` (SCHEDULING.md 2.1 and 4.1, IBM
full-height figures), which the daemon's simulated library reads too: load to ready
12/12/15/15/17 s and unload 17/17/20/24/30 s for LTO-5..9, an enterprise accessor
of 2 x 1 s grip + U(2, 8) s travel per move, locate 4 s + 100 s per tape length,
and the LTO-9 rewind inside UNLOAD of 55/110/165 s by the data moved.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from drivers.definition import LibraryDefinition, load_definition
from drivers.media import Media, is_cleaning, media_of
from drivers.sim import timing

GB = 10**9
TB = 10**12
MB = 10**6

#: Native rate of each media type, bytes/s (SCHEDULING.md 2.1).
_MEDIA_RATE: Mapping[str, float] = MappingProxyType(
    {"L5": 140 * MB, "L6": 160 * MB, "L7": 300 * MB, "M8": 300 * MB, "L8": 360 * MB, "L9": 400 * MB}
)
_DRIVE_RATE: Mapping[int, float] = MappingProxyType(
    {5: 140 * MB, 6: 160 * MB, 7: 300 * MB, 8: 360 * MB, 9: 400 * MB}
)
#: Native capacity of each media type, bytes (the daemon's own figures).
CAPACITY: Mapping[str, int] = MappingProxyType(
    {m.label: m.capacity_bytes for m in (*(Media(g) for g in range(5, 10)), Media(7, True))}
)


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds for each physical step; the simulator draws jitter around them.
    Defaults are the one timing table's (`drivers.sim.timing`)."""

    grip_s: float = timing.GRIP_S
    travel_min_s: float = timing.TRAVEL_MIN_S
    travel_max_s: float = timing.TRAVEL_MAX_S
    load_s: Mapping[int, float] = field(default_factory=lambda: timing.LOAD_TO_READY_S)
    unload_s: Mapping[int, float] = field(default_factory=lambda: timing.UNLOAD_S)
    #: +-10 % around the nominal load time.
    jitter: float = 0.10
    locate_base_s: float = timing.LOCATE_BASE_S
    locate_per_length_s: float = timing.LOCATE_PER_LENGTH_S
    clean_min_s: float = timing.CLEAN_MIN_S
    clean_max_s: float = timing.CLEAN_MAX_S

    @property
    def mean_move_s(self) -> float:
        return 2 * self.grip_s + (self.travel_min_s + self.travel_max_s) / 2

    @property
    def min_move_s(self) -> float:
        return 2 * self.grip_s + self.travel_min_s

    def move(self, rng: random.Random) -> float:
        return 2 * self.grip_s + rng.uniform(self.travel_min_s, self.travel_max_s)

    def load_nominal(self, generation: int) -> float:
        return self.load_s.get(generation, timing.load_to_ready_s(generation))

    def load(self, generation: int, rng: random.Random) -> float:
        nominal = self.load_nominal(generation)
        return nominal * rng.uniform(1 - self.jitter, 1 + self.jitter)

    def unload(self, generation: int) -> float:
        return self.unload_s.get(generation, timing.unload_s(generation))

    def locate(self, head: float, target: float) -> float:
        if head == target:
            return 0.0  # streaming on: an append right after an append
        return self.locate_base_s + self.locate_per_length_s * abs(target - head)

    def rewind(self, generation: int, moved_bytes: int, head: float) -> float:
        return timing.rewind_s(generation, moved_bytes, head)

    @staticmethod
    def rate(generation: int, media: Media | None) -> float:
        if media is None:
            return _DRIVE_RATE.get(generation, 400 * MB)
        return min(_DRIVE_RATE.get(generation, 400 * MB), _MEDIA_RATE[media.label])


@dataclass(frozen=True, slots=True)
class SimDrive:
    index: int
    generation: int


@dataclass(frozen=True, slots=True)
class SimTape:
    barcode: str
    slot: int
    pool: str | None = None
    used_bytes: int = 0
    capacity_bytes: int = 0
    locked: bool = False
    write_protected: bool = False
    full: bool = False
    need_to_check: bool = False
    cleaning_uses_left: int = 0
    #: Starts the run in this drive (its home slot stays `slot`).
    drive: int | None = None

    @property
    def media(self) -> Media | None:
        return media_of(self.barcode)

    @property
    def cleaning(self) -> bool:
        return is_cleaning(self.barcode)


@dataclass(frozen=True, slots=True)
class SimLibrary:
    name: str
    drives: tuple[SimDrive, ...]
    tapes: tuple[SimTape, ...]
    slots: int
    robots: int = 1
    timing: Timing = field(default_factory=Timing)

    @property
    def data_tapes(self) -> tuple[SimTape, ...]:
        return tuple(t for t in self.tapes if not t.cleaning)

    def pools(self) -> list[str]:
        return sorted({t.pool for t in self.tapes if t.pool is not None})


def profile_p2(seed: int = 0, pools: Sequence[str] = ("pool-a", "pool-b", "pool-c")) -> SimLibrary:
    """SCHEDULING.md 4.2 P2, the library of the benchmark's workloads: 8 LTO-9 drives,
    one accessor, 500 cartridges (L9, and one L8 in five of the full ones). 20
    tapes of each write pool: 80 % appendable, 20 % scratch; the other 440 are
    full archive tapes in two pools (archive-a, archive-b)."""
    rng = random.Random(seed)  # noqa: S311 -- seeded, reproducible, not security
    tapes: list[SimTape] = []
    slot = 0
    per_pool = 20
    for p, pool in enumerate(pools):
        for i in range(per_pool):
            slot += 1
            scratch = i >= per_pool * 0.8
            used = 0 if scratch else int(rng.uniform(0.1, 0.9) * CAPACITY["L9"])
            tapes.append(
                SimTape(
                    f"P{p}{i:04d}L9",
                    slot,
                    pool=pool,
                    used_bytes=used,
                    capacity_bytes=CAPACITY["L9"],
                )
            )
    for i in range(500 - len(tapes)):
        slot += 1
        label = "L8" if i % 5 == 4 else "L9"
        tapes.append(
            SimTape(
                f"A{i:05d}{label}",
                slot,
                # Two halves, so that W4 can flood one and trickle the other.
                pool="archive-a" if i % 2 == 0 else "archive-b",
                used_bytes=CAPACITY[label],
                capacity_bytes=CAPACITY[label],
                full=True,
            )
        )
    return SimLibrary(
        name="p2",
        drives=tuple(SimDrive(i, 9) for i in range(8)),
        tapes=tuple(tapes),
        slots=slot + 20,
        robots=1,
    )


def from_definition(definition: LibraryDefinition) -> SimLibrary:
    """The same library the daemon reads, as the simulator's starting state."""
    tapes: list[SimTape] = []
    taken = {t.slot for t in definition.tapes if t.slot is not None}
    spare = (s for s in range(1, definition.slots + 1) if s not in taken)
    for tape in definition.tapes:
        label = media_of(tape.barcode)
        capacity = CAPACITY[label.label] if label is not None else 0
        tapes.append(
            SimTape(
                tape.barcode,
                tape.slot if tape.slot is not None else next(spare),
                pool=tape.pool,
                used_bytes=tape.used_bytes,
                capacity_bytes=capacity,
                locked=tape.locked,
                write_protected=tape.write_protected,
                full=tape.full,
                need_to_check=tape.need_to_check,
                cleaning_uses_left=tape.cleaning_uses_left,
                drive=tape.drive,
            )
        )
    return SimLibrary(
        name=definition.name,
        drives=tuple(SimDrive(d.index, d.generation) for d in definition.drives),
        tapes=tuple(tapes),
        slots=definition.slots,
    )


def load_library(path: Path) -> SimLibrary:
    return from_definition(load_definition(path))
