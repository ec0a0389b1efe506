"""Every capture in corpus/mtx-errors maps to the error class the caller needs.

`local-*` files carry the command, stdout, stderr and exit code (the corpus
author's wrapper). The others are raw terminal captures; the table gives the
command and exit status, and `split_merged` undoes the terminal's merging of
stderr into stdout the way FORMATS.md 3.6 describes it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.errors import (
    DegradedStatusError,
    DestinationFullError,
    DeviceBusyError,
    DeviceMissingError,
    DriverError,
    HardwareError,
    IllegalRequestError,
    IncompatibleMediaError,
    InvalidArgumentError,
    MediumRemovalPreventedError,
    NotReadyError,
    ParseError,
    RetryableError,
    Sense,
    SourceEmptyError,
    UnitAttentionError,
    UnsupportedToolError,
)
from drivers.mtx.classify import classify
from drivers.mtx.parse_status import parse_status
from drivers.mtx.parse_version import parse_mt_version, parse_mtx_version
from drivers.mtx.sense import parse_sense

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO.parent / "shared" / "corpus"
ERR_DIR = CORPUS / "mtx-errors"


@dataclass(frozen=True)
class Run:
    tool: str
    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


_WRAPPED = re.compile(
    r"^\$ (?P<cmd>.*)\n--- stdout ---\n(?P<out>.*?)--- stderr ---\n(?P<err>.*?)"
    r"--- exit code: (?P<rc>\d+) ---\n$",
    re.DOTALL,
)


def read_local(path: Path) -> Run:
    match = _WRAPPED.match(path.read_text())
    assert match is not None, path
    words = [w for w in shlex.split(match["cmd"]) if "=" not in w.split("/")[0]]
    tool = "mtx" if Path(words[0]).name == "mtx" else "mt"
    return Run(tool, tuple(words), int(match["rc"]), match["out"], match["err"])


def split_merged(text: str) -> tuple[str, str]:
    """(stdout, stderr) of a terminal capture: sense lines and mtx messages are stderr."""
    out: list[str] = []
    err: list[str] = []
    for line in text.splitlines(keepends=True):
        at = line.find("mtx: Request Sense:")
        if at > 0:  # progress text flushed without a newline (FORMATS.md 3.6)
            out.append(line[:at])
            err.append(line[at:])
        elif at == 0 or line.startswith("Mode sense"):
            err.append(line)
        else:
            out.append(line)
    return "".join(out), "".join(err)


#: Raw captures: (tool, command, exit status, whole file is stderr?)
RAW: dict[str, tuple[str, tuple[str, ...], int, bool]] = {
    "birdie1-tandberg-storageloader-unit-attention-28-00-mode-sense-failed-then-status.txt": (
        "mtx",
        ("mtx", "-f", "/dev/sg5", "status"),
        0,
        False,
    ),
    "dwara2-mt-status-device-or-resource-busy.txt": (
        "mt",
        ("mt", "-f", "/dev/tape/by-id/scsi-1IBM_ULT3580-TD5_1497199456-nst", "status"),
        1,
        True,
    ),
    "lkml-2003-mt-status-input-output-error-no-tape-loaded.txt": (
        "mt",
        ("mt", "-f", "/dev/nst0", "status"),
        1,
        True,
    ),
    "mhvtl-issue120-load-into-full-drive.txt": (
        "mtx",
        ("mtx", "-f", "/dev/sg9", "load", "1", "0"),
        1,
        True,
    ),
    "mhvtl-issue120-mt-tell-no-medium-found.txt": (
        "mt",
        ("mt", "-f", "/dev/nst0", "tell"),
        1,
        True,
    ),
    "mhvtl-issue127-mt-status-input-output-error.txt": (
        "mt",
        ("mt", "-f", "/dev/nst1", "status"),
        2,
        True,
    ),
    "pytarchive-unload-illegal-request-53-03-medium-removal-prevented.txt": (
        "mtx",
        ("mtx", "-f", "/dev/sch0", "unload", "6", "0"),
        1,
        False,
    ),
}

#: file -> (expected class or None for success, expected sense)
EXPECTED: dict[str, tuple[type[DriverError] | None, Sense | None]] = {
    "birdie1-tandberg-storageloader-unit-attention-28-00-mode-sense-failed-then-status.txt": (
        DegradedStatusError,
        Sense(6, 0x28, 0x00),
    ),
    "dwara2-mt-status-device-or-resource-busy.txt": (DeviceBusyError, None),
    "lkml-2003-mt-status-input-output-error-no-tape-loaded.txt": (NotReadyError, None),
    "mhvtl-issue120-load-into-full-drive.txt": (DestinationFullError, None),
    "mhvtl-issue120-mt-tell-no-medium-found.txt": (NotReadyError, None),
    "mhvtl-issue127-mt-status-input-output-error.txt": (NotReadyError, None),
    "pytarchive-unload-illegal-request-53-03-medium-removal-prevented.txt": (
        MediumRemovalPreventedError,
        Sense(5, 0x53, 0x03),
    ),
    # mt-st 1.7, local runs
    "local-mt-ambiguous-abbrev.txt": (UnsupportedToolError, None),
    "local-mt-bogus-command.txt": (UnsupportedToolError, None),
    "local-mt-densities.txt": (None, None),
    "local-mt-devnull-rewind.txt": (DeviceMissingError, None),
    "local-mt-devnull-status.txt": (DeviceMissingError, None),
    "local-mt-devnull-tell.txt": (DeviceMissingError, None),
    "local-mt-fsf-double-dash-too-many-args.txt": (InvalidArgumentError, None),
    "local-mt-fsf-non-numeric-count.txt": (DeviceMissingError, None),
    "local-mt-gnu-cpio2.13-devnull-status.txt": (UnsupportedToolError, None),
    "local-mt-gnu-cpio2.13-nonexistent-status.txt": (UnsupportedToolError, None),
    "local-mt-gnu-cpio2.13-version.txt": (None, None),
    "local-mt-help.txt": (None, None),
    "local-mt-illegal-count-unit.txt": (InvalidArgumentError, None),
    "local-mt-negative-count.txt": (InvalidArgumentError, None),
    "local-mt-noargs.txt": (UnsupportedToolError, None),
    "local-mt-nonexistent-status.txt": (DeviceMissingError, None),
    "local-mt-status-TAPE-env.txt": (DeviceMissingError, None),
    "local-mt-status-default-dev-tape.txt": (DeviceMissingError, None),
    "local-mt-tmpdir-status.txt": (DeviceMissingError, None),
    "local-mt-too-many-args.txt": (InvalidArgumentError, None),
    "local-mt-unique-abbrev-stat.txt": (DeviceMissingError, None),
    "local-mt-version.txt": (None, None),
    # mtx 1.3.12, local runs
    "local-mtx-bogus-command-no-device.txt": (UnsupportedToolError, None),
    "local-mtx-bogus-command.txt": (DeviceMissingError, None),
    "local-mtx-devnull-status.txt": (DeviceMissingError, None),
    "local-mtx-eepos-bad-arg.txt": (InvalidArgumentError, None),
    "local-mtx-fullpath-nonexistent.txt": (DeviceMissingError, None),
    "local-mtx-load-before-f-uses-dev-changer.txt": (DeviceMissingError, None),
    "local-mtx-load-no-device-dir.txt": (DeviceMissingError, None),
    "local-mtx-missing-f-arg.txt": (UnsupportedToolError, None),
    "local-mtx-noargs.txt": (None, None),
    "local-mtx-nobarcode-only.txt": (None, None),
    "local-mtx-nonexistent-status.txt": (DeviceMissingError, None),
    "local-mtx-operation-not-permitted-vda.txt": (DeviceMissingError, None),
    "local-mtx-status-CHANGER-env.txt": (DeviceMissingError, None),
    "local-mtx-status-default-dev-changer.txt": (DeviceMissingError, None),
    # `mtx --version` exits 1 with usage; the start-up check reads it with
    # parse_mtx_version instead (test below).
    "local-mtx-version.txt": (UnsupportedToolError, None),
}


def load_run(name: str) -> Run:
    path = ERR_DIR / name
    if name.startswith("local-"):
        return read_local(path)
    tool, command, returncode, all_stderr = RAW[name]
    text = path.read_text()
    stdout, stderr = ("", text) if all_stderr else split_merged(text)
    return Run(tool, command, returncode, stdout, stderr)


def test_table_covers_every_capture() -> None:
    files = {p.name for p in ERR_DIR.glob("*.txt")}
    assert files, f"no corpus at {ERR_DIR}"
    assert files == set(EXPECTED)
    assert {n for n in files if not n.startswith("local-")} == set(RAW)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_maps_to_error_class(name: str) -> None:
    run = load_run(name)
    want, sense = EXPECTED[name]
    error = classify(run.tool, run.command, run.returncode, run.stdout, run.stderr)  # type: ignore[arg-type]
    if want is None:
        assert error is None
        return
    assert type(error) is want, (error, run)
    assert error.command == run.command
    assert error.returncode == run.returncode
    assert error.stderr == run.stderr
    assert error.sense == sense
    assert str(error)


def test_degraded_status_still_parses_the_listing() -> None:
    run = load_run(
        "birdie1-tandberg-storageloader-unit-attention-28-00-mode-sense-failed-then-status.txt"
    )
    clean = parse_status(
        (
            CORPUS / "mtx-status" / "birdie1-tandberg-storageloader-1drive-7slots-lto5.txt"
        ).read_text()
    )
    assert parse_status(run.stdout) == clean


def test_error_families_tell_the_caller_what_to_do() -> None:
    assert issubclass(DegradedStatusError, RetryableError)
    assert issubclass(NotReadyError, RetryableError)
    assert issubclass(DeviceBusyError, RetryableError)


# -- sense-driven classes, with blocks written the way PrintRequestSense writes them --


def sense_block(key: str, asc: int, ascq: int) -> str:
    return (
        "mtx: Request Sense: Long Report=yes\n"
        "mtx: Request Sense: Valid Residual=no\n"
        "mtx: Request Sense: Error Code=70 (Current)\n"
        f"mtx: Request Sense: Sense Key={key}\n"
        "mtx: Request Sense: FileMark=no\n"
        "mtx: Request Sense: EOM=no\n"
        "mtx: Request Sense: ILI=no\n"
        f"mtx: Request Sense: Additional Sense Code = {asc:02X}\n"
        f"mtx: Request Sense: Additional Sense Qualifier = {ascq:02X}\n"
        "mtx: Request Sense: BPV=no\n"
        "mtx: Request Sense: Error in CDB=no\n"
        "mtx: Request Sense: SKSV=no\n"
    )


MOVE_FAILED = "MOVE MEDIUM from Element Address 1001 to 502 Failed\n"


@pytest.mark.parametrize(
    ("stderr", "want"),
    [
        (sense_block("Unit Attention", 0x29, 0x00) + MOVE_FAILED, UnitAttentionError),
        (sense_block("Not Ready", 0x04, 0x01) + MOVE_FAILED, NotReadyError),
        (sense_block("Illegal Request", 0x3B, 0x0D) + MOVE_FAILED, DestinationFullError),
        (sense_block("Illegal Request", 0x3B, 0x0E) + MOVE_FAILED, SourceEmptyError),
        (sense_block("Illegal Request", 0x53, 0x02) + MOVE_FAILED, MediumRemovalPreventedError),
        (sense_block("Illegal Request", 0x21, 0x01) + MOVE_FAILED, IllegalRequestError),
        (sense_block("Hardware Error", 0x15, 0x01) + MOVE_FAILED, HardwareError),
        (sense_block("Medium Error", 0x30, 0x00) + MOVE_FAILED, IncompatibleMediaError),
        (sense_block("Aborted Command", 0x00, 0x00) + MOVE_FAILED, RetryableError),
        ("Source Element Address 1001 is Empty\n", SourceEmptyError),
        ("Destination Element Address 256 is Already Full\n", DestinationFullError),
        ("Data Transfer Element 1 is Empty\n", SourceEmptyError),
        ("Storage Element 4 is Already Full\n", DestinationFullError),
        ("Drive needs offline before move\n", MediumRemovalPreventedError),
        ("Cleaning Cartridge Installed and Ejected\n", IncompatibleMediaError),
        ("Invalid <storage-element-number> argument '99' to 'load' command\n", IllegalRequestError),
        ("illegal <drive-number> argument '7' to 'unload' command\n", IllegalRequestError),
        ("cannot open SCSI device '/dev/sg3' - Device or resource busy\n", DeviceBusyError),
        ("READ ELEMENT STATUS Command Failed\n", HardwareError),
        ("", HardwareError),
    ],
)
def test_mtx_failure_classes(stderr: str, want: type[DriverError]) -> None:
    error = classify("mtx", ("mtx", "-f", "/dev/sg3", "load", "4", "0"), 1, "", stderr)
    assert type(error) is want


def test_exit_zero_with_stderr_is_degraded() -> None:
    error = classify("mtx", ("mtx", "status"), 0, "", "Warning:Too Many Storage Elements\n")
    assert isinstance(error, DegradedStatusError)


def test_last_sense_block_wins_and_damaged_blocks_are_refused() -> None:
    two = sense_block("Unit Attention", 0x28, 0) + sense_block("Illegal Request", 0x3B, 0x0E)
    assert parse_sense(two) == Sense(5, 0x3B, 0x0E)
    assert parse_sense("nothing here\n") is None
    cut = sense_block("Illegal Request", 0x53, 0x03).split("Additional Sense Qualifier")[0]
    with pytest.raises(ParseError, match="without its ascq"):
        parse_sense(cut)
    with pytest.raises(ParseError, match="unknown sense key"):
        parse_sense(sense_block("Bogus", 0, 0))
    # A damaged block falls back to the message lines.
    error = classify("mtx", ("mtx",), 1, "", cut + "Source Element Address 1 is Empty\n")
    assert type(error) is SourceEmptyError
    assert error.sense is None


def test_versions_from_the_corpus() -> None:
    mtx = read_local(ERR_DIR / "local-mtx-version.txt")
    assert parse_mtx_version(mtx.stdout, mtx.stderr) == "1.3.12"
    mt = read_local(ERR_DIR / "local-mt-version.txt")
    assert parse_mt_version(mt.stdout) == "1.7"
    gnu = read_local(ERR_DIR / "local-mt-gnu-cpio2.13-version.txt")
    with pytest.raises(UnsupportedToolError, match=r"GNU cpio mt 2\.13"):
        parse_mt_version(gnu.stdout)
    with pytest.raises(UnsupportedToolError, match="not mt-st"):
        parse_mt_version("")
    with pytest.raises(UnsupportedToolError, match=r"1\.2\.18 is not supported"):
        parse_mtx_version("", "mtx version 1.2.18\n")
    with pytest.raises(UnsupportedToolError, match="not mtx's version line"):
        parse_mtx_version("", "bash: mtx: command not found\n")
