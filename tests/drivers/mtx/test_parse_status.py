"""`mtx status` parser against every real capture in the shared corpus, and the edge
cases FORMATS.md describes, built from lines of those captures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drivers.errors import ParseError
from drivers.mtx.parse_status import parse_status

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO.parent / "shared" / "corpus"
STATUS_DIR = CORPUS / "mtx-status"


@dataclass(frozen=True)
class Expected:
    device: str
    drives: int
    slots: int
    ie: int
    #: slot number -> barcode (None: full without a label)
    full_slots: dict[int, str | None]
    #: drive index -> (barcode, source slot)
    full_drives: dict[int, tuple[str | None, int | None]] = field(default_factory=dict)
    ie_slots: tuple[int, ...] = ()


def _l8(*numbers: int) -> dict[int, str | None]:
    return {n: f"{n:06d}L8" for n in numbers}


BAREOS = "/dev/sg0"
EXPECTED: dict[str, Expected] = {
    "bareos-systemtest-2drives-24slots-4ie-empty.txt": Expected(
        BAREOS, 2, 24, 4, {}, ie_slots=(21, 22, 23, 24)
    ),
    "bareos-systemtest-2drives-24slots-4ie-impexp.txt": Expected(
        BAREOS, 2, 24, 4, _l8(1, 2, 3, 4, 5, 6, 7, 8, 21, 22, 23, 24), ie_slots=(21, 22, 23, 24)
    ),
    "bareos-systemtest-2drives-24slots-4ie-loaded1.txt": Expected(
        BAREOS,
        2,
        24,
        4,
        _l8(1, 3, 4, 5, 6, 7, 8),
        {0: ("000002L8", 2)},
        ie_slots=(21, 22, 23, 24),
    ),
    "bareos-systemtest-2drives-24slots-4ie-loaded2.txt": Expected(
        BAREOS,
        2,
        24,
        4,
        _l8(1, 2, 3, 4, 5, 7, 8),
        {1: ("000006L8", 6)},
        ie_slots=(21, 22, 23, 24),
    ),
    "bareos-systemtest-2drives-24slots-4ie-loadedboth.txt": Expected(
        BAREOS,
        2,
        24,
        4,
        _l8(1, 2, 5, 6, 7, 8),
        {0: ("000003L8", 3), 1: ("000004L8", 4)},
        ie_slots=(21, 22, 23, 24),
    ),
    "bareos-systemtest-2drives-24slots-4ie-notloaded.txt": Expected(
        BAREOS, 2, 24, 4, _l8(1, 2, 3, 4, 5, 6, 7, 8), ie_slots=(21, 22, 23, 24)
    ),
    "birdie1-tandberg-storageloader-1drive-7slots-lto5.txt": Expected(
        "/dev/sg5",
        1,
        7,
        0,
        {
            1: "000711L4",
            2: "A00008L5",
            3: "A00034L5",
            4: "A00014L5",
            5: "A00036L5",
            6: "A00025L5",
            7: "000218L5",
        },
    ),
    "cern-cta-docs-mhvtl-vlstk-2drives-9slots-1ie-edited.txt": Expected(
        "/dev/smc", 2, 9, 1, {n: f"V3100{n}TA" for n in range(1, 6)}, ie_slots=(9,)
    ),
    "dwara2-ibm-03584L32-ts4500-3drives-24slots-4ie-short-tags.txt": Expected(
        "/dev/tape/by-id/scsi-1IBM_03584L32_0000079313020400",
        3,
        24,
        4,
        {
            1: "V4A003",
            2: "V4B003",
            3: "V5A003",
            4: "V5B003",
            5: "V5C003",
            6: "VLA003",
            7: "UA001",
            8: "UB001",
            9: "UC001",
            10: "BRU001",
            11: "BRU002",
        },
        {0: ("BRU003", 12)},
        ie_slots=(21, 22, 23, 24),
    ),
    "forum-hp-dds3-4slot-changer-no-barcodes.txt": Expected(
        "/dev/changer", 1, 4, 0, {1: None, 2: None, 3: None, 4: None}
    ),
    "forum-spectra-215-2k-sony-ait-2drives-30slots-all-empty.txt": Expected(
        "/dev/changer", 2, 30, 0, {}
    ),
    "mhvtl-install-2007-4drives-37slots-4ie-cln.txt": Expected(
        "/dev/sg6",
        4,
        37,
        4,
        {
            **{n: f"SDLT0{n}S3" for n in range(1, 10)},
            **{10 + n: f"ULT00{n}L{(n - 1) % 4 + 1}" for n in range(1, 10)},
            **{20 + n: f"8MM00{n}X4" for n in range(1, 5)},
            31: "CLN001L1",
            32: "CLN002L1",
            33: "CLN003L1",
        },
        ie_slots=(34, 35, 36, 37),
    ),
    "proxmox-backup-test-2drives-24slots-4ie-cln-short-tag.txt": Expected(
        "/dev/tape/by-id/scsi-387408F60F0000",
        2,
        24,
        4,
        {1: "CLN002CU", 2: "test22L1", 3: "test23L1", 4: "CLN001CU", 5: "test1"},
        ie_slots=(21, 22, 23, 24),
    ),
    "pytarchive-ibm-ultrium-hh9-1drive-24slots-lto9-cln.txt": Expected(
        "/dev/sch0",
        1,
        24,
        0,
        dict(
            enumerate(
                [
                    "AAK788L9",
                    "CLN670L1",
                    "AAK780L9",
                    "AAK783L9",
                    "AAK876L9",
                    "AAK786L9",
                    "AAK789L9",
                    "AAK782L9",
                    "AAK877L9",
                    "AAK878L9",
                    "AAK879L9",
                    "AAK781L9",
                    "AAK790L9",
                    "AAK793L9",
                    "AAK796L9",
                    "AAK799L9",
                    "AAK791L9",
                    "AAK794L9",
                    "AAK797L9",
                    "AAK785L9",
                    "AAK792L9",
                    "AAK795L9",
                    "AAK798L9",
                ],
                start=1,
            )
        ),
        {0: ("AAK787L9", 24)},
    ),
}

#: Captures we must refuse, and the words the error must contain.
REJECTED: dict[str, str] = {
    "ibm-03584L32-ts4500-3drives-1840slots-255ie-empty-slots-with-blank-tag-TRUNCATED.txt": (
        "header says 1840 slots, listing has 48"
    ),
}


def test_table_covers_every_capture() -> None:
    files = {p.name for p in STATUS_DIR.glob("*.txt")}
    assert files, f"no corpus at {STATUS_DIR}"
    assert files == set(EXPECTED) | set(REJECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_parses_as_expected(name: str) -> None:
    want = EXPECTED[name]
    status = parse_status((STATUS_DIR / name).read_text())
    inv = status.inventory
    assert (status.device, status.drive_count, status.slot_count, status.import_export_count) == (
        want.device,
        want.drives,
        want.slots,
        want.ie,
    )
    assert [d.index for d in inv.drives] == list(range(want.drives))
    assert [s.number for s in inv.slots] == list(range(1, want.slots + 1))
    assert {s.number: s.barcode for s in inv.slots if s.full} == want.full_slots
    assert all(s.barcode is None for s in inv.slots if not s.full)
    assert {d.index: (d.barcode, d.source_slot) for d in inv.drives if d.full} == want.full_drives
    assert tuple(s.number for s in inv.slots if s.import_export) == want.ie_slots
    assert status.notes == ()
    for barcode, (kind, where) in (
        *((b, ("slot", n)) for n, b in want.full_slots.items() if b),
        *((b, ("drive", i)) for i, (b, _) in want.full_drives.items() if b),
    ):
        assert inv.where(barcode) == (kind, where)


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_truncated_capture_is_rejected(name: str) -> None:
    with pytest.raises(ParseError, match=REJECTED[name]) as info:
        parse_status((STATUS_DIR / name).read_text())
    assert info.value.command == ("mtx", "status")
    assert info.value.line is not None
    assert "Storage Element 48" in info.value.line


# -- edge cases, built from lines of the captures -------------------------------------

IBM = STATUS_DIR / REJECTED.__iter__().__next__()


def _ibm_header_fixed() -> str:
    """The TS4500 capture with its header made to match the 48 lines it kept."""
    text = IBM.read_text()
    return text.replace("1840 Slots ( 255 Import/Export )", "48 Slots ( 0 Import/Export )")


def test_empty_slot_with_blank_volume_tag_is_empty() -> None:
    inv = parse_status(_ibm_header_fixed()).inventory
    assert inv.slot(3).full is False
    assert inv.slot(3).barcode is None
    assert {s.number for s in inv.slots if s.full} == {1, 2, 4, 5, 6}
    assert inv.slot(1).barcode == "IBM006LA"


HEAD = "  Storage Changer /dev/sg3:2 Drives, 4 Slots ( 1 Import/Export )\n"


def _status(*lines: str, head: str = HEAD) -> str:
    return head + "".join(line + "\n" for line in lines)


def test_two_drives_claiming_the_same_home_slot_lose_it() -> None:
    # heratape (FORMATS.md 1.4): mtx hands one empty slot to both drives.
    text = _status(
        "Data Transfer Element 0:Full (Storage Element 2 Loaded):VolumeTag = AAA001L8",
        "Data Transfer Element 1:Full (Storage Element 2 Loaded):VolumeTag = AAA002L8",
        "      Storage Element 1:Full :VolumeTag=AAA003L8",
        "      Storage Element 2:Empty",
        "      Storage Element 3:Full :VolumeTag=AAA004L8",
        "      Storage Element 4 IMPORT/EXPORT:Empty",
    )
    status = parse_status(text)
    assert [d.source_slot for d in status.inventory.drives] == [None, None]
    assert [d.barcode for d in status.inventory.drives] == ["AAA001L8", "AAA002L8"]
    assert any("share home slot 2" in note for note in status.notes)


def test_home_slot_that_is_full_is_dropped() -> None:
    text = _status(
        "Data Transfer Element 0:Full (Storage Element 1 Loaded):VolumeTag = AAA001L8",
        "Data Transfer Element 1:Empty",
        "      Storage Element 1:Full :VolumeTag=AAA003L8",
        "      Storage Element 2:Empty",
        "      Storage Element 3:Empty",
        "      Storage Element 4 IMPORT/EXPORT:Empty",
    )
    status = parse_status(text)
    assert status.inventory.drive(0).source_slot is None
    assert status.notes


def test_home_slot_beyond_the_listing_is_refused() -> None:
    text = _status(
        "Data Transfer Element 0:Full (Storage Element 9 Loaded):VolumeTag = AAA001L8",
        "Data Transfer Element 1:Empty",
        "      Storage Element 1:Empty",
        "      Storage Element 2:Empty",
        "      Storage Element 3:Empty",
        "      Storage Element 4 IMPORT/EXPORT:Empty",
    )
    with pytest.raises(ParseError, match="names storage element 9") as info:
        parse_status(text)
    assert info.value.line is not None
    assert "Element 0" in info.value.line


def test_unknown_source_alternate_tag_and_tagless_full_drive() -> None:
    text = _status(
        "Data Transfer Element 0:Full (Unknown Storage Element Loaded)"
        ":VolumeTag = AAA001L8    :AlternateVolumeTag = ALT0001    ",
        "Data Transfer Element 1:Full (Storage Element 4 Loaded)",
        "      Storage Element 1:Full :VolumeTag=AAA003L8:AlternateVolumeTag=X",
        "      Storage Element 2:Full ",
        "      Storage Element 3:Full :VolumeTag=CLN001CU",
        "      Storage Element 4 IMPORT/EXPORT:Empty",
    )
    inv = parse_status(text).inventory
    assert inv.drive(0).barcode == "AAA001L8"
    assert inv.drive(0).source_slot is None
    assert inv.drive(1).full
    assert inv.drive(1).barcode is None
    # A drive's home may be a mailslot (FORMATS.md 1.5).
    assert inv.drive(1).source_slot == 4
    assert inv.slot(1).barcode == "AAA003L8"
    assert inv.slot(2).full
    assert inv.slot(2).barcode is None
    assert inv.empty_storage_slots() == []


def test_device_path_with_colons() -> None:
    head = (
        "  Storage Changer /dev/tape/by-path/pci-0000:3b:00.0-sas-0x5000e1-lun-1:1 Drives,"
        " 1 Slots ( 0 Import/Export )\n"
    )
    status = parse_status(
        _status("Data Transfer Element 0:Empty", "      Storage Element 1:Empty", head=head)
    )
    assert status.device == "/dev/tape/by-path/pci-0000:3b:00.0-sas-0x5000e1-lun-1"
    assert status.drive_count == 1


def test_label_on_two_cartridges_identifies_neither() -> None:
    text = _status(
        "Data Transfer Element 0:Full (Storage Element 2 Loaded):VolumeTag = AAA001L8",
        "Data Transfer Element 1:Empty",
        "      Storage Element 1:Full :VolumeTag=AAA001L8",
        "      Storage Element 2:Empty",
        "      Storage Element 3:Full :VolumeTag=AAA002L8",
        "      Storage Element 4 IMPORT/EXPORT:Empty",
    )
    status = parse_status(text)
    assert status.inventory.where("AAA001L8") is None
    assert status.inventory.drive(0).full
    assert status.inventory.slot(1).full
    assert status.inventory.where("AAA002L8") == ("slot", 3)
    assert any("AAA001L8" in note for note in status.notes)


GOOD = (
    "Data Transfer Element 0:Empty",
    "Data Transfer Element 1:Empty",
    "      Storage Element 1:Empty",
    "      Storage Element 2:Empty",
    "      Storage Element 3:Empty",
    "      Storage Element 4 IMPORT/EXPORT:Empty",
)


@pytest.mark.parametrize(
    ("text", "words", "line"),
    [
        (_status(*GOOD[:5]), "header says 4 slots, listing has 3", "Storage Element 3:Empty"),
        (_status(*GOOD[1:]), "expected Data Transfer Element 0, got 1", "Element 1:Empty"),
        (
            _status(GOOD[0], GOOD[0], *GOOD[2:]),
            "expected Data Transfer Element 1, got 0",
            "Element 0:Empty",
        ),
        (
            _status(*GOOD[:3], GOOD[2], *GOOD[4:]),
            "expected Storage Element 2, got 1",
            "Storage Element 1:Empty",
        ),
        (
            _status(*GOOD[:2], GOOD[2], "Data Transfer Element 2:Empty", *GOOD[3:]),
            "drive line after the storage elements",
            "Data Transfer Element 2",
        ),
        (
            _status(*GOOD[:5], "      Storage Element 4:Empty"),
            "header says 1 import/export slots, listing has 0",
            "Storage Changer",
        ),
        (HEAD + "\n".join(GOOD), "without a newline", "Storage Element 4 IMPORT/EXPORT:Empty"),
        (
            _status("Data Transfer Element:Empty", *GOOD[1:]),
            "format we do not know",
            "Data Transfer Element:Empty",
        ),
        (_status(*GOOD, "Cleaning is due"), "unexpected line", "Cleaning is due"),
        (_status(*GOOD, head=""), "expected the 'Storage Changer' header", GOOD[0]),
        ("", "empty output", ""),
        ("\n\n", "no 'Storage Changer' header", ""),
        (
            _status("Data Transfer Element 0:Empty:VolumeTag = AAA001L8", *GOOD[1:]),
            "format we do not know",
            "VolumeTag",
        ),
        (
            _status(*GOOD[:2], "      Storage Element 1:Full :VolumeTag=AB\x01C", *GOOD[3:]),
            "characters mtx never prints",
            "AB",
        ),
    ],
)
def test_refused(text: str, words: str, line: str) -> None:
    with pytest.raises(ParseError, match=words) as info:
        parse_status(text)
    assert info.value.command == ("mtx", "status")
    assert info.value.line is not None
    assert line in info.value.line
    assert "offending line" in str(info.value) or info.value.line == ""


def test_crlf_copy_and_stripped_indentation_parse() -> None:
    text = _status(*(line.strip() for line in GOOD)).replace("\n", "\r\n")
    inv = parse_status(text).inventory
    assert len(inv.slots) == 4
    assert inv.slot(4).import_export


def test_command_is_named_in_errors() -> None:
    with pytest.raises(ParseError) as info:
        parse_status("junk\n", command=("mtx", "-f", "/dev/sg3", "status"))
    assert "mtx -f /dev/sg3 status" in str(info.value)
    assert "'junk'" in str(info.value)
