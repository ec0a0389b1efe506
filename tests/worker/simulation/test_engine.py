"""The simulator's engine on its own: deterministic, honest about impossible actions,
and every request of a small run accounted for."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from worker.core.actions import Action, Load
from worker.core.requests import MountRequest
from worker.core.snapshot import LibrarySnapshot
from worker.simulation.engine import Simulation, SimulationError, simulate
from worker.simulation.faults import FaultPlan
from worker.simulation.metrics import measure
from worker.simulation.model import SimDrive, SimLibrary, SimTape, profile_p2
from worker.simulation.policies import Fcfs, planner
from worker.simulation.workloads import SimRequest, Workload, w1, w2

LIBRARY = profile_p2(1)


def test_the_same_seed_gives_the_same_run() -> None:
    workload = w2(LIBRARY, 0.6, seed=5, hours=1)
    first = measure(simulate(LIBRARY, workload, planner(), seed=2))
    second = measure(simulate(LIBRARY, workload, planner(), seed=2))
    same = ("mounts", "makespan_s", "mean_latency_s", "p99_latency_s", "max_wait_s")
    assert [getattr(first, f) for f in same] == [getattr(second, f) for f in same]


class _Reckless:
    """A policy that loads the first pending request's tape into drive 0, always."""

    name = "reckless"

    def decide(
        self, snapshot: LibrarySnapshot, pending: Sequence[MountRequest], now: float
    ) -> list[Action]:
        if not pending or not snapshot.drives[0].idle:
            return []
        request = pending[0]
        assert request.barcode is not None
        tape = snapshot.tapes[request.barcode]
        assert tape.slot is not None
        return [Load(request.barcode, tape.slot, 0, (request.id,))]

    def next_wake(
        self, snapshot: LibrarySnapshot, pending: Sequence[MountRequest], now: float
    ) -> float | None:
        return None


def test_the_engine_refuses_a_tape_in_an_incompatible_drive() -> None:
    library = SimLibrary(
        "tiny", (SimDrive(0, 9),), (SimTape("OLD001L7", 1, capacity_bytes=10**12),), slots=4
    )
    workload = Workload("one", (SimRequest(0, 0.0, "OLD001L7", None, False, 10**9, 0.5),))
    with pytest.raises(SimulationError, match="LTO-9"):
        simulate(library, workload, _Reckless())


def test_the_engine_refuses_loading_a_full_drive() -> None:
    library = SimLibrary(
        "tiny",
        (SimDrive(0, 9),),
        (SimTape("A00001L9", 1), SimTape("A00002L9", 2)),
        slots=4,
    )
    workload = Workload(
        "two",
        (
            SimRequest(0, 0.0, "A00001L9", None, False, 10**9, 0.5),
            SimRequest(1, 1000.0, "A00002L9", None, False, 10**9, 0.5),
        ),
    )
    with pytest.raises(SimulationError, match="full drive"):
        simulate(library, workload, _Reckless())


def test_drives_asking_for_cleaning_are_cleaned_and_every_request_is_served() -> None:
    tapes = (
        *(SimTape(f"A{i:05d}L9", i + 1, pool="p", capacity_bytes=18 * 10**12) for i in range(20)),
        SimTape("CLN001L1", 30, cleaning_uses_left=50),
    )
    library = SimLibrary("clean", (SimDrive(0, 9), SimDrive(1, 9)), tapes, slots=40)
    workload = w2(library, 0.5, seed=1, hours=2, warmup_h=0.0)
    engine = Simulation(library, workload, planner(), seed=1, clean_every_mounts=5)
    result = engine.run()
    assert result.unserved == 0
    assert engine.tapes["CLN001L1"].uses_left < 50


def test_fcfs_without_batching_mounts_once_per_request() -> None:
    result = simulate(LIBRARY, w1(LIBRARY, 0.0, seed=1, n=100), Fcfs("B0", 0.0), seed=1)
    assert len(result.mounts) == 100


def tiny(drives: int = 2) -> SimLibrary:
    tapes = tuple(
        SimTape(f"T{i:05d}L9", i + 1, pool="p", used_bytes=10**12, capacity_bytes=18 * 10**12)
        for i in range(6)
    )
    return SimLibrary("tiny", tuple(SimDrive(i, 9) for i in range(drives)), tapes, slots=10)


