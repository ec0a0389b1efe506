"""`mtx inquiry` -> `Inquiry`: what answers on the changer device.

Used at start-up: a changer path that answers as a tape drive (or a disk) is a
configuration error we want to name before the first move.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.errors import ParseError
from drivers.mtx._text import split_lines

DEFAULT_COMMAND: tuple[str, ...] = ("mtx", "inquiry")

# mtx.c ReportInquiry: raw, space-padded bytes between quotes (FORMATS.md 2).
_FIELDS: dict[str, re.Pattern[str]] = {
    "product_type": re.compile(r"^Product Type: (?P<v>.+?)\s*$"),
    "vendor": re.compile(r"^Vendor ID: '(?P<v>[^']*)'\s*$"),
    "product": re.compile(r"^Product ID: '(?P<v>[^']*)'\s*$"),
    "revision": re.compile(r"^Revision: '(?P<v>[^']*)'\s*$"),
    "changer_api": re.compile(r"^Attached Changer API: (?P<v>Yes|No)\s*$"),
}


@dataclass(frozen=True, slots=True)
class Inquiry:
    product_type: str
    vendor: str
    product: str
    revision: str
    attached_changer_api: bool

    @property
    def is_changer(self) -> bool:
        return self.product_type == "Medium Changer"


def parse_inquiry(text: str, *, command: Sequence[str] = DEFAULT_COMMAND) -> Inquiry:
    """All five lines are required; padding inside the quotes is dropped."""
    lines = split_lines(text, command, what="mtx inquiry")
    values: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            continue
        for name, pattern in _FIELDS.items():
            if (match := pattern.match(line)) is not None:
                if name in values:
                    raise ParseError(f"mtx inquiry: second {name} line", line=line, command=command)
                values[name] = match["v"].strip()
                break
        else:
            raise ParseError("mtx inquiry: unexpected line", line=line, command=command)
    missing = [name for name in _FIELDS if name not in values]
    if missing:
        raise ParseError(
            f"mtx inquiry: no {missing[0]} line", line=lines[-1] if lines else "", command=command
        )
    return Inquiry(
        product_type=values["product_type"],
        vendor=values["vendor"],
        product=values["product"],
        revision=values["revision"],
        attached_changer_api=values["changer_api"] == "Yes",
    )
