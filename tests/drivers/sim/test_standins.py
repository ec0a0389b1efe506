"""The stand-in `mtx` and `mt`: exact text, streams and exit codes.

Three kinds of evidence: exact expected output for a small library; every line
shape matched against real captures in the shared corpus; and, where no library is
needed (versions, usage, missing devices), the installed Debian mtx 1.3.12 and
mt-st 1.7 run side by side with the stand-ins. Every output also goes through the
mtx backend's parsers and error classification.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.definition import DriveDefinition, LibraryDefinition, TapeDefinition
from drivers.errors import (
    CommandTimeoutError,
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
    SourceEmptyError,
    UnitAttentionError,
)
from drivers.mtx.backend import MtxLibrary
from drivers.mtx.classify import Tool, classify
from drivers.mtx.parse_inquiry import parse_inquiry
from drivers.mtx.parse_move import check_move_output
from drivers.mtx.parse_mt_status import parse_mt_status, parse_mt_status_details
from drivers.mtx.parse_status import parse_status
from drivers.mtx.parse_version import parse_mt_version, parse_mtx_version
from drivers.sim import standin_mt, standin_mtx
from drivers.sim.library import SimulatedLibrary
from drivers.sim.standins import install_standins

REPO = Path(__file__).resolve().parents[3]
#: The reference corpus: beside the checkout (as CI lays it out), else the shared one.
CORPUS = next(
    (
        path
        for path in (REPO.parent / "shared" / "corpus", Path("/work/shared/corpus"))
        if path.is_dir()
    ),
    REPO.parent / "shared" / "corpus",
)
SPEED = 1000.0
CHANGER = "/dev/sg7"


def small() -> LibraryDefinition:
    return LibraryDefinition(
        changer=CHANGER,
        slots=4,
        import_export=1,
        drives=(
            DriveDefinition(index=0, device="/dev/nst0", generation=8),
            DriveDefinition(index=1, device="/dev/nst1", generation=9),
        ),
        tapes=(
            TapeDefinition(barcode="A00001L8", slot=1),
            TapeDefinition(barcode="A00002L9", slot=2, write_protected=True),
            TapeDefinition(barcode="A00003L6", slot=3),
            TapeDefinition(barcode="CLN001CU", slot=5),
        ),
    )


def pad(tag: str) -> str:
    """Volume tags as real libraries return them: the 32-byte field, space padded."""
    return tag.ljust(32)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "library.json"
    SimulatedLibrary.open(small(), state_file=path, speed=SPEED)
    return path


@pytest.fixture
def sim(state: Path) -> SimulatedLibrary:
    return SimulatedLibrary.open(small(), state_file=state, speed=SPEED)


class Tools:
    """Runs the stand-ins in this process (fast); the scripts are tested below."""

    def __init__(self, state: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.state = state
        self.capsys = capsys

    def mtx(self, *args: str) -> tuple[int, str, str]:
        code = standin_mtx.main(list(args), state_file=self.state)
        out, err = self.capsys.readouterr()
        return code, out, err

    def mt(self, *args: str) -> tuple[int, str, str]:
        code = standin_mt.main(list(args), state_file=self.state)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def tools(state: Path, capsys: pytest.CaptureFixture[str]) -> Tools:
    return Tools(state, capsys)


def classified(tool: Tool, args: tuple[str, ...], run: tuple[int, str, str]) -> DriverError | None:
    code, out, err = run
    return classify(tool, (tool, *args), code, out, err)


# -- mtx status --------------------------------------------------------------------------

INITIAL_STATUS = (
    "  Storage Changer /dev/sg7:2 Drives, 5 Slots ( 1 Import/Export )\n"
    "Data Transfer Element 0:Empty\n"
    "Data Transfer Element 1:Empty\n"
    f"      Storage Element 1:Full :VolumeTag={pad('A00001L8')}\n"
    f"      Storage Element 2:Full :VolumeTag={pad('A00002L9')}\n"
    f"      Storage Element 3:Full :VolumeTag={pad('A00003L6')}\n"
    "      Storage Element 4:Empty\n"
    f"      Storage Element 5 IMPORT/EXPORT:Full :VolumeTag={pad('CLN001CU')}\n"
)


def test_status_exact(tools: Tools) -> None:
    assert tools.mtx("-f", CHANGER, "status") == (0, INITIAL_STATUS, "")
    parsed = parse_status(INITIAL_STATUS)
    assert parsed.device == CHANGER
    assert [s.barcode for s in parsed.inventory.slots] == [
        "A00001L8",
        "A00002L9",
        "A00003L6",
        None,
        "CLN001CU",
    ]


def test_status_with_a_loaded_drive_and_an_unreadable_label(
    tools: Tools, sim: SimulatedLibrary
) -> None:
    assert tools.mtx("-f", CHANGER, "load", "1", "0")[0] == 0
    sim.unreadable_label(3)
    code, out, _ = tools.mtx("-f", CHANGER, "status")
    assert code == 0
    lines = out.splitlines(keepends=True)
    assert lines[1] == (
        f"Data Transfer Element 0:Full (Storage Element 1 Loaded):VolumeTag = {pad('A00001L8')}\n"
    )
    assert lines[3] == "      Storage Element 1:Empty\n"
    # A label the reader cannot read: full, no tag, and mtx's trailing space.
    assert lines[5] == "      Storage Element 3:Full \n"
    assert parse_status(out).inventory.slot(3).barcode is None


def test_status_invents_a_home_slot_like_mtx(tools: Tools) -> None:
    """mtx keeps a drive's source slot only while that slot is empty (FORMATS.md 1.4)."""
    tools.mtx("-f", CHANGER, "load", "1", "0")
    tools.mtx("-f", CHANGER, "transfer", "2", "1")
    out = tools.mtx("-f", CHANGER, "status")[1]
    assert out.splitlines()[1].startswith("Data Transfer Element 0:Full (Storage Element 2 Loaded)")


