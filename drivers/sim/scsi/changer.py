"""The simulated library as an SMC-3 medium changer: CDB in, `Reply` out.

Element addresses: the robot (medium transport) is 1, drive N is 256+N,
import/export slot k (1-based) is 768+k, storage slot N is 1024+N. mtx numbers
slots by position (storage first, then import/export), so its slot numbers are
the simulator's.

Every command but INQUIRY and REQUEST SENSE first reports a pending unit
attention (a door was opened: 29/00; a cartridge was imported: 28/00) and is
then not executed, as SPC-3 5.8.7 prescribes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from drivers.errors import DriverError, Sense
from drivers.sim.scsi.sense import (
    INVALID_ELEMENT,
    INVALID_FIELD_IN_CDB,
    INVALID_OPCODE,
    MEDIUM_MAY_HAVE_CHANGED,
    NO_SENSE,
    POWER_ON_RESET,
    Finish,
    Reply,
    check_condition,
    fixed_sense,
)
from drivers.sim.state import SimState, make_error

TEST_UNIT_READY = 0x00
REQUEST_SENSE = 0x03
INITIALIZE_ELEMENT_STATUS = 0x07
INQUIRY = 0x12
MODE_SENSE_6 = 0x1A
PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
MODE_SENSE_10 = 0x5A
MOVE_MEDIUM = 0xA5
READ_ELEMENT_STATUS = 0xB8

#: Element type codes (SMC-3 table 23).
ALL_TYPES = 0
TRANSPORT = 1
STORAGE = 2
IMPORT_EXPORT = 3
DATA_TRANSFER = 4
#: An element type code SMC-3 does not define (a Spectra 215 once reported 83).
UNDEFINED_ELEMENT_TYPE = 83

TRANSPORT_ADDRESS = 1
DRIVE_BASE = 256
IE_BASE = 768
SLOT_BASE = 1024

#: Element Address Assignment mode page.
ELEMENT_ADDRESS_PAGE = 0x1D
ALL_PAGES = 0x3F

#: Peripheral device type of a medium changer (SPC-3 table 83).
MEDIUM_CHANGER = 0x08
#: Descriptor length with a primary volume tag: 12 bytes, then the 36-byte tag.
DESCRIPTOR_WITH_TAG = 48
DESCRIPTOR_WITHOUT_TAG = 12


@dataclass(frozen=True, slots=True)
class Identity:
    """What INQUIRY reports."""

    vendor: str = "TAPEWORK"
    product: str = "SIMULATED LIB"
    revision: str = "0001"


@dataclass(frozen=True, slots=True)
class Element:
    """One element as READ ELEMENT STATUS describes it."""

    type_code: int
    address: int
    full: bool
    #: The volume tag as the label reader reads it (None: none, or unreadable).
    tag: str | None = None
    #: Where the cartridge came from (drives), as an element address.
    source: int | None = None


# -- addresses ------------------------------------------------------------------------


def storage_count(state: SimState) -> int:
    return sum(1 for s in state.slots if not s.import_export)


def slot_address(state: SimState, number: int) -> int:
    """The element address of the simulator's slot `number` (1-based)."""
    storage = storage_count(state)
    return IE_BASE + number - storage if number > storage else SLOT_BASE + number


def drive_address(index: int) -> int:
    return DRIVE_BASE + index


def element_at(state: SimState, address: int) -> tuple[int, int] | None:
    """(element type, drive index or slot number) at an address, or None."""
    storage = storage_count(state)
    if address == TRANSPORT_ADDRESS:
        return TRANSPORT, 0
    if DRIVE_BASE <= address < IE_BASE:
        index = address - DRIVE_BASE
        if any(d.index == index for d in state.drives):
            return DATA_TRANSFER, index
        return None
    if IE_BASE < address < SLOT_BASE:
        number = storage + address - IE_BASE
        if number <= len(state.slots):
            return IMPORT_EXPORT, number
        return None
    if SLOT_BASE < address <= SLOT_BASE + storage:
        return STORAGE, address - SLOT_BASE
    return None


def elements(state: SimState) -> list[Element]:
    """Every element of the library, in address order."""
    found = [Element(TRANSPORT, TRANSPORT_ADDRESS, full=False)]
    for drive in sorted(state.drives, key=lambda d: d.index):
        source = drive.source_slot if drive.barcode is not None else None
        found.append(
            Element(
                DATA_TRANSFER,
                drive_address(drive.index),
                full=drive.barcode is not None,
                tag=drive.barcode,
                source=slot_address(state, source) if source is not None else None,
            )
        )
    for slot in state.slots:
        found.append(
            Element(
                IMPORT_EXPORT if slot.import_export else STORAGE,
                slot_address(state, slot.number),
                full=slot.barcode is not None,
                tag=None if slot.unreadable else slot.barcode,
            )
        )
    return sorted(found, key=lambda e: e.address)


# -- the commands ---------------------------------------------------------------------


