"""The broker durability figures, small (`make bench-broker` for the full size).

Rates are printed, never asserted: they depend on the disk and on the machine's load.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.benchmarks.broker_durability import report, run

pytestmark = [pytest.mark.benchmark, pytest.mark.integration]


def test_print_what_saving_on_every_change_costs() -> None:
    results = asyncio.run(run(messages=60, rounds=1))
    with_timer = [m for m in results if m.config.startswith("timer")]
    shipped = [m for m in results if m.config.startswith("every change")]
    assert len(with_timer) == len(shipped) == 2
    # The shipped settings had the events on disk while the broker ran; the timer
    # (30 min) had saved nothing yet: a crash would have lost them all.
    assert all(m.saved_while_running for m in shipped)
    assert not any(m.saved_while_running for m in with_timer)
    print()
    print(report(results))