def test_nobarcode_status(tools: Tools) -> None:
    out = tools.mtx("-f", CHANGER, "nobarcode", "status")[1]
    assert "VolumeTag" not in out
    assert "      Storage Element 1:Full \n" in out


def _shape(line: str) -> str:
    line = line.rstrip()
    line = re.sub(r"(VolumeTag ?= ?)\S+", r"\1TAG", line)
    line = re.sub(r"Storage Changer .*?:(\d+ Drives)", r"Storage Changer DEV:\1", line)
    return re.sub(r"\d+", "N", line)


def _corpus_lines(folder: str) -> list[str]:
    lines: list[str] = []
    for path in sorted((CORPUS / folder).glob("*.txt")):
        lines.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
    return lines


needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")


@needs_corpus
def test_every_status_line_has_a_real_shape(tools: Tools, sim: SimulatedLibrary) -> None:
    real = _corpus_lines("mtx-status")
    shapes = {_shape(line) for line in real}
    tools.mtx("-f", CHANGER, "load", "1", "0")
    sim.unreadable_label(3)
    out = tools.mtx("-f", CHANGER, "status")[1]
    for line in out.splitlines():
        if line == "      Storage Element 3:Full ":
            continue  # the unreadable label: real shape in FORMATS.md 1.1, stripped in copies
        assert _shape(line) in shapes, line
    # Tags padded to 32 like the bareos captures; indentation as in them.
    padded = [line for line in real if re.search(r"VolumeTag=\S+ +$", line)]
    assert padded
    assert all(len(line.split("VolumeTag=")[1]) == 32 for line in padded[:5])
    assert any(line.startswith("  Storage Changer ") for line in real)
    assert any(line.startswith("      Storage Element ") for line in real)


# -- mtx moves -----------------------------------------------------------------------------


def test_load_unload_transfer_exact(tools: Tools) -> None:
    load = tools.mtx("-f", CHANGER, "load", "1", "0")
    assert load == (0, "Loading media from Storage Element 1 into drive 0...done\n", "")
    check_move_output(load[1], "load", slot=1, drive=0, command=("mtx",))
    assert tools.mt("-f", "/dev/nst0", "offline")[0] == 0
    unload = tools.mtx("-f", CHANGER, "unload", "4", "0")
    assert unload == (0, "Unloading drive 0 into Storage Element 4...done\n", "")
    check_move_output(unload[1], "unload", slot=4, drive=0, command=("mtx",))
    assert tools.mtx("-f", CHANGER, "transfer", "4", "1") == (0, "", "")
    assert tools.mtx("-f", CHANGER, "status")[1] == INITIAL_STATUS


