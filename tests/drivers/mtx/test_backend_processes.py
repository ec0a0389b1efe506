"""MtxLibrary's process handling, with tiny fake tools: timeouts and cancellation
kill the child (and what it started), garbled or cut output is refused, a degraded
listing is retried and never used, the child runs with LC_ALL=C and argument lists.

The contract against a simulated library (load, unload, errors) runs against the
simulator's stand-in executables in test_backend_standins.py.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pytest

from drivers.definition import DriveDefinition, LibraryDefinition
from drivers.errors import (
    CommandTimeoutError,
    DegradedStatusError,
    DestinationFullError,
    InvalidArgumentError,
    ParseError,
    UnsupportedToolError,
)
from drivers.mtx.backend import MtxLibrary

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO.parent / "shared" / "corpus"

DEFINITION = LibraryDefinition(
    changer="/dev/sg3",
    slots=3,
    import_export=1,
    drives=(
        DriveDefinition(index=0, device="/dev/nst0", generation=8),
        DriveDefinition(index=1, device="/dev/nst1", generation=8),
    ),
)

STATUS = (
    "  Storage Changer /dev/sg3:2 Drives, 4 Slots ( 1 Import/Export )\n"
    "Data Transfer Element 0:Empty\n"
    "Data Transfer Element 1:Full (Storage Element 2 Loaded):VolumeTag = AAA002L8        \n"
    "      Storage Element 1:Full :VolumeTag=AAA001L8        \n"
    "      Storage Element 2:Empty\n"
    "      Storage Element 3:Empty:VolumeTag=                                    \n"
    "      Storage Element 4 IMPORT/EXPORT:Empty\n"
)


def tool(folder: Path, name: str, body: str) -> str:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def library(
    tmp_path: Path, *, mtx: str, mt: str = "/nonexistent/mt", **kwargs: float
) -> MtxLibrary:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FAKE": str(tmp_path),
        "LC_ALL": "de_DE",
    }
    return MtxLibrary(DEFINITION, mtx=mtx, mt=mt, env=env, **kwargs)  # type: ignore[arg-type]


def _dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


async def _wait_dead(*pids: int) -> None:
    deadline = time.monotonic() + 5
    while not all(_dead(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still alive: {[p for p in pids if not _dead(p)]}"
        await asyncio.sleep(0.05)


HANG = """echo $$ > "$FAKE/pid"
if [ "$3" = status ]; then cat "$FAKE/status"; exit 0; fi
sleep 600 &
echo $! > "$FAKE/child"
wait
"""


async def test_timeout_kills_the_child_and_what_it_started(tmp_path: Path) -> None:
    lib = library(tmp_path, mtx=tool(tmp_path, "mtx", HANG), timeout_s=0.5, query_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(CommandTimeoutError) as info:
        await lib.load(1, 0)
    assert time.monotonic() - started < 5
    assert info.value.outcome_uncertain
    assert info.value.command is not None
    assert info.value.command[1:] == ("-f", "/dev/sg3", "load", "1", "0")
    await _wait_dead(int((tmp_path / "pid").read_text()), int((tmp_path / "child").read_text()))


async def test_cancellation_kills_the_child_and_frees_the_changer(tmp_path: Path) -> None:
    (tmp_path / "status").write_text(STATUS)
    lib = library(tmp_path, mtx=tool(tmp_path, "mtx", HANG))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(lib.load(1, 0), 0.5)
    await _wait_dead(int((tmp_path / "pid").read_text()), int((tmp_path / "child").read_text()))
    # The changer lock was released on the way out.
    inventory = await asyncio.wait_for(lib.inventory(), 5)
    assert inventory.drive(1).barcode == "AAA002L8"
    assert inventory.slot(3).full is False


async def test_child_gets_lc_all_c_and_an_argument_list(tmp_path: Path) -> None:
    (tmp_path / "status").write_text(STATUS)
    body = """env > "$FAKE/env"
