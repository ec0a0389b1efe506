"""The progress text of `mtx load` / `mtx unload` -> did mtx say it moved what we asked?

mtx 1.3 prints `Loading media from Storage Element S into drive D...` before the
MOVE MEDIUM and `done` after it (FORMATS.md 2, 3.6). Exit status 0 alone is not
enough: we also want mtx to name the same slot and drive we asked for. mtx 1.2's
unload line (`Unloading Data Transfer Element into Storage Element N...done`) is
accepted, since it names the slot; its silent load is not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from drivers.errors import ParseError

_LOAD_RE = re.compile(
    r"^Loading media from Storage Element (?P<slot>\d{1,6}) into drive (?P<drive>\d{1,6})"
    r"\.\.\.done\s*$"
)
_UNLOAD_RE = re.compile(
    r"^Unloading drive (?P<drive>\d{1,6}) into Storage Element (?P<slot>\d{1,6})\.\.\.done\s*$"
)
_UNLOAD_OLD_RE = re.compile(
    r"^Unloading Data Transfer Element into Storage Element (?P<slot>\d{1,6})\.\.\.done\s*$"
)


def check_move_output(
    stdout: str,
    kind: Literal["load", "unload"],
    *,
    slot: int,
    drive: int,
    command: Sequence[str],
) -> None:
    """Raise ParseError unless stdout is mtx's `...done` line for exactly this move."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ParseError(
            f"mtx {kind}: expected one progress line ending in 'done', got {len(lines)} lines",
            line=lines[-1] if lines else stdout,
            command=command,
        )
    line = lines[0]
    match = (_LOAD_RE if kind == "load" else _UNLOAD_RE).match(line)
    if match is None and kind == "unload":
        old = _UNLOAD_OLD_RE.match(line)
        if old is not None and int(old["slot"]) == slot:
            return
    if match is None:
        raise ParseError(f"mtx {kind}: progress line not understood", line=line, command=command)
    if int(match["slot"]) != slot or int(match["drive"]) != drive:
        raise ParseError(
            f"mtx {kind}: mtx reports slot {match['slot']} / drive {match['drive']},"
            f" we asked for slot {slot} / drive {drive}",
            line=line,
            command=command,
        )
