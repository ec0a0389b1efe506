"""The planning-cost benchmark: one planning round over 100,000 pending requests,
10,000 tapes and 64 drives, and over 1,000,000 requests on the same library.

Speed differs from machine to machine, so the figures that are judged are ratios
measured in the same run: the round against `sorted()` over 100,000 float keys,
and the round at 1,000,000 requests against the round at 100,000. The round works
on a `PendingRequests` kept up to date as requests come and go (as the daemon
would keep it); building one from scratch, and a round over a plain list (which
builds one), are timed apart. Times are process CPU time, median of a few runs.

The queue keeps what it can between rounds (each group's key and its ids), so
rounds over an unchanged queue would flatter it: before each timed round the
previous round's arrivals leave and `INTAKE_PER_ROUND` new ones come, spread over
the tapes like the rest (the hottest tapes change every round) and a tenth of
them pool writes, and the round pays for what those changes make it rebuild.
"""

from __future__ import annotations

import gc
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker.core.pending import PendingRequests
from worker.core.planner import PlanPolicy, plan
from worker.core.requests import MountRequest
from worker.core.snapshot import (
    DriveView,
    LibrarySnapshot,
    Tape,
    TapeView,
    build_snapshot,
    tape_view,
)

#: One round at 100,000 requests, at most this many times sorted() over 100,000 keys.
SORT_RATIO_LIMIT = 2.0
#: One round at 1,000,000 requests, at most this many times the round at 100,000.
GROWTH_RATIO_LIMIT = 3.0
#: Requests that arrive (and as many that leave) between two timed rounds.
INTAKE_PER_ROUND = 100


def cpu_model() -> str:
    """The CPU's model name (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _median_ms(
    run: Callable[[], object], runs: int, between: Callable[[], None] | None = None
) -> tuple[float, ...]:
    """CPU times of `runs` calls of `run`, with `between` (untimed) before each."""
    timings: list[float] = []
    for _ in range(runs):
        if between is not None:
            between()
        started = time.process_time()
        run()
        timings.append((time.process_time() - started) * 1000.0)
    return tuple(timings)


@dataclass(frozen=True, slots=True)
class Round:
    """One scenario's figures, in ms of CPU time."""

    requests: int
    tapes: int
    drives: int
    actions: int
    runs_ms: tuple[float, ...]
    build_ms: float
    from_list_ms: float

    @property
    def median_ms(self) -> float:
        return statistics.median(self.runs_ms)


@dataclass(frozen=True, slots=True)
class Cost:
    cpu: str
    sort_runs_ms: tuple[float, ...]
    base: Round
    big: Round

    @property
    def sort_ms(self) -> float:
        return statistics.median(self.sort_runs_ms)

    @property
    def sort_ratio(self) -> float:
        return self.base.median_ms / self.sort_ms

    @property
    def growth_ratio(self) -> float:
        return self.big.median_ms / self.base.median_ms

    def as_dict(self) -> dict[str, object]:
        return {
            "cpu": self.cpu,
            "sorted_100k_ms": list(self.sort_runs_ms),
            "round_ms": list(self.base.runs_ms),
            "round_requests": self.base.requests,
            "big_round_ms": list(self.big.runs_ms),
            "big_round_requests": self.big.requests,
            "queue_build_ms": [self.base.build_ms, self.big.build_ms],
            "round_from_list_ms": [self.base.from_list_ms, self.big.from_list_ms],
            "sort_ratio": self.sort_ratio,
            "growth_ratio": self.growth_ratio,
        }


def scenario(
    requests: int = 100_000, tapes: int = 10_000, drives: int = 64, seed: int = 0
) -> tuple[LibrarySnapshot, list[MountRequest]]:
    """A busy library: half the drives held, the rest idle with a tape; requests
    spread over every tape (Zipf-like), a tenth of them writes to one pool."""
    rng = random.Random(seed)  # noqa: S311 -- seeded, reproducible, not security
    views: dict[str, TapeView] = {}
    names: list[str] = []
    for i in range(tapes):
        barcode = f"T{i:06d}{'L8' if i % 4 == 0 else 'L9'}"
        in_drive = i if i < drives else None
        views[barcode] = tape_view(
            Tape(
                barcode,
                slot=None if in_drive is not None else i + 1,
                drive=in_drive,
                home_slot=i + 1,
                pool=f"pool{i % 10}",
                used_bytes=rng.randrange(0, 10**13),
            ),
            capacity_bytes=18 * 10**12,
        )
        names.append(barcode)
    drive_views = tuple(
        DriveView(
            d,
            9 if d % 2 else 8,
            barcode=names[d],
            holders=(10**9 + d,) if d % 2 else (),
            idle_since=float(d),
        )
        for d in range(drives)
    )
    picks = _picks(rng, names, requests)
    pending = [_request(i, picks[i], float(i)) for i in range(requests)]
    snapshot = build_snapshot(drive_views, views, free_slots=range(1, drives + 1))
    return snapshot, pending


