"""Fault injection in the simulator: robot moves that fail, drives
that die or are slow to become ready, under the daemon's policy (retry with
backoff, drive down after repeated failures, stuck tape need_to_check, request
failed after its retry budget). Every policy runs under the same seeded faults."""

from __future__ import annotations

import json
import re

import pytest

from worker.simulation.cli import main as simulate_main
from worker.simulation.engine import RunResult, Simulation, simulate
from worker.simulation.faults import FaultPlan, FaultSpecError, parse_kill, parse_slow
from worker.simulation.metrics import measure
from worker.simulation.model import SimDrive, SimLibrary, SimTape, profile_p2
from worker.simulation.policies import Fcfs, baselines, planner
from worker.simulation.report import Case, CaseResult, run_case, table
from worker.simulation.workloads import SimRequest, Workload, w1, w2

LIBRARY = profile_p2(1)
FLAKY = FaultPlan(move_rate=0.05)


def _all(workload: Workload, faults: FaultPlan, seed: int = 1) -> CaseResult:
    return run_case(
        LIBRARY,
        Case("t", workload),
        [planner(), *baselines()],
        seed=seed,
        max_age_s=7200.0,
        faults=faults,
    )


def _each_request_ends(run: RunResult) -> None:
    assert run.unserved == 0, run.policy
    for record in run.requests:
        if record.done is None:
            assert record.failed, f"{run.policy}: request {record.id} ended without a reason"


def test_faults_cost_time_but_every_request_is_served_or_failed_with_a_reason() -> None:
    workload = w1(LIBRARY, 0.0, seed=2, n=200)
    clean = _all(workload, FaultPlan())
    flaky = _all(workload, FaultPlan(move_rate=0.1))
    for run in flaky.runs:
        _each_request_ends(run)
    for before, after in zip(clean.metrics, flaky.metrics, strict=True):
        assert after.failed_moves > 0, after.policy
        assert after.retries > 0, after.policy
        assert after.makespan_s > before.makespan_s, after.policy
        assert before.failed_moves == before.retries == before.drives_down == 0


def test_no_faults_changes_nothing() -> None:
    workload = w2(LIBRARY, 0.6, seed=5, hours=1)
    plain = measure(simulate(LIBRARY, workload, planner(), seed=2))
    none = measure(simulate(LIBRARY, workload, planner(), seed=2, faults=FaultPlan()))
    fields = ("mounts", "makespan_s", "mean_latency_s", "p99_latency_s", "max_wait_s")
    assert [getattr(plain, f) for f in fields] == [getattr(none, f) for f in fields]


def test_a_killed_drive_gets_no_more_work_and_its_requests_go_elsewhere() -> None:
    death = 900.0
    result = _all(w2(LIBRARY, 0.9, seed=3, hours=2), FaultPlan(kills=((2, death),)))
    for run in result.runs:
        _each_request_ends(run)
        assert [(d, t) for d, t, _ in run.drives_down] == [(2, death)], run.policy
        assert not [m for m in run.mounts if m[2] == 2 and m[0] >= death], run.policy
        for record in run.requests:
            if record.drive == 2:
                assert record.ready is not None
                assert record.ready < death, f"{run.policy}: request {record.id}"
        # Whatever the dead drive held is stuck there, never served again.
        for barcode in run.stuck:
            late = [r for r in run.requests if r.barcode == barcode and r.arrival > death]
            assert all(r.done is None and r.failed for r in late), run.policy
    # Somebody had a tape in the drive when it died.
    assert any(run.stuck for run in result.runs)


