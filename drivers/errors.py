"""The drivers' error hierarchy: each class tells the caller what to do next.

Callers branch on the class, never on the message. Every error carries what an
operator needs to act (the command, exit status, stderr, SCSI sense, element).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sense:
    """A SCSI sense triple as mtx prints it in its Request Sense block."""

    key: int
    asc: int
    ascq: int

    def __str__(self) -> str:
        return f"sense key {self.key:#x}, ASC {self.asc:#04x}, ASCQ {self.ascq:#04x}"


class DriverError(Exception):
    """Base of everything a driver raises."""

    #: True when we cannot tell whether the hardware did what was asked, so the
    #: changer must be re-inventoried before the next move.
    outcome_uncertain: bool = False

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str] | None = None,
        returncode: int | None = None,
        stderr: str = "",
        sense: Sense | None = None,
        drive: int | None = None,
        slot: int | None = None,
        barcode: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.command = tuple(command) if command is not None else None
        self.returncode = returncode
        self.stderr = stderr
        self.sense = sense
        self.drive = drive
        self.slot = slot
        self.barcode = barcode

    def __str__(self) -> str:
        parts = [self.message]
        if self.command is not None:
            parts.append(f"command: {' '.join(self.command)}")
        if self.returncode is not None:
            parts.append(f"exit status {self.returncode}")
        if self.sense is not None:
            parts.append(str(self.sense))
        if self.stderr.strip():
            # The tail: mtx and mt print the cause last, after any context.
            text = self.stderr.strip()
            parts.append(f"stderr: {'...' + text[-500:] if len(text) > 500 else text}")
        return "; ".join(parts)


# -- retry after a back-off: the condition is expected to clear by itself --------


class RetryableError(DriverError):
    """Transient: retry the same command after a back-off."""


class UnitAttentionError(RetryableError):
    """The device reset or its door was opened; re-inventory, then retry."""

    outcome_uncertain = True


class NotReadyError(RetryableError):
    """The device is becoming ready (loading, calibrating, inventorying)."""


class DeviceBusyError(RetryableError):
    """Another process holds the device open."""


class CommandTimeoutError(RetryableError):
    """The command did not finish in time and was killed; state is unknown."""

    outcome_uncertain = True


class DegradedStatusError(RetryableError):
    """The tool exited 0 but said its answer is incomplete (mode sense failed)."""


# -- the operation cannot work as asked: fix our view of the library and re-plan --


class OperationError(DriverError):
    """The library refused this move; re-inventory and re-plan, do not repeat it."""


class SourceEmptyError(OperationError):
    """The source element holds no cartridge."""


class DestinationFullError(OperationError):
    """The destination element already holds a cartridge."""


class MediumRemovalPreventedError(OperationError):
    """The drive holds the tape (not ejected/unthreaded yet); offline it first."""


class IllegalRequestError(OperationError):
    """The changer rejected the request (bad element, unsupported command)."""


class IncompatibleMediaError(OperationError):
    """The drive cannot use this cartridge's generation."""


# -- an operator must act -----------------------------------------------------------


class HardwareError(DriverError):
    """The device reports a hardware fault; mark it down and call an operator."""

    outcome_uncertain = True


class InterventionRequiredError(DriverError):
    """The device waits for a person (manual intervention required, a mode the host
    cannot change); retrying does not help."""


class DeviceMissingError(DriverError):
    """A configured device does not exist or does not answer."""


class ParseError(DriverError):
    """A tool printed something we do not understand; we never guess from it."""

    def __init__(self, message: str, *, line: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.line = line

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}; offending line: {self.line!r}" if self.line is not None else text


class UnsupportedToolError(DriverError):
    """The installed mtx or mt is not the tool we parse (for example GNU mt)."""


class InvalidArgumentError(DriverError):
    """A barcode, element number or device path failed validation before use."""


class DefinitionError(Exception):
    """A library definition file is missing or invalid; the message names file and key."""
