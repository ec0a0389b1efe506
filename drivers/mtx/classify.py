"""A finished mtx or mt run (command, exit status, stdout, stderr) -> the error it means.

Exit codes are coarse (mtx: 0 or 1; mt: 1 open, 2 ioctl, 3 count unit), so we read
stderr: mtx's own fatal messages first (they are specific: `... is Empty`, `... is
Already Full`), then the Request Sense block's key/ASC/ASCQ, then the errno text of
a device that could not be opened. Whatever we do not recognise is a HardwareError
with the whole stderr attached: an operator must look, and the changer state is
uncertain. `classify` returns the error instead of raising it, so that the caller
decides (a degraded status is retried; a degraded load that printed `done` moved).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from drivers.errors import (
    DegradedStatusError,
    DestinationFullError,
    DeviceBusyError,
    DeviceMissingError,
    DriverError,
    HardwareError,
    IllegalRequestError,
    IncompatibleMediaError,
    InterventionRequiredError,
    InvalidArgumentError,
    MediumRemovalPreventedError,
    NotReadyError,
    OperationError,
    ParseError,
    RetryableError,
    Sense,
    SourceEmptyError,
    UnitAttentionError,
    UnsupportedToolError,
)
from drivers.mtx.sense import parse_sense

Tool = Literal["mtx", "mt"]

# -- mtx fatal messages (mtx.c / mtxl.c, FORMATS.md 3.2), most specific first ---------

_MTX_MESSAGES: tuple[tuple[re.Pattern[str], type[DriverError], str], ...] = (
    (re.compile(r"Source Element Address \d+ is Empty"), SourceEmptyError, "source is empty"),
    (re.compile(r"Data Transfer Element \d+ is Empty"), SourceEmptyError, "drive is empty"),
    (
        re.compile(r"Destination Element Address \d+ is Already Full"),
        DestinationFullError,
        "destination is full",
    ),
    (re.compile(r"Storage Element \d+ is Already Full"), DestinationFullError, "slot is full"),
    (
        re.compile(r"Drive \d+ Full \(Storage Element \d+ loaded\)"),
        DestinationFullError,
        "drive is full",
    ),
    (
        re.compile(r"Drive needs offline before move"),
        MediumRemovalPreventedError,
        "drive still holds the tape",
    ),
    (
        re.compile(r"Cleaning Cartridge Installed and Ejected"),
        IncompatibleMediaError,
        "a cleaning cartridge was loaded and ejected",
    ),
    (
        re.compile(
            r"Invalid <storage-element-number> argument|illegal <(?:drive|storage-element)-number>"
            r" argument|Invalid source|Invalid destination|No source specified"
            r"|No destination specified|Do not know which slot to unload tape into"
            r"|No Source for tape in drive"
        ),
        IllegalRequestError,
        "mtx rejected the element numbers",
    ),
    (re.compile(r"eepos equires argument"), InvalidArgumentError, "bad mtx argument"),
    (
        re.compile(r"^Usage:|^mtx version ", re.MULTILINE),
        UnsupportedToolError,
        "mtx did not understand the command line",
    ),
)

# cannot open SCSI device '%s' - %m ; %s is not an sg device, or old sg driver
_OPEN_RE = re.compile(r"cannot open SCSI device '.*' - (?P<errno>.+)")
_NOT_SG_RE = re.compile(r"is not an sg device, or old sg driver")

# -- sense key/ASC/ASCQ -> class (SPC/SMC tables) ------------------------------------

_ASC_CLASSES: dict[tuple[int, int], type[DriverError]] = {
    (0x3B, 0x0D): DestinationFullError,  # medium destination element full
    (0x3B, 0x0E): SourceEmptyError,  # medium source element empty
    (0x53, 0x02): MediumRemovalPreventedError,  # medium removal prevented
    (0x53, 0x03): MediumRemovalPreventedError,  # ... by data transfer element (SMC)
    (0x30, 0x00): IncompatibleMediaError,  # incompatible medium installed
    (0x30, 0x01): IncompatibleMediaError,  # cannot read medium, unknown format
    (0x30, 0x02): IncompatibleMediaError,  # cannot read medium, incompatible format
    (0x30, 0x03): IncompatibleMediaError,  # cleaning cartridge installed
    # Not ready until a person acts: retrying only spends the budget. Only the
    # SPC/SMC codes whose name says a person must act: 04/12 (offline) and 3A/xx
    # (medium not present) also arrive from states the library leaves by itself,
    # and the vendors' "console/key/sequential mode" ASCQs (04/8x) differ per make.
    (0x04, 0x03): InterventionRequiredError,  # manual intervention required
    (0x04, 0x22): InterventionRequiredError,  # power cycle required (SPC-5)
    (0x3B, 0x11): InterventionRequiredError,  # medium magazine not accessible
    (0x3B, 0x12): InterventionRequiredError,  # medium magazine removed
}

#: What an operator reads first, for the conditions a person must act on.
_SENSE_MEANINGS: dict[tuple[int, int], str] = {
    (0x04, 0x03): "the library needs a person (not ready, manual intervention required)",
    (0x04, 0x22): "the library needs a person (not ready, power cycle required)",
    (0x3B, 0x11): "the library needs a person (medium magazine not accessible)",
    (0x3B, 0x12): "the library needs a person (medium magazine removed)",
}

_KEY_CLASSES: dict[int, type[DriverError]] = {
    0x2: NotReadyError,
    0x3: HardwareError,  # medium error: a bad cartridge needs a person too
    0x4: HardwareError,
    0x5: IllegalRequestError,
    0x6: UnitAttentionError,
    0x7: OperationError,  # data protect
    0xB: RetryableError,  # aborted command
}

# -- errno texts (strerror with LC_ALL=C) ---------------------------------------------

_ERRNO_CLASSES: tuple[tuple[str, type[DriverError]], ...] = (
    ("Device or resource busy", DeviceBusyError),
    ("No such file or directory", DeviceMissingError),
    ("No such device or address", DeviceMissingError),
    ("No such device", DeviceMissingError),
    ("Is a directory", DeviceMissingError),
    ("Not a directory", DeviceMissingError),
    ("Inappropriate ioctl for device", DeviceMissingError),
    ("Operation not permitted", DeviceMissingError),
    ("Permission denied", DeviceMissingError),
    ("No medium found", NotReadyError),
)

# mt-st usage errors (mt.c main): ours to fix, or a tool that is not mt-st.
_MT_USAGE: tuple[tuple[re.Pattern[str], type[DriverError]], ...] = (
    (re.compile(r"^mt: (?:unknown|ambiguous) command", re.MULTILINE), UnsupportedToolError),
    (re.compile(r"^usage: mt ", re.MULTILINE), UnsupportedToolError),
    (re.compile(r"^mt: Command not supported by this kernel", re.MULTILINE), UnsupportedToolError),
    (
        re.compile(
            r"^mt: (?:too many arguments|negative repeat count|illegal count unit"
            r"|repeat count too large)",
            re.MULTILINE,
        ),
        InvalidArgumentError,
    ),
    (
        re.compile(r"^mt: The device is offline", re.MULTILINE),
        NotReadyError,
    ),
)
_GNU_MT_RE = re.compile(r"rmt(?:open|ioctl) failed|^mt-gnu: ", re.MULTILINE)
_MODE_SENSE_FAILED = "Mode sense (0x1A) for Page 0x1D failed"
_SENSE_PREFIX = "mtx: Request Sense: "


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def classify(
    tool: Tool,
    command: Sequence[str],
    returncode: int,
    stdout: str,
    stderr: str,
) -> DriverError | None:
    """None when the run succeeded cleanly; otherwise the error to raise."""
    if tool == "mtx":
        return _classify_mtx(tuple(command), returncode, stdout, stderr)
    return _classify_mt(tuple(command), returncode, stderr)


def _make(
    cls: type[DriverError],
    message: str,
    command: tuple[str, ...],
    returncode: int,
    stderr: str,
    sense: Sense | None,
) -> DriverError:
    return cls(message, command=command, returncode=returncode, stderr=stderr, sense=sense)


def _sense_or_none(stderr: str, command: tuple[str, ...]) -> Sense | None:
    try:
        return parse_sense(stderr, command=command)
    except ParseError:
        # A damaged sense block still leaves the message lines to go by.
        return None


def _classify_mtx(
    command: tuple[str, ...], returncode: int, stdout: str, stderr: str
) -> DriverError | None:
    sense = _sense_or_none(stderr, command)
    if returncode == 0:
        if not stderr.strip():
            return None
        # mtx carries on after a failed MODE SENSE with built-in defaults and
        # exits 0 (FORMATS.md 3.4): the listing may lack the mailslots.
        reason = (
            "mode sense failed; mtx used defaults"
            if _MODE_SENSE_FAILED in stderr
            else f"mtx exited 0 but wrote to stderr: {_first_line(stderr)}"
        )
        return _make(DegradedStatusError, reason, command, returncode, stderr, sense)

    fatal = _fatal(stderr, command)
    for pattern, cls, message in _MTX_MESSAGES:
        if pattern.search(fatal.line):
            return _make(cls, message + fatal.after, command, returncode, stderr, fatal.sense)

    if fatal.sense is not None:
        cls = _class_for_sense(fatal.sense)
        what = _SENSE_MEANINGS.get((fatal.sense.asc, fatal.sense.ascq), "mtx failed")
        return _make(
            cls, f"{what}: {fatal.line}{fatal.after}", command, returncode, stderr, fatal.sense
        )

    for pattern, cls, message in _MTX_MESSAGES:
        if pattern.search(stderr):
            return _make(cls, message, command, returncode, stderr, sense)

    if sense is not None and not fatal.line:
        cls = _class_for_sense(sense)
        return _make(cls, "mtx failed: request sense reported", command, returncode, stderr, sense)

    if (match := _OPEN_RE.search(stderr)) is not None:
        errno_text = match["errno"].strip()
        for text, cls in _ERRNO_CLASSES:
            if errno_text.startswith(text):
                # The changer has no medium of its own: "No medium found" on open
                # means the path is not the changer.
                found = DeviceMissingError if cls is NotReadyError else cls
                return _make(
                    found, f"cannot open changer: {errno_text}", command, returncode, stderr, None
                )
        return _make(
            HardwareError, f"cannot open changer: {errno_text}", command, returncode, stderr, None
        )
    if _NOT_SG_RE.search(stderr):
        return _make(
            DeviceMissingError,
            "changer device is not a SCSI generic (sg) device",
            command,
            returncode,
            stderr,
            None,
        )

    message = fatal.line or "mtx failed without a message"
    return _make(
        HardwareError, f"mtx failed: {message}{fatal.after}", command, returncode, stderr, None
    )


@dataclass(frozen=True, slots=True)
class _Fatal:
    """The line that ended mtx, the sense block printed right before it, and what
    mtx printed and tolerated earlier (`after`: empty, or ` (after: ...)`)."""

    line: str
    sense: Sense | None
    after: str


def _fatal(stderr: str, command: tuple[str, ...]) -> _Fatal:
    """mtx's cause of death is its last message; an earlier Request Sense block and
    its message (a MODE SENSE failure mtx worked around) are context only."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = len(lines) - 1
    while last >= 0 and _SENSE_PREFIX in lines[last]:
        last -= 1
    if last < 0:
        return _Fatal("", None, "")
    start = last
    while start > 0 and _SENSE_PREFIX in lines[start - 1]:
        start -= 1
    own = "\n".join(lines[start:last])
    sense = _sense_or_none(own, command) if own else None
    earlier = lines[:start]
    context: list[str] = []
    block: list[str] = []
    for line in earlier:
        if _SENSE_PREFIX in line:
            block.append(line)
            continue
        told = _sense_or_none("\n".join(block), command) if block else None
        context.append(f"{line.strip()} ({told})" if told is not None else line.strip())
        block = []
    after = f" (after: {'; '.join(context)})" if context else ""
    return _Fatal(lines[last].strip(), sense, after)