def test_a_stuck_tape_is_need_to_check_and_its_requests_fail_with_the_reason() -> None:
    library = SimLibrary(
        "two",
        (SimDrive(0, 9), SimDrive(1, 9)),
        (SimTape("A00001L9", 1), SimTape("A00002L9", 2)),
        slots=6,
    )
    size = 400 * 10**6 * 600  # ten minutes of transfer
    workload = Workload(
        "stuck",
        (
            SimRequest(0, 0.0, "A00001L9", None, False, size, 0.5),
            SimRequest(1, 900.0, "A00001L9", None, False, 10**9, 0.5),
            SimRequest(2, 900.0, "A00002L9", None, False, 10**9, 0.5),
        ),
    )
    for policy in (planner(), *baselines()):
        engine = Simulation(
            library, workload, policy, seed=1, faults=FaultPlan(kills=((0, 300.0),))
        )
        result = engine.run()
        assert result.stuck == ("A00001L9",), policy.name
        assert engine.tapes["A00001L9"].view.need_to_check
        by_id = {r.id: r for r in result.requests}
        # Interrupted mid-transfer, then refused: its tape needs an operator.
        for rid in (0, 1):
            assert "checked by an operator" in (by_id[rid].failed or ""), policy.name
        assert by_id[2].done is not None, policy.name
        assert by_id[2].drive == 1, policy.name


def test_writes_to_a_pool_whose_tape_is_stuck_go_to_another_tape_and_drive() -> None:
    library = SimLibrary(
        "pool",
        (SimDrive(0, 9), SimDrive(1, 9)),
        (SimTape("P00001L9", 1, pool="p"), SimTape("P00002L9", 2, pool="p")),
        slots=6,
    )
    size = 400 * 10**6 * 600
    workload = Workload(
        "pool",
        (
            SimRequest(0, 0.0, None, "p", True, size, 0.0),
            SimRequest(1, 900.0, None, "p", True, 10**9, 0.0),
            SimRequest(2, 960.0, None, "p", True, 10**9, 0.0),
        ),
    )
    for policy in (planner(), *baselines()):
        faults = FaultPlan(kills=((0, 300.0),))
        result = simulate(library, workload, policy, seed=1, faults=faults)
        (stuck,) = result.stuck
        _each_request_ends(result)
        # The interrupted write and the later ones land on the other tape.
        for record in result.requests:
            assert record.done is not None, f"{policy.name}: {record.failed}"
            assert record.barcode != stuck
            assert record.drive == 1


def test_a_drive_is_down_after_repeated_failures_and_never_used_again() -> None:
    faults = FaultPlan(move_rate=0.2, drive_down_after=2, retries=3)
    result = _all(w2(LIBRARY, 0.5, seed=4, hours=1), faults, seed=3)
    downs = 0
    for run in result.runs:
        for drive, at, reason in run.drives_down:
            downs += 1
            assert "consecutive failed moves" in reason or "stuck" in reason
            assert not [m for m in run.mounts if m[2] == drive and m[0] > at], run.policy
        if len(run.drives_down) < len(LIBRARY.drives):
            _each_request_ends(run)
    assert downs > 0


def test_requests_fail_after_their_retry_budget() -> None:
    library = SimLibrary("one", (SimDrive(0, 9),), (SimTape("A00001L9", 1),), slots=4)
    workload = Workload("w", (SimRequest(0, 0.0, "A00001L9", None, False, 10**9, 0.5),))
    # Every move fails; the drive never goes down, so the request's budget runs out.
    faults = FaultPlan(move_rate=0.999999, drive_down_after=1000, retries=2, backoff_s=1.0)
    result = simulate(library, workload, Fcfs("B0", 0.0), faults=faults)
    (record,) = result.requests
    assert record.failed is not None
    assert "out of retries" in record.failed
    assert record.attempts == 3
    assert result.retries == 3 * 2  # two retries of the move per attempt
    assert result.failed_moves == 3 * 3
    assert result.mounts == ()  # no load ever succeeded


def test_a_slow_drive_delays_readiness() -> None:
    workload = w1(LIBRARY, 0.0, seed=2, n=60)
    slow = FaultPlan(slow_ready={d.index: 120.0 for d in LIBRARY.drives})
    fast_run = measure(simulate(LIBRARY, workload, planner(), seed=1))
    slow_run = measure(simulate(LIBRARY, workload, planner(), seed=1, faults=slow))
    assert slow_run.mean_wait_s >= fast_run.mean_wait_s + 100.0
    assert slow_run.failed_moves == 0


