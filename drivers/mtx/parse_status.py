"""`mtx status` (mtx 1.3.12) -> `Inventory`.

Where mtx itself is loose (indentation, `=` spacing, tag padding, blank tags on
empty slots, an invented or shared home slot) we are tolerant. Where a wrong reading
could make us move the wrong cartridge (a cut-off listing, header counts that do not
match the lines, an element listed twice, a drive line we do not understand) we
refuse the whole listing with a ParseError: a retry or an operator is cheaper than
a wrong move. FORMATS.md sections are cited as `F1.4` etc.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.base import DriveState, Inventory, SlotState
from drivers.errors import ParseError
from drivers.mtx._text import split_lines

DEFAULT_COMMAND: tuple[str, ...] = ("mtx", "status")

# F5: greedy `dev` so that a by-path device with colons keeps them (F7.1).
_HEADER_RE = re.compile(
    r"^\s*Storage Changer (?P<dev>.+):(?P<drives>\d+) Drives, (?P<slots>\d+) Slots"
    r" \( (?P<ie>\d+) Import/Export \)\s*$"
)
# F1.1: drive lines put spaces around `=`; slot lines do not (F7.3). The tag groups
# are lazy so that padding falls to the trailing `\s*`.
_DRIVE_RE = re.compile(
    r"^\s*Data Transfer Element (?P<n>\d+):"
    r"(?:(?P<empty>Empty)"
    r"|Full \((?:Storage Element (?P<src>\d+)|(?P<unknown>Unknown Storage Element)) Loaded\)"
    r"(?::VolumeTag ?= ?(?P<tag>.*?))?"
    r"(?::AlternateVolumeTag ?= ?(?P<alt>.*?))?)\s*$"
)
_SLOT_RE = re.compile(
    r"^\s*Storage Element (?P<n>\d+)(?P<ie> IMPORT/EXPORT)?:(?P<state>Full|Empty) ?"
    r"(?::VolumeTag ?= ?(?P<tag>.*?))?"
    r"(?::AlternateVolumeTag ?= ?(?P<alt>.*?))?\s*$"
)
# Anything that looks like an element line but did not match above is a format we
# do not know (mtx 1.2's `Data Transfer Element:Empty`, a cut line): never skip it.
_ELEMENT_HINT_RE = re.compile(r"^\s*(Data Transfer Element|Storage Element|Storage Changer)")

#: More digits than any library has elements; guards int() against absurd input.
_MAX_DIGITS = 6


@dataclass(frozen=True, slots=True)
class ChangerStatus:
    """A parsed `mtx status`: the header as printed and the inventory.

    `notes` says what we tolerated (a shared or implausible home slot, a
    duplicated label) so that the caller can log it; the inventory already
    reflects the safe reading.
    """

    device: str
    drive_count: int
    slot_count: int
    import_export_count: int
    inventory: Inventory
    notes: tuple[str, ...] = ()


def _tag(raw: str | None, line: str, command: Sequence[str]) -> str | None:
    """A volume tag without mtx's padding; a blank tag is no tag (F7.5)."""
    if raw is None:
        return None
    tag = raw.strip(" ")
    if not tag:
        return None
    # copy_barcode() keeps only bytes 0x20-0x7f (F1.2); anything else means the
    # text did not come from mtx unharmed.
    if any(not 0x20 <= ord(ch) <= 0x7F for ch in tag):
        raise ParseError("volume tag with characters mtx never prints", line=line, command=command)
    return tag


def _number(text: str, line: str, command: Sequence[str]) -> int:
    if len(text) > _MAX_DIGITS:
        raise ParseError("element number out of range", line=line, command=command)
    return int(text)


def _header_counts(match: re.Match[str], command: Sequence[str]) -> tuple[int, int, int]:
    line = match.string
    drives = _number(match["drives"], line, command)
    slots = _number(match["slots"], line, command)
    ie = _number(match["ie"], line, command)
    if ie > slots:
        raise ParseError(
            "mtx status: more import/export elements than slots in the header",
            line=line,
            command=command,
        )
    return drives, slots, ie


def _check_counts(
    header: re.Match[str],
    lines: list[str],
    drives: list[DriveState],
    slots: list[SlotState],
    command: Sequence[str],
) -> None:
    """The header counts what mtx parsed (F1.3); fewer lines means a cut listing (F7.13)."""
    want_drives, want_slots = int(header["drives"]), int(header["slots"])
    want_ie = int(header["ie"])
    last = lines[-1] if lines else ""
    if len(drives) != want_drives:
        raise ParseError(
            f"mtx status: header says {want_drives} drives, listing has {len(drives)} (truncated?)",
            line=last,
            command=command,
        )
    if len(slots) != want_slots:
        raise ParseError(
            f"mtx status: header says {want_slots} slots, listing has {len(slots)} (truncated?)",
            line=last,
            command=command,
        )
    ie_count = sum(1 for s in slots if s.import_export)
    if ie_count != want_ie:
        raise ParseError(
            f"mtx status: header says {want_ie} import/export slots, listing has {ie_count}",
            line=header.string,
            command=command,
        )


