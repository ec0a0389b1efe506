"""`mtx --version` and `mt --version` -> the version we talk to, or UnsupportedToolError.

We parse one tool family each: mtx 1.3.x (1.2 printed other progress lines) and
mt-st (GNU cpio's mt prints another status format, FORMATS.md 6). Checked once at
start-up, so that a wrong tool is a clear message instead of odd parse errors later.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from drivers.errors import UnsupportedToolError

_MTX_VERSION_RE = re.compile(r"^mtx version (?P<version>\d+(?:\.\d+)*)\s*$", re.MULTILINE)
_MT_ST_VERSION_RE = re.compile(r"^mt-st v\. (?P<version>\d+(?:\.\d+)*)\s*$", re.MULTILINE)
_GNU_VERSION_RE = re.compile(r"^mt \(GNU cpio\) (?P<version>\S+)", re.MULTILINE)

#: The mtx versions whose output FORMATS.md describes.
SUPPORTED_MTX = ("1.3",)


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else "(no output)"


def parse_mtx_version(
    stdout: str, stderr: str, *, command: Sequence[str] = ("mtx", "--version")
) -> str:
    """mtx prints its version on stderr and exits 1 (FORMATS.md 2); we look at both streams."""
    for text in (stderr, stdout):
        if (match := _MTX_VERSION_RE.search(text)) is not None:
            version = match["version"]
            if not version.startswith(tuple(v + "." for v in SUPPORTED_MTX)):
                raise UnsupportedToolError(
                    f"mtx {version} is not supported (we parse mtx 1.3.x output)",
                    command=command,
                )
            return version
    raise UnsupportedToolError(
        f"`mtx --version` printed {_first_line(stderr or stdout)!r}, not mtx's version line",
        command=command,
        stderr=stderr,
    )


def parse_mt_version(stdout: str, *, command: Sequence[str] = ("mt", "--version")) -> str:
    """The mt-st version from `mt --version`; GNU mt or anything else is unsupported."""
    if (match := _MT_ST_VERSION_RE.search(stdout)) is not None:
        return match["version"]
    if (match := _GNU_VERSION_RE.search(stdout)) is not None:
        raise UnsupportedToolError(
            f"mt is GNU cpio mt {match['version']}, not mt-st; install mt-st"
            " (Debian: `update-alternatives --set mt /bin/mt-st`) or configure its path",
            command=command,
        )
    raise UnsupportedToolError(
        f"`mt --version` printed {_first_line(stdout)!r}, not mt-st's version line",
        command=command,
    )
