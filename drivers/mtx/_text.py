"""Small helpers the parsers share: splitting tool output into lines, default commands."""

from __future__ import annotations

from collections.abc import Sequence

from drivers.errors import ParseError


def split_lines(text: str, command: Sequence[str], *, what: str) -> list[str]:
    """The output's lines; output not ending in a newline was cut off, so we refuse it.

    mtx and mt-st end every line with a newline (putchar('\\n') / printf("\\n")); a
    last line without one is a truncated capture or a killed tool, and its content
    (a cut barcode, a missing flag) would be a wrong answer, not a partial one.
    """
    if not text:
        raise ParseError(f"{what}: empty output", line="", command=command)
    if not text.endswith("\n"):
        last = text.rsplit("\n", 1)[-1]
        raise ParseError(
            f"{what}: output ends without a newline (truncated?)", line=last, command=command
        )
    # CRLF copies are tolerated: mtx itself never prints '\r'.
    return [line.rstrip("\r") for line in text[:-1].split("\n")]
