"""Cartridge facts that follow from a barcode: media generation, cleaning, compatibility.

LTO rules (SCHEDULING.md 2.4): a drive writes its own generation and the one
before; it reads two generations back up to LTO-7, only one back from LTO-8 on.
LTO-7 Type M (M8) works only in LTO-8 drives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drivers.errors import InvalidArgumentError

#: Volume tags are at most 32 printable characters; we accept the conservative
#: alphabet libraries actually print, so a tag can never smuggle an argument.
BARCODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}$")


def validate_barcode(barcode: str) -> str:
    """Return the barcode, or raise when it could not be a volume tag."""
    if not isinstance(barcode, str) or not BARCODE_RE.fullmatch(barcode):
        raise InvalidArgumentError(f"invalid barcode {barcode!r}", barcode=None)
    return barcode


def is_cleaning(barcode: str) -> bool:
    """Cleaning cartridges carry the CLN prefix (and often a CU suffix)."""
    return barcode.upper().startswith("CLN")


@dataclass(frozen=True, slots=True, order=True)
class Media:
    """A cartridge type: the LTO generation, and whether it is Type M (M8)."""

    generation: int
    type_m: bool = False

    @property
    def label(self) -> str:
        return "M8" if self.type_m else f"L{self.generation}"

    @property
    def capacity_bytes(self) -> int:
        """Native (uncompressed) capacity: what a planner may count on."""
        if self.type_m:
            return 9 * 10**12
        return _NATIVE_GB.get(self.generation, 0) * 10**9


#: Native capacity of LTO-1..9 cartridges, GB (SCHEDULING.md 2.1).
_NATIVE_GB = {1: 100, 2: 200, 3: 400, 4: 800, 5: 1500, 6: 2500, 7: 6000, 8: 12000, 9: 18000}


_SUFFIX_RE = re.compile(r"(L[1-9]|M8)$", re.IGNORECASE)


def media_of(barcode: str) -> Media | None:
    """The media from the LTO suffix, or None when the label has none."""
    match = _SUFFIX_RE.search(barcode)
    if match is None:
        return None
    suffix = match.group(1).upper()
    if suffix == "M8":
        return Media(7, type_m=True)
    return Media(int(suffix[1]))


def can_write(drive_generation: int, media: Media) -> bool:
    if media.type_m:
        return drive_generation == 8
    return media.generation in (drive_generation, drive_generation - 1)


def can_read(drive_generation: int, media: Media) -> bool:
    if media.type_m:
        return drive_generation == 8
    back = 2 if drive_generation <= 7 else 1
    return drive_generation - back <= media.generation <= drive_generation


def parse_generation(text: str) -> int:
    """'LTO-9', 'lto9', 'LTO9' or '9' -> 9."""
    match = re.fullmatch(r"(?:lto-?)?([1-9])", text.strip(), re.IGNORECASE)
    if match is None:
        raise ValueError(f"not an LTO generation: {text!r} (expected e.g. 'LTO-9')")
    return int(match.group(1))
