"""How much of a latency gap is the library's capacity rather than the planner.

At high load every batching policy keeps the drives busy, and what is left to a
planner is small. To show it with figures rather than say it: where the drive
time goes, what a request that waits for nothing would see (the floor), and the
same trace replayed on the same library with more drives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from worker.simulation.engine import Policy, RunResult, simulate
from worker.simulation.metrics import measure, measured_requests, percentile
from worker.simulation.model import SimDrive, SimLibrary
from worker.simulation.report import PLANNER, CaseResult
from worker.simulation.workloads import standalone_service_s

#: Drive states of the timeline, in the order they are printed; "empty" is the rest.
STATES = ("mount", "locate", "transfer", "unload", "idle", "empty")
DRIVE_COUNTS = (8, 10, 12, 16, 32)


@dataclass(frozen=True, slots=True)
class SweepPoint:
    drives: int
    mean_s: float
    p99_s: float


@dataclass(frozen=True, slots=True)
class Headroom:
    workload: str
    #: Mean and p99 of each request's own lower bound (SCHEDULING.md 4.3).
    floor_mean_s: float
    floor_p99_s: float
    #: What a request would see if every request had a mount of its own and
    #: waited for a drive as in an M/M/c queue (Erlang C) at the measured load:
    #: the floor plus that wait.
    queueing_mean_s: float
    #: The policy the sweep is measured against, and its mean and p99.
    baseline: str
    baseline_mean_s: float
    baseline_p99_s: float
    #: Policy name -> state -> share of drives x run length.
    shares: dict[str, dict[str, float]]
    #: The planner on the same trace with more drives (the first is the library's own).
    sweep: tuple[SweepPoint, ...]

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def drive_shares(result: RunResult) -> dict[str, float]:
    """Share of drive time per state, from a run recorded with its timeline."""
    total = len(result.library.drives) * max(result.end, 1e-9)
    shares = dict.fromkeys(STATES, 0.0)
    for segments in result.timeline.values():
        for start, end, state in segments:
            shares[state] = shares.get(state, 0.0) + (end - start) / total
    shares["empty"] = max(0.0, 1.0 - sum(v for k, v in shares.items() if k != "empty"))
    return shares


def with_drives(library: SimLibrary, count: int) -> SimLibrary:
    """The same library with `count` drives of its newest generation."""
    generation = max(d.generation for d in library.drives)
    return dataclasses.replace(library, drives=tuple(SimDrive(i, generation) for i in range(count)))


def headroom(
    case: CaseResult,
    planner: Policy,
    *,
    seed: int,
    drive_counts: Sequence[int] = DRIVE_COUNTS,
) -> Headroom:
    """The planner against the best baseline (by mean latency) in a case already run
    with timelines, and the planner alone on the same trace with each drive count."""
    runs = {run.policy: run for run in case.runs}
    mine = case.of(PLANNER)
    best = case.best("mean_latency_s")
    library = runs[PLANNER].library
    measured = measured_requests(runs[PLANNER])
    floors = sorted(r.latency_lb for r in measured if r.done)
    workload = case.case.workload
    rate = len(measured) / workload.horizon_s if workload.horizon_s > 0 else 0.0
    service = standalone_service_s(library)
    sweep = []
    for count in drive_counts:
        found = mine
        if count != len(library.drives):
            more = with_drives(library, count)
            found = measure(simulate(more, case.case.workload, planner, seed=seed))
        sweep.append(SweepPoint(count, found.mean_latency_s, found.p99_latency_s))
    return Headroom(
        workload=case.case.workload.name,
        floor_mean_s=sum(floors) / len(floors) if floors else float("nan"),
        floor_p99_s=percentile(floors, 99),
        queueing_mean_s=(sum(floors) / len(floors) if floors else float("nan"))
        + erlang_c_wait_s(len(library.drives), rate * service, service),
        baseline=best.policy,
        baseline_mean_s=best.mean_latency_s,
        baseline_p99_s=best.p99_latency_s,
        shares={name: drive_shares(runs[name]) for name in (PLANNER, best.policy)},
        sweep=tuple(sweep),
    )


def erlang_c_wait_s(servers: int, offered: float, service_s: float) -> float:
    """Mean wait in an M/M/c queue: `servers` drives, `offered` = arrival rate x
    mean service time (in drives), Erlang's C formula; inf at or past saturation."""
    if offered >= servers:
        return float("inf")
    term = 1.0
    total = 1.0
    for k in range(1, servers):
        term *= offered / k
        total += term
    last = term * offered / servers * servers / (servers - offered)
    waiting = last / (total + last)
    return waiting * service_s / (servers - offered)


def render(found: Headroom, drives: int, target_ratio: float, p99_ratio: float) -> str:
    """The section `make bench` prints under the tables."""
    mean_target = target_ratio * found.baseline_mean_s
    p99_target = p99_ratio * found.baseline_p99_s
    width = max(len(name) for name in found.shares) + 2
    lines = [
        f"{found.workload} — where the time goes ({drives} drives)",
        f"  floor (every request waits for nothing but its own mount): mean "
        f"{found.floor_mean_s:.0f} s, p99 {found.floor_p99_s:.0f} s; target "
        f"{target_ratio:g} x {found.baseline}: mean <= {mean_target:.0f} s, "
        f"{p99_ratio:g} x: p99 <= {p99_target:.0f} s",
        f"  queueing estimate (a mount per request, M/M/{drives} at this load): mean "
        f"{found.queueing_mean_s:.0f} s",
        "  share of drive time:",
        "    " + "policy".ljust(width - 2) + "".join(f"{s:>9}" for s in STATES),
        *(
            "    " + name.ljust(width - 2) + "".join(f"{shares[s]:>9.1%}" for s in STATES)
            for name, shares in found.shares.items()
        ),
        f"  the same trace with more drives (planner; ratios to {found.baseline} on {drives}):",
        "    drives   mean s   p99 s   mean ratio   p99 ratio",
        *(
            f"    {p.drives:>6} {p.mean_s:>8.0f} {p.p99_s:>7.0f} "
            f"{p.mean_s / found.baseline_mean_s:>12.2f} {p.p99_s / found.baseline_p99_s:>11.2f}"
            for p in found.sweep
        ),
    ]
    return "\n".join(lines)
