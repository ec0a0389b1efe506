"""The simulator and the comparison, at sizes small enough for the default suite.

The full-size figures come from `python -m worker.simulation.bench` (`make bench`);
here small workloads check that the planner beats the baselines where the
targets say it must. The simulator's own parts are tested in tests/worker/simulation.
"""

from __future__ import annotations

from worker.simulation.model import profile_p2
from worker.simulation.policies import baselines, planner
from worker.simulation.report import Case, run_case
from worker.simulation.workloads import Workload, w1, w2

LIBRARY = profile_p2(1)


def _compare(workload: Workload) -> dict[str, float]:
    result = run_case(
        LIBRARY, Case("t", workload), [planner(), *baselines()], seed=1, max_age_s=7200.0
    )
    return (
        {m.policy: m.mean_latency_s for m in result.metrics}
        | {f"{m.policy}/mounts": m.mounts for m in result.metrics}
        | {f"{m.policy}/makespan": m.makespan_s for m in result.metrics}
        | {
            "planner/mounts_ratio": result.of("planner").mounts_ratio,
            "planner/makespan_ratio": result.of("planner").makespan_ratio,
            "planner/starved": result.of("planner").starved,
        }
    )


def _best(figures: dict[str, float], prefix: str = "B", suffix: str = "") -> float:
    return min(
        v
        for k, v in figures.items()
        if k.startswith(prefix) and k.endswith(suffix) and (suffix or "/" not in k)
    )


def test_a_recall_storm_meets_the_lower_bounds_and_beats_every_baseline() -> None:
    for zipf in (0.0, 1.2):
        figures = _compare(w1(LIBRARY, zipf, seed=3, n=400))
        assert figures["planner/mounts_ratio"] <= 1.02
        assert figures["planner/makespan_ratio"] <= 1.10
        # Level with the CTA-like baseline (robot draws differ), far ahead of FCFS.
        assert figures["planner/makespan"] <= 1.05 * _best(figures, "B", "/makespan")
        assert figures["planner/mounts"] <= _best(figures, "B", "/mounts")


def test_under_heavy_load_the_planner_halves_fcfs_latency_and_matches_cta_like() -> None:
    figures = _compare(w2(LIBRARY, 0.9, seed=3, hours=3))
    fcfs = min(figures[k] for k in figures if k.startswith(("B0", "B1", "B2")) and "/" not in k)
    assert figures["planner"] <= 0.6 * fcfs
    assert figures["planner"] <= 1.05 * _best(figures)
    assert figures["planner/starved"] == 0


def test_under_light_load_the_planner_is_no_worse_than_the_best_baseline() -> None:
    figures = _compare(w2(LIBRARY, 0.3, seed=3, hours=4))
    assert figures["planner"] <= 1.1 * _best(figures)
