"""Fault plans for the simulator: parsed from the command line, checked, described."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from worker.simulation.faults import NO_FAULTS, FaultPlan, FaultSpecError, parse_kill, parse_slow


def test_kill_and_slow_options_parse() -> None:
    assert parse_kill("1@3600") == (1, 3600.0)
    assert parse_kill("0@0.5") == (0, 0.5)
    assert parse_slow("2:30") == (2, 30.0)


@pytest.mark.parametrize(
    ("parse", "text", "problem"),
    [
        (parse_kill, "1", "DRIVE@SECONDS"),
        (parse_kill, "x@5", "bad drive index"),
        (parse_kill, "1@soon", "bad number of seconds"),
        (parse_kill, "1@inf", "bad number of seconds"),
        (parse_kill, "1@nan", "bad number of seconds"),
        (parse_slow, "1@5", "DRIVE:SECONDS"),
        (parse_slow, "1:", "bad number of seconds"),
    ],
)
def test_a_malformed_option_says_what_it_wants(
    parse: Callable[[str], tuple[int, float]], text: str, problem: str
) -> None:
    with pytest.raises(FaultSpecError, match=problem):
        parse(text)


@pytest.mark.parametrize(
    ("plan", "problem"),
    [
        ({"move_rate": 1.0}, "fault rate must be in"),
        ({"move_rate": -0.1}, "fault rate must be in"),
        ({"drive_down_after": 0}, "--drive-down-after"),
        ({"retries": -1}, "--retries"),
        ({"backoff_s": -1}, "--backoff"),
        ({"kills": ((0, -5.0),)}, "negative time"),
        ({"slow_ready": {0: -1.0}}, "negative extra ready time"),
    ],
)
def test_an_impossible_plan_is_refused(plan: dict[str, Any], problem: str) -> None:
    with pytest.raises(FaultSpecError, match=problem):
        FaultPlan(**plan)


def test_no_faults_is_inactive_and_says_so() -> None:
    assert not NO_FAULTS.active
    assert NO_FAULTS.describe() == "no faults"
    assert not FaultPlan(slow_ready={0: 0.0}).active


def test_a_plan_describes_itself_and_names_its_drives() -> None:
    plan = FaultPlan(move_rate=0.01, kills=((1, 600.0),), slow_ready={0: 30.0})
    assert plan.active
    assert plan.describe() == (
        "move fault rate 0.01; drive 1 dies at 600 s; drive 0 +30 s to ready "
        "(down after 3 consecutive failures, 3 retries, backoff 5 s)"
    )
    assert plan.as_dict()["kills"] == [{"drive": 1, "at_s": 600.0}]
    plan.check_drives({0, 1})
    with pytest.raises(FaultSpecError, match=r"no drive 1 in the library \(drives: 0\)"):
        plan.check_drives({0})


def test_every_policy_of_a_seed_sees_the_same_fault_draws() -> None:
    plan = FaultPlan(move_rate=0.1)
    draws = plan.rng(7)
    again = plan.rng(7)
    assert [draws.random() for _ in range(5)] == [again.random() for _ in range(5)]
    assert plan.rng(7).random() != plan.rng(8).random()
