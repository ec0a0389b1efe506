"""Why a pending request waits, in the operator's words (a pure function, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from drivers.media import can_read, can_write, media_of
from worker.core.requests import RequestState
from worker.state.journal import DriveRecord, RequestRecord, TapeRecord


def why_waiting(
    request: RequestRecord,
    drives: Sequence[DriveRecord],
    tapes: Mapping[str, TapeRecord],
    active: Sequence[RequestRecord],
    *,
    pool_drive_cap: int = 0,
    draining: bool = False,
) -> str:
    """The first reason that keeps `request` from a drive right now."""
    if draining:
        return "draining: nothing new is mounted"
    tape = tapes.get(request.barcode) if request.barcode else None
    if tape is not None:
        if tape.need_to_check:
            return f"tape {tape.barcode} needs checking"
        if tape.locked:
            return f"tape {tape.barcode} is locked"
    media = media_of(request.barcode) if request.barcode else None
    fits = can_write if request.write else can_read
    compatible = [d for d in drives if media is None or fits(d.generation, media)]
    if not compatible:
        return "no drive can use this tape"
    up = [d for d in compatible if d.up]
    if not up:
        down = ", ".join(f"{d.index} ({d.reason or 'down'})" for d in compatible)
        return f"drive down: {down}"
    if request.pool and pool_drive_cap:
        holding = {
            r.drive
            for r in active
            if r.pool == request.pool and r.drive is not None and r.id != request.id
        }
        if len(holding) >= pool_drive_cap:
            return f"pool cap: pool {request.pool} already has {len(holding)} drives"
    busy = {r.drive for r in active if r.state is not RequestState.PENDING}
    if all(d.index in busy for d in up):
        return "no compatible drive free"
    if tape is not None and tape.drive is not None and tape.drive in busy:
        return f"tape {tape.barcode} is in use in drive {tape.drive}"
    return "being planned"
