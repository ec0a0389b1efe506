"""The SCSI emulation, command by command, against the layouts of SPC-3, SMC-3 and
<linux/mtio.h> (independent of mtx: the bytes are decoded here by hand)."""

from __future__ import annotations

import errno
import struct

import pytest

from drivers.definition import DriveDefinition, LibraryDefinition, TapeDefinition
from drivers.errors import Sense
from drivers.sim.scsi import changer, tape
from drivers.sim.scsi.sense import CHECK_CONDITION, GOOD, Reply, parse_fixed_sense
from drivers.sim.state import ScriptedFault, SimState
from drivers.sim.timing import Timing

NOW = 1_000_000.0
TIMING = Timing(1000.0)
IDENTITY = changer.Identity(vendor="ACME", product="ROBOT 3000", revision="0042")


def library(*, offline_before_unload: bool = True) -> SimState:
    definition = LibraryDefinition(
        changer="/dev/sg7",
        slots=4,
        import_export=2,
        offline_before_unload=offline_before_unload,
        drives=(
            DriveDefinition(index=0, device="/dev/nst0", generation=8),
            DriveDefinition(index=1, device="/dev/nst1", generation=9),
        ),
        tapes=(
            TapeDefinition(barcode="A00001L8", slot=1),
            TapeDefinition(barcode="A00002L9", slot=2),
            TapeDefinition(barcode="A00005L7", slot=5),
            TapeDefinition(barcode="A00004L8", slot=4, write_protected=True),
        ),
    )
    return SimState.from_definition(definition, speed=1000.0)


def run(state: SimState, cdb: bytes) -> Reply:
    return changer.execute(cdb, state, IDENTITY, NOW)


def sense_of(reply: Reply) -> Sense:
    assert reply.status == CHECK_CONDITION
    sense = parse_fixed_sense(reply.sense_bytes)
    assert sense == reply.sense
    return sense


def res_cdb(type_code: int, start: int = 0, count: int = 0xFFFF, *, voltag: bool = True) -> bytes:
    return (
        bytes([changer.READ_ELEMENT_STATUS, (0x10 if voltag else 0) | type_code])
        + struct.pack(">HH", start, count)
        + bytes([0])
        + (0xFFFF).to_bytes(3, "big")
        + bytes([0, 0])
    )


def move_cdb(source: int, destination: int) -> bytes:
    return bytes([changer.MOVE_MEDIUM, 0]) + struct.pack(">HHH", 1, source, destination) + bytes(4)


def decode_elements(data: bytes) -> list[dict[str, object]]:
    """Element status data (SMC-3 6.10.2-6.10.4) to one dict per descriptor."""
    first, count = struct.unpack(">HH", data[0:4])
    total = int.from_bytes(data[5:8], "big")
    assert total == len(data) - 8
    found: list[dict[str, object]] = []
    offset = 8
    while offset < len(data):
        type_code, flags = data[offset], data[offset + 1]
        length = struct.unpack(">H", data[offset + 2 : offset + 4])[0]
        page_bytes = int.from_bytes(data[offset + 5 : offset + 8], "big")
        offset += 8
        end = offset + page_bytes
        while offset < end:
            d = data[offset : offset + length]
            tag = None
            if flags & 0x80:
                tag = d[12:44].decode("ascii").rstrip(" \x00") or None
            found.append(
                {
                    "type": type_code,
                    "address": struct.unpack(">H", d[0:2])[0],
                    "full": bool(d[2] & 0x01),
                    "impexp": bool(d[2] & 0x02),
                    "source": struct.unpack(">H", d[10:12])[0] if d[9] & 0x80 else None,
                    "tag": tag,
                }
            )
            offset += length
    assert len(found) == count
    if found:
        assert found[0]["address"] == first
    return found


# -- INQUIRY, TEST UNIT READY, REQUEST SENSE ----------------------------------------------------


def test_inquiry_names_a_medium_changer_with_the_definitions_identity() -> None:
    reply = run(library(), bytes([changer.INQUIRY, 0, 0, 0, 96, 0]))
    assert reply.status == GOOD
    data = reply.data
    assert data[0] & 0x1F == 0x08
    assert data[4] == len(data) - 5
    assert data[8:16] == b"ACME    "
    assert data[16:32] == b"ROBOT 3000      "
    assert data[32:36] == b"0042"


