"""The drive-health rule on its own: which failures count, and when a drive goes down."""

from __future__ import annotations

import pytest

from drivers.errors import (
    DriverError,
    HardwareError,
    IncompatibleMediaError,
    RetryableError,
)
from worker.core.drive_health import counts_against_drive, down_reason, goes_down


@pytest.mark.parametrize("down_after", [1, 2, 3, 5])
def test_a_drive_goes_down_at_down_after_consecutive_failures(down_after: int) -> None:
    assert [goes_down(n, down_after) for n in range(down_after + 2)] == [
        n >= down_after for n in range(down_after + 2)
    ]
    assert not goes_down(down_after - 1, down_after)
    assert goes_down(down_after, down_after)


def test_failures_of_the_drive_count_and_a_cartridge_s_own_do_not() -> None:
    assert counts_against_drive(HardwareError("not online", drive=0))
    assert counts_against_drive(RetryableError("busy"))
    assert not counts_against_drive(IncompatibleMediaError("LTO-5 in LTO-9"))
    assert not counts_against_drive(DriverError("unknown"))


def test_the_reason_carries_the_last_failure() -> None:
    assert down_reason("not online 30s after the load") == (
        "down after repeated failures: not online 30s after the load"
    )
