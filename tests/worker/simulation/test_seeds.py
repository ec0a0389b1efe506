"""The benchmark over seeds: runs spread over processes give the figures of a
single process, baseline runs come back from the cache only for the same code,
and the summary's interval is Student's."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import pytest

from worker.simulation.model import profile_p2
from worker.simulation.report import PLANNER, policies
from worker.simulation.seeds import (
    BaselineCache,
    Run,
    code_fingerprint,
    interval,
    realised_load,
    run_seeds,
    simulate_run,
    summarise,
)
from worker.simulation.workloads import SimRequest, Workload, standalone_service_s

SMALL = ("w2-0.3",)


def test_the_interval_is_students_t_over_the_seeds() -> None:
    mean, half = interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.30 * 1.0 / math.sqrt(3))
    assert interval([5.0]) == (5.0, 0.0)


@pytest.mark.timeout(900)
def test_a_pool_of_processes_and_the_cache_give_the_figures_of_one_process(
    tmp_path: Path,
) -> None:
    cache = BaselineCache(tmp_path / "cache", code_fingerprint())
    alone, cached = run_seeds([1, 2], quick=True, workloads=SMALL, jobs=1)
    assert cached == 0
    pooled, cached = run_seeds([1, 2], quick=True, workloads=SMALL, jobs=2, cache=cache)
    assert cached == 0
    again, cached = run_seeds([1, 2], quick=True, workloads=SMALL, jobs=2, cache=cache)
    baselines = len(policies()) - 1
    assert cached == 2 * len(SMALL) * baselines  # every baseline run, never the planner
    assert [[t.value for t in seed] for seed in pooled] == [[t.value for t in s] for s in alone]
    assert [[t.value for t in seed] for seed in again] == [[t.value for t in s] for s in alone]
    summary = summarise(again)
    first = next(s for s in summary if "W2 rho=0.3: mean latency" in s.target.name)
    assert first.values == tuple(seed[0].value for seed in again)
    assert first.met is (first.met_seeds == 2)


def test_the_cache_answers_only_for_the_same_code(tmp_path: Path) -> None:
    run = Run(1, "w2-0.3", "B1 fcfs-lazy", True)
    metrics = simulate_run(run)
    BaselineCache(tmp_path, "code A").put(run, metrics)
    # Compared by repr: some figures are NaN (no makespan outside a batch).
    assert repr(BaselineCache(tmp_path, "code A").get(run)) == repr(metrics)
    assert BaselineCache(tmp_path, "code B").get(run) is None
    assert BaselineCache(tmp_path, "code A").get(Run(2, "w2-0.3", "B1 fcfs-lazy", True)) is None
    assert run.policy != PLANNER


def test_the_fingerprint_follows_the_source_but_not_the_planners(tmp_path: Path) -> None:
    source = tmp_path / "fake.py"
    source.write_text("A = 1\n")
    module = types.ModuleType("worker.fake_for_fingerprint")
    module.__file__ = str(source)
    sys.modules[module.__name__] = module
    try:
        before = code_fingerprint()
        source.write_text("A = 2\n")
        assert code_fingerprint() != before
        skipped = frozenset({module.__name__})
        unchanged = code_fingerprint(skip=skipped)
        source.write_text("A = 3\n")
        assert code_fingerprint(skip=skipped) == unchanged
    finally:
        del sys.modules[module.__name__]


def test_the_realised_load_counts_the_arrivals_of_the_measured_window() -> None:
    library = profile_p2(1)
    requests = tuple(
        SimRequest(i, at, "A00000L9", None, False, 1)
        for i, at in enumerate((5.0, 10.0, 20.0, 99.0))
    )
    workload = Workload("t", requests, warmup_s=10.0, horizon_s=50.0)
    # Two of the four arrive in [10, 60).
    expected = 2 * standalone_service_s(library) / (len(library.drives) * 50.0)
    assert realised_load(library, workload) == pytest.approx(expected)
