"""Hypothesis mutations of the real captures: a parser either refuses with a
DriverError (ParseError, UnsupportedToolError) or returns an answer that is still
self-consistent. Nothing else may escape, and no mutation may yield an inventory
that contradicts itself (a label in two places, a home slot that is full)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.base import DriveState, SlotState
from drivers.errors import DriverError
from drivers.mtx.classify import classify
from drivers.mtx.parse_inquiry import parse_inquiry
from drivers.mtx.parse_move import check_move_output
from drivers.mtx.parse_mt_status import FLAG_BITS, LTO_DENSITY, parse_mt_status_details
from drivers.mtx.parse_status import ChangerStatus, parse_status
from drivers.mtx.sense import parse_sense

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO.parent / "shared" / "corpus"


def _texts(folder: str) -> list[str]:
    return [p.read_text() for p in sorted((CORPUS / folder).glob("*.txt"))]


STATUS = _texts("mtx-status")
MT = _texts("mt-status")
ERRORS = _texts("mtx-errors")
OTHER = _texts("mtx-other")

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Fragments that mtx and mt actually print, so that mutations stay near the format.
FRAGMENTS = [
    "Full ",
    "Empty",
    ":VolumeTag=",
    ":VolumeTag = ",
    ":AlternateVolumeTag=",
    " IMPORT/EXPORT",
    "(Storage Element 3 Loaded)",
    "(Unknown Storage Element Loaded)",
    "Data Transfer Element 1:",
    "      Storage Element 2:",
    "  Storage Changer /dev/sg0:2 Drives, 4 Slots ( 1 Import/Export )",
    "AAA001L8",
    "CLN001CU",
    "    ",
    "\n",
    "\r",
    "\x00",
    "\xff",
    "ONLINE",
    " BOT",
    " DR_OPEN",
    "(41010000)",
    "0x58",
    "-1",
    "999999999999",
    "mtx: Request Sense: Sense Key=Unit Attention\n",
    "mtx: Request Sense: Additional Sense Code = 3B\n",
]


@st.composite
def mutated(draw: st.DrawFn, texts: list[str]) -> str:
    """A corpus capture with a few line- and character-level mutations."""
    lines = draw(st.sampled_from(texts)).split("\n")
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            lines = [""]
        op = draw(st.sampled_from(["drop", "dup", "swap", "edit", "insert", "cut", "digit"]))
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, line)
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "edit" and line:
            k = draw(st.integers(0, len(line)))
            piece = draw(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)))
            width = draw(st.integers(0, 6))
            lines[i] = line[:k] + piece + line[k + width :]
        elif op == "insert":
            lines.insert(i, draw(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=40))))
        elif op == "cut":
            k = draw(st.integers(0, len(line)))
            lines[i] = line[:k]
        elif op == "digit":
            digits = [k for k, ch in enumerate(line) if ch.isdigit()]
            if digits:
                k = draw(st.sampled_from(digits))
                lines[i] = line[:k] + draw(st.sampled_from("0123456789")) + line[k + 1 :]
    text = "\n".join(lines)
    if draw(st.integers(0, 4)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


_TAGS = ["AAA001L8", "AAA002L8", "CLN001CU", "test1", "  ", ""]


@st.composite
def state_mutated(draw: st.DrawFn) -> str:
    """A listing that keeps mtx's line format but describes another (maybe odd) state:
    slots flipped full/empty, labels swapped or repeated, home slots moved."""
    out: list[str] = []
    for raw in draw(st.sampled_from(STATUS)).splitlines():
        line = raw
        if "Storage Element" in line and "Loaded" not in line and draw(st.booleans()):
            head = raw.split(":", 1)[0]
            state = draw(st.sampled_from(["Full ", "Empty"]))
            tag = draw(st.sampled_from(_TAGS))
            line = f"{head}:{state}" + (f":VolumeTag={tag}" if tag or draw(st.booleans()) else "")
        elif raw.startswith("Data Transfer Element") and draw(st.booleans()):
            head = raw.split(":", 1)[0]
            if draw(st.booleans()):
                line = f"{head}:Empty"
            else:
                src = draw(st.one_of(st.integers(1, 40), st.none()))
                where = f"Storage Element {src}" if src else "Unknown Storage Element"
                tag = draw(st.sampled_from(_TAGS))
                line = f"{head}:Full ({where} Loaded)" + (f":VolumeTag = {tag}" if tag else "")
        out.append(line)
    return "\n".join(out) + "\n"


def assert_consistent(status: ChangerStatus) -> None:
    inv = status.inventory
    assert [d.index for d in inv.drives] == list(range(status.drive_count))
    assert [s.number for s in inv.slots] == list(range(1, status.slot_count + 1))
    assert sum(s.import_export for s in inv.slots) == status.import_export_count
    labels: list[str] = []
    homes: list[int] = []
    elements: list[DriveState | SlotState] = [*inv.drives, *inv.slots]
    for element in elements:
        if element.barcode is not None:
            assert element.full
            assert element.barcode == element.barcode.strip()
            assert element.barcode
            labels.append(element.barcode)
    for drive in inv.drives:
        if drive.source_slot is not None:
            assert drive.full
            assert not inv.slot(drive.source_slot).full
            homes.append(drive.source_slot)
    assert len(labels) == len(set(labels))
    assert len(homes) == len(set(homes))
    for barcode in labels:
        assert inv.where(barcode) is not None


@FUZZ
@given(mutated(STATUS))
def test_mtx_status_mutations(text: str) -> None:
    try:
        status = parse_status(text)
    except DriverError:
        return
    assert_consistent(status)


@FUZZ
@given(state_mutated())
def test_mtx_status_state_mutations(text: str) -> None:
    try:
        status = parse_status(text)
    except DriverError:
        return
    assert_consistent(status)


@FUZZ
@given(mutated(MT))
def test_mt_status_mutations(text: str) -> None:
    try:
        details = parse_mt_status_details(text)
    except DriverError:
        return
    assert details.flags == {n for n, bit in FLAG_BITS.items() if details.gstat & bit}
    status = details.drive_status
    assert status.online == ("ONLINE" in details.flags)
    assert status.loaded or not status.online
    assert status.generation == LTO_DENSITY.get(details.density_code)
    assert (status.density_code is None) == (details.density_code == 0)


@FUZZ
@given(mutated(ERRORS), st.integers(-1, 3), st.sampled_from(["mtx", "mt"]))
def test_classify_never_raises(text: str, returncode: int, tool: str) -> None:
    for stdout, stderr in ((text, ""), ("", text), (text, text)):
        error = classify(tool, (tool, "status"), returncode, stdout, stderr)  # type: ignore[arg-type]
        if error is not None:
            assert isinstance(error, DriverError)
            assert str(error)
        elif tool == "mtx":
            assert returncode == 0
            assert not stderr.strip()
        else:
            assert returncode == 0
    with contextlib.suppress(DriverError):
        parse_sense(text)


@FUZZ
@given(mutated(OTHER))
def test_inquiry_and_progress_mutations(text: str) -> None:
    try:
        inquiry = parse_inquiry(text)
    except DriverError:
        pass
    else:
        assert inquiry.vendor == inquiry.vendor.strip()
    kinds: tuple[Literal["load"], Literal["unload"]] = ("load", "unload")
    for kind in kinds:
        with contextlib.suppress(DriverError):
            check_move_output(text, kind, slot=3, drive=0, command=("mtx", kind))


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    for parse in (parse_status, parse_mt_status_details, parse_inquiry, parse_sense):
        with contextlib.suppress(DriverError):
            parse(text)