def test_load_defaults_to_drive_0_and_unload_to_the_home_slot(tools: Tools) -> None:
    assert tools.mtx("-f", CHANGER, "load", "1")[1].endswith("into drive 0...done\n")
    tools.mt("-f", "/dev/nst0", "offline")
    assert tools.mtx("-f", CHANGER, "unload") == (
        0,
        "Unloading drive 0 into Storage Element 1...done\n",
        "",
    )


def _sense(key: str, asc: str, ascq: str) -> str:
    return "".join(
        f"mtx: Request Sense: {line}\n"
        for line in (
            "Long Report=yes",
            "Valid Residual=no",
            "Error Code=70 (Current)",
            f"Sense Key={key}",
            "FileMark=no",
            "EOM=no",
            "ILI=no",
            f"Additional Sense Code = {asc}",
            f"Additional Sense Qualifier = {ascq}",
            "BPV=no",
            "Error in CDB=no",
            "SKSV=no",
        )
    )


LOADING_4 = "Loading media from Storage Element 4 into drive 0..."


@pytest.mark.parametrize(
    ("setup", "args", "expected", "error"),
    [
        pytest.param(
            [],
            ("load", "4", "0"),
            (1, LOADING_4, "Source Element Address 1028 is Empty\n"),
            SourceEmptyError,
            id="load-source-empty",
        ),
        pytest.param(
            [("load", "1", "0")],
            ("load", "2", "0"),
            (1, "", "Drive 0 Full (Storage Element 1 loaded)\n"),
            DestinationFullError,
            id="load-drive-full",
        ),
        pytest.param(
            [],
            ("load", "3", "1"),
            (
                1,
                "Loading media from Storage Element 3 into drive 1...",
                _sense("Illegal Request", "30", "00")
                + "MOVE MEDIUM from Element Address 1027 to 257 Failed\n",
            ),
            IncompatibleMediaError,
            id="load-incompatible",
        ),
        pytest.param(
            [("load", "1", "0")],
            ("unload", "1", "0"),
            (
                1,
                "Unloading drive 0 into Storage Element 1...",
                _sense("Illegal Request", "53", "02")
                + "MOVE MEDIUM from Element Address 256 to 1025 Failed\n",
            ),
            MediumRemovalPreventedError,
            id="unload-not-offlined",
        ),
        pytest.param(
            [],
            ("unload", "4", "1"),
            (1, "", "Data Transfer Element 1 is Empty\n"),
            SourceEmptyError,
            id="unload-drive-empty",
        ),
        pytest.param(
            [("load", "1", "0")],
            ("unload", "2", "0"),
            (1, "", "Storage Element 2 is Already Full\n"),
            DestinationFullError,
            id="unload-slot-full",
        ),
        pytest.param(
            [],
            ("transfer", "1", "5"),
            (1, "", "Destination Element Address 769 is Already Full\n"),
            DestinationFullError,
            id="transfer-to-full-mailslot",
        ),
        pytest.param(
            [],
            ("transfer", "4", "1"),
            (1, "", "Source Element Address 1028 is Empty\n"),
            SourceEmptyError,
            id="transfer-source-empty",
        ),
        pytest.param(
            [],
            ("load", "9", "0"),
            (1, "", "Invalid <storage-element-number> argument '9' to 'load' command\n"),
            IllegalRequestError,
            id="load-bad-slot",
        ),
        pytest.param(
            [],
            ("load", "1", "2"),
            (1, "", "illegal <drive-number> argument '2' to 'load' command\n"),
            IllegalRequestError,
            id="load-bad-drive",
        ),
        pytest.param(
            [],
            ("transfer", "1", "6"),
            (1, "", "Invalid destination\n"),
            IllegalRequestError,
            id="transfer-bad-destination",
        ),
    ],
)
def test_move_errors_exact(
    tools: Tools,
    setup: list[tuple[str, ...]],
    args: tuple[str, ...],
    expected: tuple[int, str, str],
    error: type[DriverError],
) -> None:
    for step in setup:
        assert tools.mtx("-f", CHANGER, *step)[0] == 0
    run = tools.mtx("-f", CHANGER, *args)
    assert run == expected
    assert type(classified("mtx", args, run)) is error


FAULT_SENSE = {
    "hardware": ("Hardware Error", "15", "01", HardwareError),
    "unit_attention": ("Unit Attention", "28", "00", UnitAttentionError),
    "not_ready": ("Not Ready", "04", "01", NotReadyError),
    "removal_prevented": ("Illegal Request", "53", "02", MediumRemovalPreventedError),
    "illegal_request": ("Illegal Request", "21", "01", IllegalRequestError),
}