def test_inquiry_of_a_vital_product_data_page_is_refused() -> None:
    assert sense_of(run(library(), bytes([changer.INQUIRY, 1, 0x80, 0, 96, 0]))) == Sense(
        0x5, 0x24, 0x00
    )


def test_unknown_opcode_is_an_illegal_request() -> None:
    assert sense_of(run(library(), bytes([0x28] + [0] * 9))) == Sense(0x5, 0x20, 0x00)


def test_unit_attention_after_the_door_opened_is_reported_once() -> None:
    state = library()
    state.faults.unit_attention = True
    tur = bytes(6)
    # INQUIRY does not report it (SPC-3 5.8.7)...
    assert run(state, bytes([changer.INQUIRY, 0, 0, 0, 96, 0])).status == GOOD
    # ...the next other command does, and is not executed.
    assert sense_of(run(state, tur)) == Sense(0x6, 0x29, 0x00)
    assert run(state, tur).status == GOOD


def test_request_sense_returns_a_pending_import_attention_then_no_sense() -> None:
    state = library()
    state.faults.import_attention = True
    first = run(state, bytes([changer.REQUEST_SENSE, 0, 0, 0, 18, 0]))
    assert first.status == GOOD
    assert parse_fixed_sense(first.data) == Sense(0x6, 0x28, 0x00)
    second = run(state, bytes([changer.REQUEST_SENSE, 0, 0, 0, 18, 0]))
    assert parse_fixed_sense(second.data) == Sense(0x0, 0x00, 0x00)
    assert len(second.data) == 18
    assert second.data[7] == 10


# -- MODE SENSE page 1Dh ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cdb", "header"),
    [
        (bytes([changer.MODE_SENSE_6, 0x08, 0x1D, 0, 136, 0]), 4),
        (bytes([changer.MODE_SENSE_10, 0x08, 0x1D, 0, 0, 0, 0, 0, 136, 0]), 8),
    ],
)
def test_mode_sense_element_address_assignment(cdb: bytes, header: int) -> None:
    reply = run(library(), cdb)
    assert reply.status == GOOD
    data = reply.data
    if header == 4:
        assert data[0] == len(data) - 1
        assert data[3] == 0  # no block descriptors
    else:
        assert struct.unpack(">H", data[0:2])[0] == len(data) - 2
    page = data[header:]
    assert page[0] & 0x3F == 0x1D
    assert page[1] == 0x12
    mte, n_mte, st, n_st, ie, n_ie, dt, n_dt = struct.unpack(">8H", page[2:18])
    assert (mte, n_mte) == (1, 1)
    assert (st, n_st) == (1025, 4)
    assert (ie, n_ie) == (769, 2)
    assert (dt, n_dt) == (256, 2)


def test_mode_sense_of_another_page_is_refused() -> None:
    reply = run(library(), bytes([changer.MODE_SENSE_6, 0x08, 0x1C, 0, 136, 0]))
    assert sense_of(reply) == Sense(0x5, 0x24, 0x00)


# -- READ ELEMENT STATUS ------------------------------------------------------------------


def test_an_injected_undefined_element_type_answers_good_with_that_type() -> None:
    state = library()
    state.faults.scripted.append(ScriptedFault("inventory", "bad_element_type"))
    reply = run(state, res_cdb(changer.STORAGE))
    assert reply.status == GOOD
    # Byte 8 is the first element status page's type code (SMC-3 6.10.3).
    assert reply.data[8] == 83
    assert run(state, res_cdb(changer.STORAGE)).data[8] == changer.STORAGE


def test_storage_elements_with_volume_tags() -> None:
    reply = run(library(), res_cdb(changer.STORAGE))
    assert reply.status == GOOD
    found = decode_elements(reply.data)
    assert [(e["address"], e["full"], e["tag"]) for e in found] == [
        (1025, True, "A00001L8"),
        (1026, True, "A00002L9"),
        (1027, False, None),
        (1028, True, "A00004L8"),
    ]
    # The tag field is the 32-byte identifier padded with spaces.
    assert reply.data[16 + 12 : 16 + 44] == b"A00001L8".ljust(32)


