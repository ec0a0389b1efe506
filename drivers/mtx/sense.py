"""mtx's Request Sense block (stderr) -> `Sense`.

mtx prints the block line by line with a literal `mtx: Request Sense: ` prefix
(mtxl.c PrintRequestSense, FORMATS.md 3.3); the sense key comes as a name, ASC and
ASCQ as two hex digits. The key, ASC and ASCQ are the reliable part of an mtx
failure (FORMATS.md 7.16), so we read exactly those and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from drivers.errors import ParseError, Sense

#: mtxl.c sense_keys[], indexed by the sense key.
SENSE_KEY_NAMES: tuple[str, ...] = (
    "No Sense",
    "Recovered Error",
    "Not Ready",
    "Medium Error",
    "Hardware Error",
    "Illegal Request",
    "Unit Attention",
    "Data Protect",
    "Blank Check",
    "0x09",
    "0x0a",
    "Aborted Command",
    "0x0c",
    "Volume Overflow",
    "Miscompare",
    "0x0f",
)
_KEY_BY_NAME = {name: key for key, name in enumerate(SENSE_KEY_NAMES)}

_PREFIX = "mtx: Request Sense: "
_START = "Long Report="
_KEY_RE = re.compile(r"^Sense Key=(?P<name>.*?)\s*$")
_ASC_RE = re.compile(r"^Additional Sense Code = (?P<hex>[0-9A-Fa-f]{2})\s*$")
_ASCQ_RE = re.compile(r"^Additional Sense Qualifier = (?P<hex>[0-9A-Fa-f]{2})\s*$")

DEFAULT_COMMAND: tuple[str, ...] = ("mtx",)


def parse_sense(stderr: str, *, command: Sequence[str] = DEFAULT_COMMAND) -> Sense | None:
    """The last complete sense block in mtx's stderr, or None when there is none.

    mtx may print more than one block (a Unit Attention cleared, then the real
    failure); the last one belongs to the command that failed. A block whose key,
    ASC or ASCQ is missing or unreadable is a ParseError, never a guess.
    """
    blocks: list[dict[str, tuple[int, str]]] = []
    for raw in stderr.splitlines():
        # Progress text without a newline can precede the prefix (FORMATS.md 3.6).
        at = raw.find(_PREFIX)
        if at < 0:
            continue
        body = raw[at + len(_PREFIX) :]
        if body.startswith(_START) or not blocks:
            blocks.append({})
        block = blocks[-1]
        if (match := _KEY_RE.match(body)) is not None:
            name = match["name"]
            if name not in _KEY_BY_NAME:
                raise ParseError("unknown sense key name", line=raw, command=command)
            block["key"] = (_KEY_BY_NAME[name], raw)
        elif (match := _ASC_RE.match(body)) is not None:
            block["asc"] = (int(match["hex"], 16), raw)
        elif (match := _ASCQ_RE.match(body)) is not None:
            block["ascq"] = (int(match["hex"], 16), raw)
        elif body.startswith(("Sense Key", "Additional Sense")):
            raise ParseError("sense line not understood", line=raw, command=command)
    if not blocks:
        return None
    block = blocks[-1]
    for field in ("key", "asc", "ascq"):
        if field not in block:
            last = next(iter(reversed(block.values())), (0, stderr.rstrip().rsplit("\n", 1)[-1]))
            raise ParseError(
                f"request sense block without its {field} (truncated?)",
                line=last[1],
                command=command,
            )
    return Sense(key=block["key"][0], asc=block["asc"][0], ascq=block["ascq"][0])
