"""The simulated library: the timing model's arithmetic, the benchmark's library and
the daemon's library definition as the simulator's starting state."""

from __future__ import annotations

import random

from drivers.definition import LibraryDefinition
from drivers.media import Media
from drivers.sim import timing
from worker.simulation.model import (
    CAPACITY,
    MB,
    SimDrive,
    SimLibrary,
    Timing,
    from_definition,
    profile_p2,
)


def test_moves_are_two_grips_and_a_travel() -> None:
    table = Timing()
    assert table.min_move_s == 2 * timing.GRIP_S + timing.TRAVEL_MIN_S
    assert table.mean_move_s == 2 * timing.GRIP_S + (timing.TRAVEL_MIN_S + timing.TRAVEL_MAX_S) / 2
    rng = random.Random(1)
    for _ in range(50):
        assert table.min_move_s <= table.move(rng) <= 2 * timing.GRIP_S + timing.TRAVEL_MAX_S


def test_loads_jitter_around_the_one_timing_table() -> None:
    table = Timing()
    assert table.load_nominal(9) == timing.LOAD_TO_READY_S[9]
    assert table.unload(9) == timing.UNLOAD_S[9]
    rng = random.Random(2)
    for _ in range(50):
        assert 0.9 * table.load_nominal(9) <= table.load(9, rng) <= 1.1 * table.load_nominal(9)


def test_a_locate_costs_a_base_and_the_distance_and_nothing_when_streaming() -> None:
    table = Timing()
    assert table.locate(0.3, 0.3) == 0.0
    assert table.locate(0.0, 0.5) == table.locate(1.0, 0.5)
    assert table.locate(0.0, 1.0) == table.locate_base_s + table.locate_per_length_s


def test_the_rate_is_the_slower_of_drive_and_media() -> None:
    assert Timing.rate(9, None) == 400 * MB
    assert Timing.rate(9, Media(8)) == 360 * MB
    assert Timing.rate(8, Media(9)) == 360 * MB


def test_the_benchmark_library_is_p2() -> None:
    library = profile_p2(0)
    assert len(library.drives) == 8
    assert {d.generation for d in library.drives} == {9}
    assert len(library.tapes) == 500
    assert library.robots == 1
    assert library.pools() == ["archive-a", "archive-b", "pool-a", "pool-b", "pool-c"]
    for pool in ("pool-a", "pool-b", "pool-c"):
        tapes = [t for t in library.tapes if t.pool == pool]
        assert len(tapes) == 20
        assert sum(t.used_bytes == 0 for t in tapes) == 4, "a fifth scratch"
    slots = [t.slot for t in library.tapes]
    assert len(set(slots)) == len(slots)
    assert max(slots) < library.slots
    assert profile_p2(0) == library, "seeded"


def test_a_definition_becomes_the_starting_state() -> None:
    definition = LibraryDefinition.model_validate(
        {
            "name": "hall",
            "slots": 6,
            "drives": [
                {"index": 0, "device": "/dev/nst0", "generation": "LTO-9"},
                {"index": 1, "device": "/dev/nst1", "generation": "LTO-8"},
            ],
            "pools": [{"id": 6, "name": "offline"}],
            "tapes": [
                {"barcode": "NOD400L9", "slot": 2, "pool": "offline", "used_bytes": 5},
                {"barcode": "NOD401L8", "drive": 1, "pool": "offline", "locked": True},
                {"barcode": "CLN001CU", "slot": 1, "cleaning_uses_left": 20},
            ],
        }
    )
    library = from_definition(definition)
    assert library.name == "hall"
    assert library.drives == (SimDrive(0, 9), SimDrive(1, 8))
    by_barcode = {t.barcode: t for t in library.tapes}
    tape = by_barcode["NOD400L9"]
    assert (tape.slot, tape.pool, tape.used_bytes, tape.capacity_bytes, tape.drive) == (
        2,
        "offline",
        5,
        CAPACITY["L9"],
        None,
    )
    in_drive = by_barcode["NOD401L8"]
    # A tape that starts in a drive gets a free slot to return to.
    assert (in_drive.drive, in_drive.slot, in_drive.locked) == (1, 3, True)
    cleaner = by_barcode["CLN001CU"]
    assert cleaner.cleaning
    assert cleaner.capacity_bytes == 0
    assert [t.barcode for t in library.data_tapes] == ["NOD400L9", "NOD401L8"]
    assert isinstance(library, SimLibrary)
