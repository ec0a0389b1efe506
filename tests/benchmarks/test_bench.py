"""The comparison figures, printed (run with `-m benchmark -s`, or `make bench` for
the full sizes). Timing is measured and printed, never asserted: CPU speed varies."""

from __future__ import annotations

import pytest

from worker.simulation.bench import main as bench_main


@pytest.mark.benchmark
def test_print_the_comparison_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--quick", "--no-progress"]) == 0
    out = capsys.readouterr().out
    with capsys.disabled():
        print()
        print(out)
    assert "targets (issue 4):" in out
    assert "planning cost" in out
