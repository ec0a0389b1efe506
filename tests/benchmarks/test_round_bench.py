"""The round benchmark at a small scale, so that `make test` runs it: a daemon round
costs little more than `plan()` (measured in the same run), and an idle daemon with a
backlog it cannot serve uses next to no CPU."""

from __future__ import annotations

import asyncio

from tests.benchmarks.round_bench import measure_idle, measure_round


def test_a_round_costs_little_more_than_plan_alone() -> None:
    figures = asyncio.run(measure_round(requests=5000, tapes=500, drives=16, runs=5))
    print("\n".join(figures.lines()))
    assert figures.actions > 0, figures.lines()
    # The full-scale target is 1.5x; at this scale the round's fixed part weighs more,
    # and the slack absorbs a busy machine on a few runs. A round that read the
    # backlog from the journal costs tens of times plan().
    assert figures.ratio < 3, figures.lines()
    # The model's load costs about 3x a bare read of its tables (0.08 s / 0.02 s here,
    # 2.3 s / 0.7 s at 100,000); building a record per row by field name was 6x.
    assert 0 < figures.load_ms < 10 * figures.bare_read_ms, figures.lines()


def test_an_idle_daemon_with_a_backlog_uses_next_to_no_cpu() -> None:
    figures = measure_idle(20_000, tapes=1000, drives=16, seconds=5.0)
    print(figures.line())
    # A daemon that read its 20,000 pending requests from the journal every round
    # used most of a core; the full-scale targets are 2% at 50,000 and 5% at 100,000.
    assert figures.share < 0.10, figures.line()