def test_faults_are_deterministic_per_seed() -> None:
    workload = w2(LIBRARY, 0.6, seed=5, hours=1)
    faults = FaultPlan(move_rate=0.1, kills=((1, 1200.0),), slow_ready={3: 30.0})
    fields = ("mounts", "makespan_s", "mean_latency_s", "failed_moves", "retries", "failed")

    def figures(seed: int) -> list[object]:
        m = measure(simulate(LIBRARY, workload, planner(), seed=seed, faults=faults))
        return [getattr(m, f) for f in fields]

    assert figures(2) == figures(2)
    assert figures(2) != figures(3)


def test_the_planner_still_beats_b0_under_a_fault_rate_of_5_percent() -> None:
    result = _all(w2(LIBRARY, 0.9, seed=3, hours=2), FLAKY)
    mine = result.of("planner")
    b0 = next(m for m in result.metrics if m.policy.startswith("B0"))
    assert mine.failed_moves > 0
    assert b0.failed_moves > 0
    assert mine.mean_latency_s <= 0.5 * b0.mean_latency_s
    assert mine.p99_latency_s < b0.p99_latency_s
    assert mine.mounts < b0.mounts
    for run in result.runs:
        _each_request_ends(run)


# -- the command -------------------------------------------------------------------


def test_simulate_takes_fault_options_and_prints_the_fault_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--workload", "w1-s0", "--quick", "--no-progress", "--fault-rate", "0.05"]
    args += ["--kill-drive", "3@600", "--slow-ready", "5:60", "--drive-down-after", "4"]
    assert simulate_main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["faults"]["move_rate"] == 0.05
    assert report["faults"]["kills"] == [{"drive": 3, "at_s": 600.0}]
    assert report["faults"]["drive_down_after"] == 4
    (workload,) = report["workloads"]
    for row in workload["metrics"]:
        assert row["failed_moves"] > 0
        assert row["drives_down"] >= 1
        assert row["unserved"] == 0


def test_the_table_shows_the_fault_columns_only_with_faults() -> None:
    workload = w1(LIBRARY, 0.0, seed=2, n=40)
    clean = run_case(LIBRARY, Case("t", workload), [planner()], seed=1, max_age_s=7200.0)
    assert "moves failed" not in table(clean)
    flaky = run_case(
        LIBRARY, Case("t", workload), [planner()], seed=1, max_age_s=7200.0, faults=FLAKY
    )
    # The fault columns come last; a wide table continues in blocks of columns, each
    # block's header first and the policy column repeated.
    blocks = table(flaky).split("\n\n")
    headers = [blocks[0].splitlines()[1]] + [b.splitlines()[0] for b in blocks[1:]]
    columns = [t for h in headers for t in re.split(r"\s{2,}", h.strip())[1:]]
    assert all(len(line) <= 100 for line in table(flaky).splitlines()[1:])
    titles = ["moves failed", "retries", "drives down", "req failed", "unserved"]
    assert columns[-5:] == titles
    assert FLAKY.describe().startswith("move fault rate 0.05 (down after 3 consecutive")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--kill-drive", "9@10"], "no drive 9"),
        (["--kill-drive", "1"], "DRIVE@SECONDS"),
        (["--slow-ready", "1:soon"], "bad number"),
        (["--fault-rate", "1.5"], "fault rate"),
        (["--drive-down-after", "0"], "at least 1"),
    ],
)
def test_simulate_rejects_bad_fault_options(
    option: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert simulate_main(["--workload", "w1-s0", "--quick", "--no-progress", *option]) == 2
    assert message in capsys.readouterr().err


def test_fault_specs_parse() -> None:
    assert parse_kill("2@3600") == (2, 3600.0)
    assert parse_slow("0:12.5") == (0, 12.5)
    with pytest.raises(FaultSpecError):
        parse_kill("x@1")
    with pytest.raises(FaultSpecError):
        parse_slow("1:inf")
    assert not FaultPlan().active
    assert FaultPlan(slow_ready={1: 5.0}).active
