"""What users see: destinations in the seed's shape, with the worker's state added.

Views are built as plain JSON-ready dicts from records the journal reads in batches,
so that a page costs a handful of queries whatever its size and a long listing
streams without a model per row; `tests/worker/test_views.py` checks every view
against the seed's models.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from drivers.media import media_of
from worker.state.journal import (
    DestinationRecord,
    DriveRecord,
    Journal,
    PoolRecord,
    RequestRecord,
    TapeRecord,
)


@functools.lru_cache(maxsize=4096)
def _when(epoch: float | None) -> str | None:
    """ISO-8601 with milliseconds and `Z`, as the seed writes dates.

    Kept for the latest times seen: a batch's destinations and requests share the
    commit's time, and publishing their state formats it once per destination.
    """
    if epoch is None:
        return None
    value = datetime.fromtimestamp(epoch, UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def tape_type(tape: TapeRecord) -> str:
    """The archive manager's tape type (`data_lto9`, `cleaning`, `unknown`)."""
    if tape.cleaning:
        return "cleaning"
    media = media_of(tape.barcode)
    if media is None:
        return "unknown"
    # LTO-7 Type M (M8) is an LTO-7 cartridge; the archive manager has no type of its own
    # for it.
    return f"data_lto{7 if media.type_m else media.generation}"


def tape_json(tape: TapeRecord, pool_id: int | None, tape_library_id: int) -> dict[str, Any]:
    location = (
        f"Drive {tape.drive}"
        if tape.drive is not None
        else f"Slot {tape.slot}"
        if tape.slot is not None
        else None
    )
    write_protect: list[str] = []
    if tape.locked:
        write_protect.append("logical_locked")
    if tape.write_protected:
        write_protect.append("physical")
    if tape.full:
        write_protect.append("full")
    media = media_of(tape.barcode)
    capacity = media.capacity_bytes if media is not None and not tape.cleaning else None
    return {
        "id": tape.tape_id,
        "tape_library_id": tape_library_id,
        "pool_id": pool_id,
        "barcode": tape.barcode,
        "location": location,
        "type": tape_type(tape),
        "locked": int(tape.locked),
        "scratch": int(tape.used_bytes == 0 and not tape.cleaning and not tape.full),
        "cleaning": int(tape.cleaning),
        "write_protect": write_protect,
        "mounted": int(tape.drive is not None),
        "ejected": int(tape.ejected),
        "known": int(tape.known),
        "mount_count": tape.mount_count,
        "date_in": _when(tape.date_in),
        "date_move": _when(tape.date_move),
        "free": None if capacity is None else max(0, capacity - tape.used_bytes),
        "max": capacity,
        "last_size_update": None,
        "last_maintenance": None,
        "last_repack": None,
        "repack_status": None,
        "force_import_type": None,
        "need_to_check": int(tape.need_to_check),
    }


def pool_json(pool: PoolRecord) -> dict[str, Any]:
    return {
        "id": pool.pool_id,
        "name": pool.name,
        "comment": pool.comment or "",
        "type": pool.type,
        "content": pool.content,
        "primary_id": None,
        "storage_id": None,
        "tape_write_protect_when_full": pool.write_protect_when_full,
        "storage_extra_data": None,
    }


