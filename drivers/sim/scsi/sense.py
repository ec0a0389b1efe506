"""SCSI status and fixed-format sense data (SPC-3 4.5.3)."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.errors import Sense

GOOD = 0x00
CHECK_CONDITION = 0x02

#: Response code 70h: current error, fixed format.
FIXED_CURRENT = 0x70
#: Fixed-format sense data is 18 bytes (additional sense length 10).
FIXED_LENGTH = 18

NO_SENSE = Sense(0x0, 0x00, 0x00)
INVALID_OPCODE = Sense(0x5, 0x20, 0x00)
INVALID_FIELD_IN_CDB = Sense(0x5, 0x24, 0x00)
INVALID_ELEMENT = Sense(0x5, 0x21, 0x01)
POWER_ON_RESET = Sense(0x6, 0x29, 0x00)
MEDIUM_MAY_HAVE_CHANGED = Sense(0x6, 0x28, 0x00)
BECOMING_READY = Sense(0x2, 0x04, 0x01)
MANUAL_INTERVENTION = Sense(0x2, 0x04, 0x03)


def fixed_sense(sense: Sense) -> bytes:
    """The 18 bytes of fixed-format sense data for a current error."""
    data = bytearray(FIXED_LENGTH)
    data[0] = FIXED_CURRENT
    data[2] = sense.key & 0x0F
    data[7] = FIXED_LENGTH - 8
    data[12] = sense.asc
    data[13] = sense.ascq
    return bytes(data)


def parse_fixed_sense(data: bytes) -> Sense:
    """The sense key, ASC and ASCQ of fixed-format sense data."""
    if len(data) < 14 or data[0] & 0x7F not in (0x70, 0x71):
        raise ValueError(f"not fixed-format sense data: {data.hex()}")
    return Sense(data[2] & 0x0F, data[12], data[13])


@dataclass(frozen=True, slots=True)
class Reply:
    """What the device answers to one command.

    `data` is the whole response; the caller truncates it to its allocation
    length. `delay_s` is how long the device takes before answering (a robot move,
    an inventory); `finish` is the change to apply to the state when that time has
    passed (see `changer.finish`).
    """

    status: int = GOOD
    data: bytes = b""
    sense: Sense | None = None
    delay_s: float = 0.0
    finish: Finish | None = None

    @property
    def sense_bytes(self) -> bytes:
        return fixed_sense(self.sense) if self.sense is not None else b""


@dataclass(frozen=True, slots=True)
class Finish:
    """A robot move to complete: `kind` names the state's `finish_<kind>` step."""

    kind: str
    first: int
    second: int


def check_condition(sense: Sense) -> Reply:
    return Reply(status=CHECK_CONDITION, sense=sense)
