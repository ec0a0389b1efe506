"""What users see: destinations in the seed's shape, with the worker's state added."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.journal import (
    DestinationRecord,
    DriveRecord,
    Journal,
    PoolRecord,
    RequestRecord,
    TapeRecord,
)
from worker.models import DestinationState, Pool, Tape, TaskDestination, TaskDestinationBody


def _when(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def tape_object(tape: TapeRecord, pool_id: int | None, library_id: int = 1) -> Tape:
    location = (
        f"Drive {tape.drive}"
        if tape.drive is not None
        else f"Slot {tape.slot}"
        if tape.slot is not None
        else "Unknown"
    )
    write_protect: list[str] = []
    if tape.locked:
        write_protect.append("logical_locked")
    if tape.write_protected:
        write_protect.append("physical")
    if tape.full:
        write_protect.append("full")
    kind = "cleaning" if tape.cleaning else f"data_lto{(tape.media or 'L0')[1]}"
    if tape.media == "M8":
        kind = "data_lto7m8"
    return Tape(
        id=tape.tape_id,
        tape_library_id=library_id,
        pool_id=pool_id,
        barcode=tape.barcode,
        location=location,
        type=kind,
        locked=int(tape.locked),
        scratch=int(tape.used_bytes == 0 and not tape.cleaning),
        cleaning=int(tape.cleaning),
        write_protect=write_protect,
        mounted=int(tape.drive is not None),
        ejected=int(tape.ejected),
        known=int(tape.known),
        mount_count=tape.mount_count,
        date_in=_when(tape.date_in),
        date_move=_when(tape.date_move),
        need_to_check=int(tape.need_to_check),
    )


def pool_object(pool: PoolRecord) -> Pool:
    return Pool(
        id=pool.pool_id,
        name=pool.name,
        comment=pool.comment or "",
        type=pool.type,
        content=pool.content,
        tape_write_protect_when_full=True,
    )


def state_of(
    destination: DestinationRecord,
    request: RequestRecord | None,
    drives: dict[int, DriveRecord],
) -> DestinationState:
    sequence = destination.sequence
    if destination.deleted:
        return DestinationState(
            state="destroyed", updated=_when(destination.updated), sequence=sequence
        )
    if request is None:
        return DestinationState(
            state=destination.status,
            reason=destination.reason,
            updated=_when(destination.updated),
            sequence=sequence,
        )
    drive = drives.get(request.drive) if request.drive is not None else None
    return DestinationState(
        state=request.state.value,
        barcode=request.barcode,
        drive=request.drive,
        device=drive.device if drive is not None else None,
        reason=request.reason,
        updated=_when(request.updated),
        sequence=sequence,
    )


async def destination_view(journal: Journal, destination: DestinationRecord) -> TaskDestination:
    request = await journal.latest_request_for(destination.id)
    drives = {d.index: d for d in await journal.drives()}
    pools = {p.name: p for p in await journal.pools()}
    barcode = request.barcode if request is not None and request.barcode else destination.barcode
    tape = await journal.tape(barcode) if barcode else None
    pool = pools.get(destination.pool) if destination.pool else None
    if pool is None and tape is not None and tape.pool is not None:
        pool = pools.get(tape.pool)
    body = TaskDestinationBody.model_validate(destination.body)
    return TaskDestination(
        **body.model_dump(),
        id=destination.id,
        tape=tape_object(tape, pools[tape.pool].pool_id if tape and tape.pool in pools else None)
        if tape is not None
        else None,
        pool=pool_object(pool) if pool is not None else None,
        state=state_of(destination, request, drives),
    )
