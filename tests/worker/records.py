"""The journal's records as tests build them: every field named, with defaults for a
plain pending request, an empty drive that is up and an unremarkable tape, so that a
test says only what matters to it."""

from __future__ import annotations

from typing import Any

from worker.core.requests import RequestState
from worker.state.records import DriveRecord, RequestRecord, TapeRecord


def request_record(
    rid: int = 1,
    *,
    state: RequestState = RequestState.PENDING,
    barcode: str | None = "NOD400L9",
    pool: str | None = None,
    drive: int | None = None,
    arrival: float = 0.0,
    **fields: Any,
) -> RequestRecord:
    values: dict[str, Any] = {
        "id": rid,
        "destination_id": rid,
        "barcode": barcode,
        "pool": pool,
        "write": True,
        "state": state,
        "drive": drive,
        "reason": None,
        "attempts": 0,
        "arrival": arrival,
        "updated": arrival,
        "lease_expires": None,
        "size_bytes": None,
    }
    return RequestRecord(**(values | fields))


def drive_record(
    index: int = 0,
    *,
    up: bool = True,
    barcode: str | None = None,
    generation: int = 9,
    **fields: Any,
) -> DriveRecord:
    values: dict[str, Any] = {
        "index": index,
        "generation": generation,
        "device": f"/dev/nst{index}",
        "barcode": barcode,
        "up": up,
        "failures": 0,
        "reason": None,
        "idle_since": None,
        "needs_cleaning": False,
    }
    return DriveRecord(**(values | fields))


def tape_record(barcode: str = "NOD400L9", *, pool: str | None = None, **fields: Any) -> TapeRecord:
    values: dict[str, Any] = {
        "barcode": barcode,
        "tape_id": 1,
        "pool": pool,
        "media": barcode[-2:],
        "cleaning": barcode.startswith("CLN"),
        "locked": False,
        "write_protected": False,
        "full": False,
        "need_to_check": False,
        "ejected": False,
        "used_bytes": 0,
        "cleaning_uses_left": 0,
        "slot": 1,
        "home_slot": 1,
        "drive": None,
        "mount_count": 0,
        "date_in": None,
        "date_move": None,
        "known": True,
    }
    return TapeRecord(**(values | fields))