@pytest.mark.parametrize("kind", list(FAULT_SENSE))
def test_injected_move_fault_prints_the_sense_block(
    tools: Tools, sim: SimulatedLibrary, kind: str
) -> None:
    key, asc, ascq, error = FAULT_SENSE[kind]
    sim.inject("load", kind)  # type: ignore[arg-type]
    run = tools.mtx("-f", CHANGER, "load", "1", "0")
    assert run == (
        1,
        "Loading media from Storage Element 1 into drive 0...",
        _sense(key, asc, ascq) + "MOVE MEDIUM from Element Address 1025 to 256 Failed\n",
    )
    assert type(classified("mtx", ("load", "1", "0"), run)) is error


@needs_corpus
def test_sense_block_matches_a_real_one(tools: Tools) -> None:
    tools.mtx("-f", CHANGER, "load", "1", "0")
    err = tools.mtx("-f", CHANGER, "unload", "1", "0")[2]
    real = (
        CORPUS / "mtx-errors/pytarchive-unload-illegal-request-53-03-medium-removal-prevented.txt"
    ).read_text(encoding="utf-8")
    real = real.split("...", 1)[1]  # merged 2>&1: the progress text precedes the block
    ours = err.splitlines()[:12]
    theirs = real.splitlines()[:12]
    assert [line for line in ours if "Qualifier" not in line] == [
        line for line in theirs if "Qualifier" not in line
    ]


@needs_corpus
def test_door_opened_status_is_degraded_like_the_real_one(
    tools: Tools, sim: SimulatedLibrary
) -> None:
    sim.open_door()
    code, out, err = tools.mtx("-f", CHANGER, "status")
    real = (
        CORPUS / "mtx-errors/birdie1-tandberg-storageloader-unit-attention-28-00"
        "-mode-sense-failed-then-status.txt"
    ).read_text(encoding="utf-8")
    assert code == 0
    assert err == "".join(real.splitlines(keepends=True)[:13])
    assert out.splitlines()[0] == "  Storage Changer /dev/sg7:2 Drives, 4 Slots ( 0 Import/Export )"
    assert "IMPORT/EXPORT" not in out
    assert type(classified("mtx", ("status",), (code, out, err))) is DegradedStatusError
    # The unit attention is reported once.
    assert tools.mtx("-f", CHANGER, "status") == (0, INITIAL_STATUS, "")


def test_status_fault_is_fatal(tools: Tools, sim: SimulatedLibrary) -> None:
    sim.inject("inventory", "hardware")
    run = tools.mtx("-f", CHANGER, "status")
    assert run == (
        1,
        "",
        _sense("Hardware Error", "15", "01") + "READ ELEMENT STATUS Command Failed\n",
    )
    assert type(classified("mtx", ("status",), run)) is HardwareError


def test_inquiry(tools: Tools) -> None:
    code, out, _ = tools.mtx("-f", CHANGER, "inquiry")
    assert code == 0
    assert out == (
        "Product Type: Medium Changer\n"
        "Vendor ID: 'TAPEWORK'\n"
        "Product ID: 'SIMULATED LIB   '\n"
        "Revision: '0001'\n"
        "Attached Changer API: No\n"
    )
    assert parse_inquiry(out).is_changer


def test_mtx_on_devices_that_are_not_the_changer(tools: Tools, tmp_path: Path) -> None:
    missing = str(tmp_path / "sg9")
    assert tools.mtx("-f", missing, "status") == (
        1,
        "",
        f"cannot open SCSI device '{missing}' - No such file or directory\n",
    )
    assert tools.mtx("-f", "/dev/nst0", "status") == (
        1,
        "",
        "/dev/nst0 is not an sg device, or old sg driver\n",
    )
    run = tools.mtx("-f", str(tmp_path), "load", "1", "0")
    assert run == (1, "", f"cannot open SCSI device '{tmp_path}' - Is a directory\n")
    assert type(classified("mtx", ("load",), run)) is DeviceMissingError


def test_mtx_version(tools: Tools) -> None:
    code, out, err = tools.mtx("--version")
    assert (code, out) == (1, "")
    assert err.startswith("mtx version 1.3.12\n\nUsage:\n\tmtx --version\n")
    assert parse_mtx_version(out, err) == "1.3.12"


