"""Headroom: how much of the latency is capacity and how much is planning, and the
queueing estimate it is measured against."""

from __future__ import annotations

import pytest

from worker.simulation.engine import simulate
from worker.simulation.headroom import erlang_c_wait_s, headroom
from worker.simulation.metrics import measure
from worker.simulation.model import profile_p2
from worker.simulation.policies import baselines, planner
from worker.simulation.report import Case, run_case
from worker.simulation.workloads import w2

LIBRARY = profile_p2(1)


def test_the_headroom_figures_separate_capacity_from_planning() -> None:
    workload = w2(LIBRARY, 0.9, 1, hours=2.0)
    case = run_case(
        LIBRARY,
        Case("w2-0.9", workload),
        [planner(), *baselines()],
        seed=1,
        max_age_s=7200.0,
        record_timeline=True,
    )
    found = headroom(case, planner(), seed=1, drive_counts=(8, 16))
    eight, sixteen = found.sweep
    # A request that waits for nothing is faster than what anyone gets at 90 % load.
    assert found.floor_mean_s < eight.mean_s
    assert found.floor_mean_s < found.baseline_mean_s
    assert found.baseline in {b.name for b in baselines()}
    for shares in found.shares.values():
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
        assert min(shares.values()) >= 0.0
    # Twice the drives for the same trace: less waiting.
    assert sixteen.mean_s < eight.mean_s
    assert eight.mean_s == pytest.approx(
        measure(simulate(LIBRARY, workload, planner(), seed=1)).mean_latency_s
    )


def test_the_queueing_estimate_is_erlang_c() -> None:
    # M/M/1 at half load waits one service time; M/M/2 at one drive's load a third.
    assert erlang_c_wait_s(1, 0.5, 1.0) == pytest.approx(1.0)
    assert erlang_c_wait_s(2, 1.0, 1.0) == pytest.approx(1 / 3)
    assert erlang_c_wait_s(8, 8.0, 100.0) == float("inf")