def test_import_export_elements_are_flagged() -> None:
    found = decode_elements(run(library(), res_cdb(changer.IMPORT_EXPORT)).data)
    assert [(e["address"], e["full"], e["impexp"], e["tag"]) for e in found] == [
        (769, True, False, "A00005L7"),
        (770, False, False, None),
    ]


def test_data_transfer_elements_carry_their_source() -> None:
    state = library()
    state.begin_load(2, 1)
    state.finish_load(2, 1, NOW)
    found = decode_elements(run(state, res_cdb(changer.DATA_TRANSFER)).data)
    assert found == [
        {"type": 4, "address": 256, "full": False, "impexp": False, "source": None, "tag": None},
        {
            "type": 4,
            "address": 257,
            "full": True,
            "impexp": False,
            "source": 1026,
            "tag": "A00002L9",
        },
    ]


def test_transport_element() -> None:
    found = decode_elements(run(library(), res_cdb(changer.TRANSPORT)).data)
    assert [(e["type"], e["address"], e["full"]) for e in found] == [(1, 1, False)]


def test_all_element_types_in_address_order_one_page_per_type() -> None:
    found = decode_elements(run(library(), res_cdb(changer.ALL_TYPES)).data)
    assert [e["type"] for e in found] == [1, 4, 4, 3, 3, 2, 2, 2, 2]


def test_starting_address_and_number_of_elements() -> None:
    found = decode_elements(run(library(), res_cdb(changer.STORAGE, start=1026, count=2)).data)
    assert [e["address"] for e in found] == [1026, 1027]


def test_without_voltag_the_descriptor_is_twelve_bytes() -> None:
    data = run(library(), res_cdb(changer.STORAGE, voltag=False)).data
    assert data[9] & 0x80 == 0
    assert struct.unpack(">H", data[10:12])[0] == 12
    assert all(e["tag"] is None for e in decode_elements(data))


def test_unreadable_label_is_full_without_a_tag() -> None:
    state = library()
    state.slot(2).unreadable = True
    found = decode_elements(run(state, res_cdb(changer.STORAGE)).data)
    assert (found[1]["full"], found[1]["tag"]) == (True, None)


def test_injected_inventory_fault_is_sense_data() -> None:
    state = library()
    state.faults.scripted.append(ScriptedFault("inventory", "hardware"))
    assert sense_of(run(state, res_cdb(changer.STORAGE))) == Sense(0x4, 0x15, 0x01)
    assert run(state, res_cdb(changer.STORAGE)).status == GOOD


def test_storage_listing_takes_the_inventory_time() -> None:
    state = library()
    assert run(state, res_cdb(changer.STORAGE)).delay_s == pytest.approx(TIMING.inventory())
    assert run(state, res_cdb(changer.DATA_TRANSFER)).delay_s == 0.0


# -- MOVE MEDIUM, INITIALIZE ELEMENT STATUS, PREVENT ALLOW ----------------------------------


def test_move_medium_is_reserved_then_finished() -> None:
    state = library()
    reply = run(state, move_cdb(1025, 256))
    assert reply.status == GOOD
    assert reply.delay_s == pytest.approx(TIMING.move())
    assert reply.finish is not None
    assert state.slot(1).barcode == "A00001L8"  # nothing moved yet
    changer.finish(state, reply.finish, NOW)
    assert state.slot(1).barcode is None
    assert state.drive(0).barcode == "A00001L8"


def test_move_between_slots_and_to_the_mailslot() -> None:
    state = library()
    reply = run(state, move_cdb(1026, 770))
    assert reply.finish is not None
    changer.finish(state, reply.finish, NOW)
    assert state.slot(6).barcode == "A00002L9"


def loaded(*, offline_before_unload: bool = True) -> SimState:
    state = library(offline_before_unload=offline_before_unload)
    state.begin_load(1, 0)
    state.finish_load(1, 0, NOW)
    return state


