"""The log line benchmark at a small scale, so that `make test` runs it and its figures."""

from __future__ import annotations

from tests.benchmarks.log_bench import FORMATS, measure


def test_the_bench_prints_a_cost_and_a_ratio_for_every_format() -> None:
    figures = measure(lines=200, rounds=1)
    report = figures.report()
    print("\n".join(report))
    for fmt in FORMATS:
        assert figures.cost_us["now", fmt] > 0
        assert figures.reference_us[fmt] > 0
        assert figures.ratio["now", fmt] > 0
        assert any(line.lstrip().startswith(f"now {fmt}") for line in report), report
    # CPU time of one thread, not the wall clock: a line below the level skips the whole
    # pipeline (about a tenth of a written line), whatever else the machine runs.
    assert figures.filtered_us["now"] < figures.cost_us["now", "json"], report