# -- mt ------------------------------------------------------------------------------------


def _mt_status(gstat: str, flags: str, density: str, position: int = 0) -> str:
    return (
        "SCSI 2 tape drive:\n"
        f"File number={position}, block number={position}, partition=0.\n"
        f"Tape block size 0 bytes. Density code {density}.\n"
        "Soft error count since last status=0\n"
        f"General status bits on ({gstat}):\n"
        f"{flags}\n"
    )


@needs_corpus
def test_mt_status_empty_drive_is_the_real_text(tools: Tools) -> None:
    real = (CORPUS / "mt-status/birdie1-hp-ultrium5-no-tape-dr-open.txt").read_text()
    assert tools.mt("-f", "/dev/nst1", "status") == (0, real, "")


def test_mt_status_loaded(tools: Tools, sim: SimulatedLibrary) -> None:
    tools.mtx("-f", CHANGER, "load", "1", "0")
    sim.delay_ready(1, 100_000.0)
    tools.mtx("-f", CHANGER, "load", "2", "1")
    # Wait for drive 0 as st's open does: rewind blocks until the drive is ready.
    assert tools.mt("-f", "/dev/nst0", "rewind") == (0, "", "")
    out = tools.mt("-f", "/dev/nst0", "status")[1]
    assert out == _mt_status("41010000", " BOT ONLINE IM_REP_EN", "0x5e (LTO-8)")
    # Drive 1 is still threading its write-protected LTO-9 tape (unknown to mt-st 1.7).
    out = tools.mt("-f", "/dev/nst1", "stat")[1]
    assert out == _mt_status("4010000", " WR_PROT IM_REP_EN", "0x60 (no translation)", -1)
    status = parse_mt_status(out)
    assert (status.loaded, status.online, status.generation) == (True, False, 9)


def test_mt_status_cleaning_and_offline(tools: Tools, sim: SimulatedLibrary) -> None:
    sim.need_cleaning(0)
    tools.mtx("-f", CHANGER, "load", "1", "0")
    assert tools.mt("-f", "/dev/nst0", "eject") == (0, "", "")
    out = tools.mt("-f", "/dev/nst0", "status")[1]
    assert out == _mt_status("58000", " DR_OPEN IM_REP_EN CLN", "0x0 (default)", -1)
    assert parse_mt_status_details(out).flags == {"DR_OPEN", "IM_REP_EN", "CLN"}
    # Offlined: the next offline or rewind finds no medium, as st's open does.
    run = tools.mt("-f", "/dev/nst0", "offline")
    assert run == (1, "", "/dev/nst0: No medium found\n")
    assert type(classified("mt", ("offline",), run)) is NotReadyError


@needs_corpus
def test_every_mt_status_line_has_a_real_shape(tools: Tools) -> None:
    def shape(line: str) -> str:
        line = re.sub(r"\(.*\)", "(X)", line)
        return re.sub(r"0x[0-9a-f]+|-?\d+", "N", line)

    shapes = {shape(line) for line in _corpus_lines("mt-status")}
    tools.mtx("-f", CHANGER, "load", "1", "0")
    for device in ("/dev/nst0", "/dev/nst1"):
        for line in tools.mt("-f", device, "status")[1].splitlines():
            assert shape(line) in shapes, line


def test_mt_errors(tools: Tools, sim: SimulatedLibrary, tmp_path: Path) -> None:
    missing = str(tmp_path / "nst9")
    assert tools.mt("-f", missing, "status") == (1, "", f"{missing}: No such file or directory\n")
    assert tools.mt("-f", CHANGER, "status") == (
        2,
        "",
        f"{CHANGER}: Inappropriate ioctl for device\n",
    )
    assert tools.mt("-f", "/dev/nst1", "rewind") == (1, "", "/dev/nst1: No medium found\n")
    sim.kill_drive(1)
    run = tools.mt("-f", "/dev/nst1", "status")
    assert run == (1, "", "/dev/nst1: Input/output error\n")
    sim.inject("status", "not_ready", drive=0)
    run = tools.mt("-f", "/dev/nst0", "status")
    assert run == (2, "", "/dev/nst0: No medium found\n")
    assert type(classified("mt", ("status",), run)) is NotReadyError
    sim.inject("offline", "hardware", drive=0)
    tools.mtx("-f", CHANGER, "load", "1", "0")
    run = tools.mt("-f", "/dev/nst0", "offline")
    assert run == (2, "", "/dev/nst0: Input/output error\n")
    assert type(classified("mt", ("offline",), run)) is HardwareError