def reads(library: SimLibrary, arrivals: Sequence[float]) -> Workload:
    tapes = library.data_tapes
    return Workload(
        "reads",
        tuple(
            SimRequest(i, at, tapes[i % len(tapes)].barcode, None, False, 10**9, 0.5)
            for i, at in enumerate(arrivals)
        ),
    )


def test_every_request_is_served_in_order_of_its_own_steps() -> None:
    library = tiny()
    result = simulate(library, reads(library, [0, 0, 10, 400, 400, 3000]), Fcfs("B0", 0.0))
    assert result.unserved == 0
    assert len(result.requests) == 6
    for record in result.requests:
        assert record.failed is None
        assert record.ready is not None
        assert record.done is not None
        assert record.arrival <= record.ready <= record.done
        assert record.drive in (0, 1)
        # Nothing beats the request's own lower bound (a mount of its own, no wait).
        assert record.done - record.arrival >= record.latency_lb * 0.9
    assert result.makespan == max(r.done for r in result.requests if r.done is not None)
    assert 0 < result.transfer_s <= result.occupancy_s
    assert len(result.mounts) == 6, "B0 mounts once per request"


def test_a_drive_killed_at_the_start_leaves_the_work_to_the_other() -> None:
    library = tiny()
    faults = FaultPlan(kills=((0, 0.0),))
    result = simulate(library, reads(library, [5, 6, 7]), Fcfs("B0", 0.0), faults=faults)
    assert [d for d, _, _ in result.drives_down] == [0]
    assert result.unserved == 0
    assert {r.drive for r in result.requests} == {1}


def test_a_library_whose_only_drive_dies_serves_nothing_and_says_so() -> None:
    library = tiny(drives=1)
    faults = FaultPlan(kills=((0, 0.0),))
    result = simulate(library, reads(library, [5, 6]), Fcfs("B0", 0.0), faults=faults)
    served = [r for r in result.requests if r.done is not None]
    assert served == []
    assert result.unserved + sum(r.failed is not None for r in result.requests) == 2


def test_a_tape_whose_unload_has_begun_pays_the_move_and_load_in_the_floor() -> None:
    library = SimLibrary(
        "one", (SimDrive(0, 9),), (SimTape("T00000L9", 1, capacity_bytes=18 * 10**12),), slots=4
    )
    # B0 unloads at once: the second read comes while the first one's rewind runs
    # (the first is done before 86 s, the unload takes more than 85 s after it).
    workload = Workload(
        "again",
        (
            SimRequest(0, 0.0, "T00000L9", None, False, 10**9, 0.5),
            SimRequest(1, 120.0, "T00000L9", None, False, 10**9, 0.5),
        ),
    )
    result = simulate(library, workload, Fcfs("B0", 0.0))
    timing = library.timing
    mount = timing.mean_move_s + timing.load_nominal(9) + timing.locate(0.0, 0.5) + 10**9 / 400e6
    first, second = result.requests
    assert first.done is not None
    assert first.done < 120.0 < first.done + timing.rewind(9, 10**9, 0.5)
    assert first.latency_lb == pytest.approx(mount)
    assert second.latency_lb == pytest.approx(mount)


def test_a_pool_write_floor_counts_only_the_tapes_it_may_be_written_on() -> None:
    tapes = (
        SimTape("L00000L9", 1, pool="p", capacity_bytes=18 * 10**12, locked=True),
        SimTape("H00000L9", 2, pool="p", used_bytes=9 * 10**12, capacity_bytes=18 * 10**12),
    )
    library = SimLibrary("pool", (SimDrive(0, 9),), tapes, slots=4)
    workload = Workload("write", (SimRequest(0, 0.0, None, "p", True, 10**9),))
    result = simulate(library, workload, planner())
    timing = library.timing
    (record,) = result.requests
    assert record.barcode == "H00000L9"
    # The locked scratch tape would need no locate; the half-full one needs one.
    assert record.latency_lb == pytest.approx(
        timing.mean_move_s + timing.load_nominal(9) + timing.locate(0.0, 0.5) + 10**9 / 400e6
    )
