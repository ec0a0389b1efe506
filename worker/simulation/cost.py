"""The planning-cost benchmark: one planning round over 100,000 pending requests,
10,000 tapes and 64 drives. It times the planner with the process clock; it is a
measurement, not a test (CPU speed varies), and reports the median of a few runs."""

from __future__ import annotations

import gc
import random
import statistics
import time
from dataclasses import dataclass

from drivers.media import media_of
from worker.planner import PlanPolicy, plan
from worker.requests import MountRequest
from worker.snapshot import DriveView, LibrarySnapshot, TapeView

LIMIT_MS = 50.0


@dataclass(frozen=True, slots=True)
class Cost:
    requests: int
    tapes: int
    drives: int
    actions: int
    runs_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.runs_ms)


def scenario(
    requests: int = 100_000, tapes: int = 10_000, drives: int = 64, seed: int = 0
) -> tuple[LibrarySnapshot, list[MountRequest]]:
    """A busy library: half the drives held, the rest idle with a tape; requests
    spread over every tape (Zipf-like), a tenth of them pool writes over 10 pools."""
    rng = random.Random(seed)  # noqa: S311 -- seeded, reproducible, not security
    views: dict[str, TapeView] = {}
    names: list[str] = []
    for i in range(tapes):
        barcode = f"T{i:06d}{'L8' if i % 4 == 0 else 'L9'}"
        in_drive = i if i < drives else None
        views[barcode] = TapeView(
            barcode,
            media_of(barcode),
            slot=None if in_drive is not None else i + 1,
            drive=in_drive,
            home_slot=i + 1,
            pool=f"pool{i % 10}",
            used_bytes=rng.randrange(0, 10**13),
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
    weights = [1.0 / (k + 1) for k in range(tapes)]
    picks = rng.choices(names, weights=weights, k=requests)
    pending = [
        MountRequest(i, None, f"pool{i % 10}", float(i), write=True, size_bytes=2 * 10**9)
        if i % 10 == 0
        else MountRequest(i, picks[i], None, float(i), write=False, size_bytes=2 * 10**9)
        for i in range(requests)
    ]
    snapshot = LibrarySnapshot(
        drives=drive_views, tapes=views, free_slots=tuple(range(1, drives + 1))
    )
    return snapshot, pending


def measure_cost(runs: int = 7, seed: int = 0) -> Cost:
    snapshot, pending = scenario(seed=seed)
    policy = PlanPolicy()
    now = float(len(pending))
    # The daemon's heap is long-lived too: collect once so a collection of the
    # scenario's own objects is not billed to the planner.
    gc.collect()
    timings: list[float] = []
    actions = 0
    for _ in range(runs):
        started = time.process_time()
        result = plan(snapshot, pending, policy, now)
        timings.append((time.process_time() - started) * 1000.0)
        actions = len(result)
    return Cost(len(pending), len(snapshot.tapes), len(snapshot.drives), actions, tuple(timings))
