"""`mtx inquiry` and the load/unload progress lines, from corpus/mtx-other."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.errors import ParseError
from drivers.mtx.parse_inquiry import Inquiry, parse_inquiry
from drivers.mtx.parse_move import check_move_output

REPO = Path(__file__).resolve().parents[3]
OTHER = REPO.parent / "shared" / "corpus" / "mtx-other"

INQUIRIES = {
    "birdie1-inquiry-hp-ultrium5-tape-drive.txt": Inquiry(
        "Tape Drive", "HP", "Ultrium 5-SCSI", "Z51U", attached_changer_api=False
    ),
    "forum-spectra-215-inquiry-medium-changer.txt": Inquiry(
        "Medium Changer", "SPECTRA", "215", "2202", attached_changer_api=False
    ),
    "ibm-03584L32-ts4500-inquiry-medium-changer.txt": Inquiry(
        "Medium Changer", "IBM", "03584L32", "2C02", attached_changer_api=False
    ),
}
PROGRESS = {
    "freebsd-ibm-33614lx-unload-progress-done.txt": ("unload", 3, 0),
    "mhvtl-l700-old-mtx-1.2-unload-progress-done.txt": ("unload", 39, 0),
}


def test_table_covers_every_capture() -> None:
    assert {p.name for p in OTHER.glob("*.txt")} == set(INQUIRIES) | set(PROGRESS)


@pytest.mark.parametrize("name", sorted(INQUIRIES))
def test_inquiry(name: str) -> None:
    inquiry = parse_inquiry((OTHER / name).read_text())
    assert inquiry == INQUIRIES[name]
    assert inquiry.is_changer == name.endswith("medium-changer.txt")


@pytest.mark.parametrize("name", sorted(PROGRESS))
def test_unload_progress(name: str) -> None:
    kind, slot, drive = PROGRESS[name]
    text = (OTHER / name).read_text()
    check_move_output(text, kind, slot=slot, drive=drive, command=("mtx", kind))  # type: ignore[arg-type]
    with pytest.raises(ParseError):
        check_move_output(text, kind, slot=slot + 1, drive=drive, command=("mtx", kind))  # type: ignore[arg-type]


def test_load_progress() -> None:
    done = "Loading media from Storage Element 4 into drive 1...done\n"
    check_move_output(done, "load", slot=4, drive=1, command=("mtx", "load", "4", "1"))
    with pytest.raises(ParseError, match="we asked for slot 4 / drive 0") as info:
        check_move_output(done, "load", slot=4, drive=0, command=("mtx", "load", "4", "0"))
    assert info.value.line == done.strip()
    with pytest.raises(ParseError, match="not understood"):
        check_move_output(
            "Loading media from Storage Element 4 into drive 1...",
            "load",
            slot=4,
            drive=1,
            command=("mtx",),
        )
    with pytest.raises(ParseError, match="got 0 lines"):
        check_move_output("", "load", slot=4, drive=1, command=("mtx",))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Product Type: Medium Changer\n", "no vendor line"),
        ("Product Type: Medium Changer\nProduct Type: Tape Drive\n", "second product_type"),
        ("Vendor ID: HP\n", "unexpected line"),
        ("Product Type: Medium Changer", "without a newline"),
    ],
)
def test_inquiry_refused(text: str, words: str) -> None:
    with pytest.raises(ParseError, match=words):
        parse_inquiry(text)
