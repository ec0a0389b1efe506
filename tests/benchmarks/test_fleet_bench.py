"""The fleet benchmark, small (`make bench-fleet` for the full size).

Rates and latencies are printed, never asserted: they depend on the machine's load.
What is asserted is that the machinery measured what it claims.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.fleet_bench import report, run_fleet

pytestmark = [pytest.mark.benchmark, pytest.mark.integration, pytest.mark.timeout(600)]


def test_print_the_fleet_rate_and_latency_with_one_and_two_daemons(tmp_path: Path) -> None:
    figures = [run_fleet(tmp_path / f"fleet{n}", n, 30, timeout_s=240) for n in (1, 2)]
    print()
    print(report(figures))
    for f in figures:
        # Every destination's state came back, from one library each.
        assert len(f.latencies_s) == f.events == 30
        assert all(latency > 0 for latency in f.latencies_s)
        assert f.twice == 0
        assert f.rate > 0
    assert report(figures).count("\n") == 2