for a in "$@"; do echo "$a"; done > "$FAKE/argv"
cat "$FAKE/status"
"""
    lib = library(tmp_path, mtx=tool(tmp_path, "mtx", body))
    inventory = await lib.inventory()
    assert inventory.where("AAA001L8") == ("slot", 1)
    env = (tmp_path / "env").read_text().splitlines()
    assert "LC_ALL=C" in env
    assert (tmp_path / "argv").read_text().splitlines() == ["-f", "/dev/sg3", "status"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("printf 'garbage \\377\\000 here\\n'", "expected the 'Storage Changer' header"),
        ('head -c 200 "$FAKE/status"', "without a newline"),
        ('head -n 4 "$FAKE/status"', "header says 4 slots, listing has 1"),
        ('sed "s#/dev/sg3#/dev/sg4#" "$FAKE/status"', "names changer '/dev/sg4'"),
    ],
)
async def test_garbled_status_is_refused(tmp_path: Path, body: str, words: str) -> None:
    (tmp_path / "status").write_text(STATUS)
    lib = library(tmp_path, mtx=tool(tmp_path, "mtx", body + "\n"))
    with pytest.raises(ParseError, match=words) as info:
        await lib.inventory()
    assert info.value.command is not None
    assert info.value.command[1:] == ("-f", "/dev/sg3", "status")
    assert info.value.line is not None


async def test_garbled_mt_status_is_refused(tmp_path: Path) -> None:
    mt = tool(tmp_path, "mt", "echo 'hello from a confused tool'\n")
    lib = library(tmp_path, mtx="/nonexistent/mtx", mt=mt)
    with pytest.raises(ParseError) as info:
        await lib.drive_status(1)
    assert info.value.command is not None
    assert info.value.command[1:] == ("-f", "/dev/nst1", "status")


DEGRADED = """n=$(cat "$FAKE/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$FAKE/count"
if [ $n -le "$(cat "$FAKE/bad")" ]; then
  cat "$FAKE/sense" >&2
  echo 'Mode sense (0x1A) for Page 0x1D failed' >&2
fi
cat "$FAKE/status"
"""


def _degraded_setup(tmp_path: Path, bad: int) -> None:
    (tmp_path / "status").write_text(STATUS)
    (tmp_path / "bad").write_text(f"{bad}\n")
    block = (CORPUS / "mtx-errors").glob("birdie1-*")
    lines = next(block).read_text().splitlines(keepends=True)
    (tmp_path / "sense").write_text("".join(x for x in lines if x.startswith("mtx: ")))


async def test_degraded_status_is_retried(tmp_path: Path) -> None:
    _degraded_setup(tmp_path, bad=2)
    lib = library(tmp_path, mtx=tool(tmp_path, "mtx", DEGRADED), retry_delay_s=0.01)
    inventory = await lib.inventory()
    assert inventory.slot(1).barcode == "AAA001L8"
    assert (tmp_path / "count").read_text().strip() == "3"


async def test_degraded_status_is_never_trusted(tmp_path: Path) -> None:
    _degraded_setup(tmp_path, bad=99)
    lib = library(tmp_path, mtx=tool(tmp_path, "mtx", DEGRADED), retry_delay_s=0.01)
    with pytest.raises(DegradedStatusError) as info:
        await lib.inventory()
    assert info.value.sense is not None
    assert (info.value.sense.key, info.value.sense.asc) == (6, 0x28)
    assert (tmp_path / "count").read_text().strip() == "3"


async def test_mtx_error_reaches_the_caller_with_its_context(tmp_path: Path) -> None:
    body = "echo 'Drive 0 Full (Storage Element 2 loaded)' >&2\nexit 1\n"
    lib = library(tmp_path, mtx=tool(tmp_path, "mtx", body))
    with pytest.raises(DestinationFullError) as info:
        await lib.load(1, 0)
    assert (info.value.returncode, info.value.slot, info.value.drive) == (1, 1, 0)
    assert "Drive 0 Full" in info.value.stderr


async def test_load_without_done_is_uncertain(tmp_path: Path) -> None:
    body = "printf 'Loading media from Storage Element 1 into drive 0...'\n"
    lib = library(tmp_path, mtx=tool(tmp_path, "mtx", body))
    with pytest.raises(ParseError) as info:
        await lib.load(1, 0)
    assert info.value.outcome_uncertain


async def test_missing_tools(tmp_path: Path) -> None:
    lib = library(tmp_path, mtx=str(tmp_path / "no-mtx"), mt=str(tmp_path / "no-mt"))
    with pytest.raises(UnsupportedToolError, match="cannot run"):
        await lib.inventory()
    problems = await lib.check()
    assert len(problems) == 2
    assert problems[0].startswith("mtx: cannot run")
    assert problems[1].startswith("mt: cannot run")


async def test_check_names_gnu_mt(tmp_path: Path) -> None:
    mtx = tool(tmp_path, "mtx", "echo 'mtx version 1.3.12' >&2\nexit 1\n")
    gnu = (CORPUS / "mtx-errors" / "local-mt-gnu-cpio2.13-version.txt").read_text()
    version = gnu.split("--- stdout ---\n")[1].split("--- stderr ---")[0]
    (tmp_path / "gnu").write_text(version)
    mt = tool(tmp_path, "mt", 'cat "$FAKE/gnu"\n')
    problems = await library(tmp_path, mtx=mtx, mt=mt).check()
    assert len(problems) == 1
    assert "GNU cpio mt 2.13" in problems[0]
    assert "mt-st" in problems[0]


async def test_check_names_a_changer_path_that_is_a_drive(tmp_path: Path) -> None:
    inquiry = (CORPUS / "mtx-other" / "birdie1-inquiry-hp-ultrium5-tape-drive.txt").read_text()
    (tmp_path / "inquiry").write_text(inquiry)
    mtx = tool(
        tmp_path,
        "mtx",
        'if [ "$1" = --version ]; then echo "mtx version 1.3.12" >&2; exit 1; fi\n'
        'cat "$FAKE/inquiry"\n',
    )
    no_tape = (CORPUS / "mt-status" / "birdie1-hp-ultrium5-no-tape-dr-open.txt").read_text()
    (tmp_path / "mtstatus").write_text(no_tape)
    mt = tool(
        tmp_path,
        "mt",
        'if [ "$1" = --version ]; then echo "mt-st v. 1.7"; exit 0; fi\ncat "$FAKE/mtstatus"\n',
    )
    problems = await library(tmp_path, mtx=mtx, mt=mt).check()
    assert problems == [
        "changer /dev/sg3 answers as a Tape Drive (HP Ultrium 5-SCSI), not a medium changer"
    ]


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda lib: lib.load(0, 0), "slot must be an integer 1..4"),
        (lambda lib: lib.load(5, 0), "slot must be an integer 1..4"),
        (lambda lib: lib.load(True, 0), "slot must be"),
        (lambda lib: lib.load(1, 2), "no drive 2"),
        (lambda lib: lib.unload(-1, 1), "drive must be"),
        (lambda lib: lib.transfer(1, "2; rm -rf /"), "slot must be"),
        (lambda lib: lib.drive_status(7), "no drive 7"),
    ],
)
async def test_arguments_are_validated_before_any_command(
    tmp_path: Path, call: object, words: str
) -> None:
    lib = library(tmp_path, mtx=str(tmp_path / "must-not-run"), mt=str(tmp_path / "nor-this"))
    with pytest.raises(InvalidArgumentError, match=words):
        await call(lib)  # type: ignore[operator]


def test_device_paths_are_validated() -> None:
    bad = LibraryDefinition.model_construct(
        changer="-f/dev/sg0", slots=1, import_export=0, drives=(), offline_before_unload=True
    )
    with pytest.raises(InvalidArgumentError, match="invalid device path"):
        MtxLibrary(bad)


async def test_one_changer_command_at_a_time(tmp_path: Path) -> None:
    body = """echo "start $4" >> "$FAKE/log"
sleep 0.3
echo "end $4" >> "$FAKE/log"
printf 'Loading media from Storage Element %s into drive %s...done\\n' "$4" "$5"
"""
    mtx = tool(tmp_path, "mtx", body)
    # Two library objects on one changer still share the robot.
    first, second = library(tmp_path, mtx=mtx), library(tmp_path, mtx=mtx)
    await asyncio.gather(first.load(1, 0), second.load(3, 1), first.load(2, 1))
    log = (tmp_path / "log").read_text().split()
    pairs = [log[i : i + 4] for i in range(0, len(log), 4)]
    assert all(p[0] == "start" and p[2] == "end" and p[1] == p[3] for p in pairs), log