def _picks(rng: random.Random, names: list[str], count: int) -> list[str]:
    """Tapes for `count` requests, the k-th tape weighted 1/(k+1)."""
    weights = [1.0 / (k + 1) for k in range(len(names))]
    return rng.choices(names, weights=weights, k=count)


def _request(request_id: int, barcode: str, arrival: float) -> MountRequest:
    """A read of `barcode`, or for every tenth id a write to the pool instead."""
    if request_id % 10 == 0:
        return MountRequest(
            request_id, None, f"pool{request_id % 10}", arrival, write=True, size_bytes=2 * 10**9
        )
    return MountRequest(request_id, barcode, None, arrival, write=False, size_bytes=2 * 10**9)


class _Intake:
    """New requests between rounds, as the daemon's intake brings them: each call
    takes the previous arrivals out again and adds `INTAKE_PER_ROUND` new ones,
    younger than every request of the scenario, with ids never used before."""

    def __init__(self, queue: PendingRequests, snapshot: LibrarySnapshot, seed: int) -> None:
        self.queue = queue
        self.names = list(snapshot.tapes)
        self.rng = random.Random(seed + 1)  # noqa: S311 -- seeded, reproducible
        self.next_id = max((r.id for r in queue), default=0) + 1
        self.arrival = max((r.arrival for r in queue), default=0.0)
        self.last: list[int] = []

    def __call__(self) -> None:
        for request_id in self.last:
            self.queue.discard(request_id)
        picks = _picks(self.rng, self.names, INTAKE_PER_ROUND)
        step = 1.0 / (INTAKE_PER_ROUND + 1)
        self.last = []
        for n, barcode in enumerate(picks, start=1):
            request_id = self.next_id
            self.next_id += 1
            self.queue.add(_request(request_id, barcode, self.arrival + n * step))
            self.last.append(request_id)


def _round(requests: int, runs: int, seed: int) -> Round:
    snapshot, pending = scenario(requests=requests, seed=seed)
    policy = PlanPolicy()
    now = float(len(pending))
    # The daemon's heap is long-lived too: collect once so a collection of the
    # scenario's own objects is not billed to the planner.
    gc.collect()
    started = time.process_time()
    queue = PendingRequests(pending)
    build_ms = (time.process_time() - started) * 1000.0
    actions = len(plan(snapshot, queue, policy, now))
    intake = _Intake(queue, snapshot, seed)
    timings = _median_ms(lambda: plan(snapshot, queue, policy, now), runs, intake)
    from_list = _median_ms(lambda: plan(snapshot, pending, policy, now), 1)[0]
    return Round(
        len(pending),
        len(snapshot.tapes),
        len(snapshot.drives),
        actions,
        timings,
        build_ms,
        from_list,
    )


def reference_sort_ms(keys: int = 100_000, runs: int = 7, seed: int = 0) -> tuple[float, ...]:
    """sorted() over `keys` random floats: the machine's yardstick."""
    rng = random.Random(seed)  # noqa: S311 -- seeded, reproducible, not security
    values = [rng.random() for _ in range(keys)]
    gc.collect()
    return _median_ms(lambda: sorted(values), runs)


def measure_cost(
    runs: int = 7, seed: int = 0, requests: int = 100_000, big_requests: int = 1_000_000
) -> Cost:
    """Both scenarios and the yardstick, measured in one process one after the other."""
    sort_runs = reference_sort_ms(runs=runs, seed=seed)
    base = _round(requests, runs, seed)
    # As many runs as at 100,000: a round costs tens of ms either way, and the
    # growth ratio is a quotient of two medians, noisy enough already.
    big = _round(big_requests, runs, seed)
    return Cost(cpu_model(), sort_runs, base, big)