def test_mt_version_and_usage(tools: Tools) -> None:
    run = tools.mt("--version")
    assert run == (0, "mt-st v. 1.7\ndefault tape device: /dev/tape\n", "")
    assert parse_mt_version(run[1]) == "1.7"
    code, _, err = tools.mt("-f", "/dev/nst0", "st")
    assert code == 1
    assert err.startswith('mt: ambiguous command "st"\nusage: mt ')
    run = tools.mt("-f", "/dev/nst0", "status", "2")
    assert run == (1, "", "mt: too many arguments for the command 'status'.\n")
    assert type(classified("mt", ("status",), run)) is InvalidArgumentError


# -- side by side with the real tools --------------------------------------------------------


def _mt_st() -> str | None:
    """Debian's mt-st: /bin/mt through the alternatives (GNU cpio's mt may hold that
    name instead), or the package's own /bin/mt-st."""
    for candidate in ("/bin/mt", "/usr/bin/mt", "/bin/mt-st", "/usr/bin/mt-st"):
        if not Path(candidate).exists():
            continue
        version = subprocess.run(
            [candidate, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        if "mt-st" in version.stdout + version.stderr:
            return candidate
    return None


#: Debian's mtx is /usr/sbin/mtx, outside an ordinary user's PATH.
REAL_MTX = shutil.which("mtx", path="/usr/sbin:/sbin:/usr/bin:/bin")
REAL_MT = _mt_st()
INSTALL_HINT = "`make test` installs it (scripts/ensure-system-deps scsi-emulation)"


@pytest.fixture
def real_mtx() -> str:
    """Never a skip: the side-by-side comparison is the point of these tests."""
    if REAL_MTX is None:
        pytest.fail(f"Debian's mtx is not installed: {INSTALL_HINT}")
    return REAL_MTX


@pytest.fixture
def real_mt() -> str:
    if REAL_MT is None:
        pytest.fail(f"Debian's mt-st is not installed: {INSTALL_HINT}")
    return REAL_MT


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TAPE", "CHANGER")}
    env["LC_ALL"] = "C"
    return env


def _run(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, check=False, env=_env(), cwd=cwd
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def bin_dir(tmp_path: Path, state: Path) -> Path:
    folder = tmp_path / "bin"
    install_standins(folder, state)
    return folder


MTX_CASES = [
    ["--version"],
    [],
    ["nobarcode"],
    ["bogus"],
    ["-f"],
    ["-f", "/nonexistent", "status"],
    ["-f", "/nonexistent", "bogus"],
    ["-f", "/dev/null", "status"],
    ["-f", "{tmp}", "load", "1", "0"],
    ["load", "1", "0"],
]
MT_CASES = [
    ["--version"],
    ["-h"],
    [],
    ["-f", "/nonexistent", "status"],
    ["-f", "/nonexistent", "rewind"],
    ["-f", "/nonexistent", "offline"],
    ["-f", "/dev/null", "status"],
    ["-f", "/dev/null", "stat"],
    ["-f", "/dev/null", "rewind"],
    ["-f", "/dev/null", "bogus"],
    ["-f", "/dev/null", "st"],
    ["-f", "/dev/null", "status", "extra"],
    ["-f", "{tmp}", "status"],
    ["-f", "/dev/nst9", "status"],
    ["status"],
]


@pytest.mark.parametrize("args", MTX_CASES, ids=" ".join)
def test_mtx_says_what_the_real_mtx_says(
    bin_dir: Path, tmp_path: Path, real_mtx: str, args: list[str]
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    real = _run([real_mtx, *argv], tmp_path)
    assert _run([str(bin_dir / "mtx"), *argv], tmp_path) == real


@pytest.mark.parametrize("args", MT_CASES, ids=" ".join)
def test_mt_says_what_the_real_mt_says(
    bin_dir: Path, tmp_path: Path, real_mt: str, args: list[str]
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "/dev/nst9" in argv and Path("/dev/nst9").exists():
        pytest.skip("this machine has a /dev/nst9")
    real = _run([real_mt, *argv], tmp_path)
    assert _run([str(bin_dir / "mt"), *argv], tmp_path) == real


# -- installing and running the scripts ------------------------------------------------------


def test_installed_scripts_come_first_on_path(bin_dir: Path, tmp_path: Path) -> None:
    for tool in ("mtx", "mt"):
        script = bin_dir / tool
        assert os.access(script, os.X_OK)
        assert script.read_text().startswith(f"#!{sys.executable}\n")
    env = _env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    assert shutil.which("mtx", path=env["PATH"]) == str(bin_dir / "mtx")
    done = subprocess.run(
        ["mtx", "-f", CHANGER, "status"],  # through PATH: that is the point
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.stdout == INITIAL_STATUS


def test_module_cli_runs_the_standins(tmp_path: Path) -> None:
    state = tmp_path / "demo.json"

    def sim_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "drivers.sim", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd=REPO,
        )

    made = sim_cli(
        "init", "--definition", "config/demo-library.toml", "--state", str(state), "--speed", "1e4"
    )
    assert made.returncode == 0, made.stderr
    status = sim_cli("mtx", "--state", str(state), "-f", "/dev/sg4", "status")
    assert status.returncode == 0
    parsed = parse_status(status.stdout)
    assert (parsed.drive_count, parsed.slot_count, parsed.import_export_count) == (4, 52, 4)
    assert sim_cli("fault", "--state", str(state), "kill-drive", "2").returncode == 0
    dead = sim_cli("mt", "--state", str(state), "-f", "/dev/nst2", "status")
    assert (dead.returncode, dead.stderr) == (1, "/dev/nst2: Input/output error\n")


async def test_a_killed_standin_releases_the_robot(state: Path, bin_dir: Path) -> None:
    """MtxLibrary kills a tool that overruns its timeout; the robot lock dies with it
    and the move it was simulating never happened."""
    SimulatedLibrary.open(small(), state_file=state, speed=1.0)  # a move takes 7 s
    library = MtxLibrary(small(), mtx=str(bin_dir / "mtx"), mt=str(bin_dir / "mt"), timeout_s=1.0)
    with pytest.raises(CommandTimeoutError):
        await library.load(1, 0)
    SimulatedLibrary.open(small(), state_file=state, speed=SPEED)
    inventory = await library.inventory()
    assert inventory.slot(1).barcode == "A00001L8"
    assert not inventory.drive(0).full


def test_commands_run_in_order_until_one_fails(tools: Tools) -> None:
    """Several commands per call, as mtx does; a later usage error comes after the move."""
    code, out, err = tools.mtx("-f", CHANGER, "load", "1", "0", "bogus")
    assert (code, out) == (1, "Loading media from Storage Element 1 into drive 0...done\n")
    assert err.startswith("Usage:\n")
    assert parse_status(tools.mtx("-f", CHANGER, "status")[1]).inventory.drive(0).full


async def test_backend_startup_check_against_the_standins(state: Path, bin_dir: Path) -> None:
    mtx, mt = str(bin_dir / "mtx"), str(bin_dir / "mt")
    assert await MtxLibrary(small(), mtx=mtx, mt=mt).check() == []
    wrong = small().model_copy(update={"slots": 3, "import_export": 2})
    problems = await MtxLibrary(wrong, mtx=mtx, mt=mt).check()
    assert problems == [
        "changer /dev/sg7 reports 4 storage and 1 import/export slots; the definition says 3 and 2"
    ]


def test_a_held_drive_is_busy(tools: Tools, state: Path) -> None:
    with standin_mt.hold_device(state, 0):
        run = tools.mt("-f", "/dev/nst0", "status")
        assert run == (1, "", "/dev/nst0: Device or resource busy\n")
        assert type(classified("mt", ("status",), run)) is DeviceBusyError
        assert tools.mt("-f", "/dev/nst1", "status")[0] == 0
    assert tools.mt("-f", "/dev/nst0", "status")[0] == 0


async def test_backend_serialises_mt_per_drive(state: Path, bin_dir: Path) -> None:
    """st allows one open per device; MtxLibrary must never run two mt at once on one."""
    library = MtxLibrary(small(), mtx=str(bin_dir / "mtx"), mt=str(bin_dir / "mt"))
    statuses = await asyncio.gather(*(library.drive_status(0) for _ in range(4)))
    assert all(not s.loaded for s in statuses)