def parse_status(text: str, *, command: Sequence[str] = DEFAULT_COMMAND) -> ChangerStatus:
    """Parse mtx's stdout for `status`; raise ParseError naming the offending line."""
    lines = split_lines(text, command, what="mtx status")
    header: re.Match[str] | None = None
    drives: list[DriveState] = []
    slots: list[SlotState] = []
    drive_lines: list[str] = []
    expected_drives = expected_slots = expected_ie = 0

    for line in lines:
        if not line.strip():
            continue
        if header is None:
            match = _HEADER_RE.match(line)
            if match is None:
                raise ParseError(
                    "mtx status: expected the 'Storage Changer' header first",
                    line=line,
                    command=command,
                )
            header = match
            expected_drives, expected_slots, expected_ie = _header_counts(match, command)
            continue

        if (match := _DRIVE_RE.match(line)) is not None:
            if slots:
                raise ParseError(
                    "mtx status: drive line after the storage elements", line=line, command=command
                )
            number = _number(match["n"], line, command)
            if number != len(drives):
                raise ParseError(
                    f"mtx status: expected Data Transfer Element {len(drives)}, got {number}",
                    line=line,
                    command=command,
                )
            if match["empty"] is not None:
                drives.append(DriveState(index=number, full=False))
            else:
                source = None if match["src"] is None else _number(match["src"], line, command)
                drives.append(
                    DriveState(
                        index=number,
                        full=True,
                        barcode=_tag(match["tag"], line, command),
                        source_slot=source,
                    )
                )
            drive_lines.append(line)
            continue

        if (match := _SLOT_RE.match(line)) is not None:
            number = _number(match["n"], line, command)
            if number != len(slots) + 1:
                raise ParseError(
                    f"mtx status: expected Storage Element {len(slots) + 1}, got {number}",
                    line=line,
                    command=command,
                )
            full = match["state"] == "Full"
            # An empty slot's tag is what the library remembers or a blank field
            # (IBM TS4500, F1.1); the slot holds nothing, so it carries no label.
            tag = _tag(match["tag"], line, command)
            slots.append(
                SlotState(
                    number=number,
                    full=full,
                    barcode=tag if full else None,
                    import_export=match["ie"] is not None,
                )
            )
            continue

        if _ELEMENT_HINT_RE.match(line):
            raise ParseError(
                "mtx status: element line in a format we do not know", line=line, command=command
            )
        # mtx prints nothing else on stdout (F1.1): an unknown line means the
        # stream is not what we think it is.
        raise ParseError("mtx status: unexpected line", line=line, command=command)

    if header is None:
        raise ParseError("mtx status: no 'Storage Changer' header", line="", command=command)
    _check_counts(header, lines, drives, slots, command)
    notes: list[str] = []
    drives = _check_sources(drives, slots, drive_lines, notes, command)
    drives, slots = _check_barcodes(drives, slots, notes)
    return ChangerStatus(
        device=header["dev"].strip(),
        drive_count=expected_drives,
        slot_count=expected_slots,
        import_export_count=expected_ie,
        inventory=Inventory(drives=tuple(drives), slots=tuple(slots)),
        notes=tuple(notes),
    )


def _check_sources(
    drives: list[DriveState],
    slots: list[SlotState],
    drive_lines: list[str],
    notes: list[str],
    command: Sequence[str],
) -> list[DriveState]:
    """Keep a drive's home slot only when it is unambiguous (F1.4, F7.11).

    mtx invents a home slot when the library gives none and may hand the same slot
    to two drives; a home slot that is full cannot be where the tape goes back.
    We drop such hints (source_slot=None) rather than guess: the planner picks an
    empty slot itself. A number beyond the listing is not a hint but garbage.
    """
    claims: dict[int, int] = {}
    for drive, line in zip(drives, drive_lines, strict=True):
        if drive.source_slot is None:
            continue
        if not 1 <= drive.source_slot <= len(slots):
            raise ParseError(
                f"mtx status: drive {drive.index} names storage element {drive.source_slot},"
                f" the listing has {len(slots)}",
                line=line,
                command=command,
            )
        claims[drive.source_slot] = claims.get(drive.source_slot, 0) + 1
    result: list[DriveState] = []
    for drive in drives:
        source = drive.source_slot
        if source is not None:
            if claims[source] > 1:
                notes.append(f"drives share home slot {source}; home slot unknown")
                source = None
            elif slots[source - 1].full:
                notes.append(f"drive {drive.index}: home slot {source} is full; home slot unknown")
                source = None
        result.append(
            DriveState(
                index=drive.index, full=drive.full, barcode=drive.barcode, source_slot=source
            )
        )
    return result


def _check_barcodes(
    drives: list[DriveState], slots: list[SlotState], notes: list[str]
) -> tuple[list[DriveState], list[SlotState]]:
    """A label seen on two cartridges identifies neither: we track both by element.

    Keeping one of them would let `Inventory.where` pick a cartridge at random.
    """
    seen: dict[str, int] = {}
    elements: list[DriveState | SlotState] = [*drives, *slots]
    for element in elements:
        if element.full and element.barcode is not None:
            seen[element.barcode] = seen.get(element.barcode, 0) + 1
    duplicated = {barcode for barcode, count in seen.items() if count > 1}
    if not duplicated:
        return drives, slots
    notes.extend(
        f"label {barcode} on more than one cartridge; ignored" for barcode in sorted(duplicated)
    )
    new_drives = [
        DriveState(d.index, d.full, None, d.source_slot) if d.barcode in duplicated else d
        for d in drives
    ]
    new_slots = [
        SlotState(s.number, s.full, None, s.import_export) if s.barcode in duplicated else s
        for s in slots
    ]
    return new_drives, new_slots
