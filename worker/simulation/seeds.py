"""The benchmark over several seeds (`make bench-seeds`): every policy on every
workload for each seed, spread over a process pool, each target summarised by its
mean and 95 % interval over the seeds and judged on every seed.

A run is one (seed, workload, policy): the simulation is deterministic given them
and the code, so a baseline's figures are kept in a cache keyed by a hash of the
run's parameters and of every source module the run imported, but the planner's
own two and the reporting around the runs (a baseline's run never calls them).
Changing the planner, or how the figures are reported, reruns only the planner;
changing the simulator, a baseline or the workloads reruns all.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import math
import os
import pickle
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from worker.core.planner import PlanPolicy
from worker.simulation.engine import simulate
from worker.simulation.metrics import Metrics, measure
from worker.simulation.model import SimLibrary, profile_p2
from worker.simulation.report import (
    PLANNER,
    WORKLOADS,
    Case,
    CaseResult,
    Target,
    builtin_cases,
    judge,
    policies,
)
from worker.simulation.workloads import Workload, standalone_service_s

#: Student's t, 97.5th percentile, by degrees of freedom (n - 1 for n seeds).
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}

#: Modules whose change does not alter a baseline's run: the planner's, and the
#: benchmark's reporting around the runs (this module runs one with `simulate`
#: and `measure`, which are covered).
NOT_IN_A_BASELINE_RUN = frozenset(
    {
        "worker.core.planner",
        "worker.core.pending",
        "worker.simulation.bench",
        "worker.simulation.seeds",
        "worker.simulation.cost",
        "worker.simulation.headroom",
        "worker.simulation.plot",
        "worker.simulation.cli",
    }
)


@dataclass(frozen=True, slots=True)
class Run:
    """One simulation of the benchmark, small enough to send to a worker process."""

    seed: int
    workload: str
    policy: str
    quick: bool


@dataclass(frozen=True, slots=True)
class Summary:
    """One target over the seeds."""

    target: Target  # the first seed's, for its name, limit and whether it is judged
    values: tuple[float, ...]
    mean: float
    half_width: float  # of the 95 % interval of the mean (Student's t)
    met_seeds: int

    @property
    def met(self) -> bool:
        return self.met_seeds == len(self.values)


def interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % confidence interval (t distribution)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    t = T95.get(len(values) - 1, 1.96)
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


@functools.lru_cache(maxsize=4)
def _library(seed: int) -> SimLibrary:
    return profile_p2(seed)


@functools.lru_cache(maxsize=8)
def _case(seed: int, key: str, quick: bool) -> Case:
    return builtin_cases(_library(seed), [key], seed, quick=quick)[0]


def simulate_run(run: Run) -> Metrics:
    """Run one simulation (in a worker process) and measure it."""
    chosen = next(p for p in policies() if p.name == run.policy)
    workload = _case(run.seed, run.workload, run.quick).workload
    result = simulate(_library(run.seed), workload, chosen, seed=run.seed)
    return measure(result, PlanPolicy().max_age_s)


def code_fingerprint(skip: frozenset[str] = NOT_IN_A_BASELINE_RUN) -> str:
    """A hash of the source of every loaded module of this project but `skip`."""
    digest = hashlib.sha256(sys.version.encode())
    for name in sorted(sys.modules):
        if not name.startswith(("worker", "drivers")) or name in skip:
            continue
        path = getattr(sys.modules[name], "__file__", None)
        if path is None:
            continue
        digest.update(name.encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


class BaselineCache:
    """Measured baseline runs on disk, one file per run, keyed by code and run."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = directory
        self.fingerprint = fingerprint

    def _path(self, run: Run) -> Path:
        key = hashlib.sha256(f"{self.fingerprint}|{run!r}".encode()).hexdigest()[:32]
        return self.directory / f"{key}.pickle"

    def get(self, run: Run) -> Metrics | None:
        try:
            found = pickle.loads(self._path(run).read_bytes())  # noqa: S301 -- our own files
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
            return None
        return found if isinstance(found, Metrics) else None

    def put(self, run: Run, metrics: Metrics) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(run)
        partial = path.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(metrics))
        partial.replace(path)  # whole or absent, whatever stops the run


def run_seeds(
    seeds: Sequence[int],
    *,
    quick: bool = False,
    workloads: Sequence[str] = WORKLOADS,
    jobs: int | None = None,
    cache: BaselineCache | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[list[Target]], int]:
    """The targets of every seed, and how many runs came from the cache."""
    names = [p.name for p in policies()]
    runs = [Run(s, k, n, quick) for s in seeds for k in workloads for n in names]
    found: dict[Run, Metrics] = {}
    if cache is not None:
        for run in runs:
            if run.policy != PLANNER and (hit := cache.get(run)) is not None:
                found[run] = hit
    cached = len(found)
    todo = [r for r in runs if r not in found]
    # The recall storms are the long runs: started first, they do not end the run alone.
    todo.sort(key=lambda r: not r.workload.startswith("w1"))
    workers = max(1, min(jobs or os.cpu_count() or 1, len(todo) or 1))
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(simulate_run, run): run for run in todo}
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            run = futures[future]
            found[run] = future.result()
            if cache is not None and run.policy != PLANNER:
                cache.put(run, found[run])
            if progress is not None:
                progress(done, len(todo))
    per_seed: list[list[Target]] = []
    for seed in seeds:
        results = [
            CaseResult(
                _case(seed, key, quick),
                (),
                tuple(found[Run(seed, key, name, quick)] for name in names),
            )
            for key in workloads
        ]
        per_seed.append(judge(results, PlanPolicy().max_age_s))
    return per_seed, cached


def realised_load(library: SimLibrary, workload: Workload) -> float:
    """The load a trace actually offers over its measured window, in the units of
    its nominal rho: requests that arrived x `standalone_service_s` / (drives x
    window). Poisson arrivals stray from the nominal rate by a few percent, and
    near saturation the queueing grows steeply with it."""
    start, length = workload.warmup_s, workload.horizon_s
    if not library.drives or length <= 0 or math.isinf(length):
        return math.nan
    arrived = sum(1 for r in workload.requests if start <= r.arrival < start + length)
    return arrived * standalone_service_s(library) / (len(library.drives) * length)


def realised_loads(seeds: Sequence[int], key: str, quick: bool = False) -> list[float]:
    """The load each seed's trace of a steady workload actually offers."""
    return [realised_load(_library(s), _case(s, key, quick).workload) for s in seeds]


def summarise(per_seed: Sequence[Sequence[Target]]) -> list[Summary]:
    summary: list[Summary] = []
    for index, first in enumerate(per_seed[0]):
        values = tuple(targets[index].value for targets in per_seed)
        mean, half = interval(values)
        met = sum(1 for targets in per_seed if targets[index].met)
        summary.append(Summary(first, values, mean, half, met))
    return summary
