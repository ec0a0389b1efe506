"""Why a pending request waits: each reason an operator can act on."""

from __future__ import annotations

from dataclasses import replace

from worker.core.requests import RequestState
from worker.ops.waits import why_waiting
from worker.state.journal import DriveRecord, RequestRecord, TapeRecord

DRIVES = [DriveRecord(i, 9, f"/dev/nst{i}", None, True, 0, None, None, False) for i in range(2)]
TAPE = TapeRecord(
    "NOD400L9", 1, "p", "L9", False, False, False, False, False, False, 0, 0, 5, 5, None, 0,
    None, None, True,
)  # fmt: skip


def request(
    rid: int,
    *,
    state: RequestState = RequestState.PENDING,
    drive: int | None = None,
    barcode: str | None = "NOD400L9",
    pool: str | None = None,
) -> RequestRecord:
    return RequestRecord(rid, rid, barcode, pool, True, state, drive, None, 0, 0.0, 0.0, None, None)


def test_reasons() -> None:
    tapes = {TAPE.barcode: TAPE}
    pending = request(1)
    assert why_waiting(pending, DRIVES, tapes, [pending]) == "being planned"
    assert why_waiting(pending, DRIVES, tapes, [pending], draining=True).startswith("draining")
    down = [replace(d, up=False, reason="3 failures") for d in DRIVES]
    assert why_waiting(pending, down, tapes, [pending]) == (
        "drive down: 0 (3 failures), 1 (3 failures)"
    )
    busy = [request(2, state=RequestState.READY, drive=0, barcode="X"),
            request(3, state=RequestState.MOUNTING, drive=1, barcode="Y")]  # fmt: skip
    assert why_waiting(pending, DRIVES, tapes, [pending, *busy]) == "no compatible drive free"
    checked = {TAPE.barcode: replace(TAPE, need_to_check=True)}
    assert why_waiting(pending, DRIVES, checked, [pending]) == "tape NOD400L9 needs checking"
    old_drives = [replace(d, generation=7) for d in DRIVES]
    assert why_waiting(pending, old_drives, tapes, [pending]) == "no drive can use this tape"


def test_pool_cap() -> None:
    pending = request(1, barcode=None, pool="p")
    holding = request(2, state=RequestState.READY, drive=0, barcode=None, pool="p")
    reason = why_waiting(pending, DRIVES, {}, [pending, holding], pool_drive_cap=1)
    assert reason == "pool cap: pool p already has 1 drives"
    assert why_waiting(pending, DRIVES, {}, [pending, holding], pool_drive_cap=2) == "being planned"
