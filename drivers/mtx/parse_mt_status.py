"""`mt status` (mt-st 1.7) -> `DriveStatus`.

mt-st prints six lines for a Linux st drive (FORMATS.md 4). We read the numbers,
not the names: density names change between mt-st versions (`no translation` for
LTO-5 in old builds, for LTO-9 in 1.7), so the generation comes from the hex code.
The flags line must agree with the hex status word it follows; when it does not,
the text was damaged and we say so. GNU cpio's `mt` prints another format and is
rejected with UnsupportedToolError: it is a wrong tool, not a wrong tape.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.base import DriveStatus
from drivers.errors import ParseError, UnsupportedToolError
from drivers.mtx._text import split_lines

DEFAULT_COMMAND: tuple[str, ...] = ("mt", "status")

#: SCSI density code -> LTO generation. 0x5d is LTO-7 Type M (M8), which media.py
#: counts as generation 7 with type_m; 0x60 (LTO-9) is unknown to mt-st 1.7.
LTO_DENSITY: dict[int, int] = {
    0x40: 1,
    0x42: 2,
    0x44: 3,
    0x46: 4,
    0x58: 5,
    0x5A: 6,
    0x5C: 7,
    0x5D: 7,
    0x5E: 8,
    0x60: 9,
}

#: mtio.h GMT_* bits in the order mt-st prints their names.
FLAG_BITS: dict[str, int] = {
    "EOF": 0x80000000,
    "BOT": 0x40000000,
    "EOT": 0x20000000,
    "SM": 0x10000000,
    "EOD": 0x08000000,
    "WR_PROT": 0x04000000,
    "ONLINE": 0x01000000,
    "D_6250": 0x00800000,
    "D_1600": 0x00400000,
    "D_800": 0x00200000,
    "DR_OPEN": 0x00040000,
    "IM_REP_EN": 0x00010000,
    "CLN": 0x00008000,
}
_KNOWN_BITS = 0
for _bit in FLAG_BITS.values():
    _KNOWN_BITS |= _bit

_TYPE_RE = re.compile(r"^(?P<type>SCSI 1|SCSI 2|OnStream SC-, DI-, DP-, or USB) tape drive:$")
_POSITION_RE = re.compile(
    r"^File number=(?P<file>-?\d{1,10}), block number=(?P<block>-?\d{1,10})"
    r"(?:, partition=(?P<part>\d{1,3}))?\.$"
)
_DENSITY_RE = re.compile(
    r"^Tape block size (?P<bs>\d{1,10}) bytes\. Density code 0x(?P<code>[0-9a-f]{1,2})"
    r" \((?P<name>[^()]*)\)\.$"
)
_SOFT_RE = re.compile(r"^Soft error count since last status=(?P<n>\d{1,10})$")
_GSTAT_RE = re.compile(r"^General status bits on \((?P<hex>[0-9a-f]{1,8})\):$")
_FLAGS_RE = re.compile(r"^((?: [A-Z_0-9]+)*)$")
# GNU cpio mt (F6): numeric `name = value` lines mt-st never prints.
_GNU_RE = re.compile(
    r"^(drive type|drive status|sense key error|residue count|file number|block number) = "
)
# mt-st's fallback for drives that are not SCSI (mt.c do_status): not a library drive.
_OTHER_TYPE_RE = re.compile(r"^(qic-117 drive type|IDE-Tape|Unknown tape drive type)")


@dataclass(frozen=True, slots=True)
class MtStatus:
    """Everything `mt status` printed, as numbers. -1 positions become None."""

    drive_type: str
    file_number: int | None
    block_number: int | None
    partition: int | None
    block_size: int
    density_code: int
    density_name: str
    soft_errors: int
    gstat: int
    flags: frozenset[str]

    @property
    def drive_status(self) -> DriveStatus:
        online = "ONLINE" in self.flags
        return DriveStatus(
            online=online,
            # No tape is not always DR_OPEN (IBM TS4500, STK 9840: IM_REP_EN only,
            # F7.21): a drive holds a tape when it is online or reports a density.
            loaded=online or self.density_code != 0,
            write_protected="WR_PROT" in self.flags,
            at_bot="BOT" in self.flags,
            density_code=self.density_code if self.density_code != 0 else None,
            generation=LTO_DENSITY.get(self.density_code),
            needs_cleaning="CLN" in self.flags,
        )


def parse_mt_status_details(text: str, *, command: Sequence[str] = DEFAULT_COMMAND) -> MtStatus:
    """Parse mt-st's stdout for `status`; unknown lines (kernel console) are skipped."""
    lines = split_lines(text, command, what="mt status")
    found: dict[str, re.Match[str]] = {}
    flags_line: str | None = None
    for i, line in enumerate(lines):
        if _GNU_RE.match(line):
            raise UnsupportedToolError(
                "mt is not mt-st (GNU cpio mt output); install mt-st or configure its path",
                command=command,
            )
        if _OTHER_TYPE_RE.match(line):
            raise ParseError("mt status: not a SCSI tape drive", line=line, command=command)
        for key, pattern in (
            ("type", _TYPE_RE),
            ("position", _POSITION_RE),
            ("density", _DENSITY_RE),
            ("soft", _SOFT_RE),
            ("gstat", _GSTAT_RE),
        ):
            match = pattern.match(line)
            if match is None:
                continue
            if key in found:
                raise ParseError(f"mt status: second {key} line", line=line, command=command)
            found[key] = match
            if key == "gstat":
                # The flags are on the next line, which is empty when none is set.
                if i + 1 >= len(lines):
                    raise ParseError(
                        "mt status: flags line missing after the status bits (truncated?)",
                        line=line,
                        command=command,
                    )
                flags_line = lines[i + 1]
            break

    for key, what in (
        ("type", "'SCSI 2 tape drive:'"),
        ("position", "'File number=...'"),
        ("density", "'Tape block size ... Density code ...'"),
        ("gstat", "'General status bits on (...)'"),
    ):
        if key not in found:
            raise ParseError(
                f"mt status: no {what} line", line=lines[-1] if lines else "", command=command
            )
    assert flags_line is not None  # set together with found["gstat"]
    flags_match = _FLAGS_RE.match(flags_line)
    if flags_match is None:
        raise ParseError("mt status: flags line not understood", line=flags_line, command=command)
    flags = frozenset(flags_line.split())
    unknown = flags - FLAG_BITS.keys()
    if unknown:
        raise ParseError(
            f"mt status: unknown status flag {sorted(unknown)[0]}", line=flags_line, command=command
        )
    gstat_line = found["gstat"]
    gstat = int(gstat_line["hex"], 16)
    expected = {name for name, bit in FLAG_BITS.items() if gstat & bit}
    if expected != flags:
        raise ParseError(
            f"mt status: flags {' '.join(sorted(flags)) or '(none)'} disagree with"
            f" status bits {gstat:x}",
            line=flags_line,
            command=command,
        )

    position = found["position"]
    density = found["density"]
    soft = found.get("soft")
    file_number = int(position["file"])
    block_number = int(position["block"])
    return MtStatus(
        drive_type=found["type"]["type"],
        file_number=file_number if file_number >= 0 else None,
        block_number=block_number if block_number >= 0 else None,
        partition=int(position["part"]) if position["part"] is not None else None,
        block_size=int(density["bs"]),
        density_code=int(density["code"], 16),
        density_name=density["name"],
        soft_errors=int(soft["n"]) if soft is not None else 0,
        gstat=gstat,
        flags=flags,
    )


def parse_mt_status(text: str, *, command: Sequence[str] = DEFAULT_COMMAND) -> DriveStatus:
    """The drive's status for the worker: online, loaded, write protected, BOT, LTO generation."""
    return parse_mt_status_details(text, command=command).drive_status