def _class_for_sense(sense: Sense) -> type[DriverError]:
    # A Unit Attention or a hardware fault says more about the device than the
    # ASC says about the request.
    if sense.key in (0x4, 0x6):
        return _KEY_CLASSES[sense.key]
    return _ASC_CLASSES.get((sense.asc, sense.ascq)) or _KEY_CLASSES.get(sense.key, HardwareError)


def _classify_mt(command: tuple[str, ...], returncode: int, stderr: str) -> DriverError | None:
    if returncode == 0:
        return None
    if _GNU_MT_RE.search(stderr):
        return _make(
            UnsupportedToolError,
            "mt is GNU cpio mt, not mt-st",
            command,
            returncode,
            stderr,
            None,
        )
    for pattern, cls in _MT_USAGE:
        if pattern.search(stderr):
            return _make(cls, f"mt: {_first_line(stderr)}", command, returncode, stderr, None)
    # perror(tape_name): "DEVICE: strerror" (FORMATS.md 4.2), the device may hold ':'.
    for line in stderr.splitlines():
        for text, cls in _ERRNO_CLASSES:
            if line.rstrip().endswith(": " + text):
                return _make(cls, f"mt: {text}", command, returncode, stderr, None)
        if line.rstrip().endswith(": Input/output error"):
            # `mt status` answers EIO while a drive has no tape or is still loading
            # (lkml-2003, mhvtl #127); other commands fail for real.
            if _is_status(command):
                return _make(
                    NotReadyError, "mt: Input/output error", command, returncode, stderr, None
                )
            return _make(HardwareError, "mt: Input/output error", command, returncode, stderr, None)
    message = _first_line(stderr) or "mt failed without a message"
    return _make(HardwareError, f"mt failed: {message}", command, returncode, stderr, None)


def _is_status(command: tuple[str, ...]) -> bool:
    return bool(command) and command[-1] in ("status", "stat")