def folder_json(body: Mapping[str, Any], nested: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The folder the event carried, or what the flat fields tell of it."""
    if nested and nested.get("folder"):
        return dict(nested["folder"])
    folder_id, path = body.get("folder_id"), body.get("folder_path")
    if folder_id is None:
        return None
    return {
        "id": folder_id,
        "name": posixpath.basename(path.rstrip("/")) or path if path else None,
        "parent": None,
        "primary_id": None,
        "type": None,
        "permission": None,
        "size": None,
        "change_date": None,
        "modification_date": None,
        "access_date": None,
        "uid": None,
        "gid": None,
        "in_cache": None,
        "offline": None,
        "extern": None,
        "checksums": [],
        "tapes": [],
        "cloud_buckets": [],
        "nas_shares": [],
        "file_path": path,
    }


def state_json(
    destination: DestinationRecord,
    request: RequestRecord | None,
    drives: Mapping[int, DriveRecord],
) -> dict[str, Any]:
    if destination.deleted:
        state: dict[str, Any] = {"state": "destroyed", "updated": _when(destination.updated)}
        return {
            "barcode": None,
            "drive": None,
            "device": None,
            "reason": None,
            **state,
            "sequence": destination.sequence,
        }
    if request is None:
        return {
            "state": destination.status,
            "barcode": None,
            "drive": None,
            "device": None,
            "reason": destination.reason,
            "updated": _when(destination.updated),
            "sequence": destination.sequence,
        }
    drive = drives.get(request.drive) if request.drive is not None else None
    return {
        "state": request.state.value,
        "barcode": request.barcode,
        "drive": request.drive,
        "device": drive.device if drive is not None else None,
        "reason": request.reason,
        "updated": _when(request.updated),
        "sequence": destination.sequence,
    }


def destination_json(
    destination: DestinationRecord,
    request: RequestRecord | None,
    tapes: Mapping[str, TapeRecord],
    pools: Mapping[str, PoolRecord],
    drives: Mapping[int, DriveRecord],
    tape_library_id: int = 1,
) -> dict[str, Any]:
    """One destination in the seed's shape plus `state` (pure: records in, JSON out)."""
    barcode = request.barcode if request is not None and request.barcode else destination.barcode
    tape = tapes.get(barcode) if barcode else None
    pool = pools.get(destination.pool) if destination.pool else None
    if pool is None and tape is not None and tape.pool is not None:
        pool = pools.get(tape.pool)
    tape_pool = pools.get(tape.pool) if tape is not None and tape.pool else None
    body = destination.body
    nested = destination.nested
    return {
        "folder_id": body.get("folder_id"),
        "folder_path": body.get("folder_path"),
        "tape_id": body.get("tape_id"),
        "tape_barcode": body.get("tape_barcode"),
        "pool_id": body.get("pool_id"),
        "pool_name": body.get("pool_name"),
        "id": destination.id,
        "folder": folder_json(body, nested),
        "container": dict(nested["container"]) if nested and nested.get("container") else None,
        "tape": tape_json(tape, tape_pool.pool_id if tape_pool else None, tape_library_id)
        if tape
        else None,
        "pool": pool_json(pool) if pool is not None else None,
        "state": state_json(destination, request, drives),
    }


async def destination_views(
    journal: Journal, destinations: Sequence[DestinationRecord]
) -> list[dict[str, Any]]:
    """Many destinations at once: from the state in memory when the journal keeps it
    (no query at all), else four queries, whatever their number.

    The model holds what is committed: call this after the commit of the change
    shown, never inside its transaction.
    """
    model = journal.current_model
    if model is not None:
        library = await journal.tape_library_id()
        latest = model.latest_requests_for(d.id for d in destinations)
        return [
            destination_json(d, latest.get(d.id), model.tapes, model.pools, model.drives, library)
            for d in destinations
        ]
    requests = await journal.latest_requests_for([d.id for d in destinations])
    barcodes = [d.barcode for d in destinations if d.barcode]
    barcodes += [r.barcode for r in requests.values() if r.barcode]
    tapes = await journal.tapes_by_barcode(barcodes)
    pools = {p.name: p for p in await journal.pools()}
    drives = {d.index: d for d in await journal.drives()}
    library = await journal.tape_library_id()
    return [
        destination_json(d, requests.get(d.id), tapes, pools, drives, library) for d in destinations
    ]


async def destinations_by_ids(journal: Journal, ids: Sequence[int]) -> list[DestinationRecord]:
    """The destinations of these ids (live or destroyed), from memory when it can."""
    model = journal.current_model
    if model is None:
        return await journal.destinations_by_ids(ids)
    return [record for i in ids if (record := model.destination(i)) is not None]
