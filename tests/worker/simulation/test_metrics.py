"""A run's metrics from its records: latency percentiles, the bounds, remounts,
starvation and the measured window."""

from __future__ import annotations

import math

import pytest

from worker.simulation.engine import RequestRecord, RunResult
from worker.simulation.metrics import lower_bound_mounts, measure, percentile
from worker.simulation.model import SimDrive, SimLibrary, SimTape
from worker.simulation.workloads import SimRequest, Workload

LIBRARY = SimLibrary(
    "two",
    (SimDrive(0, 9), SimDrive(1, 9)),
    (
        SimTape("A0001L9", 1, pool="p"),
        SimTape("A0002L9", 2, pool="p"),
        SimTape("A0003L9", 3, pool="q", drive=1),
    ),
    slots=6,
)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def record(
    rid: int,
    arrival: float,
    barcode: str | None,
    *,
    ready: float | None,
    done: float | None,
    pool: str | None = None,
    failed: str | None = None,
) -> RequestRecord:
    return RequestRecord(
        id=rid,
        arrival=arrival,
        barcode=barcode,
        pool=pool,
        write=pool is not None,
        size_bytes=10**9,
        position=0.5,
        ready=ready,
        done=done,
        failed=failed,
        latency_lb=10.0,
    )


def test_the_mount_bound_counts_tapes_not_yet_mounted_and_one_per_written_pool() -> None:
    records = [
        record(0, 0, "A0001L9", ready=1, done=2),
        record(1, 0, "A0001L9", ready=1, done=2),
        record(2, 0, "A0003L9", ready=1, done=2),  # already in drive 1
        record(3, 0, None, ready=1, done=2, pool="p"),
        record(4, 0, None, ready=1, done=2, pool="p"),
    ]
    assert lower_bound_mounts(records, LIBRARY) == 2


def run_of(records: list[RequestRecord], mounts: list[tuple[float, str, int]]) -> RunResult:
    workload = Workload(
        "w",
        tuple(
            SimRequest(r.id, r.arrival, r.barcode, r.pool, r.write, r.size_bytes) for r in records
        ),
        warmup_s=100.0,
        horizon_s=10_000.0,
    )
    return RunResult(
        policy="p",
        workload=workload,
        library=LIBRARY,
        requests=tuple(records),
        mounts=tuple(mounts),
        end=20_000.0,
        makespan=12_000.0,
        robot_busy_s=2_000.0,
        transfer_s=300.0,
        occupancy_s=600.0,
        decision_s=0.5,
        decisions=100,
        unserved=1,
        timeline={},
    )


def test_metrics_count_only_the_measured_window() -> None:
    records = [
        record(0, 50, "A0001L9", ready=60, done=70),  # warm-up: not measured
        record(1, 200, "A0001L9", ready=300, done=400),
        record(2, 300, "A0002L9", ready=500, done=900),
        record(3, 400, None, ready=None, done=None, pool="p", failed="no writable tape"),
        record(4, 500, "A0002L9", ready=None, done=None),
        record(5, 20_000, "A0002L9", ready=20_001, done=20_002),  # after the horizon
    ]
    mounts = [(10.0, "A0001L9", 0), (250.0, "A0002L9", 1), (1_000.0, "A0001L9", 0)]
    metrics = measure(run_of(records, mounts))
    assert (metrics.requests, metrics.failed, metrics.unserved) == (4, 1, 1)
    assert metrics.mean_latency_s == pytest.approx(400.0)  # (200 + 600) / 2
    assert metrics.p99_latency_s == 600.0
    assert metrics.max_wait_s == 200.0
    assert metrics.mounts == 2, "the warm-up's mount is not counted"
    assert metrics.mounts_per_h == pytest.approx(2 / (10_000 / 3600))
    # A0001L9 again 990 s after its first mount: a remount within two hours.
    assert metrics.remounts_2h == 1
    assert metrics.drive_efficiency == pytest.approx(0.5)
    assert metrics.decision_ms == pytest.approx(5.0)
    assert metrics.latency_ratio == pytest.approx(400.0 / 10.0)
    assert metrics.max_wait_by_pool == {"p": 200.0}


def test_a_request_overtaken_past_the_maximum_age_is_starved() -> None:
    records = [
        record(0, 200, "A0001L9", ready=9_000, done=9_100),  # waited 8,800 s
        record(1, 300, "A0002L9", ready=400, done=500),  # younger, served long before
        record(2, 300, "A0002L9", ready=450, done=550),
    ]
    metrics = measure(run_of(records, []), max_age_s=7200.0)
    assert metrics.sla_violations == 1
    assert metrics.starved == 1
    patient = measure(run_of(records, []), max_age_s=9000.0)
    assert (patient.sla_violations, patient.starved) == (0, 0)
