"""The seeded workloads and traces: what arrives when, reproducibly, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.simulation.model import SimDrive, SimLibrary, SimTape, profile_p2
from worker.simulation.workloads import (
    MEDIAN_SIZE,
    WorkloadError,
    load_trace,
    mean_size,
    standalone_service_s,
    w1,
    w2,
    w4,
)

LIBRARY = profile_p2(1)


def test_a_recall_storm_is_reads_of_data_tapes_at_time_zero() -> None:
    storm = w1(LIBRARY, 1.2, seed=3, n=200)
    assert storm.batch
    assert len(storm.requests) == 200
    data = {t.barcode for t in LIBRARY.data_tapes}
    for request in storm.requests:
        assert request.arrival == 0.0
        assert not request.write
        assert request.barcode in data
        assert 0.0 <= request.position < 1.0
        assert request.size_bytes >= 1
    assert w1(LIBRARY, 1.2, seed=3, n=200) == storm, "the same seed, the same storm"
    assert w1(LIBRARY, 1.2, seed=4, n=200) != storm


def test_zipf_skew_concentrates_the_storm_on_fewer_tapes() -> None:
    flat = {r.barcode for r in w1(LIBRARY, 0.0, seed=3, n=400).requests}
    skewed = {r.barcode for r in w1(LIBRARY, 1.2, seed=3, n=400).requests}
    assert len(skewed) < len(flat)


def test_steady_load_arrives_over_warmup_and_horizon_with_reads_and_pool_writes() -> None:
    load = w2(LIBRARY, 0.9, seed=1, hours=2, warmup_h=0.5)
    assert not load.batch
    assert (load.warmup_s, load.horizon_s) == (1800.0, 7200.0)
    arrivals = [r.arrival for r in load.requests]
    assert arrivals == sorted(arrivals)
    assert arrivals[0] > 0
    assert arrivals[-1] < 9000.0
    writes = [r for r in load.requests if r.write]
    reads = [r for r in load.requests if not r.write]
    assert writes
    assert reads
    assert all(r.pool in LIBRARY.pools() and r.barcode is None for r in writes)
    assert all(r.barcode is not None and r.pool is None for r in reads)
    # Twice the utilisation, about twice the arrivals.
    light = w2(LIBRARY, 0.45, seed=1, hours=2, warmup_h=0.5)
    assert 1.5 < len(load.requests) / len(light.requests) < 2.5


def test_steady_load_needs_a_writable_pool() -> None:
    full = SimLibrary("full", (SimDrive(0, 9),), (SimTape("F0001L9", 1, pool="p", full=True),), 4)
    with pytest.raises(WorkloadError, match="no pool with a writable tape"):
        w2(full, 0.5, seed=1)


def test_fairness_load_floods_one_pool_and_trickles_the_other() -> None:
    load = w4(LIBRARY, seed=2, hours=2, warmup_h=0.5)
    pools = {t.barcode: t.pool for t in LIBRARY.tapes}
    counts: dict[str | None, int] = {}
    for request in load.requests:
        counts[pools[request.barcode or ""]] = counts.get(pools[request.barcode or ""], 0) + 1
    assert set(counts) == {"archive-a", "archive-b"}
    assert counts["archive-a"] > 5 * counts["archive-b"]


def test_fairness_load_needs_two_pools() -> None:
    one = SimLibrary("one", (SimDrive(0, 9),), (SimTape("A0001L9", 1, pool="p"),), 4)
    with pytest.raises(WorkloadError, match="two pools"):
        w4(one, seed=1)


def test_sizes_and_the_standalone_service_time() -> None:
    assert mean_size() > MEDIAN_SIZE, "a lognormal's mean lies above its median"
    service = standalone_service_s(LIBRARY)
    # Two moves, a load, a locate, the transfer, a rewind and an unload: minutes.
    assert 60 < service < 600


def write_trace(folder: Path, rows: list[object]) -> Path:
    path = folder / "trace.jsonl"
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows), encoding="utf-8"
    )
    return path


def test_a_trace_starts_at_zero_and_keeps_only_destinations_with_a_tape(tmp_path: Path) -> None:
    barcode = LIBRARY.data_tapes[0].barcode
    path = write_trace(
        tmp_path,
        [
            {"timestamp": "2026-01-01T00:00:10Z", "folder_id": 1, "pool_id": 3},
            {"timestamp": 1767225600.0, "folder_id": 2, "tape_barcode": barcode, "write": False},
            "",
            {"timestamp": 1767225605, "folder_id": 3},
            {"timestamp": 1767225620, "pool_name": "pool-b", "size_bytes": 5, "position": 0.25},
        ],
    )
    trace = load_trace(path, LIBRARY, {3: "pool-a"})
    assert [(r.arrival, r.barcode, r.pool, r.write) for r in trace.requests] == [
        (0.0, barcode, None, False),
        (10.0, None, "pool-a", True),
        (20.0, None, "pool-b", True),
    ]
    assert trace.requests[2].size_bytes == 5
    assert trace.requests[2].position == 0.25
    assert trace.requests[0].size_bytes == MEDIAN_SIZE
    assert [r.id for r in trace.requests] == [0, 1, 2]
    assert not trace.batch


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        (["{not json"], ":1: not JSON"),
        (["[1]"], ":1: expected a JSON object"),
        ([{"pool_name": "p"}], ":1: missing 'timestamp'"),
        ([{"timestamp": "yesterday", "pool_name": "p"}], "line 1: 'timestamp' must be"),
        ([{"timestamp": True, "pool_name": "p"}], "line 1: 'timestamp' must be"),
        ([{"timestamp": 1, "folder_id": 1}], "no destination with a tape or a pool"),
    ],
)
def test_a_bad_trace_names_the_line(tmp_path: Path, rows: list[object], problem: str) -> None:
    with pytest.raises(WorkloadError, match=problem):
        load_trace(write_trace(tmp_path, rows), LIBRARY, {})


def test_a_missing_trace_is_a_workload_error(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="No such file"):
        load_trace(tmp_path / "absent.jsonl", LIBRARY, {})