@pytest.mark.parametrize(
    ("prepare", "cdb", "sense"),
    [
        (library, move_cdb(1027, 256), Sense(0x5, 0x3B, 0x0E)),
        (loaded, move_cdb(1026, 256), Sense(0x5, 0x3B, 0x0D)),
        (loaded, move_cdb(256, 1025), Sense(0x5, 0x53, 0x02)),
        (library, move_cdb(1030, 256), Sense(0x5, 0x21, 0x01)),
        (library, move_cdb(1025, 1), Sense(0x5, 0x21, 0x01)),
        (library, move_cdb(1025, 258), Sense(0x5, 0x21, 0x01)),
    ],
)
def test_move_medium_refusals(prepare: object, cdb: bytes, sense: Sense) -> None:
    state = prepare()  # type: ignore[operator]
    before = state.to_json()
    assert sense_of(run(state, cdb)) == sense
    assert state.to_json() == before


def test_unloading_a_drive_still_threading_is_not_ready() -> None:
    state = loaded(offline_before_unload=False)
    assert state.drive(0).ready_at > NOW
    assert sense_of(run(state, move_cdb(256, 1025))) == Sense(0x2, 0x04, 0x01)


@pytest.mark.parametrize(
    ("error", "sense"),
    [
        ("hardware", Sense(0x4, 0x15, 0x01)),
        ("manual_intervention", Sense(0x2, 0x04, 0x03)),
        ("power_cycle_required", Sense(0x2, 0x04, 0x22)),
        ("magazine_not_accessible", Sense(0x2, 0x3B, 0x11)),
        ("magazine_removed", Sense(0x2, 0x3B, 0x12)),
        ("not_ready", Sense(0x2, 0x04, 0x01)),
        ("removal_prevented", Sense(0x5, 0x53, 0x02)),
        ("unit_attention", Sense(0x6, 0x28, 0x00)),
    ],
)
def test_injected_move_faults_are_sense_data(error: str, sense: Sense) -> None:
    state = library()
    state.faults.scripted.append(ScriptedFault("load", error, drive=0))  # type: ignore[arg-type]
    assert sense_of(run(state, move_cdb(1025, 256))) == sense
    assert run(state, move_cdb(1025, 256)).status == GOOD


def test_dead_drive_is_a_hardware_error() -> None:
    state = library()
    state.drive(0).dead = "broken"
    assert sense_of(run(state, move_cdb(1025, 256))) == Sense(0x4, 0x44, 0x00)


def test_initialize_element_status_takes_the_inventory_time() -> None:
    state = library()
    state.faults.inventory_delay_s = 8.0
    reply = run(state, bytes([changer.INITIALIZE_ELEMENT_STATUS, 0, 0, 0, 0, 0]))
    assert reply.status == GOOD
    assert reply.delay_s == pytest.approx(TIMING.inventory() + TIMING.scaled(8.0))


def test_prevent_allow_medium_removal_is_accepted() -> None:
    assert (
        run(library(), bytes([changer.PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 1, 0])).status == GOOD
    )


# -- the drives: MTIOCGET, MTIOCTOP ------------------------------------------------------


def mtget(state: SimState, drive: int, now: float = NOW) -> tuple[int, ...]:
    reply = tape.get_status(state, drive, now)
    assert reply.errno == 0
    assert len(reply.data) == 48
    return struct.unpack("=qqqqqii", reply.data)


def test_empty_drive_status() -> None:
    mt_type, _resid, dsreg, gstat, _erreg, fileno, blkno = mtget(library(), 0)
    assert mt_type == 0x72
    assert dsreg >> 24 == 0
    assert gstat == tape.GMT_DR_OPEN | tape.GMT_IM_REP_EN
    assert (fileno, blkno) == (-1, -1)


def test_loading_drive_knows_the_density_but_is_not_online() -> None:
    state = loaded()
    _, _, dsreg, gstat, _, fileno, _ = mtget(state, 0)
    assert dsreg >> 24 == 0x5E  # LTO-8
    assert not gstat & tape.GMT_ONLINE
    assert fileno == -1


