"""The drive-health rule: which failures count against a drive, and when it goes down.

A drive counts consecutive failures of the commands that involve it; a command that
succeeds on it starts the count again. After `down_after` in a row it is marked
down with the last failure's message, and stays down until an operator brings it
back (`tapeworker drive up`). Pure: the journal stores the count, this decides.
"""

from __future__ import annotations

from drivers.errors import DriverError, HardwareError, RetryableError


def counts_against_drive(exc: DriverError) -> bool:
    """A failure of the drive or of the path to it (a cartridge's own fault does not)."""
    return isinstance(exc, HardwareError | RetryableError)


def goes_down(failures: int, down_after: int) -> bool:
    """Whether a drive with `failures` consecutive failures is to be marked down."""
    return failures >= down_after


def down_reason(message: str) -> str:
    """The reason a drive marked down by this rule shows."""
    return f"down after repeated failures: {message}"