def pending_attention(state: SimState) -> Sense | None:
    """Take the next unit attention the changer owes its initiator."""
    if state.faults.unit_attention:
        state.faults.unit_attention = False
        return POWER_ON_RESET
    if state.faults.import_attention:
        state.faults.import_attention = False
        return MEDIUM_MAY_HAVE_CHANGED
    return None


def execute(cdb: bytes, state: SimState, identity: Identity, now: float) -> Reply:
    """Answer one CDB; `now` (epoch seconds) decides whether a drive is still loading."""
    if not cdb:
        return check_condition(INVALID_OPCODE)
    opcode = cdb[0]
    if opcode == INQUIRY:
        return inquiry(cdb, identity)
    if opcode == REQUEST_SENSE:
        return request_sense(state)
    handler = _HANDLERS.get(opcode)
    if handler is None:
        return check_condition(INVALID_OPCODE)
    attention = pending_attention(state)
    if attention is not None:
        return check_condition(attention)
    return handler(cdb, state, now)


def inquiry(cdb: bytes, identity: Identity) -> Reply:
    """Standard INQUIRY data (SPC-3 6.4.2); no vital product data pages."""
    if len(cdb) < 6:
        return check_condition(INVALID_FIELD_IN_CDB)
    if cdb[1] & 0x01 or cdb[2]:
        return check_condition(INVALID_FIELD_IN_CDB)
    data = bytearray(36)
    data[0] = MEDIUM_CHANGER
    data[2] = 0x05  # SPC-3
    data[3] = 0x02  # response data format
    data[4] = len(data) - 5
    data[8:16] = _ascii(identity.vendor, 8)
    data[16:32] = _ascii(identity.product, 16)
    data[32:36] = _ascii(identity.revision, 4)
    return Reply(data=bytes(data))


def request_sense(state: SimState) -> Reply:
    """Sense data of a pending unit attention, else NO SENSE (autosense carries the rest)."""
    attention = pending_attention(state)
    return Reply(data=fixed_sense(attention or NO_SENSE))


def _test_unit_ready(cdb: bytes, state: SimState, now: float) -> Reply:
    return Reply()


def _prevent_allow(cdb: bytes, state: SimState, now: float) -> Reply:
    # The library has no lockable magazine: both states are accepted.
    return Reply()


def _mode_sense(cdb: bytes, state: SimState, now: float) -> Reply:
    """MODE SENSE(6)/(10) of the Element Address Assignment page (SMC-3 7.3.4)."""
    page = cdb[2] & 0x3F
    if page not in (ELEMENT_ADDRESS_PAGE, ALL_PAGES) or cdb[2] & 0xC0 == 0x40:
        return check_condition(INVALID_FIELD_IN_CDB)
    fault = state.take_fault("mode_sense")
    if fault is not None:
        return _fault_reply(fault)
    storage = storage_count(state)
    ie = len(state.slots) - storage
    drives = len(state.drives)
    body = struct.pack(
        ">BBHHHHHHHHH",
        ELEMENT_ADDRESS_PAGE,
        0x12,
        TRANSPORT_ADDRESS,
        1,
        SLOT_BASE + 1,
        storage,
        IE_BASE + 1,
        ie,
        DRIVE_BASE,
        drives,
        0,
    )
    if cdb[0] == MODE_SENSE_6:
        header = bytes([len(body) + 3, 0, 0, 0])
    else:
        header = struct.pack(">HBBBBH", len(body) + 6, 0, 0, 0, 0, 0)
    return Reply(data=header + body)


def _read_element_status(cdb: bytes, state: SimState, now: float) -> Reply:
    """READ ELEMENT STATUS (SMC-3 6.10): the elements from the starting address."""
    if len(cdb) < 12:
        return check_condition(INVALID_FIELD_IN_CDB)
    type_code = cdb[1] & 0x0F
    voltag = bool(cdb[1] & 0x10)
    start, count = struct.unpack(">HH", cdb[2:6])
    if type_code > DATA_TRANSFER:
        return check_condition(INVALID_FIELD_IN_CDB)
    fault = state.take_fault("inventory")
    if fault is not None and fault != "bad_element_type":
        return _fault_reply(fault)
    chosen = [
        e for e in elements(state) if e.address >= start and (type_code in (ALL_TYPES, e.type_code))
    ][:count]
    pages = b""
    i = 0
    while i < len(chosen):
        group = [chosen[i]]
        while (
            i + len(group) < len(chosen) and chosen[i + len(group)].type_code == group[0].type_code
        ):
            group.append(chosen[i + len(group)])
        pages += _element_page(group, voltag)
        i += len(group)
    if fault == "bad_element_type" and pages:
        # A firmware that answers GOOD with a page of an undefined element type.
        pages = bytes([UNDEFINED_ELEMENT_TYPE]) + pages[1:]
    first = chosen[0].address if chosen else 0
    header = struct.pack(">HH", first, len(chosen)) + b"\x00" + len(pages).to_bytes(3, "big")
    delay = state.timing().inventory() if type_code in (ALL_TYPES, STORAGE) else 0.0
    delay += state.timing().scaled(state.faults.inventory_delay_s) if delay else 0.0
    return Reply(data=header + pages, delay_s=delay)