def test_ready_drive_is_online_at_bot() -> None:
    state = loaded()
    _, _, dsreg, gstat, _, fileno, blkno = mtget(state, 0, state.drive(0).ready_at)
    assert dsreg >> 24 == 0x5E
    assert gstat & tape.GMT_ONLINE
    assert gstat & tape.GMT_BOT
    assert not gstat & (tape.GMT_DR_OPEN | tape.GMT_WR_PROT)
    assert (fileno, blkno) == (0, 0)


def test_write_protected_and_cleaning_flags() -> None:
    state = library()
    state.begin_load(4, 0)
    state.finish_load(4, 0, NOW)
    state.drive(0).needs_cleaning = True
    gstat = mtget(state, 0, state.drive(0).ready_at)[3]
    assert gstat & tape.GMT_WR_PROT
    assert gstat & tape.GMT_CLN


def test_status_faults_are_errnos() -> None:
    state = library()
    state.faults.scripted.append(ScriptedFault("status", "not_ready", drive=0))
    assert tape.get_status(state, 0, NOW).errno == errno.ENOMEDIUM
    state.drive(1).dead = "broken"
    assert tape.get_status(state, 1, NOW).errno == errno.EIO


def mtop(op: int, count: int = 1) -> bytes:
    return struct.pack("=hxxi", op, count)


def test_offline_waits_for_ready_then_unthreads() -> None:
    state = loaded()
    ready_in = state.drive(0).ready_at - NOW
    reply = tape.operate(state, 0, mtop(tape.MTOFFL), NOW)
    assert reply.errno == 0
    assert reply.offline
    assert reply.delay_s == pytest.approx(ready_in + TIMING.unload(8))


def test_a_drive_unthreading_is_loaded_but_not_online_then_empty() -> None:
    """Between `mt offline` and its end the cartridge is in the drive (density, no
    DR_OPEN) but not ONLINE; after it, the drive reports DR_OPEN until the robot
    takes the cartridge out."""
    state = loaded()
    ready = state.drive(0).ready_at
    tape.operate(state, 0, mtop(tape.MTOFFL), ready)
    later = ready + TIMING.unload(8) / 2
    _type, _resid, dsreg, gstat, *_ = tape.MTGET.unpack(tape.get_status(state, 0, later).data)
    assert not gstat & tape.GMT_ONLINE
    assert not gstat & tape.GMT_DR_OPEN
    assert dsreg >> tape.MT_ST_DENSITY_SHIFT != 0
    # Another offline or a rewind meanwhile (a daemon restarted mid-offline) is bounded.
    assert tape.operate(state, 0, mtop(tape.MTOFFL), later).delay_s == TIMING.unload(8)
    assert tape.operate(state, 0, mtop(tape.MTREW), later).delay_s == TIMING.rewind(8)
    state.finish_offline(0)
    gstat = tape.MTGET.unpack(tape.get_status(state, 0, later + 3600).data)[3]
    assert gstat & tape.GMT_DR_OPEN
    assert not gstat & tape.GMT_ONLINE
    assert state.drive(0).barcode is not None


def test_rewind_and_no_medium() -> None:
    state = loaded()
    reply = tape.operate(state, 0, mtop(tape.MTREW), state.drive(0).ready_at)
    assert (reply.errno, reply.offline) == (0, False)
    assert reply.delay_s == pytest.approx(TIMING.rewind(8))
    assert tape.operate(state, 1, mtop(tape.MTREW), NOW).errno == errno.ENOMEDIUM
    assert tape.operate(state, 1, mtop(tape.MTOFFL), NOW).errno == errno.ENOMEDIUM


def test_offline_fault_is_an_io_error() -> None:
    state = loaded()
    state.faults.scripted.append(ScriptedFault("offline", "hardware", drive=0))
    assert tape.operate(state, 0, mtop(tape.MTOFFL), NOW).errno == errno.EIO


def test_unemulated_tape_operation_is_invalid() -> None:
    assert tape.operate(loaded(), 0, mtop(1), NOW).errno == errno.EINVAL  # MTFSF
