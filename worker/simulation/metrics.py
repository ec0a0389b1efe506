"""Metrics of one run, its lower bounds (SCHEDULING.md 4.3), and the targets.

Definitions:
- latency: arrival -> the request's data transferred; wait: arrival -> its tape
  ready in a drive (the daemon's "ready"); only requests arriving inside the
  workload's measured window count (W2/W4 drop a warm-up hour).
- makespan: the last request's completion (final unloads excluded, and the bound
  subtracts them likewise).
- drive efficiency: transfer time / time drives held a cartridge (mount to unmount).
- robot utilisation: robot busy time / (robots x run length).
- remounts within 2 h: mounts of a tape that was mounted less than 2 h before.
- tapes written, scratch opened: pool tapes that took a write over the whole run,
  and how many of them were scratch at the start (now partly filled).
- faults (`--fault-rate`, `--kill-drive`, `--slow-ready`): failed robot moves,
  moves retried after a backoff, drives down, and requests failed (for any
  reason, a fault's or a policy's); they count over the whole run.
- bounds use mean robot moves and nominal load/unload times, so a ratio a hair
  under 1 is possible on a lucky seed.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from worker.simulation.engine import RequestRecord, RunResult
from worker.simulation.model import SimLibrary

TWO_HOURS = 7200.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(values)))
    return values[rank - 1]


@dataclass(frozen=True, slots=True)
class Metrics:
    policy: str
    workload: str
    requests: int
    failed: int
    unserved: int
    mounts: int
    mounts_per_h: float
    makespan_s: float
    mean_latency_s: float
    p50_latency_s: float
    p95_latency_s: float
    p99_latency_s: float
    max_latency_s: float
    mean_wait_s: float
    max_wait_s: float
    drive_efficiency: float
    robot_utilisation: float
    remounts_2h: int
    remount_share: float
    max_loads_per_tape_day: int
    sla_violations: int
    #: Requests that waited past the maximum age while a younger one got a drive
    #: first: starvation, as opposed to a batch bigger than the library.
    starved: int
    decision_ms: float
    lb_mounts: int
    lb_makespan_s: float
    lb_mean_latency_s: float
    mounts_ratio: float
    makespan_ratio: float
    latency_ratio: float
    failed_moves: int = 0
    retries: int = 0
    drives_down: int = 0
    max_wait_by_pool: Mapping[str, float] = field(default_factory=dict)
    #: Pool tapes written to, and of those the scratch tapes opened (the partly
    #: filled tapes a write placement leaves behind).
    tapes_written: int = 0
    scratch_opened: int = 0

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["max_wait_by_pool"] = dict(self.max_wait_by_pool)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}


def measured_requests(result: RunResult) -> list[RequestRecord]:
    w = result.workload
    return [r for r in result.requests if w.warmup_s <= r.arrival < w.warmup_s + w.horizon_s]


def lower_bound_mounts(records: Sequence[RequestRecord], library: SimLibrary) -> int:
    """Every tape read must be mounted once; each pool written needs at least one."""
    tapes = {r.barcode for r in records if r.pool is None and r.barcode is not None}
    pools = {r.pool for r in records if r.pool is not None}
    mounted = {t.barcode for t in library.tapes if t.drive is not None}
    return max(0, len(tapes - mounted)) + len(pools)


def lower_bound_makespan(records: Sequence[RequestRecord], library: SimLibrary) -> float:
    """max(sum W_i / D, max W_i, robot moves / K), without the final unloads."""
    timing = library.timing
    by_tape: dict[str, list[RequestRecord]] = defaultdict(list)
    for record in records:
        if record.barcode is not None:
            by_tape[record.barcode].append(record)
    if not by_tape:
        return 0.0
    specs = {t.barcode: t for t in library.tapes}
    gen = max(d.generation for d in library.drives)
    move = timing.mean_move_s
    work: list[float] = []
    tail: list[float] = []  # the unload part of W_i, not needed after the last request
    for barcode, recs in by_tape.items():
        spec = specs.get(barcode)
        media = spec.media if spec is not None else None
        moved = sum(r.size_bytes for r in recs)
        reach = max((r_pos for r_pos in _positions(recs)), default=0.0)
        rewind = timing.rewind(gen, moved, reach)
        unload = rewind + timing.unload(gen) + move
        w_i = (
            move
            + timing.load_nominal(gen)
            + moved / timing.rate(gen, media)
            + len(recs) * timing.locate_base_s
            + timing.locate_per_length_s * reach
            + unload
        )
        work.append(w_i)
        tail.append(unload)
    drives = len(library.drives)
    spared = sum(sorted(tail, reverse=True)[:drives])
    mounts = len(by_tape)
    return max(
        (sum(work) - spared) / drives,
        *(w - u for w, u in zip(work, tail, strict=True)),
        (2 * mounts - drives) * move / max(1, library.robots),
    )


def _positions(records: Sequence[RequestRecord]) -> list[float]:
    """How far along the tape each read must go: one sweep reaches the furthest."""
    return [r.position for r in records if not r.write]


def _starved(done: Sequence[RequestRecord], max_age_s: float) -> int:
    """Requests past the maximum age that a younger request overtook."""
    ordered = sorted(
        (r for r in done if r.ready is not None), key=lambda r: (r.arrival, r.id), reverse=True
    )
    starved = 0
    earliest_younger = math.inf  # the earliest ready among later arrivals
    i = 0
    while i < len(ordered):
        # Requests arriving together are not younger than each other.
        j = i
        while j < len(ordered) and ordered[j].arrival == ordered[i].arrival:
            j += 1
        group = ordered[i:j]
        for record in group:
            assert record.ready is not None
            if record.ready - record.arrival > max_age_s and earliest_younger < record.ready:
                starved += 1
        earliest_younger = min(earliest_younger, *(r.ready or math.inf for r in group))
        i = j
    return starved


def measure(result: RunResult, max_age_s: float = 7200.0) -> Metrics:
    records = measured_requests(result)
    done = [r for r in records if r.done is not None]
    latencies = sorted(r.done - r.arrival for r in done if r.done is not None)
    waits = sorted(r.ready - r.arrival for r in done if r.ready is not None)
    workload = result.workload
    library = result.library
    window_start = workload.warmup_s
    window_end = workload.warmup_s + workload.horizon_s
    if workload.batch or math.isinf(workload.horizon_s):
        mounts = list(result.mounts)
        hours = max(result.makespan, 1.0) / 3600.0
    else:
        mounts = [m for m in result.mounts if window_start <= m[0] < window_end]
        hours = workload.horizon_s / 3600.0
    by_tape: dict[str, list[float]] = defaultdict(list)
    for at, barcode, _ in result.mounts:
        by_tape[barcode].append(at)
    remounts = 0
    max_per_day = 0
    for times in by_tape.values():
        times.sort()
        for earlier, later in itertools.pairwise(times):
            if later - earlier < TWO_HOURS and window_start <= later < window_end:
                remounts += 1
        days: dict[int, int] = defaultdict(int)
        for at in times:
            days[int(at // 86400)] += 1
        max_per_day = max(max_per_day, *days.values())
    pools = {t.barcode: t.pool for t in library.tapes}
    by_pool: dict[str, float] = {}
    for record in done:
        if record.ready is None:
            continue
        pool = record.pool or pools.get(record.barcode or "") or "-"
        by_pool[pool] = max(by_pool.get(pool, 0.0), record.ready - record.arrival)
    written = {r.barcode for r in result.requests if r.write and r.done is not None}
    scratch = {t.barcode for t in library.tapes if t.pool is not None and t.used_bytes == 0}
    lb_mounts = lower_bound_mounts(records, library)
    lb_makespan = lower_bound_makespan(records, library) if workload.batch else math.nan
    mean_latency = sum(latencies) / len(latencies) if latencies else math.nan
    lb_latency = sum(r.latency_lb for r in done) / len(done) if done else math.nan
    return Metrics(
        policy=result.policy,
        workload=workload.name,
        requests=len(records),
        failed=sum(1 for r in records if r.failed is not None),
        unserved=sum(1 for r in records if r.done is None and r.failed is None),
        mounts=len(mounts),
        mounts_per_h=len(mounts) / hours if hours > 0 else math.nan,
        makespan_s=result.makespan,
        mean_latency_s=mean_latency,
        p50_latency_s=percentile(latencies, 50),
        p95_latency_s=percentile(latencies, 95),
        p99_latency_s=percentile(latencies, 99),
        max_latency_s=latencies[-1] if latencies else math.nan,
        mean_wait_s=sum(waits) / len(waits) if waits else math.nan,
        max_wait_s=waits[-1] if waits else math.nan,
        drive_efficiency=result.transfer_s / result.occupancy_s if result.occupancy_s else 0.0,
        robot_utilisation=result.robot_busy_s / (max(1, library.robots) * max(result.end, 1.0)),
        remounts_2h=remounts,
        remount_share=remounts / len(mounts) if mounts else 0.0,
        max_loads_per_tape_day=max_per_day,
        sla_violations=sum(1 for w in waits if w > max_age_s),
        starved=_starved(done, max_age_s),
        decision_ms=1000.0 * result.decision_s / max(1, result.decisions),
        lb_mounts=lb_mounts,
        lb_makespan_s=lb_makespan,
        lb_mean_latency_s=lb_latency,
        mounts_ratio=len(mounts) / lb_mounts if lb_mounts and workload.batch else math.nan,
        makespan_ratio=result.makespan / lb_makespan if lb_makespan else math.nan,
        latency_ratio=mean_latency / lb_latency if lb_latency else math.nan,
        failed_moves=result.failed_moves,
        retries=result.retries,
        drives_down=len(result.drives_down),
        max_wait_by_pool=by_pool,
        tapes_written=len(written),
        scratch_opened=len(written & scratch),
    )
