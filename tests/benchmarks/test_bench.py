"""The comparison figures, printed (run with `-m benchmark -s`, or `make bench` for
the full sizes). Timing is measured and printed, never asserted: CPU speed varies."""

from __future__ import annotations

import pytest

from worker.simulation.bench import main as bench_main
from worker.simulation.bench import target_json
from worker.simulation.report import GOALS_HEADING, TARGETS_HEADING, Target


def test_json_targets_say_whether_they_are_judged() -> None:
    judged = target_json(Target("mounts / LB", 1.1, 1.25, "fewer mounts"))
    goal = target_json(Target("robot utilisation (goal)", 0.5, 0.7, "context", judged=False))
    assert judged == {
        "name": "mounts / LB",
        "value": 1.1,
        "limit": 1.25,
        "met": True,
        "judged": True,
        "detail": "fewer mounts",
    }
    assert goal["judged"] is False


@pytest.mark.benchmark
@pytest.mark.timeout(900)
def test_print_the_comparison_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--quick", "--no-progress"]) == 0
    out = capsys.readouterr().out
    with capsys.disabled():
        print()
        print(out)
    assert TARGETS_HEADING in out
    # The figures behind the 90 % load verdict, and SCHEDULING.md's goals kept apart.
    assert "W2 rho=0.9 — where the time goes" in out
    assert "the same trace with more drives" in out
    targets, goals = out.split(TARGETS_HEADING)[1].split(GOALS_HEADING)
    assert "SCHEDULING 4.5" not in targets
    assert "remounts within 2 h" in goals
    assert "planning cost" in out
