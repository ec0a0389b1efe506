"""`mt status` (mt-st 1.7) parser against every capture in the corpus, plus the
version check that keeps GNU mt out."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.base import DriveStatus
from drivers.errors import ParseError, UnsupportedToolError
from drivers.mtx.parse_mt_status import parse_mt_status, parse_mt_status_details

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO.parent / "shared" / "corpus"
MT_DIR = CORPUS / "mt-status"

NO_TAPE = DriveStatus(online=False, loaded=False)

#: file -> (DriveStatus, file number, block number, flags)
EXPECTED: dict[str, tuple[DriveStatus, int | None, int | None, set[str]]] = {
    "birdie1-hp-ultrium5-no-tape-dr-open.txt": (NO_TAPE, None, None, {"DR_OPEN", "IM_REP_EN"}),
    "dwara2-ibm-ult3580-td5-no-tape-dr-open.txt": (
        NO_TAPE,
        None,
        None,
        {"DR_OPEN", "IM_REP_EN"},
    ),
    "ibm-ult3580-tda-ts4500-no-tape-dr-open.txt": (
        NO_TAPE,
        None,
        None,
        {"DR_OPEN", "IM_REP_EN"},
    ),
    # No tape without DR_OPEN (FORMATS.md 7.21): not online, density 0.
    "ibm-ult3580-tda-ts4500-no-tape-im-rep-en-only.txt": (NO_TAPE, None, None, {"IM_REP_EN"}),
    "dwara2-ibm-ult3580-td5-file1-eof-0x58-no-translation.txt": (
        DriveStatus(online=True, loaded=True, density_code=0x58, generation=5),
        1,
        0,
        {"EOF", "ONLINE", "IM_REP_EN"},
    ),
    "mhvtl-ult3580-td5-bot-0x58-no-translation.txt": (
        DriveStatus(online=True, loaded=True, at_bot=True, density_code=0x58, generation=5),
        0,
        0,
        {"BOT", "ONLINE", "IM_REP_EN"},
    ),
    # Loaded, position unknown (-1/-1), T10000-class density: no LTO generation.
    "mhvtl-issue123-loaded-no-bot-0x4a-no-translation.txt": (
        DriveStatus(online=True, loaded=True, density_code=0x4A, generation=None),
        None,
        None,
        {"ONLINE", "IM_REP_EN"},
    ),
    "lkml-2003-archive-python-dds2-bot-blocksize512.txt": (
        DriveStatus(online=True, loaded=True, at_bot=True, density_code=0x24),
        0,
        0,
        {"BOT", "ONLINE", "IM_REP_EN"},
    ),
    # A kernel console line before mt's output is skipped (FORMATS.md 7.25).
    "lkml-2003-archive-python-dds2-bot-with-kernel-console-line.txt": (
        DriveStatus(online=True, loaded=True, at_bot=True, density_code=0x24),
        0,
        0,
        {"BOT", "ONLINE", "IM_REP_EN"},
    ),
}

#: GNU cpio mt output: the wrong tool, refused as such (FORMATS.md 6).
GNU = {
    "GNU-MT-forum-2005-hp-surestore-24i-dds3-bot.txt",
    "GNU-MT-french-notes-lto2-after-mtx-load-bot.txt",
}


def test_table_covers_every_capture() -> None:
    files = {p.name for p in MT_DIR.glob("*.txt")}
    assert files, f"no corpus at {MT_DIR}"
    assert files == set(EXPECTED) | GNU


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_parses_as_expected(name: str) -> None:
    want, file_number, block_number, flags = EXPECTED[name]
    text = (MT_DIR / name).read_text()
    assert parse_mt_status(text) == want
    details = parse_mt_status_details(text)
    assert (details.file_number, details.block_number) == (file_number, block_number)
    assert details.flags == flags
    assert details.drive_type == "SCSI 2"


def test_block_size_and_names_are_read() -> None:
    details = parse_mt_status_details(
        (MT_DIR / "lkml-2003-archive-python-dds2-bot-blocksize512.txt").read_text()
    )
    assert (details.block_size, details.density_name, details.gstat) == (512, "DDS-2", 0x41010000)


@pytest.mark.parametrize("name", sorted(GNU))
def test_gnu_mt_is_refused(name: str) -> None:
    with pytest.raises(UnsupportedToolError, match="not mt-st"):
        parse_mt_status((MT_DIR / name).read_text())


SIX = (
    "SCSI 2 tape drive:\n"
    "File number=0, block number=0, partition=0.\n"
    "Tape block size 0 bytes. Density code 0x{code:x} (no translation).\n"
    "Soft error count since last status=0\n"
    "General status bits on ({gstat:x}):\n"
    "{flags}\n"
)


@pytest.mark.parametrize(
    ("code", "generation"),
    [
        (0x40, 1),
        (0x42, 2),
        (0x44, 3),
        (0x46, 4),
        (0x58, 5),
        (0x5A, 6),
        (0x5C, 7),
        (0x5D, 7),
        (0x5E, 8),
        (0x60, 9),
        (0x41, None),
        (0x4A, None),
    ],
)
def test_density_code_to_lto_generation(code: int, generation: int | None) -> None:
    text = SIX.format(code=code, gstat=0x41010000, flags=" BOT ONLINE IM_REP_EN")
    assert parse_mt_status(text).generation == generation


def test_write_protect_and_cleaning_flags() -> None:
    text = SIX.format(code=0x5E, gstat=0x45018000, flags=" BOT WR_PROT ONLINE IM_REP_EN CLN")
    status = parse_mt_status(text)
    assert status.write_protected
    assert status.needs_cleaning
    assert status.at_bot
    assert status.generation == 8


def test_no_flags_is_an_empty_line() -> None:
    # A drive between states: neither ONLINE nor DR_OPEN; the flags line is empty.
    status = parse_mt_status(SIX.format(code=0, gstat=0, flags=""))
    assert status == DriveStatus(online=False, loaded=False)


@pytest.mark.parametrize(
    ("text", "words", "line"),
    [
        (SIX.format(code=0x58, gstat=0x41010000, flags=" BOT IM_REP_EN"), "disagree", "BOT"),
        (SIX.format(code=0x58, gstat=0x1010000, flags=" ONLINE IM_REP_EN FOO"), "FOO", "FOO"),
        (SIX.format(code=0x58, gstat=0x1010000, flags="ONLINE"), "not understood", "ONLINE"),
        (
            SIX.format(code=0x58, gstat=0x1010000, flags=" ONLINE IM_REP_EN").rsplit("\n", 2)[0]
            + "\n",
            "flags line missing",
            "General status bits",
        ),
        (
            SIX.format(code=0x58, gstat=0x1010000, flags=" ONLINE IM_REP_EN")[:-1],
            "without a newline",
            "ONLINE IM_REP_EN",
        ),
        (
            SIX.format(code=0x58, gstat=0x1010000, flags=" ONLINE IM_REP_EN").replace(
                "Tape block size", "Tape blok size"
            ),
            "Density code",
            "ONLINE",
        ),
        (
            "SCSI 2 tape drive:\n"
            + SIX.format(code=0x58, gstat=0x1010000, flags=" ONLINE IM_REP_EN"),
            "second type line",
            "SCSI 2 tape drive:",
        ),
        (
            "IDE-Tape (type code 0) ?\nFile number=0, block number=0.\n",
            "not a SCSI tape drive",
            "IDE-Tape",
        ),
        ("", "empty output", ""),
    ],
)
def test_refused(text: str, words: str, line: str) -> None:
    with pytest.raises(ParseError, match=words) as info:
        parse_mt_status(text, command=("mt", "-f", "/dev/nst0", "status"))
    assert info.value.command == ("mt", "-f", "/dev/nst0", "status")
    assert info.value.line is not None
    assert line in info.value.line
