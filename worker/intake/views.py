"""What users see: destinations in the seed's shape, with the worker's state added.

Views are built as plain JSON-ready dicts from records the journal reads in batches,
so that a page costs a handful of queries whatever its size and a long listing
streams without a model per row; `tests/worker/test_views.py` checks every view
against the seed's models.

The state MQTT publishes is the same view already serialised (`destination_payload`):
the bytes of `json.dumps(destination_json(...))`, spliced from serialised parts, with
the tape and pool objects serialised once per record (`ViewFragments`) rather than
once per destination that shows them.
"""

from __future__ import annotations

import functools
import json
import math
import posixpath
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any

import orjson

from drivers.media import media_of
from worker.seed.models import FOLDER_LIST_FIELDS, FOLDER_UNKNOWN_FIELDS
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
    """ISO-8601 with milliseconds and `Z`, as the seed writes dates: what
    `datetime.fromtimestamp(epoch, UTC)` gives, formatted.

    Kept for the latest times seen: a batch's destinations and requests share the
    commit's time, and publishing their state formats it once per destination. A new
    instant (each create's) formats its second once (`_second`) and rounds its
    microseconds as `datetime` does (half to even, a carry into the next second).
    """
    if epoch is None:
        return None
    fraction, whole = math.modf(epoch)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole += 1
        micros -= 1_000_000
    elif micros < 0:
        whole -= 1
        micros += 1_000_000
    return f"{_second(int(whole))}{micros // 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _second(epoch: int) -> str:
    """The date and time of a whole second, up to the decimal point."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


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
        "name": _folder_name(path),
        **dict.fromkeys(FOLDER_UNKNOWN_FIELDS),
        **{key: [] for key in FOLDER_LIST_FIELDS},
        "file_path": path,
    }


def _folder_name(path: Any) -> Any:
    return posixpath.basename(path.rstrip("/")) or path if path else None


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


def _shown(
    destination: DestinationRecord,
    request: RequestRecord | None,
    tapes: Mapping[str, TapeRecord],
    pools: Mapping[str, PoolRecord],
) -> tuple[TapeRecord | None, int | None, PoolRecord | None]:
    """The tape a destination shows (with its pool's id) and the pool it shows."""
    barcode = request.barcode if request is not None and request.barcode else destination.barcode
    tape = tapes.get(barcode) if barcode else None
    pool = pools.get(destination.pool) if destination.pool else None
    if pool is None and tape is not None and tape.pool is not None:
        pool = pools.get(tape.pool)
    tape_pool = pools.get(tape.pool) if tape is not None and tape.pool else None
    return tape, tape_pool.pool_id if tape_pool else None, pool


def destination_json(
    destination: DestinationRecord,
    request: RequestRecord | None,
    tapes: Mapping[str, TapeRecord],
    pools: Mapping[str, PoolRecord],
    drives: Mapping[int, DriveRecord],
    tape_library_id: int = 1,
) -> dict[str, Any]:
    """One destination in the seed's shape plus `state` (pure: records in, JSON out)."""
    values = _fields(destination, request, tapes, pools, drives, tape_library_id, _VALUES)
    return dict(zip(DESTINATION_FIELDS, values, strict=True))


#: The create body's fields, first in a destination's JSON, in the seed's order.
_BODY_FIELDS = ("folder_id", "folder_path", "tape_id", "tape_barcode", "pool_id", "pool_name")

#: A destination's fields in the order its JSON shows them, in every form it takes:
#: `_fields` gives their values in this order.
DESTINATION_FIELDS = (*_BODY_FIELDS, "id", "folder", "container", "tape", "pool", "state")


class _Values:
    """How each part of a destination's view is rendered: here as JSON-ready values.

    `_Compact` renders the same parts for the HTTP answers, so that the view and its
    bytes cannot drift apart.
    """

    null: Any = None

    def body(self, body: Mapping[str, Any]) -> list[Any]:
        """The body's fields, in `_BODY_FIELDS`' order."""
        return [body.get(key) for key in _BODY_FIELDS]

    def scalar(self, value: Any) -> Any:
        return value

    def folder(self, body: Mapping[str, Any], nested: Mapping[str, Any] | None) -> Any:
        return folder_json(body, nested)

    def container(self, container: Mapping[str, Any]) -> Any:
        return dict(container)

    def tape(self, tape: TapeRecord, pool_id: int | None, tape_library_id: int) -> Any:
        return tape_json(tape, pool_id, tape_library_id)

    def pool(self, pool: PoolRecord) -> Any:
        return pool_json(pool)

    def state(self, state: dict[str, Any]) -> Any:
        return state


_VALUES = _Values()


def _fields(
    destination: DestinationRecord,
    request: RequestRecord | None,
    tapes: Mapping[str, TapeRecord],
    pools: Mapping[str, PoolRecord],
    drives: Mapping[int, DriveRecord],
    tape_library_id: int,
    render: _Values,
) -> tuple[Any, ...]:
    """The values of `DESTINATION_FIELDS`, in their order, as `render` renders them."""
    tape, tape_pool_id, pool = _shown(destination, request, tapes, pools)
    body = destination.body
    nested = destination.nested
    container = nested.get("container") if nested else None
    return (
        *render.body(body),
        render.scalar(destination.id),
        render.folder(body, nested),
        render.container(container) if container else render.null,
        render.tape(tape, tape_pool_id, tape_library_id) if tape else render.null,
        render.pool(pool) if pool is not None else render.null,
        render.state(state_json(destination, request, drives)),
    )


def _scalar(value: Any) -> str:
    """`json.dumps(value)` for one value, without building an encoder for a number
    or a string (most of what a body holds)."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is int:
        return int.__repr__(value)
    return json.dumps(value)


def _flat_text(data: Mapping[str, Any]) -> str:
    """`json.dumps(data)` for a dict of our own keys (none needs escaping)."""
    return "{" + ", ".join([f'"{key}": {_scalar(value)}' for key, value in data.items()]) + "}"


#: What a folder known by its id and path holds between its name and its path.
_FOLDER_MIDDLE = (
    ", "
    + json.dumps(
        {**dict.fromkeys(FOLDER_UNKNOWN_FIELDS), **{key: [] for key in FOLDER_LIST_FIELDS}}
    )[1:-1]
    + ', "file_path": '
)


def _folder_text(body: Mapping[str, Any], nested: Mapping[str, Any] | None) -> str:
    """`json.dumps(folder_json(body, nested))`, spliced."""
    if nested and nested.get("folder"):
        return json.dumps(dict(nested["folder"]))
    folder_id, path = body.get("folder_id"), body.get("folder_path")
    if folder_id is None:
        return "null"
    return "".join(
        (
            '{"id": ',
            _scalar(folder_id),
            ', "name": ',
            _scalar(_folder_name(path)),
            _FOLDER_MIDDLE,
            _scalar(path),
            "}",
        )
    )


class _Kept:
    """Tape and pool objects serialised once per record.

    The model replaces a record whenever anything of it changes (records are frozen),
    so a fragment is used only for the very record it was made from: a tape that
    moves is a new record, serialised anew the next time it is shown. One entry per
    tape and pool of the catalog at most.
    """

    def __init__(self) -> None:
        self._tapes: dict[str, tuple[TapeRecord, int | None, int, Any]] = {}
        self._pools: dict[str, tuple[PoolRecord, Any]] = {}

    def serialise(self, value: dict[str, Any]) -> Any:
        raise NotImplementedError

    def tape(self, tape: TapeRecord, pool_id: int | None, tape_library_id: int) -> Any:
        kept = self._tapes.get(tape.barcode)
        if (
            kept is not None
            and kept[0] is tape
            and kept[1] == pool_id
            and kept[2] == tape_library_id
        ):
            return kept[3]
        fragment = self.serialise(tape_json(tape, pool_id, tape_library_id))
        self._tapes[tape.barcode] = (tape, pool_id, tape_library_id, fragment)
        return fragment

    def pool(self, pool: PoolRecord) -> Any:
        kept = self._pools.get(pool.name)
        if kept is not None and kept[0] is pool:
            return kept[1]
        fragment = self.serialise(pool_json(pool))
        self._pools[pool.name] = (pool, fragment)
        return fragment


class _Text(_Kept):
    """Tapes and pools as `json.dumps` writes them (its default spacing): MQTT's."""

    def serialise(self, value: dict[str, Any]) -> str:
        return json.dumps(value)


class _Compact(_Kept, _Values):
    """The parts as JSON values, but the tape and pool as orjson fragments of their
    compact bytes: `orjson.dumps` of the whole is then the view's very bytes."""

    def serialise(self, value: dict[str, Any]) -> orjson.Fragment:
        return orjson.Fragment(orjson.dumps(value))


class ViewFragments:
    """Tape and pool objects serialised once per record, in each form a view is sent:
    `json.dumps`'s for MQTT, orjson's compact bytes for the HTTP answers.

    Thousands of destinations may show one tape, and each is published again at every
    step of its request; a create's answer shows a tape many creates showed before.
    """

    def __init__(self) -> None:
        self.text = _Text()
        self.compact = _Compact()


def destination_payload(
    destination: DestinationRecord,
    request: RequestRecord | None,
    tapes: Mapping[str, TapeRecord],
    pools: Mapping[str, PoolRecord],
    drives: Mapping[int, DriveRecord],
    tape_library_id: int,
    fragments: ViewFragments,
) -> bytes:
    """`json.dumps(destination_json(...)).encode()`, the same bytes, spliced from
    serialised parts: what MQTT publishes for each destination at each change.

    Written out rather than through `_fields`: MQTT publishes every destination at
    every step, and the renderer's calls measured slower here; the property test of
    its bytes holds it to `destination_json`'s fields and order."""
    tape, tape_pool_id, pool = _shown(destination, request, tapes, pools)
    body = destination.body
    nested = destination.nested
    container = nested.get("container") if nested else None
    text = fragments.text
    return "".join(
        (
            "{",
            ", ".join([f'"{key}": {_scalar(body.get(key))}' for key in _BODY_FIELDS]),
            ', "id": ',
            _scalar(destination.id),
            ', "folder": ',
            _folder_text(body, nested),
            ', "container": ',
            json.dumps(dict(container)) if container else "null",
            ', "tape": ',
            text.tape(tape, tape_pool_id, tape_library_id) if tape else "null",
            ', "pool": ',
            text.pool(pool) if pool is not None else "null",
            ', "state": ',
            _flat_text(state_json(destination, request, drives)),
            "}",
        )
    ).encode()


def destination_answer(
    destination: DestinationRecord,
    request: RequestRecord | None,
    tapes: Mapping[str, TapeRecord],
    pools: Mapping[str, PoolRecord],
    drives: Mapping[int, DriveRecord],
    tape_library_id: int,
    fragments: ViewFragments,
) -> bytes:
    """`orjson.dumps(destination_json(...))`, the same bytes, with the tape and pool
    serialised once per record: what the HTTP API answers for a destination."""
    parts = _fields(destination, request, tapes, pools, drives, tape_library_id, fragments.compact)
    return orjson.dumps(dict(zip(DESTINATION_FIELDS, parts, strict=True)))


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


async def destination_payloads(
    journal: Journal, destinations: Sequence[DestinationRecord], fragments: ViewFragments
) -> list[tuple[int, bytes]]:
    """Each destination's id and its view serialised, as MQTT publishes it: from the
    state in memory when the journal keeps it, else as `destination_views` reads it."""
    model = journal.current_model
    if model is None:
        views = await destination_views(journal, destinations)
        return [(view["id"], json.dumps(view).encode()) for view in views]
    library = await journal.tape_library_id()
    latest = model.latest_requests_for(d.id for d in destinations)
    tapes, pools, drives = model.tapes, model.pools, model.drives
    return [
        (d.id, destination_payload(d, latest.get(d.id), tapes, pools, drives, library, fragments))
        for d in destinations
    ]


async def destination_answer_of(
    journal: Journal, destination: DestinationRecord, fragments: ViewFragments
) -> bytes:
    """A destination's view as the HTTP API answers it (`orjson.dumps` of it): from the
    state in memory when the journal keeps it, else as `destination_views` reads it."""
    model = journal.current_model
    if model is None:
        [view] = await destination_views(journal, [destination])
        return orjson.dumps(view)
    library = await journal.tape_library_id()
    request = model.latest_requests_for((destination.id,)).get(destination.id)
    return destination_answer(
        destination, request, model.tapes, model.pools, model.drives, library, fragments
    )


async def destinations_by_ids(journal: Journal, ids: Sequence[int]) -> list[DestinationRecord]:
    """The destinations of these ids (live or destroyed), from memory when it can."""
    model = journal.current_model
    if model is None:
        return await journal.destinations_by_ids(ids)
    return [record for i in ids if (record := model.destination(i)) is not None]
