"""One timing table: the daemon's simulated library and the benchmark agree."""

from __future__ import annotations

import pytest

from drivers.sim.timing import Timing
from worker.simulation.model import Timing as BenchTiming


@pytest.mark.parametrize("generation", [5, 6, 7, 8, 9])
def test_the_simulated_library_and_the_benchmark_share_the_figures(generation: int) -> None:
    daemon = Timing(speed=1.0)
    bench = BenchTiming()
    assert daemon.move() == bench.mean_move_s
    assert daemon.load_to_ready(generation) == bench.load_nominal(generation)
    assert daemon.unload(generation) == bench.unload(generation)
    assert daemon.rewind(generation) == bench.rewind(generation, 0, 0.5)


def test_the_lto9_rewind_follows_the_reference_not_a_constant() -> None:
    # SCHEDULING.md 4.1: 55, 110 or 165 s by the data the mount moved.
    bench = BenchTiming()
    assert [bench.rewind(9, n * 10**9, 0.5) for n in (1, 10, 100)] == [55.0, 110.0, 165.0]
    assert Timing(speed=10.0).rewind(9) == 5.5


def test_speed_divides_every_figure() -> None:
    slow, fast = Timing(1.0), Timing(100.0)
    assert fast.move() * 100 == pytest.approx(slow.move())
    assert fast.unload(8) * 100 == pytest.approx(slow.unload(8))