def _element_page(group: list[Element], voltag: bool) -> bytes:
    length = DESCRIPTOR_WITH_TAG if voltag else DESCRIPTOR_WITHOUT_TAG
    descriptors = b"".join(_descriptor(e, voltag) for e in group)
    header = (
        bytes([group[0].type_code, 0x80 if voltag else 0x00])
        + struct.pack(">H", length)
        + b"\x00"
        + len(descriptors).to_bytes(3, "big")
    )
    return header + descriptors


def _descriptor(element: Element, voltag: bool) -> bytes:
    data = bytearray(DESCRIPTOR_WITH_TAG if voltag else DESCRIPTOR_WITHOUT_TAG)
    struct.pack_into(">H", data, 0, element.address)
    flags = 0x01 if element.full else 0x00
    if element.type_code == IMPORT_EXPORT:
        # IMPEXP: placed by the robot; INENAB and EXENAB: both directions work.
        flags |= 0x08 | 0x20 | 0x10
    elif element.type_code in (STORAGE, DATA_TRANSFER):
        flags |= 0x08  # ACCESS
    data[2] = flags
    if element.source is not None:
        data[9] = 0x80  # SVALID
        struct.pack_into(">H", data, 10, element.source)
    if voltag and element.full and element.tag is not None:
        data[12:44] = _ascii(element.tag, 32)
    return bytes(data)


def _initialize_element_status(cdb: bytes, state: SimState, now: float) -> Reply:
    fault = state.take_fault("inventory")
    if fault is not None:
        return _fault_reply(fault)
    return Reply(
        delay_s=state.timing().inventory() + state.timing().scaled(state.faults.inventory_delay_s)
    )


def _move_medium(cdb: bytes, state: SimState, now: float) -> Reply:
    """MOVE MEDIUM (SMC-3 6.6): checked and reserved now, applied by `finish`."""
    if len(cdb) < 12:
        return check_condition(INVALID_FIELD_IN_CDB)
    _transport, source, destination = struct.unpack(">HHH", cdb[2:8])
    if cdb[10] & 0x01:
        # No cartridge here is two-sided.
        return check_condition(INVALID_FIELD_IN_CDB)
    src = element_at(state, source)
    dst = element_at(state, destination)
    if src is None or dst is None or TRANSPORT in (src[0], dst[0]):
        return check_condition(INVALID_ELEMENT)
    try:
        if src[0] == DATA_TRANSFER and dst[0] == DATA_TRANSFER:
            return check_condition(INVALID_ELEMENT)
        if dst[0] == DATA_TRANSFER:
            delay = state.begin_load(src[1], dst[1])
            return Reply(delay_s=delay, finish=Finish("load", src[1], dst[1]))
        if src[0] == DATA_TRANSFER:
            drive = state.drive(src[1])
            threading = drive.barcode is not None and drive.threaded and now < drive.ready_at
            if threading and not state.offline_before_unload:
                # A library that unthreads by itself must wait for the drive to
                # finish threading first.
                return check_condition(
                    make_error("not_ready", f"drive {drive.index} loading").sense or NO_SENSE
                )
            delay = state.begin_unload(src[1], dst[1])
            return Reply(delay_s=delay, finish=Finish("unload", src[1], dst[1]))
        delay = state.begin_transfer(src[1], dst[1])
        return Reply(delay_s=delay, finish=Finish("transfer", src[1], dst[1]))
    except DriverError as exc:
        return check_condition(exc.sense or Sense(0x4, 0x44, 0x00))


def finish(state: SimState, move: Finish, now: float) -> None:
    """Apply a move whose time has passed (the state's `finish_*` step)."""
    if move.kind == "load":
        state.finish_load(move.first, move.second, now)
    elif move.kind == "unload":
        state.finish_unload(move.first, move.second, now)
    elif move.kind == "transfer":
        state.finish_transfer(move.first, move.second, now)
    else:
        raise ValueError(f"unknown move {move.kind!r}")


def _fault_reply(kind: str) -> Reply:
    sense = make_error(kind, "injected").sense
    assert sense is not None
    return check_condition(sense)


def _ascii(text: str, width: int) -> bytes:
    return text.encode("ascii", errors="replace")[:width].ljust(width, b" ")


_HANDLERS = {
    TEST_UNIT_READY: _test_unit_ready,
    INITIALIZE_ELEMENT_STATUS: _initialize_element_status,
    MODE_SENSE_6: _mode_sense,
    MODE_SENSE_10: _mode_sense,
    PREVENT_ALLOW_MEDIUM_REMOVAL: _prevent_allow,
    MOVE_MEDIUM: _move_medium,
    READ_ELEMENT_STATUS: _read_element_status,
}
