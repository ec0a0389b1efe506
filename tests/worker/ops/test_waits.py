"""Why a pending request waits: each reason an operator can act on."""

from __future__ import annotations

from dataclasses import replace

from tests.worker.records import drive_record, request_record, tape_record
from worker.core.requests import RequestState
from worker.ops.waits import why_waiting
from worker.state.records import RequestRecord

DRIVES = [drive_record(i) for i in range(2)]
TAPE = tape_record("NOD400L9", pool="p", slot=5, home_slot=5)


def request(
    rid: int,
    *,
    state: RequestState = RequestState.PENDING,
    drive: int | None = None,
    barcode: str | None = "NOD400L9",
    pool: str | None = None,
) -> RequestRecord:
    return request_record(rid, state=state, drive=drive, barcode=barcode, pool=pool)


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
