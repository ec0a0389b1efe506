"""Seeded workloads (SCHEDULING.md 4.2): W1 recall storm, W2 steady online load at
a utilisation rho, W4 fairness between a flooding pool and a trickling one; and
traces of the seed's create bodies with a timestamp.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from statistics import NormalDist

from worker.simulation.model import GB, SimLibrary, SimTape


class WorkloadError(ValueError):
    """A workload name or a trace line we cannot use; the message says which."""


@dataclass(frozen=True, slots=True)
class SimRequest:
    id: int
    arrival: float
    barcode: str | None
    pool: str | None
    write: bool
    size_bytes: int
    #: Where the data sits, as a fraction of the tape's length (reads).
    position: float = 0.0


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    requests: tuple[SimRequest, ...]
    #: Only requests arriving in [warmup_s, warmup_s + horizon_s) are measured.
    warmup_s: float = 0.0
    horizon_s: float = math.inf
    #: Every request arrives at t = 0: makespan and its lower bound are meaningful.
    batch: bool = False
    description: str = ""


MEDIAN_SIZE = 2 * GB
SIGMA = 1.0


def _size(rng: random.Random) -> int:
    return max(1, int(MEDIAN_SIZE * math.exp(SIGMA * rng.gauss(0.0, 1.0))))


class _Zipf:
    """Tape popularity: rank k gets weight k^-s, ranks shuffled over the tapes."""

    def __init__(self, tapes: Sequence[SimTape], s: float, rng: random.Random) -> None:
        order = list(tapes)
        rng.shuffle(order)
        self.tapes = order
        self.cum = list(itertools.accumulate((k + 1) ** -s for k in range(len(order))))

    def pick(self, rng: random.Random) -> SimTape:
        index = bisect.bisect_left(self.cum, rng.random() * self.cum[-1])
        return self.tapes[min(index, len(self.tapes) - 1)]


def mean_size() -> float:
    return MEDIAN_SIZE * math.exp(SIGMA**2 / 2)


def standalone_service_s(library: SimLibrary) -> float:
    """Mean drive time of one request served by a mount of its own: the capacity
    against which rho is measured (two moves, load, a locate to U(0,1), the
    transfer, rewind and unload)."""
    timing = library.timing
    gen = max(d.generation for d in library.drives)
    rate = timing.rate(gen, None)
    return (
        2 * timing.mean_move_s
        + timing.load_nominal(gen)
        + timing.locate_base_s
        + timing.locate_per_length_s / 2
        + mean_size() / rate
        + _mean_rewind(library, gen)
        + timing.unload(gen)
    )


def _mean_rewind(library: SimLibrary, generation: int) -> float:
    """The rewind averaged over the size distribution, not the rewind of the mean
    size: LTO-9's rewind steps up at 5 GB, and a mean of 3.3 GB would hide the
    18 % of requests past the step (about 10 s per request, 5 % of the capacity)."""
    normal = NormalDist()
    steps = 4000
    total = 0.0
    for i in range(steps):
        # Midpoints of equal-probability slices of the normal: a deterministic mean.
        z = normal.inv_cdf((i + 0.5) / steps)
        size = int(MEDIAN_SIZE * math.exp(SIGMA * z))
        total += library.timing.rewind(generation, size, 0.5)
    return total / steps


def w1(library: SimLibrary, zipf_s: float, seed: int, n: int = 3000) -> Workload:
    """A recall storm: n reads at t = 0, popularity Zipf(s) over the data tapes."""
    rng = random.Random(seed)  # noqa: S311 -- seeded, reproducible, not security
    zipf = _Zipf(library.data_tapes, zipf_s, rng)
    requests = tuple(
        SimRequest(i, 0.0, zipf.pick(rng).barcode, None, False, _size(rng), rng.random())
        for i in range(n)
    )
    return Workload(
        f"W1 s={zipf_s:g}",
        requests,
        batch=True,
        description=f"{n} reads at t=0, Zipf s={zipf_s:g} over {len(zipf.tapes)} tapes",
    )


def w2(
    library: SimLibrary,
    rho: float,
    seed: int,
    hours: float = 24.0,
    warmup_h: float = 1.0,
    zipf_s: float = 0.8,
    read_share: float = 0.7,
) -> Workload:
    """Steady Poisson arrivals at utilisation rho: 70 % reads by tape (Zipf 0.8),
    30 % writes by pool, over `hours` after a discarded warm-up."""
    rng = random.Random(seed)  # noqa: S311 -- seeded, reproducible, not security
    pools = [p for p in library.pools() if _writable_pool(library, p)]
    if not pools:
        raise WorkloadError(f"library {library.name} has no pool with a writable tape")
    rate = rho * len(library.drives) / standalone_service_s(library)
    zipf = _Zipf(library.data_tapes, zipf_s, rng)
    end = (hours + warmup_h) * 3600.0
    requests: list[SimRequest] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            break
        rid = len(requests)
        if rng.random() < read_share:
            tape = zipf.pick(rng)
            requests.append(SimRequest(rid, t, tape.barcode, None, False, _size(rng), rng.random()))
        else:
            requests.append(SimRequest(rid, t, None, rng.choice(pools), True, _size(rng)))
    return Workload(
        f"W2 rho={rho:g}",
        tuple(requests),
        warmup_s=warmup_h * 3600.0,
        horizon_s=hours * 3600.0,
        description=(
            f"Poisson, rho={rho:g} ({rate * 3600:.0f} requests/h), {read_share:.0%} reads "
            f"(Zipf s={zipf_s:g}), writes to {len(pools)} pools, "
            f"{hours:g} h + {warmup_h:g} h warm-up"
        ),
    )


def w4(
    library: SimLibrary,
    seed: int,
    rho: float = 0.9,
    hours: float = 12.0,
    warmup_h: float = 1.0,
    flood_share: float = 0.9,
    flood_pool: str | None = None,
    trickle_pool: str | None = None,
) -> Workload:
    """Fairness: reads by tape; the tapes of one pool get 90 % of the requests
    (Zipf 0.8), the other pool's the rest (uniform). Measures the trickle's wait.
    Without pool names: the library's two largest pools (archive-a and archive-b
    on the benchmark library)."""
    rng = random.Random(seed)  # noqa: S311 -- seeded, reproducible, not security
    if flood_pool is None or trickle_pool is None:
        sizes: dict[str, int] = {}
        for tape in library.data_tapes:
            if tape.pool is not None:
                sizes[tape.pool] = sizes.get(tape.pool, 0) + 1
        largest = sorted(sizes, key=lambda p: (-sizes[p], p))[:2]
        if len(largest) < 2:
            raise WorkloadError(
                f"W4 needs two pools with tapes; library {library.name} has {library.pools()}"
            )
        flood_pool, trickle_pool = sorted(largest)
    flood = [t for t in library.data_tapes if t.pool == flood_pool]
    trickle = [t for t in library.data_tapes if t.pool == trickle_pool]
    if not flood or not trickle:
        raise WorkloadError(
            f"W4 needs tapes in pools {flood_pool!r} and {trickle_pool!r} "
            f"(library {library.name} has {library.pools()})"
        )
    zipf = _Zipf(flood, 0.8, rng)
    rate = rho * len(library.drives) / standalone_service_s(library)
    end = (hours + warmup_h) * 3600.0
    requests: list[SimRequest] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            break
        rid = len(requests)
        tape = zipf.pick(rng) if rng.random() < flood_share else rng.choice(trickle)
        requests.append(SimRequest(rid, t, tape.barcode, None, False, _size(rng), rng.random()))
    return Workload(
        f"W4 rho={rho:g}",
        tuple(requests),
        warmup_s=warmup_h * 3600.0,
        horizon_s=hours * 3600.0,
        description=(
            f"reads; pool {flood_pool} gets {flood_share:.0%} of {rate * 3600:.0f}/h "
            f"(Zipf 0.8), pool {trickle_pool} the rest"
        ),
    )


def _writable_pool(library: SimLibrary, pool: str) -> bool:
    return any(
        t.pool == pool and not (t.full or t.locked or t.write_protected or t.need_to_check)
        for t in library.data_tapes
    )


def _timestamp(value: object, line: int) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise WorkloadError(f"line {line}: 'timestamp' must be seconds or an ISO-8601 date")


def load_trace(path: Path, library: SimLibrary, pool_ids: dict[int, str]) -> Workload:
    """JSON lines: the seed's create body plus `timestamp` (seconds or ISO-8601);
    optional `size_bytes`, `write` (default true: destinations are written to) and
    `position` (0..1). Arrivals are shifted so the first is at t = 0."""
    rows: list[tuple[float, str | None, str | None, bool, int, float]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"{path}: {exc.strerror}") from exc
    barcodes = {t.barcode for t in library.tapes}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{path}:{number}: not JSON: {exc.msg}") from exc
        if not isinstance(body, dict):
            raise WorkloadError(f"{path}:{number}: expected a JSON object")
        if "timestamp" not in body:
            raise WorkloadError(f"{path}:{number}: missing 'timestamp'")
        when = _timestamp(body["timestamp"], number)
        barcode = body.get("tape_barcode")
        pool = body.get("pool_name")
        if pool is None and body.get("pool_id") is not None:
            pool = pool_ids.get(int(body["pool_id"]))
        if barcode is None and pool is None:
            continue  # a folder-only destination asks for no tape
        if barcode is not None and barcode not in barcodes:
            pass  # kept: the policies must fail it with a reason
        size = int(body.get("size_bytes", MEDIAN_SIZE))
        rows.append(
            (
                when,
                barcode,
                pool if barcode is None else None,
                bool(body.get("write", True)),
                size,
                float(body.get("position", 0.5)),
            )
        )
    if not rows:
        raise WorkloadError(f"{path}: no destination with a tape or a pool")
    rows.sort(key=lambda r: r[0])
    start = rows[0][0]
    requests = tuple(
        SimRequest(i, when - start, barcode, pool, write, size, position)
        for i, (when, barcode, pool, write, size, position) in enumerate(rows)
    )
    batch = all(r.arrival == 0.0 for r in requests)
    return Workload(f"trace {path.name}", requests, batch=batch, description=f"{len(rows)} events")
