"""The SQLite journal: the source of truth after a restart.

It owns the durable inbox of events, the destinations (desired state), mount
requests and their state machine, robot/drive operations (intent before the
command, outcome after), the tape catalog with locations, the drives, and the
last inventory. WAL with synchronous=FULL: an event acknowledged to the broker
must survive a power cut. Callers batch their writes into one transaction.

A write the file system refuses (disk full, read-only, I/O error, a damaged page)
is a fault, not a crash: the transaction raises JournalFaultError, `fault` says
why until a write succeeds again, and callers hold their work back and retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import structlog

from drivers.base import Inventory
from drivers.definition import LibraryDefinition
from drivers.media import is_cleaning, media_of
from worker.core import drive_health
from worker.core.requests import ACTIVE, RequestState, lease_expiry, transition
from worker.errors import JournalDamagedError, JournalError, JournalFaultError
from worker.seed.models import FOLDER_LIST_FIELDS, FOLDER_UNKNOWN_FIELDS
from worker.seed.query import FILTERABLE, SORTABLE, Filter, IndexQuery, SortKey
from worker.seed.tape_ids import tape_id_block
from worker.state.connection import ThreadConnection
from worker.state.model import StateModel
from worker.state.records import (
    ApiKeyRecord,
    DestinationRecord,
    DestinationWrite,
    DriveRecord,
    EventRecord,
    IdempotentResult,
    OperationRecord,
    PoolRecord,
    PoolWatchRecord,
    RequestRecord,
    TapeRecord,
)

# The records are the journal's vocabulary: callers import them from here too.
__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "SCHEMA_VERSION",
    "SURPRISES_KEPT",
    "ApiKeyRecord",
    "DestinationRecord",
    "DestinationWrite",
    "DriveRecord",
    "EventRecord",
    "IdempotentResult",
    "Journal",
    "JournalFault",
    "ModelNotes",
    "NewEvent",
    "NewRequest",
    "OperationRecord",
    "PoolRecord",
    "PoolWatchRecord",
    "PruneCounts",
    "RequestRecord",
    "TapeRecord",
    "Transaction",
    "UnitOfWork",
    "cap_payload",
    "check_file",
    "damaged_message",
    "fault_kind",
    "salvage",
]

SCHEMA_VERSION = 8
#: How many inventory surprises the journal keeps for the status command.
SURPRISES_KEPT = 50

log = structlog.get_logger("tapeworker.journal")

#: SQLite's primary result codes that mean "the journal cannot take this write now";
#: anything else is a bug in our SQL and is raised as it is.
_FAULT_KINDS = {
    sqlite3.SQLITE_FULL: "disk full",
    sqlite3.SQLITE_READONLY: "read-only",
    sqlite3.SQLITE_IOERR: "I/O error",
    sqlite3.SQLITE_CORRUPT: "damaged",
    sqlite3.SQLITE_NOTADB: "damaged",
    sqlite3.SQLITE_CANTOPEN: "cannot open",
    sqlite3.SQLITE_PERM: "permission denied",
    sqlite3.SQLITE_BUSY: "busy",
    sqlite3.SQLITE_LOCKED: "busy",
}

#: A stored payload keeps this many bytes; the rest is summed up by its size and digest.
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024


def _ignore(_seconds: float) -> None:
    """No one listens to commit times (tests, the CLI)."""


def fault_kind(exc: BaseException) -> str | None:
    """What kind of journal fault an exception is, or None when it is not one."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return _FAULT_KINDS.get(code & 0xFF)
    return None


def cap_payload(payload: str | None, max_bytes: int) -> str | None:
    """The payload as stored: whole when small, else its head and a digest of all of it."""
    if payload is None:
        return None
    if len(payload) * 4 <= max_bytes:
        # No character takes more than four bytes in UTF-8: small enough unencoded.
        return payload
    raw = payload.encode("utf-8", "replace")
    if len(raw) <= max_bytes:
        return payload
    head = raw[:max_bytes].decode("utf-8", "ignore")
    digest = hashlib.sha256(raw).hexdigest()
    return f"{head}\n[truncated: {len(raw)} bytes in all, sha256 {digest}]"


@dataclass(frozen=True, slots=True)
class JournalFault:
    """Why the journal refuses writes, since when (wall clock)."""

    kind: str
    detail: str
    since: float

    def describe(self) -> str:
        return f"journal {self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class PruneCounts:
    events: int = 0
    requests: int = 0
    operations: int = 0
    destinations: int = 0

    @property
    def total(self) -> int:
        return self.events + self.requests + self.operations + self.destinations


#: HTTP creates' Idempotency-Keys (schema 3): each key with what its create did.
_IDEMPOTENCY_TABLE = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    destination_id INTEGER,
    reason TEXT,
    response TEXT,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (scope, key)
)
"""
_IDEMPOTENCY_INDEX = (
    "CREATE INDEX IF NOT EXISTS idempotency_keys_expires ON idempotency_keys(expires)"
)

#: Each task's number of live destinations (schema 6), kept by triggers in the same
#: transaction as the change: an unfiltered index's `count` without a scan of the task.
_TASK_COUNTS = """
CREATE TABLE IF NOT EXISTS task_counts (
    task_id TEXT PRIMARY KEY,
    live INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS task_counts_insert AFTER INSERT ON destinations
WHEN NEW.deleted = 0 BEGIN
    INSERT INTO task_counts(task_id, live) VALUES(NEW.task_id, 1)
        ON CONFLICT(task_id) DO UPDATE SET live = live + 1;
END;
CREATE TRIGGER IF NOT EXISTS task_counts_update AFTER UPDATE OF deleted, task_id ON destinations
WHEN (OLD.deleted = 0) != (NEW.deleted = 0) OR OLD.task_id IS NOT NEW.task_id BEGIN
    UPDATE task_counts SET live = live - 1 WHERE task_id = OLD.task_id AND OLD.deleted = 0;
    INSERT INTO task_counts(task_id, live) SELECT NEW.task_id, 1 WHERE NEW.deleted = 0
        ON CONFLICT(task_id) DO UPDATE SET live = live + 1;
END;
CREATE TRIGGER IF NOT EXISTS task_counts_delete AFTER DELETE ON destinations
WHEN OLD.deleted = 0 BEGIN
    UPDATE task_counts SET live = live - 1 WHERE task_id = OLD.task_id;
END;
"""
#: Counts from the destinations themselves (a migration, a salvaged journal).
_RECOUNT = (
    "DELETE FROM task_counts",
    "INSERT INTO task_counts(task_id, live) "
    "SELECT task_id, COUNT(*) FROM destinations WHERE deleted = 0 GROUP BY task_id",
)

#: Pool destinations held until some library of the pool claims one (schema 7).
_POOL_WATCHES_TABLE = """CREATE TABLE IF NOT EXISTS pool_watches (
    event_id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    destination_id INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    sequence TEXT,
    received REAL NOT NULL
)"""

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    dedup_key TEXT UNIQUE,
    topic TEXT,
    verb TEXT,
    task_id TEXT,
    destination_id INTEGER,
    payload TEXT,
    received REAL NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    digest TEXT
);
CREATE INDEX IF NOT EXISTS events_status ON events(status);
CREATE TABLE IF NOT EXISTS destinations (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    body TEXT NOT NULL,
    barcode TEXT,
    pool TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    sequence INTEGER,
    folder_id INTEGER,
    folder_path TEXT,
    tape_id INTEGER,
    tape_barcode TEXT,
    pool_id INTEGER,
    pool_name TEXT,
    nested TEXT
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination_id INTEGER NOT NULL,
    barcode TEXT,
    pool TEXT,
    write INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL,
    drive INTEGER,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    arrival REAL NOT NULL,
    updated REAL NOT NULL,
    lease_expires REAL,
    size_bytes INTEGER
);
CREATE INDEX IF NOT EXISTS requests_state ON requests(state);
CREATE INDEX IF NOT EXISTS requests_destination ON requests(destination_id);
CREATE TABLE IF NOT EXISTS operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    barcode TEXT,
    slot INTEGER,
    drive INTEGER,
    request_ids TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL,
    error TEXT,
    error_class TEXT,
    started REAL NOT NULL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS operations_state ON operations(state);
CREATE TABLE IF NOT EXISTS tapes (
    barcode TEXT PRIMARY KEY,
    tape_id INTEGER UNIQUE NOT NULL,
    pool TEXT,
    media TEXT,
    cleaning INTEGER NOT NULL DEFAULT 0,
    locked INTEGER NOT NULL DEFAULT 0,
    write_protected INTEGER NOT NULL DEFAULT 0,
    full INTEGER NOT NULL DEFAULT 0,
    need_to_check INTEGER NOT NULL DEFAULT 0,
    ejected INTEGER NOT NULL DEFAULT 0,
    used_bytes INTEGER NOT NULL DEFAULT 0,
    cleaning_uses_left INTEGER NOT NULL DEFAULT 0,
    slot INTEGER,
    home_slot INTEGER,
    drive INTEGER,
    mount_count INTEGER NOT NULL DEFAULT 0,
    date_in REAL,
    date_move REAL,
    known INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS drives (
    idx INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL,
    device TEXT NOT NULL,
    barcode TEXT,
    up INTEGER NOT NULL DEFAULT 1,
    failures INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    idle_since REAL,
    needs_cleaning INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS pools (
    name TEXT PRIMARY KEY,
    pool_id INTEGER UNIQUE NOT NULL,
    content TEXT NOT NULL,
    type TEXT,
    comment TEXT,
    write_protect_when_full INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    key_id TEXT UNIQUE NOT NULL,
    digest TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created REAL NOT NULL,
    revoked REAL
);
"""
    + f"{_IDEMPOTENCY_TABLE};\n{_IDEMPOTENCY_INDEX};\n{_POOL_WATCHES_TABLE};\n"
    + _TASK_COUNTS
)


Record = TypeVar("Record")
Result = TypeVar("Result")


class ModelNotes:
    """The state model's changes noted by one write, in order, to apply once it
    commits; nothing is collected while no model is loaded."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[tuple[Callable[..., None], tuple[Any, ...]]] | None = None

    @property
    def collecting(self) -> bool:
        return self._items is not None

    def start(self, *, collect: bool) -> None:
        self._items = [] if collect else None

    def note(self, change: Callable[..., None], *args: Any) -> None:
        if self._items is not None:
            self._items.append((change, args))

    def mark(self) -> int:
        return len(self._items) if self._items is not None else 0

    def drop_after(self, mark: int) -> None:
        """A savepoint rolled back: its notes go with it."""
        if self._items is not None:
            del self._items[mark:]

    def take(self) -> list[tuple[Callable[..., None], tuple[Any, ...]]]:
        """The notes of the write that just committed; collecting stops."""
        items, self._items = self._items or [], None
        return items


#: Reads that the Journal and a UnitOfWork both make.
_TAPE = "SELECT * FROM tapes WHERE barcode=?"
_TAPE_BY_ID = "SELECT * FROM tapes WHERE tape_id=?"
_POOLS = "SELECT * FROM pools ORDER BY pool_id"
_TAPE_LIBRARY_ID = "SELECT value FROM meta WHERE key='tape_library_id'"
_EVENT_BY_DEDUP_KEY = "SELECT * FROM events WHERE dedup_key=?"
_DESTINATION = "SELECT * FROM destinations WHERE id=?"
_REQUEST = "SELECT * FROM requests WHERE id=?"
_ACTIVE_STATES = tuple(s.value for s in sorted(ACTIVE, key=lambda s: s.value))
_ACTIVE_REQUEST_FOR = (
    "SELECT * FROM requests WHERE destination_id=? "  # noqa: S608 - placeholders only
    f"AND state IN ({','.join('?' * len(_ACTIVE_STATES))}) ORDER BY id DESC LIMIT 1"
)
#: Past the highest id ever given, also when retention pruned it.
_NEXT_DESTINATION_ID = (
    "SELECT MAX(COALESCE((SELECT MAX(id) FROM destinations), 0), "
    "COALESCE((SELECT CAST(value AS INTEGER) FROM meta "
    "WHERE key='destination_high_water'), 0)) + 1"
)

_INSERT_EVENT = (
    "INSERT INTO events(source, dedup_key, topic, verb, task_id, destination_id, "
    "payload, received, status, reason, digest) VALUES(?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(dedup_key) DO NOTHING"
)
#: An event `insert_events` journals: (source, topic, verb, task_id, destination_id,
#: payload, status, reason, digest). A plain tuple: a batch builds one per event.
NewEvent = tuple[
    str, str | None, str | None, str | None, int | None, str | None, str, str | None, str | None
]
#: A pending request `add_requests` adds: (destination_id, barcode, pool, size_bytes).
NewRequest = tuple[int, str | None, str | None, int | None]
_ADD_REQUEST = (
    "INSERT INTO requests(id, destination_id, barcode, pool, write, state, arrival, "
    "updated, size_bytes) VALUES(?,?,?,?,1,'pending',?,?,?)"
)
#: The last request id ever given (the table is AUTOINCREMENT: pruned ids stay used).
_LAST_REQUEST_ID = (
    "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name='requests'), 0), "
    "COALESCE((SELECT MAX(id) FROM requests), 0))"
)

#: Ids per `IN (...)` list: far below SQLite's limit on bound parameters.
_BATCH = 500
#: The body's flat fields, stored as columns too (see `_insert_values`).
_FLAT = ("folder_id", "folder_path", "tape_id", "tape_barcode", "pool_id", "pool_name")


_INSERT_DESTINATION = (
    "INSERT INTO destinations(id, task_id, body, barcode, pool, status, reason, created, "
    "updated, sequence, folder_id, folder_path, tape_id, tape_barcode, pool_id, pool_name, "
    "nested) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _insert_values(write: DestinationWrite, now: float) -> tuple[Any, ...]:
    """The parameters of `_INSERT_DESTINATION` for one write."""
    return (
        write.destination_id,
        write.task_id,
        write.body_json,
        write.barcode,
        write.pool,
        write.status,
        write.reason,
        now,
        now,
        write.sequence,
        *[write.body.get(name) for name in _FLAT],
        write.nested_json,
    )


@functools.cache
def _columns(cls: type) -> tuple[tuple[str, bool], ...]:
    """A record class's fields, and which are 0/1 columns read as bools."""
    return tuple((spec.name, spec.type == "bool") for spec in fields(cls))


#: Strings up to this long read from a row are interned (see `_from_row`).
_INTERNED = 40


def _from_row(cls: type[Record], row: sqlite3.Row, **overrides: Any) -> Record:
    """A record from a row of the same column names; 0/1 columns become bools."""
    values: dict[str, Any] = {}
    for name, is_bool in _columns(cls):  # type: ignore[arg-type]
        if name in overrides:
            values[name] = overrides[name]
        else:
            value = row[name]
            if is_bool:
                value = bool(value)
            elif type(value) is str and len(value) <= _INTERNED:
                # Barcodes, pools, states and task ids repeat across many rows the
                # state model keeps: one object each, not one per row.
                value = sys.intern(value)
            values[name] = value
    return cls(**values)


def _request(row: sqlite3.Row) -> RequestRecord:
    return _from_row(RequestRecord, row, state=RequestState(row["state"]), priority=0)


def _tape(row: sqlite3.Row) -> TapeRecord:
    return _from_row(TapeRecord, row)


def _destination(row: sqlite3.Row) -> DestinationRecord:
    return _from_row(DestinationRecord, row, body_json=row["body"], nested_json=row["nested"])


#: What the state model keeps of each table, in the order of its record's fields.
_MODEL_DESTINATIONS = (
    "SELECT id, task_id, body, barcode, pool, status, reason, deleted, created, updated, "
    "sequence, nested FROM destinations ORDER BY id"
)
_ACTIVE_VALUES = tuple(sorted(s.value for s in ACTIVE))
_MODEL_REQUESTS = (
    "SELECT id, barcode, pool, arrival, write, size_bytes, destination_id, state, drive, "  # noqa: S608
    "reason, attempts, updated, lease_expires FROM requests "
    f"WHERE state IN ({','.join('?' * len(ACTIVE))}) "
    "OR id IN (SELECT MAX(id) FROM requests GROUP BY destination_id) ORDER BY id"
)
#: Rows per fetch of a whole table.
_CHUNK = 2000
_STATES = {state.value: state for state in RequestState}


class _Shared:
    """Values repeated across the rows of a model's load, kept as one object each (as
    the model's own writes leave them): short strings, and a destination's id and
    creation time, which its requests repeat."""

    __slots__ = ("ids", "strings", "times")

    def __init__(self) -> None:
        self.strings: dict[Any, Any] = {}
        self.ids: dict[int, int] = {}
        self.times: dict[float, float] = {}


def _loaded_destination(row: tuple[Any, ...], shared: _Shared) -> DestinationRecord:
    """A destination of the model's load, from a row of `_MODEL_DESTINATIONS`.

    Built positionally: looking fields up by name per row was most of the load's cost
    at a large backlog.
    """
    (id_, task, body, barcode, pool, status, reason, deleted, created, updated, seq, nested) = row
    strings = shared.strings
    shared.ids[id_] = id_
    shared.times[created] = created
    return DestinationRecord(
        id_,
        strings.setdefault(task, task),
        body,
        strings.setdefault(barcode, barcode),
        strings.setdefault(pool, pool),
        strings.setdefault(status, status),
        reason,
        bool(deleted),
        created,
        created if updated == created else updated,
        seq,
        nested,
    )


def _loaded_request(row: tuple[Any, ...], shared: _Shared) -> RequestRecord:
    """A request of the model's load, from a row of `_MODEL_REQUESTS` (as above)."""
    (id_, barcode, pool, arrival, write, size, destination, state, drive, reason) = row[:10]
    attempts, updated, lease_expires = row[10:]
    arrival = shared.times.get(arrival, arrival)
    return RequestRecord(
        id_,
        shared.strings.setdefault(barcode, barcode),
        shared.strings.setdefault(pool, pool),
        arrival,
        bool(write),
        0,
        size,
        destination_id=shared.ids.get(destination, destination),
        state=_STATES[state],
        drive=drive,
        reason=reason,
        attempts=attempts,
        updated=arrival if updated == arrival else updated,
        lease_expires=lease_expires,
    )


#: Filter operators -> SQL; the attribute names come from `index_query`'s whitelist.
_SQL_OPERATORS = {
    "=": "=",
    "!=": "!=",
    ">": ">",
    ">=": ">=",
    "<": "<",
    "<=": "<=",
    "in": "IN",
    "not in": "NOT IN",
    "like": "LIKE",
    "not like": "NOT LIKE",
}


def _where(task_id: str, filters: Sequence[Filter]) -> tuple[str, list[Any]]:
    """The WHERE clause of an index query: column names from the whitelist, every
    value a bound parameter."""
    clauses = ["task_id=?", "deleted=0"]
    params: list[Any] = [task_id]
    for item in filters:
        if item.attribute not in FILTERABLE:
            raise ValueError(f"not a filter: {item.attribute}")
        operator = _SQL_OPERATORS[item.operator]
        if item.operator in ("in", "not in"):
            marks = ",".join("?" * len(item.values))
            # NOT IN over a NULL column is NULL, not true: a destination without the
            # attribute is "not in" any list.
            null = f" OR {item.attribute} IS NULL" if item.operator == "not in" else ""
            clauses.append(f"({item.attribute} {operator} ({marks}){null})")
        elif item.operator in ("!=", "not like"):
            clauses.append(f"({item.attribute} {operator} ? OR {item.attribute} IS NULL)")
        else:
            clauses.append(f"{item.attribute} {operator} ?")
        params.extend(item.values)
    return " AND ".join(clauses), params


def _order(sort: Sequence[SortKey]) -> str:
    keys = []
    for key in sort:
        if key.attribute not in SORTABLE:
            raise ValueError(f"not sortable: {key.attribute}")
        keys.append(f"{key.attribute} {'DESC' if key.descending else 'ASC'}")
    return ", ".join(keys)


def _iso_json(epoch: str) -> str:
    """SQL for an epoch column as the views write dates, a JSON string (ISO-8601,
    milliseconds, `Z`): rounded to microseconds, then cut to milliseconds, as Python's
    datetime does."""
    micros = (
        f"(CAST({epoch} AS INTEGER) * 1000000 "
        f"+ CAST(round(({epoch} - CAST({epoch} AS INTEGER)) * 1000000.0) AS INTEGER))"
    )
    return (
        f"strftime('\"%Y-%m-%dT%H:%M:%S', {micros} / 1000000, 'unixepoch') "
        f"|| printf('.%03dZ\"', {micros} / 1000 % 1000)"
    )


def _scalar(expr: str) -> str:
    """A column's value as JSON (a string quoted and escaped, a number, null)."""
    return f"json_quote({expr})"


def _integer(expr: str) -> str:
    """An INTEGER column's value as JSON: its digits, or null (cheaper than quoting)."""
    return f"ifnull({expr}, 'null')"


def _raw(expr: str) -> str:
    """JSON text as it is, or null."""
    return f"COALESCE({expr}, 'null')"


def _object_sql(fields: Sequence[tuple[str, str | None]]) -> str:
    """SQL that writes a JSON object's text, keys in the order given.

    One `printf` over `json_quote`d values costs SQLite a fraction of what `json_object`
    (a tree per row) or a chain of `||` (a copy per piece) does; a value of None is a
    constant null. Keys are our own names.
    """
    template = "{"
    values: list[str] = []
    for index, (key, expr) in enumerate(fields):
        template += ("," if index else "") + json.dumps(key) + ":"
        if expr is None:
            template += "null"
        else:
            template += "%s"
            values.append(expr)
    template = template.replace("%", "%%").replace("%%s", "%s") + "}"
    return f"printf({', '.join([_sql_text(template), *values])})"


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: The folder a flat body tells of (`worker.intake.views.folder_json`): its id, its path
#: and the path's last element as its name; what only the archive manager knows is null.
_TRIMMED = "rtrim(d.folder_path, '/')"
_BASENAME = f"substr({_TRIMMED}, length(rtrim({_TRIMMED}, replace({_TRIMMED}, '/', ''))) + 1)"
_FLAT_FOLDER = _object_sql(
    [
        ("id", _integer("d.folder_id")),
        (
            "name",
            _scalar(
                "CASE WHEN d.folder_path IS NULL OR d.folder_path = '' THEN NULL "
                f"WHEN {_TRIMMED} = '' THEN d.folder_path ELSE {_BASENAME} END"
            ),
        ),
        *((name, None) for name in FOLDER_UNKNOWN_FIELDS),
        *((name, "'[]'") for name in FOLDER_LIST_FIELDS),
        ("file_path", _scalar("d.folder_path")),
    ]
)


def _state_sql(prefix: str, device: str) -> str:
    """The `state` attribute: a request's (`r`), or the destination's own (`d`)."""
    return _object_sql(
        [
            ("state", _scalar(f"{prefix}.{'state' if prefix == 'r' else 'status'}")),
            ("barcode", _scalar("r.barcode") if prefix == "r" else None),
            ("drive", _integer("r.drive") if prefix == "r" else None),
            ("device", _scalar(device) if prefix == "r" else None),
            ("reason", _scalar(f"{prefix}.reason")),
            ("updated", _iso_json(f"{prefix}.updated")),
            ("sequence", _integer("d.sequence")),
        ]
    )


_DESTINATION_JSON = _object_sql(
    [
        *(
            (name, _integer(f"d.{name}") if name.endswith("_id") else _scalar(f"d.{name}"))
            for name in _FLAT
        ),
        ("id", _integer("d.id")),
        (
            "folder",
            _raw(
                "CASE WHEN d.nested IS NOT NULL AND json_extract(d.nested, '$.folder') "
                "IS NOT NULL THEN json_extract(d.nested, '$.folder') "
                f"WHEN d.folder_id IS NULL THEN NULL ELSE {_FLAT_FOLDER} END"
            ),
        ),
        (
            "container",
            _raw("CASE WHEN d.nested IS NOT NULL THEN json_extract(d.nested, '$.container') END"),
        ),
        ("tape", _raw("""json_extract(?2, '$."' || t.tape_id || '"')""")),
        ("pool", _raw("""json_extract(?3, '$."' || COALESCE(dp.pool_id, tp.pool_id) || '"')""")),
        (
            "state",
            _raw(
                f"CASE WHEN r.id IS NULL THEN {_state_sql('d', '')} "
                f"ELSE {_state_sql('r', 'dr.device')} END"
            ),
        ),
    ]
)

#: Each destination of a list of ids (`?1`, a JSON array) as the index shows it, its
#: JSON built by SQLite: a long listing costs no Python per row. The tapes' and pools'
#: objects come as JSON maps by id (`?2`, `?3`), built by the views from the same records
#: as a single destination's, so that the two cannot drift apart. The shape is the one
#: of `worker.intake.views.destination_json`, field for field.
_LISTING_SQL = f"""
SELECT CAST({_DESTINATION_JSON} AS BLOB)
FROM json_each(?1) AS k
JOIN destinations AS d ON d.id = k.value AND d.deleted = 0
LEFT JOIN requests AS r
    ON r.id = (SELECT MAX(id) FROM requests WHERE destination_id = d.id)
LEFT JOIN tapes AS t ON t.barcode = COALESCE(NULLIF(r.barcode, ''), d.barcode)
LEFT JOIN pools AS dp ON dp.name = d.pool
LEFT JOIN pools AS tp ON tp.name = t.pool
LEFT JOIN drives AS dr ON dr.idx = r.drive
ORDER BY k.key
"""  # noqa: S608 - our own columns and constants; every value is bound

#: The tapes the destinations of a list of ids show (their own, or the one chosen).
_LISTING_TAPES_SQL = """
SELECT DISTINCT t.* FROM json_each(?1) AS k
JOIN destinations AS d ON d.id = k.value AND d.deleted = 0
LEFT JOIN requests AS r
    ON r.id = (SELECT MAX(id) FROM requests WHERE destination_id = d.id)
JOIN tapes AS t ON t.barcode = COALESCE(NULLIF(r.barcode, ''), d.barcode)
"""


def _operation(row: sqlite3.Row) -> OperationRecord:
    return _from_row(OperationRecord, row, request_ids=tuple(json.loads(row["request_ids"])))


#: Schema version -> the statements that bring it to the next one.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE requests ADD COLUMN size_bytes INTEGER",),
    2: (_IDEMPOTENCY_TABLE, _IDEMPOTENCY_INDEX),
    3: (
        "ALTER TABLE events ADD COLUMN digest TEXT",
        "ALTER TABLE destinations ADD COLUMN sequence INTEGER",
    ),
    # The body's flat fields as columns, so that the index filters and sorts in SQL
    # with indexes; `nested` keeps the folder and container a full event carried.
    4: (
        *(
            f"ALTER TABLE destinations ADD COLUMN {name} {kind}"
            for name, kind in (
                ("folder_id", "INTEGER"),
                ("folder_path", "TEXT"),
                ("tape_id", "INTEGER"),
                ("tape_barcode", "TEXT"),
                ("pool_id", "INTEGER"),
                ("pool_name", "TEXT"),
                ("nested", "TEXT"),
            )
        ),
        "UPDATE destinations SET folder_id=json_extract(body, '$.folder_id'), "
        "folder_path=json_extract(body, '$.folder_path'), "
        "tape_id=json_extract(body, '$.tape_id'), "
        "tape_barcode=json_extract(body, '$.tape_barcode'), "
        "pool_id=json_extract(body, '$.pool_id'), "
        "pool_name=json_extract(body, '$.pool_name')",
        "ALTER TABLE pools ADD COLUMN write_protect_when_full INTEGER NOT NULL DEFAULT 1",
    ),
    # task_counts and its triggers come with the schema script; the counts so far:
    5: _RECOUNT,
    6: (_POOL_WATCHES_TABLE,),
    # destinations_task_live (task_id, deleted, id) serves every lookup by task: a
    # second index on task_id alone was one more B-tree (and WAL page) a create wrote.
    7: ("DROP INDEX IF EXISTS destinations_task",),
}


#: Indexes created after the migrations, so that they may name migrated columns.
_INDEXES = """
CREATE INDEX IF NOT EXISTS destinations_task_live ON destinations(task_id, deleted, id);
CREATE INDEX IF NOT EXISTS destinations_task_folder ON destinations(task_id, deleted, folder_id);
CREATE INDEX IF NOT EXISTS destinations_task_tape ON destinations(task_id, deleted, tape_id);
CREATE INDEX IF NOT EXISTS destinations_task_pool ON destinations(task_id, deleted, pool_id);
"""


async def _quick_check(db: ThreadConnection) -> list[str]:
    found = [str(row[0]) for row in await db.execute_fetchall("PRAGMA quick_check")]
    return [] if found == ["ok"] else found


def check_file(path: Path, *, full: bool = False) -> list[str]:
    """SQLite's check of a journal file, opened read-only (it creates and changes
    nothing): [] when sound, else what it found."""
    pragma = "PRAGMA integrity_check" if full else "PRAGMA quick_check"
    try:
        with contextlib.closing(sqlite3.connect(_readonly_uri(path), uri=True)) as db:
            found = [str(row[0]) for row in db.execute(pragma)]
    except sqlite3.DatabaseError as exc:
        found = [str(exc)]
    return [] if found == ["ok"] else found


def salvage(damaged: Path, into: Path) -> dict[str, int]:
    """Copy every row SQLite can still read from a damaged journal into a new file
    with the current schema; return the rows copied per table.

    Each table is read in rowid order; where a damaged page breaks the scan, the
    copy resumes past it (looking further ahead each time it fails again), so one
    bad page costs the rows on it, not the rest of the table.
    """
    if into.exists():
        raise JournalError(f"{into}: exists already; not overwriting it")
    copied: dict[str, int] = {}
    with (
        contextlib.closing(sqlite3.connect(_readonly_uri(damaged), uri=True)) as source,
        contextlib.closing(sqlite3.connect(into, isolation_level=None)) as target,
    ):
        target.executescript(_SCHEMA)
        tables = [
            str(row[0])
            for row in target.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name != 'sqlite_sequence'"
            )
        ]
        target.execute("BEGIN")
        for table in tables:
            copied[table] = _salvage_table(source, target, table)
        # The triggers counted the copied destinations, and the copied counts may be
        # of rows that were lost: counted again from what was saved.
        for statement in _RECOUNT:
            target.execute(statement)
        # The new file has the current schema, whatever the damaged one said.
        target.execute(
            "INSERT INTO meta(key, value) VALUES('schema', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (str(SCHEMA_VERSION),),
        )
        target.execute("COMMIT")
    return copied


def _salvage_table(source: sqlite3.Connection, target: sqlite3.Connection, table: str) -> int:
    wanted = [str(row[1]) for row in target.execute(f"PRAGMA table_info({table})")]
    try:
        present = {str(row[1]) for row in source.execute(f"PRAGMA table_info({table})")}
    except sqlite3.DatabaseError:
        return 0
    columns = [c for c in wanted if c in present]
    if not columns:
        return 0
    names = ", ".join(columns)
    read = f"SELECT rowid, {names} FROM {table} WHERE rowid > ? ORDER BY rowid"  # noqa: S608 - names from the schema
    write = f"INSERT OR IGNORE INTO {table}(rowid, {names}) VALUES(?{', ?' * len(columns)})"
    lowest, highest = -(2**63), 2**63 - 1
    after, skip, copied = lowest, 1, 0
    while True:
        try:
            for row in source.execute(read, (after,)):
                target.execute(write, tuple(row))
                after, skip = row[0], 1
                copied += 1
        except sqlite3.DatabaseError:
            if after >= highest - skip:
                break
            after += skip
            skip *= 2
            continue
        break
    return copied


def damaged_message(path: Path, problems: Sequence[str]) -> str:
    """What is wrong and the way out, for the operator."""
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    shown = "; ".join(problems[:3]) + more
    return (
        f"{path}: the journal is damaged ({shown}). Stop the daemon and run "
        f"`tapeworker journal recover --config <file>`: it salvages what SQLite can read "
        f"into a new file and keeps the damaged one beside it"
    )


async def _prepare(db: ThreadConnection, path: Path) -> None:
    """Pragmas, schema and migrations of a freshly opened connection."""
    await db.execute("PRAGMA journal_mode=WAL")
    # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss,
    # and those may be events we already acknowledged.
    await db.execute("PRAGMA synchronous=FULL")
    await db.execute("PRAGMA busy_timeout=5000")
    await db.executescript(_SCHEMA)
    row = next(iter(await db.execute_fetchall("SELECT value FROM meta WHERE key='schema'")), None)
    if row is None:
        await db.execute("INSERT INTO meta(key, value) VALUES('schema', ?)", (str(SCHEMA_VERSION),))
    elif int(row[0]) in _MIGRATIONS:
        await _migrate(db, int(row[0]))
    elif int(row[0]) != SCHEMA_VERSION:
        raise JournalError(f"{path}: schema version {row[0]}, expected {SCHEMA_VERSION}")
    await db.executescript(_INDEXES)


async def _migrate(db: ThreadConnection, version: int) -> None:
    """Bring an older journal up to SCHEMA_VERSION in one transaction."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        while version != SCHEMA_VERSION:
            for statement in _MIGRATIONS[version]:
                await db.execute(statement)
            version += 1
        await db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
    except BaseException:
        await db.execute("ROLLBACK")
        raise
    await db.execute("COMMIT")


def _readonly_uri(path: Path) -> str:
    if not path.is_file():
        raise JournalError(f"{path}: no journal here (has the daemon run with this state?)")
    wal = path.with_name(path.name + "-wal")
    return f"{path.resolve().as_uri()}?mode=ro" + ("" if wal.exists() else "&immutable=1")


class Journal:
    """One connection, used from one event loop. Every public write commits."""

    def __init__(self, db: ThreadConnection, path: Path) -> None:
        self._db = db
        self.path = path
        # One connection serves the HTTP handlers, the MQTT intake and the executor:
        # transactions take turns.
        self._tx_lock = asyncio.Lock()
        #: Set while writes fail, cleared by the next write that succeeds.
        self.fault: JournalFault | None = None
        self.max_payload_bytes = DEFAULT_MAX_PAYLOAD_BYTES
        #: Told each commit's duration in seconds; the service hands it to the metrics,
        #: so the journal needs to know nothing of them.
        self.on_commit: Callable[[float], None] = _ignore
        #: The state in memory, once `load_model` built it; written through after
        #: each commit by the changes its writes noted.
        self.model: StateModel | None = None
        #: The model changes noted by the write in progress, applied once it commits.
        self._notes = ModelNotes()
        #: The model missed a change (a fault, or a change it could not take): it is
        #: rebuilt from the file at the end of the next write that works.
        self._model_stale = False
        #: The pools change only with the catalog (`sync_catalog`), and every event
        #: that names a pool reads them: kept here instead of read each time.
        self._pools: list[PoolRecord] | None = None
        self._tape_library_id: int | None = None
        #: Counts the API keys made and revoked: whoever keeps keys it verified (the
        #: HTTP authenticator) forgets them when it moves.
        self.api_keys_changed = 0

    @classmethod
    async def open(cls, path: Path, *, check: bool = True) -> Journal:
        """Open (creating or migrating) the journal; with `check`, refuse a damaged one.

        JournalDamagedError names the file and the way out; JournalError any other
        reason the file cannot serve as a journal.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"{path.parent}: cannot create the state directory: {exc}") from exc
        try:
            db = await ThreadConnection.connect(path, isolation_level=None)
        except Exception as exc:
            raise JournalError(f"{path}: cannot open the journal: {exc}") from exc
        try:
            if check:
                problems = await _quick_check(db)
                if problems:
                    raise JournalDamagedError(damaged_message(path, problems))
            await _prepare(db, path)
        except BaseException as exc:
            # The connection's thread would keep the process alive at exit.
            await db.close()
            if isinstance(exc, sqlite3.Error):
                kind = fault_kind(exc) or "error"
                if kind == "damaged":
                    raise JournalDamagedError(damaged_message(path, [str(exc)])) from exc
                raise JournalError(f"{path}: cannot open the journal ({kind}): {exc}") from exc
            raise
        return cls(db, path)

    @classmethod
    async def open_readonly(cls, path: Path) -> Journal:
        """The journal for looking only: nothing is created, migrated or written.

        A running daemon leaves its -wal and -shm files beside the journal, and a reader
        shares them. Without them (the daemon stopped cleanly), SQLite would create them,
        which a reader may not be allowed to do; the file is then complete on its own and
        read as immutable.
        """
        uri = _readonly_uri(path)
        try:
            db = await ThreadConnection.connect(uri, uri=True, isolation_level=None)
        except Exception as exc:
            raise JournalError(f"{path}: cannot read the journal: {exc}") from exc
        try:
            await db.execute("PRAGMA busy_timeout=5000")
            rows = await db.execute_fetchall("SELECT value FROM meta WHERE key='schema'")
            row = next(iter(rows), None)
        except Exception as exc:
            # The connection's thread would keep the process alive at exit.
            await db.close()
            raise JournalError(f"{path}: cannot read the journal: {exc}") from exc
        if row is None or int(row[0]) != SCHEMA_VERSION:
            await db.close()
            found = row[0] if row else "none"
            raise JournalError(
                f"{path}: schema version {found}, this tapeworker reads {SCHEMA_VERSION}"
            )
        return cls(db, path)

    async def close(self) -> None:
        await self._db.close()

    def _faulted(self, exc: sqlite3.Error) -> JournalFaultError:
        """Record a refused write (logged once per kind) and the error to raise."""
        kind = fault_kind(exc) or "error"
        if kind == "I/O error" and not self._files_writable():
            # SQLite only sees a write fail; the file system says why.
            kind = "read-only"
        if self.fault is None or self.fault.kind != kind:
            log.error(
                "journal fault: writes paused", path=str(self.path), kind=kind, error=str(exc)
            )
        since = self.fault.since if self.fault is not None else time.time()
        self.fault = JournalFault(kind, str(exc), since)
        return JournalFaultError(str(self.path), kind, str(exc))

    def _files_writable(self) -> bool:
        """The journal and its write-ahead log take writes (a read-only mount or an
        immutable file refuses root too, and `access` says so)."""
        return all(
            os.access(f"{self.path}{suffix}", os.W_OK)
            for suffix in ("", "-wal")
            if os.path.exists(f"{self.path}{suffix}")
        )

    def _healthy(self) -> bool:
        """Clear a fault after a write that worked; True when there was one."""
        if self.fault is None:
            return False
        log.warning(
            "journal writable again",
            path=str(self.path),
            was=self.fault.kind,
            after_s=round(time.time() - self.fault.since, 1),
        )
        self.fault = None
        return True

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One atomic batch: everything done through the Transaction commits together,
        or nothing does. Each of its writes is a trip to the database thread; see
        `apply` for work of many writes.

        A write the journal refuses raises JournalFaultError (nothing committed).
        """
        async with self._write() as db:
            # Under the lock: the model is what the file has committed, or None.
            model = self.current_model
            yield Transaction(db, UnitOfWork(self, db.connection, self._notes, model))

    async def apply(self, work: Callable[[UnitOfWork], Result]) -> Result:
        """`work` in one transaction, run whole in the database thread: BEGIN
        IMMEDIATE, everything `work` does through the UnitOfWork, and COMMIT are one
        trip. Its result, once committed.

        `work` must not touch the event loop (it runs in another thread); it reads
        through the UnitOfWork (from the state in memory where that is in step). When
        it raises, nothing is committed and the exception is raised here; a write the
        journal refuses raises JournalFaultError. The model takes the writes' changes
        only after COMMIT, as with `transaction`.
        """
        async with self._tx_lock:
            model = self.current_model
            notes = self._notes = ModelNotes()
            notes.start(collect=self.model is not None)
            try:
                unit = UnitOfWork(self, self._db.connection, notes, model)
                done: tuple[Result, float] = await self._db.run(self._apply_in_thread, work, unit)
            except asyncio.CancelledError:
                # The thread may still commit what our caller no longer waits for:
                # the model is read anew from the file after the next write.
                self._model_stale = self.model is not None
                raise
            except BaseException as exc:
                if isinstance(exc, sqlite3.Error) and fault_kind(exc) is not None:
                    raise self._faulted(exc) from exc
                raise
            result, commit_s = done
            self.on_commit(commit_s)
            if not self._apply_changes(notes):
                self._model_stale = True
        await self._after_write()
        return result

    @staticmethod
    def _apply_in_thread(
        conn: sqlite3.Connection, work: Callable[[UnitOfWork], Result], unit: UnitOfWork
    ) -> tuple[Result, float]:
        """In the database thread: BEGIN, the work, COMMIT (ROLLBACK when it raises);
        the result and how long COMMIT took."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(unit)
            committing = time.monotonic()
            conn.execute("COMMIT")
            return result, time.monotonic() - committing
        except BaseException:
            # SQLite has already rolled back after some errors (SQLITE_FULL).
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[ThreadConnection]:
        """The connection inside BEGIN IMMEDIATE ... COMMIT; it never leaves this module.

        The model changes the writes noted are applied once COMMIT succeeded, still
        under the lock, so the model sees commits in their order."""
        async with self._tx_lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                if fault_kind(exc) is None:
                    raise
                raise self._faulted(exc) from exc
            # Notes of their own for each write: a cancelled one's thread may still
            # note what it does.
            notes = self._notes = ModelNotes()
            notes.start(collect=self.model is not None)
            try:
                yield self._db
                committing = time.monotonic()
                await self._db.execute("COMMIT")
                self.on_commit(time.monotonic() - committing)
            except BaseException as exc:
                notes.start(collect=False)
                # SQLite has already rolled back after some errors (SQLITE_FULL).
                with contextlib.suppress(sqlite3.Error):
                    await self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error) and fault_kind(exc) is not None:
                    raise self._faulted(exc) from exc
                raise
            if not self._apply_changes(notes):
                self._model_stale = True
        await self._after_write()

    async def _after_write(self) -> None:
        """After a write that worked: clear a fault, and rebuild a model left behind."""
        if self._healthy():
            self._model_stale = self.model is not None
        if self._model_stale:
            # After a fault (or a change the model could not take) the file is the
            # truth again: the model is read anew from it.
            try:
                await self._rebuild_model()
            except (JournalFaultError, sqlite3.Error) as exc:
                # The write itself committed; the next write tries the rebuild again.
                log.warning("state model rebuild failed", error=str(exc))
            else:
                self._model_stale = False

    def _apply_changes(self, notes: ModelNotes) -> bool:
        """Apply the committed write's noted changes; False if the model failed to."""
        changes = notes.take()
        model = self.model
        if model is None or not changes:
            return True
        try:
            for change, args in changes:
                change(model, *args)
        except Exception:
            log.exception("state model update failed: rebuilding it from the journal")
            return False
        model.version += 1
        return True

    @property
    def round_trips(self) -> int:
        """Trips to the database thread so far (each statement awaited, each `apply`)."""
        return self._db.trips

    def count_round_trips(self, counter: Callable[[], None]) -> None:
        """Tell `counter` of each trip to the database thread (the service hands it
        the metric)."""
        self._db.on_trip = counter

    @property
    def current_model(self) -> StateModel | None:
        """The state in memory when it is in step with the file: None before
        `load_model`, and while a fault has left it behind (until rebuilt)."""
        return None if self._model_stale else self.model

    async def load_model(self) -> StateModel:
        """Build the state in memory from the file (at start-up), and from then on
        keep it written through after each commit."""
        fresh = await self.read_model()
        if self.model is None:
            self.model = fresh
        else:
            self.model.replace_with(fresh)
        self._model_stale = False
        return self.model

    async def _rebuild_model(self) -> None:
        if self.model is not None:
            await self.load_model()

    async def read_model(self) -> StateModel:
        """A new state model read from the file (the one kept is not touched)."""
        # Under the lock, in one read transaction: no write lands halfway through.
        async with self._tx_lock:
            await self._db.execute("BEGIN")
            try:
                tapes = await self.tapes()
                drives = await self.drives()
                pools = await self.pools()
                shared = _Shared()
                destinations: list[DestinationRecord] = []
                async for chunk in self._each_chunk(_MODEL_DESTINATIONS):
                    destinations += [_loaded_destination(row, shared) for row in chunk]
                requests: list[RequestRecord] = []
                async for chunk in self._each_chunk(_MODEL_REQUESTS, _ACTIVE_VALUES):
                    requests += [_loaded_request(row, shared) for row in chunk]
            finally:
                with contextlib.suppress(sqlite3.Error):
                    await self._db.execute("COMMIT")
        return StateModel(
            tapes=tapes, drives=drives, pools=pools, destinations=destinations, requests=requests
        )

    async def probe(self, now: float) -> bool:
        """A tiny write: does the journal take writes again? (clears `fault` if so)"""
        try:
            async with self._write() as db:
                await db.execute(
                    "INSERT INTO meta(key, value) VALUES('probe', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (str(now),),
                )
        except JournalFaultError:
            return False
        return True

    async def answers(self) -> None:
        """A trivial read: the connection and its thread still respond."""
        await self._one("SELECT 1")

    async def has_inventory(self) -> bool:
        """Whether the library has been inventoried into this journal."""
        return await self._one("SELECT 1 FROM meta WHERE key='inventory'") is not None

    async def quick_check(self) -> list[str]:
        """SQLite's quick_check: [] when the file is sound, else what it found."""
        return await _quick_check(self._db)

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        # One trip to the database thread (execute, fetch and close would be three):
        # on a busy machine each trip costs hundreds of microseconds.
        try:
            return list(await self._db.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            if fault_kind(exc) is None:
                raise
            raise self._faulted(exc) from exc

    async def _each_chunk(
        self, sql: str, params: Sequence[Any] = ()
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """The rows as plain tuples (far cheaper to read than named rows), a chunk at
        a time: a large table is never held whole as rows beside its records."""
        try:
            async for chunk in self._db.chunks(sql, params, _CHUNK):
                yield chunk
        except sqlite3.Error as exc:
            if fault_kind(exc) is None:
                raise
            raise self._faulted(exc) from exc

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """The first row (callers ask for one: a key, or LIMIT 1), in one trip."""
        try:
            rows = await self._db.execute_fetchall(sql, params)
            return next(iter(rows), None)
        except sqlite3.Error as exc:
            if fault_kind(exc) is None:
                raise
            raise self._faulted(exc) from exc

    # -- catalog -------------------------------------------------------------------

    async def sync_catalog(self, definition: LibraryDefinition, now: float) -> None:
        """Bring pools, drives and tapes in from the definition; keep what we learnt."""
        try:
            await self._write_catalog(definition, now)
        finally:
            # What was read of the catalog meanwhile may never have been committed.
            self._pools = self._tape_library_id = None

    async def _write_catalog(self, definition: LibraryDefinition, now: float) -> None:
        async with self._write() as db:
            await db.execute(
                "INSERT INTO meta(key, value) VALUES('tape_library_id', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(definition.tape_library_id),),
            )
            for pool in definition.pools:
                await db.execute(
                    "INSERT INTO pools(name, pool_id, content, type, comment, "
                    "write_protect_when_full) VALUES(?,?,?,?,?,?) "
                    "ON CONFLICT(name) DO UPDATE SET pool_id=excluded.pool_id, "
                    "content=excluded.content, type=excluded.type, comment=excluded.comment, "
                    "write_protect_when_full=excluded.write_protect_when_full",
                    (
                        pool.name,
                        pool.id,
                        pool.content,
                        pool.type,
                        pool.comment,
                        int(pool.tape_write_protect_when_full),
                    ),
                )
            for drive in definition.drives:
                await db.execute(
                    "INSERT INTO drives(idx, generation, device) VALUES(?,?,?) "
                    "ON CONFLICT(idx) DO UPDATE SET generation=excluded.generation, "
                    "device=excluded.device",
                    (drive.index, drive.generation, drive.device),
                )
            # Fleet-unique ids (worker/seed/tape_ids.py): ours lie in our library's
            # block, and a tape numbered under another library number moves into it.
            block = tape_id_block(definition.tape_library_id)
            row = await self._one(
                "SELECT COALESCE(MAX(tape_id), 0) FROM tapes WHERE tape_id BETWEEN ? AND ?",
                (block[0], block[-1]),
            )
            next_id = max(row[0] if row else 0, block[0] - 1) + 1
            outside = await self._all(
                "SELECT barcode FROM tapes WHERE tape_id NOT BETWEEN ? AND ? ORDER BY tape_id",
                (block[0], block[-1]),
            )
            for moved in outside:
                await db.execute(
                    "UPDATE tapes SET tape_id=? WHERE barcode=?", (next_id, moved["barcode"])
                )
                next_id += 1
            operator_locks = await self._operator_locks()
            for tape in definition.tapes:
                media = media_of(tape.barcode)
                exists = await self._one("SELECT 1 FROM tapes WHERE barcode=?", (tape.barcode,))
                if exists:
                    # The definition owns pool membership and operator flags; a lock
                    # made with `tapeworker tape lock` lasts until `unlock` too.
                    locked = tape.locked or tape.barcode in operator_locks
                    await db.execute(
                        "UPDATE tapes SET pool=?, locked=?, write_protected=?, known=1 "
                        "WHERE barcode=?",
                        (tape.pool, int(locked), int(tape.write_protected), tape.barcode),
                    )
                    continue
                await db.execute(
                    "INSERT INTO tapes(barcode, tape_id, pool, media, cleaning, locked, "
                    "write_protected, full, need_to_check, used_bytes, cleaning_uses_left, "
                    "slot, home_slot, drive, date_in) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        tape.barcode,
                        next_id,
                        tape.pool,
                        media.label if media else None,
                        int(is_cleaning(tape.barcode)),
                        int(tape.locked),
                        int(tape.write_protected),
                        int(tape.full),
                        int(tape.need_to_check),
                        tape.used_bytes,
                        tape.cleaning_uses_left if is_cleaning(tape.barcode) else 0,
                        tape.slot,
                        tape.slot,
                        tape.drive,
                        now,
                    ),
                )
                next_id += 1
            await self._note_library(tapes=True, drives=True, pools=True)

    async def _note_library(self, *, tapes: bool, drives: bool, pools: bool) -> None:
        """Inside a write: whole tables as it leaves them, for the model (these writes
        are rare and touch many rows: a catalog sync, an inventory)."""
        if not self._notes.collecting:
            return
        self._notes.note(
            StateModel.apply_library,
            await self.tapes() if tapes else None,
            await self.drives() if drives else None,
            await self.pools() if pools else None,
        )

    async def apply_inventory(self, inventory: Inventory, now: float) -> list[str]:
        """Record where the library says each cartridge is; return what surprised us."""
        surprises: list[str] = []
        async with self._write() as db:
            await db.execute(
                "INSERT INTO meta(key, value) VALUES('inventory', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (json.dumps({"taken": now, **inventory.as_json()}),),
            )
            seen: set[str] = set()
            for slot in inventory.slots:
                if slot.full and slot.barcode:
                    seen.add(slot.barcode)
                    await self._place(db, slot.barcode, slot=slot.number, drive=None, now=now)
            for drive in inventory.drives:
                await db.execute(
                    "UPDATE drives SET barcode=? WHERE idx=?",
                    (drive.barcode if drive.full else None, drive.index),
                )
                if drive.full and drive.barcode:
                    seen.add(drive.barcode)
                    await self._place(
                        db,
                        drive.barcode,
                        slot=None,
                        drive=drive.index,
                        now=now,
                        home=drive.source_slot,
                    )
            for row in await self._all("SELECT barcode FROM tapes WHERE known=1"):
                if row["barcode"] not in seen:
                    surprises.append(f"tape {row['barcode']} is not in the library")
                    await db.execute(
                        "UPDATE tapes SET slot=NULL, drive=NULL, known=0 WHERE barcode=?",
                        (row["barcode"],),
                    )
            await self._note_library(tapes=True, drives=True, pools=False)
        return surprises

    async def _place(
        self,
        db: ThreadConnection,
        barcode: str,
        *,
        slot: int | None,
        drive: int | None,
        now: float,
        home: int | None = None,
    ) -> None:
        row = await self._one(
            "SELECT slot, drive, home_slot FROM tapes WHERE barcode=?", (barcode,)
        )
        if row is None:
            # A cartridge the catalog does not know: record it so operators see it,
            # with no pool, so it is never chosen for a pool destination.
            max_row = await self._one("SELECT COALESCE(MAX(tape_id), 0) FROM tapes")
            media = media_of(barcode)
            await db.execute(
                "INSERT INTO tapes(barcode, tape_id, media, cleaning, slot, home_slot, drive, "
                "date_in) VALUES(?,?,?,?,?,?,?,?)",
                (
                    barcode,
                    (max_row[0] if max_row else 0) + 1,
                    media.label if media else None,
                    int(is_cleaning(barcode)),
                    slot,
                    slot if slot is not None else home,
                    drive,
                    now,
                ),
            )
            return
        home_slot = row["home_slot"]
        if slot is not None:
            home_slot = slot
        elif home_slot is None:
            home_slot = home
        moved = (row["slot"], row["drive"]) != (slot, drive)
        await db.execute(
            "UPDATE tapes SET slot=?, drive=?, home_slot=?, known=1, ejected=0, "
            "date_move=CASE WHEN ? THEN ? ELSE date_move END WHERE barcode=?",
            (slot, drive, home_slot, int(moved), now, barcode),
        )

    async def last_inventory(self) -> dict[str, Any] | None:
        row = await self._one("SELECT value FROM meta WHERE key='inventory'")
        return json.loads(row[0]) if row else None

    async def record_surprises(self, surprises: Sequence[str], now: float) -> None:
        """Remember what an inventory found that the journal did not expect, the
        latest SURPRISES_KEPT of them, for `tapeworker status`."""
        if not surprises:
            return
        async with self._write() as db:
            kept = await self.surprises()
            kept.extend({"time": now, "what": what} for what in surprises)
            await db.execute(
                "INSERT INTO meta(key, value) VALUES('surprises', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (json.dumps(kept[-SURPRISES_KEPT:]),),
            )

    async def surprises(self) -> list[dict[str, Any]]:
        """What inventories found unexpected, oldest first: `{"time", "what"}`."""
        row = await self._one("SELECT value FROM meta WHERE key='surprises'")
        return list(json.loads(row[0])) if row else []

    async def tapes(self) -> list[TapeRecord]:
        return [_tape(r) for r in await self._all("SELECT * FROM tapes ORDER BY barcode")]

    async def tape(self, barcode: str) -> TapeRecord | None:
        row = await self._one(_TAPE, (barcode,))
        return _tape(row) if row else None

    async def tape_by_id(self, tape_id: int) -> TapeRecord | None:
        row = await self._one(_TAPE_BY_ID, (tape_id,))
        return _tape(row) if row else None

    async def pools(self) -> list[PoolRecord]:
        if self._pools is None:
            self._pools = [_from_row(PoolRecord, r) for r in await self._all(_POOLS)]
        return list(self._pools)

    async def drives(self) -> list[DriveRecord]:
        rows = await self._all("SELECT * FROM drives ORDER BY idx")
        return [_from_row(DriveRecord, r, index=r["idx"]) for r in rows]

    async def update_tape(self, barcode: str, **fields: Any) -> None:
        allowed = {
            "need_to_check",
            "full",
            "used_bytes",
            "cleaning_uses_left",
            "locked",
            "write_protected",
            "ejected",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not tape fields: {sorted(unknown)}")
        sets = ", ".join(f"{k}=?" for k in fields)
        async with self._write() as db:
            await db.execute(
                f"UPDATE tapes SET {sets} WHERE barcode=?",  # noqa: S608 - keys checked above
                (*[int(v) if isinstance(v, bool) else v for v in fields.values()], barcode),
            )
            self._notes.note(StateModel.apply_tape_fields, barcode, dict(fields))

    # -- operator actions ------------------------------------------------------------
    # Each one changes the state and journals who did it and why, in one transaction,
    # as an event of source "operator" (so `tapeworker events` lists them too).

    async def operator_action(
        self,
        action: str,
        *,
        who: str,
        reason: str | None,
        now: float,
        target: str,
        drive: int | None = None,
        barcode: str | None = None,
        tape_fields: dict[str, bool] | None = None,
        drive_up: bool | None = None,
        draining: bool | None = None,
    ) -> bool:
        """Apply one operator action; False when its drive or tape does not exist."""
        async with self._write() as db:
            if drive is not None and drive_up is not None:
                cursor = await db.execute(
                    "UPDATE drives SET up=?, failures=0, reason=? WHERE idx=?",
                    (int(drive_up), None if drive_up else f"operator: {reason}", drive),
                )
                if not cursor.rowcount:
                    return False
                self._notes.note(
                    StateModel.apply_drive_fields,
                    drive,
                    {
                        "up": drive_up,
                        "failures": 0,
                        "reason": None if drive_up else f"operator: {reason}",
                    },
                )
            if barcode is not None and tape_fields:
                allowed = {"need_to_check", "locked"}
                if set(tape_fields) - allowed:
                    raise ValueError(f"not operator tape fields: {sorted(tape_fields)}")
                sets = ", ".join(f"{k}=?" for k in tape_fields)
                cursor = await db.execute(
                    f"UPDATE tapes SET {sets} WHERE barcode=?",  # noqa: S608 - keys checked
                    (*[int(v) for v in tape_fields.values()], barcode),
                )
                if not cursor.rowcount:
                    return False
                self._notes.note(StateModel.apply_tape_fields, barcode, dict(tape_fields))
                if "locked" in tape_fields:
                    locks = await self._operator_locks()
                    locks = (locks | {barcode}) if tape_fields["locked"] else (locks - {barcode})
                    await db.execute(
                        "INSERT INTO meta(key, value) VALUES('operator_locks', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (json.dumps(sorted(locks)),),
                    )
            if draining is not None:
                if draining:
                    await db.execute(
                        "INSERT INTO meta(key, value) VALUES('draining', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (json.dumps({"by": who, "reason": reason, "since": now}),),
                    )
                else:
                    await db.execute("DELETE FROM meta WHERE key='draining'")
            await self._operator_event(db, action, who, reason, now, target)
        return True

    async def _operator_event(
        self,
        db: ThreadConnection,
        action: str,
        who: str,
        reason: str | None,
        now: float,
        target: str,
    ) -> None:
        """An operator's action as an event: who and why, in the caller's transaction."""
        await Transaction(db, UnitOfWork(self, db.connection, self._notes, None)).insert_event(
            source="operator",
            received=now,
            topic=target,
            verb=action,
            payload=json.dumps({"by": who, "reason": reason}),
            status="applied",
            reason=f"{who}: {reason}" if reason else who,
        )

    async def _operator_locks(self) -> set[str]:
        row = await self._one("SELECT value FROM meta WHERE key='operator_locks'")
        return set(json.loads(row[0])) if row else set()

    async def tape_library_id(self) -> int:
        """The archive manager's id of this library, as the definition gives it (1 until
        the catalog is first synced)."""
        if self._tape_library_id is None:
            # A catalog fact, like the pools: read once, again after `sync_catalog`.
            row = await self._one(_TAPE_LIBRARY_ID)
            self._tape_library_id = int(row[0]) if row else 1
        return self._tape_library_id

    async def draining(self) -> dict[str, Any] | None:
        """Who drained the library, why and since when; None when it is not draining."""
        row = await self._one("SELECT value FROM meta WHERE key='draining'")
        return json.loads(row[0]) if row else None

    # -- events --------------------------------------------------------------------

    async def event_with_dedup_key(self, dedup_key: str) -> EventRecord | None:
        """The event journaled under a publisher's event-id, if any."""
        row = await self._one(_EVENT_BY_DEDUP_KEY, (dedup_key,))
        return _from_row(EventRecord, row) if row else None

    # -- pool destinations held for a fleet -----------------------------------------

    async def watch_pool_event(self, watch: PoolWatchRecord) -> None:
        """Hold a pool destination until a library of the pool claims it (kept once)."""
        async with self._write() as db:
            await db.execute(
                "INSERT INTO pool_watches(event_id, pool, destination_id, topic, payload, "
                "sequence, received) VALUES(?,?,?,?,?,?,?) ON CONFLICT(event_id) DO NOTHING",
                (
                    watch.event_id,
                    watch.pool,
                    watch.destination_id,
                    watch.topic,
                    watch.payload,
                    watch.sequence,
                    watch.received,
                ),
            )

    async def pool_watches(self) -> list[PoolWatchRecord]:
        """The pool destinations held, oldest first."""
        rows = await self._all("SELECT * FROM pool_watches ORDER BY received, event_id")
        return [_from_row(PoolWatchRecord, row) for row in rows]

    async def forget_pool_watch(self, event_id: str) -> None:
        """A held pool destination was claimed (by us or another library)."""
        async with self._write() as db:
            await db.execute("DELETE FROM pool_watches WHERE event_id=?", (event_id,))

    async def events(
        self, status: str | None = None, limit: int = 1000, since: float | None = None
    ) -> list[EventRecord]:
        """The latest events first; `since` keeps those received at or after it."""
        sql = "SELECT * FROM events WHERE 1=1"
        params: list[Any] = []
        if status is not None:
            sql += " AND status=?"
            params.append(status)
        if since is not None:
            sql += " AND received>=?"
            params.append(since)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        return [_from_row(EventRecord, r) for r in await self._all(sql, params)]

    # -- idempotency keys ----------------------------------------------------------

    async def idempotent_result(self, scope: str, key: str, now: float) -> IdempotentResult | None:
        """The first result of a create under this key, unless it has expired."""
        row = await self._one(
            "SELECT fingerprint, status, destination_id, reason, response FROM idempotency_keys "
            "WHERE scope=? AND key=? AND expires>?",
            (scope, key, now),
        )
        return _from_row(IdempotentResult, row) if row else None

    # -- destinations ----------------------------------------------------------------

    async def destination(self, destination_id: int) -> DestinationRecord | None:
        row = await self._one(_DESTINATION, (destination_id,))
        return _destination(row) if row else None

    async def destinations(self, task_id: str | None = None) -> list[DestinationRecord]:
        if task_id is None:
            rows = await self._all("SELECT * FROM destinations WHERE deleted=0 ORDER BY id")
        else:
            rows = await self._all(
                "SELECT * FROM destinations WHERE deleted=0 AND task_id=? ORDER BY id",
                (task_id,),
            )
        return [_destination(r) for r in rows]

    async def destination_page(self, task_id: str, query: IndexQuery) -> tuple[int, list[int]]:
        """An index query: how many destinations match, and the ids of the page, in order."""
        where, params = _where(task_id, query.filters)
        if query.filters:
            row = await self._one(
                f"SELECT COUNT(*) FROM destinations WHERE {where}",  # noqa: S608 - whitelisted
                params,
            )
        else:
            row = await self._one("SELECT live FROM task_counts WHERE task_id=?", (task_id,))
        count = int(row[0]) if row else 0
        # LIMIT -1 is SQLite's "no limit".
        rows = await self._all(
            f"SELECT id FROM destinations WHERE {where} "  # noqa: S608 - whitelisted
            f"ORDER BY {_order(query.sort)} LIMIT ? OFFSET ?",
            [*params, -1 if query.limit is None else query.limit, query.offset],
        )
        return count, [int(r[0]) for r in rows]

    async def destinations_by_ids(self, ids: Sequence[int]) -> list[DestinationRecord]:
        """The destinations of these ids, in the order given (missing ones left out)."""
        found: dict[int, DestinationRecord] = {}
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows = await self._all(
                f"SELECT * FROM destinations WHERE id IN ({marks})",  # noqa: S608
                chunk,
            )
            found.update((r["id"], _destination(r)) for r in rows)
        return [found[i] for i in ids if i in found]

    async def listing_tapes(self, ids: Sequence[int]) -> list[TapeRecord]:
        """The tapes that the destinations of these ids show (see `destination_listing`)."""
        rows = await self._all(_LISTING_TAPES_SQL, (json.dumps(list(ids)),))
        return [_tape(r) for r in rows]

    async def destination_listing(
        self, ids: Sequence[int], tapes_json: str, pools_json: str
    ) -> list[bytes]:
        """The JSON of each live destination of these ids (UTF-8), in the order given,
        as the index shows it; `tapes_json` and `pools_json` map tape and pool ids to
        their objects (JSON objects keyed by the id as text)."""
        # Bytes, not text: the response is bytes, and 40 MB decoded to be encoded again
        # cost as much as building them.
        rows = await self._all(_LISTING_SQL, (json.dumps(list(ids)), tapes_json, pools_json))
        return [r[0] for r in rows]

    async def latest_requests_for(self, destination_ids: Sequence[int]) -> dict[int, RequestRecord]:
        """Each destination's latest request (as `latest_request_for`, for many at once)."""
        latest: dict[int, RequestRecord] = {}
        for start in range(0, len(destination_ids), _BATCH):
            chunk = destination_ids[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows = await self._all(
                "SELECT * FROM requests WHERE id IN (SELECT MAX(id) FROM requests "  # noqa: S608
                f"WHERE destination_id IN ({marks}) GROUP BY destination_id)",
                chunk,
            )
            latest.update((r["destination_id"], _request(r)) for r in rows)
        return latest

    async def tapes_by_barcode(self, barcodes: Sequence[str]) -> dict[str, TapeRecord]:
        found: dict[str, TapeRecord] = {}
        unique = sorted(set(barcodes))
        for start in range(0, len(unique), _BATCH):
            chunk = unique[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows = await self._all(
                f"SELECT * FROM tapes WHERE barcode IN ({marks})",  # noqa: S608
                chunk,
            )
            found.update((r["barcode"], _tape(r)) for r in rows)
        return found

    # -- API keys ----------------------------------------------------------------------

    async def add_api_key(
        self,
        name: str,
        key_id: str,
        digest: str,
        scopes: Sequence[str],
        now: float,
        *,
        who: str | None = None,
        reason: str | None = None,
    ) -> bool:
        """Store a new key; False when the name is taken (by a live or revoked key).
        With `who`, the operator's event "api-key create" in the same transaction."""
        async with self._write() as db:
            cur = await db.execute(
                "INSERT INTO api_keys(name, key_id, digest, scopes, created) VALUES(?,?,?,?,?) "
                "ON CONFLICT(name) DO NOTHING",
                (name, key_id, digest, json.dumps(sorted(scopes)), now),
            )
            self.api_keys_changed += 1
            if cur.rowcount and who is not None:
                await self._operator_event(
                    db, "api-key create", who, reason, now, f"api key {name}"
                )
            return bool(cur.rowcount)

    async def api_key(self, key_id: str) -> ApiKeyRecord | None:
        row = await self._one("SELECT * FROM api_keys WHERE key_id=?", (key_id,))
        return (
            _from_row(ApiKeyRecord, row, scopes=tuple(json.loads(row["scopes"]))) if row else None
        )

    async def api_keys(self) -> list[ApiKeyRecord]:
        rows = await self._all("SELECT * FROM api_keys ORDER BY name")
        return [_from_row(ApiKeyRecord, r, scopes=tuple(json.loads(r["scopes"]))) for r in rows]

    async def revoke_api_key(
        self, name: str, now: float, *, who: str | None = None, reason: str | None = None
    ) -> bool:
        """Revoke a live key; False when there is no live key of that name.
        With `who`, the operator's event "api-key revoke" in the same transaction."""
        async with self._write() as db:
            cur = await db.execute(
                "UPDATE api_keys SET revoked=? WHERE name=? AND revoked IS NULL", (now, name)
            )
            self.api_keys_changed += 1
            if cur.rowcount and who is not None:
                await self._operator_event(
                    db, "api-key revoke", who, reason, now, f"api key {name}"
                )
            return bool(cur.rowcount)

    async def next_destination_id(self) -> int:
        row = await self._one(_NEXT_DESTINATION_ID)
        return int(row[0]) if row else 1

    # -- retention -------------------------------------------------------------------

    async def prune(self, before: float, *, batch: int = 200) -> PruneCounts:
        """Forget what ended before `before`: events, ended requests (the latest of a
        live destination stays, it is what its view shows), finished operations and
        destroyed destinations. Live desired state, active requests, operations in
        flight, tapes and drives are never touched.

        Small transactions, one batch each, so intake takes turns with the pruning.
        """
        counts = {"events": 0, "requests": 0, "operations": 0, "destinations": 0}
        selections = {
            "events": "DELETE FROM events WHERE seq IN "
            "(SELECT seq FROM events WHERE received < ? LIMIT ?)",
            "operations": "DELETE FROM operations WHERE id IN "
            "(SELECT id FROM operations WHERE state NOT IN ('intent', 'moved') "
            "AND finished IS NOT NULL AND finished < ? LIMIT ?)",
            "requests": "DELETE FROM requests WHERE id IN "
            "(SELECT r.id FROM requests r WHERE r.state IN ('released', 'failed') "
            "AND r.updated < ? AND (EXISTS (SELECT 1 FROM destinations d "
            "WHERE d.id = r.destination_id AND d.deleted = 1) "
            "OR NOT EXISTS (SELECT 1 FROM destinations d WHERE d.id = r.destination_id) "
            "OR r.id < (SELECT MAX(r2.id) FROM requests r2 "
            "WHERE r2.destination_id = r.destination_id)) LIMIT ?) "
            "RETURNING id, destination_id",
            "destinations": "DELETE FROM destinations WHERE id IN "
            "(SELECT d.id FROM destinations d WHERE d.deleted = 1 AND d.updated < ? "
            "AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.destination_id = d.id) LIMIT ?) "
            "RETURNING id",
        }
        for table, sql in selections.items():
            while True:
                async with self._write() as db:
                    if table == "destinations":
                        await db.execute(
                            "INSERT INTO meta(key, value) SELECT 'destination_high_water', "
                            "MAX(id) FROM destinations WHERE true HAVING MAX(id) IS NOT NULL "
                            "ON CONFLICT(key) DO UPDATE SET value=MAX(CAST(value AS INTEGER), "
                            "CAST(excluded.value AS INTEGER))"
                        )
                    cur = await db.execute(sql, (before, batch))
                    if table == "requests":
                        rows = cur.rows
                        deleted = len(rows)
                        await self._note_pruned_requests(rows)
                    elif table == "destinations":
                        rows = cur.rows
                        deleted = len(rows)
                        self._notes.note(StateModel.apply_pruned, [int(r[0]) for r in rows], [], [])
                    else:
                        deleted = cur.rowcount
                counts[table] += deleted
                if deleted < batch:
                    break
        if any(counts.values()):
            await self._checkpoint()
        return PruneCounts(**counts)

    async def _note_pruned_requests(self, rows: Sequence[sqlite3.Row]) -> None:
        """Inside a prune's write: the requests it deleted and, for the model, the
        latest request left to each of their destinations."""
        if not self._notes.collecting or not rows:
            return
        destination_ids = sorted({int(r[1]) for r in rows})
        latest: list[RequestRecord] = []
        for start in range(0, len(destination_ids), _BATCH):
            chunk = destination_ids[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            latest += [
                _request(r)
                for r in await self._all(
                    "SELECT * FROM requests WHERE id IN (SELECT MAX(id) FROM requests "  # noqa: S608
                    f"WHERE destination_id IN ({marks}) GROUP BY destination_id)",
                    chunk,
                )
            ]
        self._notes.note(StateModel.apply_pruned, [], [int(r[0]) for r in rows], latest)

    async def _checkpoint(self) -> None:
        """Copy the write-ahead log into the file and empty it, so that what pruning
        freed shows on disk (freed pages are reused by the next writes)."""
        async with self._tx_lock:
            try:
                await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                if fault_kind(exc) is None:
                    raise
                raise self._faulted(exc) from exc

    def size_bytes(self) -> int:
        """The journal's size on disk: the file and its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total

    # -- requests ----------------------------------------------------------------------

    async def request(self, request_id: int) -> RequestRecord | None:
        row = await self._one(_REQUEST, (request_id,))
        return _request(row) if row else None

    async def requests(self, states: Iterable[RequestState] | None = None) -> list[RequestRecord]:
        if states is None:
            return [_request(r) for r in await self._all("SELECT * FROM requests ORDER BY id")]
        wanted = [s.value for s in states]
        marks = ",".join("?" * len(wanted))
        rows = await self._all(
            f"SELECT * FROM requests WHERE state IN ({marks}) ORDER BY id",  # noqa: S608
            wanted,
        )
        return [_request(r) for r in rows]

    async def active_request_for(self, destination_id: int) -> RequestRecord | None:
        row = await self._one(_ACTIVE_REQUEST_FOR, (destination_id, *_ACTIVE_STATES))
        return _request(row) if row else None

    async def latest_request_for(self, destination_id: int) -> RequestRecord | None:
        row = await self._one(
            "SELECT * FROM requests WHERE destination_id=? ORDER BY id DESC LIMIT 1",
            (destination_id,),
        )
        return _request(row) if row else None

    # -- operations ------------------------------------------------------------------

    async def begin_operation(
        self,
        kind: str,
        now: float,
        *,
        barcode: str | None = None,
        slot: int | None = None,
        drive: int | None = None,
        request_ids: Sequence[int] = (),
    ) -> int:
        """The write-ahead intent: committed before the command runs."""
        async with self._write() as db:
            cur = await db.execute(
                "INSERT INTO operations(kind, barcode, slot, drive, request_ids, state, started) "
                "VALUES(?,?,?,?,?, 'intent', ?)",
                (kind, barcode, slot, drive, json.dumps(list(request_ids)), now),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    async def operations(self, state: str | None = None) -> list[OperationRecord]:
        if state is None:
            rows = await self._all("SELECT * FROM operations ORDER BY id")
        else:
            rows = await self._all("SELECT * FROM operations WHERE state=? ORDER BY id", (state,))
        return [_operation(r) for r in rows]


class UnitOfWork:
    """The writes of one journal transaction, each a method named for what it means,
    and the reads they need; synchronous, in the database thread.

    `Journal.apply` hands one to a function that does a whole batch in one trip;
    `Transaction` runs each method as a trip of its own. Reads see the transaction's
    own writes: what it has not touched comes from the state in memory when that is
    in step with the file, the rest from the file.
    """

    def __init__(
        self,
        journal: Journal,
        conn: sqlite3.Connection,
        notes: ModelNotes,
        model: StateModel | None,
    ) -> None:
        self._journal = journal
        self._conn = conn
        self._notes = notes
        self._model = model
        #: What this transaction wrote: the model does not have it yet.
        self._destinations: set[int] = set()
        self._requests: set[int] = set()
        self._tapes: set[str] = set()
        #: A request was written whose destination we do not know: the model's view of
        #: every destination's requests may be behind.
        self._all_requests = False

    def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def _wrote_request(self, request_id: int, destination_id: int | None) -> None:
        self._requests.add(request_id)
        if destination_id is None and self._model is not None:
            known = self._model.request(request_id)
            destination_id = known.destination_id if known is not None else None
        if destination_id is None:
            self._all_requests = True
        else:
            self._destinations.add(destination_id)

    # -- reads -------------------------------------------------------------------------

    def request(self, request_id: int) -> RequestRecord | None:
        if self._model is not None and request_id not in self._requests:
            # The model keeps the active requests and each destination's latest.
            known = self._model.request(request_id)
            if known is not None:
                return known
        row = self._one(_REQUEST, (request_id,))
        return _request(row) if row else None

    def active_request_for(self, destination_id: int) -> RequestRecord | None:
        model = self._model
        if (
            model is not None
            and not self._all_requests
            and destination_id not in self._destinations
        ):
            return model.active_request_for(destination_id)
        row = self._one(_ACTIVE_REQUEST_FOR, (destination_id, *_ACTIVE_STATES))
        return _request(row) if row else None

    def destination(self, destination_id: int) -> DestinationRecord | None:
        if self._model is not None and destination_id not in self._destinations:
            return self._model.destination(destination_id)
        row = self._one(_DESTINATION, (destination_id,))
        return _destination(row) if row else None

    def tape(self, barcode: str) -> TapeRecord | None:
        if self._model is not None and barcode not in self._tapes:
            return self._model.tape(barcode)
        row = self._one(_TAPE, (barcode,))
        return _tape(row) if row else None

    def tape_by_id(self, tape_id: int) -> TapeRecord | None:
        if self._model is not None:
            # Writes here never change which tape has which id.
            known = self._model.tape_by_id(tape_id)
            return None if known is None else self.tape(known.barcode)
        row = self._one(_TAPE_BY_ID, (tape_id,))
        return _tape(row) if row else None

    def pools(self) -> list[PoolRecord]:
        """The pools, by id (no write here changes them)."""
        if self._model is not None:
            return sorted(self._model.pools.values(), key=lambda p: p.pool_id)
        return [_from_row(PoolRecord, r) for r in self._conn.execute(_POOLS).fetchall()]

    def tape_library_id(self) -> int:
        """The archive manager's id of this library (see `Journal.tape_library_id`)."""
        row = self._one(_TAPE_LIBRARY_ID)
        return int(row[0]) if row else 1

    def event_with_dedup_key(self, dedup_key: str) -> EventRecord | None:
        """The event journaled under a publisher's event-id, if any."""
        row = self._one(_EVENT_BY_DEDUP_KEY, (dedup_key,))
        return _from_row(EventRecord, row) if row else None

    def next_destination_id(self) -> int:
        row = self._one(_NEXT_DESTINATION_ID)
        return int(row[0]) if row else 1

    # -- savepoints ----------------------------------------------------------------------

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo just this part when it raises (the transaction goes on)."""
        mark = self.open_savepoint()
        try:
            yield
        except BaseException:
            self.undo_savepoint(mark)
            raise
        self.close_savepoint()

    def open_savepoint(self) -> int:
        self._conn.execute("SAVEPOINT part")
        return self._notes.mark()

    def undo_savepoint(self, mark: int) -> None:
        self._notes.drop_after(mark)
        # After a refused write SQLite may have ended the transaction already.
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK TO part")
            self._conn.execute("RELEASE part")

    def close_savepoint(self) -> None:
        self._conn.execute("RELEASE part")

    # -- events and idempotency keys -----------------------------------------------------

    def insert_event(
        self,
        *,
        source: str,
        received: float,
        topic: str | None = None,
        verb: str | None = None,
        task_id: str | None = None,
        destination_id: int | None = None,
        payload: str | None = None,
        status: str = "applied",
        reason: str | None = None,
        dedup_key: str | None = None,
        digest: str | None = None,
    ) -> int | None:
        """Journal an event; its sequence number, None when the dedup key was seen."""
        cur = self._execute(
            _INSERT_EVENT,
            (
                source,
                dedup_key,
                topic,
                verb,
                task_id,
                destination_id,
                cap_payload(payload, self._journal.max_payload_bytes),
                received,
                status,
                reason,
                digest,
            ),
        )
        return cur.lastrowid if cur.rowcount else None

    def insert_events(self, events: Sequence[NewEvent], received: float) -> None:
        """Journal events that carry no dedup key (none can be a duplicate), in order,
        in one statement."""
        cap = self._journal.max_payload_bytes
        self._conn.executemany(
            _INSERT_EVENT,
            [
                (
                    source,
                    None,
                    topic,
                    verb,
                    task,
                    dest,
                    cap_payload(payload, cap),
                    received,
                    status,
                    reason,
                    digest,
                )
                for source, topic, verb, task, dest, payload, status, reason, digest in events
            ],
        )

    def remember_idempotent_result(
        self,
        *,
        scope: str,
        key: str,
        fingerprint: str,
        status: int,
        destination_id: int | None,
        reason: str | None,
        now: float,
        keep_s: float,
    ) -> None:
        """In the event's own transaction: the key and what it did commit together."""
        # Expired keys go as new ones come: the table holds one keep_s of creates.
        self._execute("DELETE FROM idempotency_keys WHERE expires<=?", (now,))
        self._execute(
            "INSERT OR REPLACE INTO idempotency_keys(scope, key, fingerprint, status, "
            "destination_id, reason, created, expires) VALUES(?,?,?,?,?,?,?,?)",
            (scope, key, fingerprint, status, destination_id, reason, now, now + keep_s),
        )

    def save_idempotent_response(self, scope: str, key: str, status: int, response: str) -> None:
        """The response body as sent, for retries to get the very same answer."""
        self._execute(
            "UPDATE idempotency_keys SET status=?, response=? WHERE scope=? AND key=?",
            (status, response, scope, key),
        )

    # -- destinations --------------------------------------------------------------------

    def insert_destination(self, write: DestinationWrite, now: float) -> None:
        """A new destination's desired state."""
        self._execute(_INSERT_DESTINATION, _insert_values(write, now))
        self._destinations.add(write.destination_id)
        self._notes.note(StateModel.apply_insert_destination, write, now)

    def insert_destinations(self, writes: Sequence[DestinationWrite], now: float) -> None:
        """Many new destinations in one statement (an import, a benchmark's journal)."""
        self._conn.executemany(_INSERT_DESTINATION, [_insert_values(w, now) for w in writes])
        self._destinations.update(w.destination_id for w in writes)
        self._notes.note(StateModel.apply_insert_destinations, list(writes), now)

    def update_destination(self, write: DestinationWrite, now: float) -> None:
        """Replace a destination's desired state; an event without an order keeps the
        order of the last one that had it. The whole body is replaced, as the seed's
        PUT does; the nested folder and container of an earlier event are kept unless
        the new one carries them. The task is the destination's own, never changed."""
        self._execute(
            "UPDATE destinations SET body=?, barcode=?, pool=?, status=?, reason=?, updated=?, "
            "sequence=COALESCE(?, sequence), folder_id=?, folder_path=?, tape_id=?, "
            "tape_barcode=?, pool_id=?, pool_name=?, nested=COALESCE(?, nested) WHERE id=?",
            (
                write.body_json,
                write.barcode,
                write.pool,
                write.status,
                write.reason,
                now,
                write.sequence,
                *[write.body.get(name) for name in _FLAT],
                write.nested_json,
                write.destination_id,
            ),
        )
        self._destinations.add(write.destination_id)
        self._notes.note(StateModel.apply_update_destination, write, now)

    def destroy_destination(self, destination_id: int, *, sequence: int | None, now: float) -> None:
        """Mark a destination destroyed for good."""
        self._execute(
            "UPDATE destinations SET deleted=1, status='destroyed', updated=?, "
            "sequence=COALESCE(?, sequence) WHERE id=?",
            (now, sequence, destination_id),
        )
        self._destinations.add(destination_id)
        self._notes.note(StateModel.apply_destroy_destination, destination_id, sequence, now)

    def destroy_unknown_destination(
        self, destination_id: int, *, task_id: str, sequence: int | None, now: float
    ) -> None:
        """Record a destroy that arrived before any create, so that a create delayed
        behind it (a redelivery) cannot bring the destination back."""
        self._execute(
            "INSERT INTO destinations(id, task_id, body, status, reason, deleted, created, "
            "updated, sequence) VALUES(?,?,'{}','destroyed',?,1,?,?,?)",
            (destination_id, task_id, "destroyed before it was created", now, now, sequence),
        )
        self._destinations.add(destination_id)
        self._notes.note(
            StateModel.apply_destroy_unknown_destination, destination_id, task_id, sequence, now
        )

    # -- requests ------------------------------------------------------------------------

    def add_request(
        self,
        destination_id: int,
        *,
        barcode: str | None,
        pool: str | None,
        now: float,
        size_bytes: int | None = None,
    ) -> int:
        """A new pending write request for a destination; its id."""
        cur = self._execute(
            "INSERT INTO requests(destination_id, barcode, pool, write, state, arrival, updated, "
            "size_bytes) VALUES(?,?,?,1,'pending',?,?,?)",
            (destination_id, barcode, pool, now, now, size_bytes),
        )
        rid = cur.lastrowid
        assert rid is not None
        self._wrote_request(rid, destination_id)
        self._notes.note(
            StateModel.apply_add_request, rid, destination_id, barcode, pool, now, size_bytes
        )
        return rid

    def add_requests(self, requests: Sequence[NewRequest], now: float) -> range:
        """New pending write requests, in one statement; their ids, in order (the ids
        `add_request` would have given them one by one)."""
        row = self._one(_LAST_REQUEST_ID)
        first = (int(row[0]) if row else 0) + 1
        self._conn.executemany(
            _ADD_REQUEST,
            [
                (rid, destination_id, barcode, pool, now, now, size_bytes)
                for rid, (destination_id, barcode, pool, size_bytes) in enumerate(requests, first)
            ],
        )
        ids = range(first, first + len(requests))
        self._requests.update(ids)
        self._destinations.update(request[0] for request in requests)
        self._notes.note(StateModel.apply_add_requests, first, list(requests), now)
        return ids

    def set_request_state(
        self, request_id: int, new: RequestState, now: float, **fields: Any
    ) -> RequestRecord:
        """Move a request along the state table; the request as it is now."""
        current = self.request(request_id)
        if current is None:
            raise KeyError(request_id)
        transition(current.state, new)
        allowed = {"drive", "reason", "barcode", "attempts", "lease_expires"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not request fields: {sorted(unknown)}")
        sets = "".join(f", {k}=?" for k in fields)
        self._execute(
            f"UPDATE requests SET state=?, updated=?{sets} WHERE id=?",  # noqa: S608
            (new.value, now, *fields.values(), request_id),
        )
        self._wrote_request(request_id, current.destination_id)
        self._notes.note(StateModel.apply_request_state, request_id, new, now, dict(fields))
        return dataclasses.replace(current, state=new, updated=now, **fields)

    def release(self, request: RequestRecord, now: float, reason: str) -> None:
        """End a request: its drive starts idling, and a write that was ready counts
        its size onto the tape, so that the planner's estimate of the free space
        follows what was written."""
        self.set_request_state(request.id, RequestState.RELEASED, now, reason=reason)
        if (
            request.state is RequestState.READY
            and request.write
            and request.size_bytes
            and request.barcode is not None
        ):
            self._execute(
                "UPDATE tapes SET used_bytes=used_bytes+? WHERE barcode=?",
                (request.size_bytes, request.barcode),
            )
            self._tapes.add(request.barcode)
            self._notes.note(StateModel.apply_tape_written, request.barcode, request.size_bytes)
        if request.drive is not None:
            self.drive_freed(request.drive, now)

    def assign_tape(self, request_id: int, barcode: str, now: float) -> None:
        """The tape the planner chose for a pool request, while it is still pending."""
        self._execute(
            "UPDATE requests SET barcode=?, updated=? WHERE id=? AND state='pending'",
            (barcode, now, request_id),
        )
        self._wrote_request(request_id, None)
        self._notes.note(StateModel.apply_assign_tape, request_id, barcode, now)

    def make_ready(
        self, request_id: int, drive: int, now: float, hold_seconds: float
    ) -> RequestRecord:
        """The tape is online in `drive`: the request holds it for one lease."""
        return self.set_request_state(
            request_id,
            RequestState.READY,
            now,
            drive=drive,
            lease_expires=lease_expiry(now, hold_seconds),
            reason=None,
        )

    def renew_lease(self, request_id: int, now: float, hold_seconds: float) -> None:
        """A repeated create or update: the ready request holds its drive one lease more."""
        self._execute(
            "UPDATE requests SET lease_expires=? WHERE id=? AND state='ready'",
            (lease_expiry(now, hold_seconds), request_id),
        )
        self._wrote_request(request_id, None)
        self._notes.note(StateModel.apply_renew_lease, request_id, now, hold_seconds)

    # -- operations ----------------------------------------------------------------------

    def finish_operation(
        self,
        operation_id: int,
        state: str,
        now: float,
        *,
        error: str | None = None,
        error_class: str | None = None,
    ) -> None:
        self._execute(
            "UPDATE operations SET state=?, error=?, error_class=?, finished=? WHERE id=?",
            (state, error, error_class, now, operation_id),
        )

    # -- drives and tapes ----------------------------------------------------------------

    def drive_freed(self, drive: int, now: float) -> None:
        """Start a drive's idle clock when its last holder lets go."""
        row = self._one(
            "SELECT COUNT(*) FROM requests WHERE drive=? AND state IN ('ready','mounting')",
            (drive,),
        )
        if row is not None and row[0] == 0:
            self._execute("UPDATE drives SET idle_since=? WHERE idx=?", (now, drive))
        self._notes.note(StateModel.apply_drive_freed, drive, now)

    def move_tape(
        self,
        barcode: str,
        *,
        slot: int | None,
        drive: int | None,
        now: float,
        mounted: bool = False,
    ) -> None:
        """Record a completed move."""
        self._execute(
            "UPDATE tapes SET slot=?, drive=?, date_move=?, "
            "mount_count = mount_count + ? WHERE barcode=?",
            (slot, drive, now, int(mounted), barcode),
        )
        if drive is not None:
            self._execute("UPDATE drives SET barcode=? WHERE idx=?", (barcode, drive))
        else:
            self._execute("UPDATE drives SET barcode=NULL WHERE barcode=?", (barcode,))
        self._tapes.add(barcode)
        self._notes.note(StateModel.apply_move_tape, barcode, slot, drive, now, mounted)

    def drive_in_use(self, drive: int) -> None:
        """A mount starts on the drive: it is no longer idling."""
        self._execute("UPDATE drives SET idle_since=NULL WHERE idx=?", (drive,))
        self._notes.note(StateModel.apply_drive_fields, drive, {"idle_since": None})

    def drive_succeeded(self, drive: int) -> None:
        """A command on the drive worked: its count of consecutive failures restarts."""
        self._execute("UPDATE drives SET failures=0 WHERE idx=?", (drive,))
        self._notes.note(StateModel.apply_drive_fields, drive, {"failures": 0})

    def drive_emptied(self, drive: int) -> None:
        """An unload worked: the drive is empty, sound and not idling."""
        self._execute("UPDATE drives SET idle_since=NULL, failures=0 WHERE idx=?", (drive,))
        self._notes.note(StateModel.apply_drive_fields, drive, {"idle_since": None, "failures": 0})

    def count_drive_failure(self, drive: int, message: str, down_after: int) -> str | None:
        """One more consecutive failure of the drive; the reason when this one marks it
        down (the drive-health rule), None otherwise."""
        self._execute("UPDATE drives SET failures = failures + 1 WHERE idx=?", (drive,))
        self._notes.note(StateModel.apply_drive_failure, drive, message, down_after)
        row = self._one("SELECT failures, up FROM drives WHERE idx=?", (drive,))
        if row is None or not row[1] or not drive_health.goes_down(row[0], down_after):
            return None
        reason = drive_health.down_reason(message)
        self._execute("UPDATE drives SET up=0, reason=? WHERE idx=?", (reason, drive))
        return reason

    def tape_needs_check(self, barcode: str) -> None:
        """An operator must look at the cartridge before it is used again."""
        self._execute("UPDATE tapes SET need_to_check=1 WHERE barcode=?", (barcode,))
        self._tapes.add(barcode)
        self._notes.note(StateModel.apply_tape_fields, barcode, {"need_to_check": True})

    def cleaning_done(self, barcode: str, drive: int, now: float) -> None:
        """A cleaning cycle ran: one use less on the cartridge, the drive is clean."""
        self._execute(
            "UPDATE tapes SET cleaning_uses_left = MAX(cleaning_uses_left - 1, 0), "
            "mount_count = mount_count + 1, date_move=? WHERE barcode=?",
            (now, barcode),
        )
        self._execute("UPDATE drives SET needs_cleaning=0 WHERE idx=?", (drive,))
        self._tapes.add(barcode)
        self._notes.note(StateModel.apply_cleaning_done, barcode, drive, now)


class Transaction:
    """A UnitOfWork awaited from the event loop: each method is one trip to the
    database thread (see `UnitOfWork` for what each means)."""

    def __init__(self, db: ThreadConnection, unit: UnitOfWork) -> None:
        self._db = db
        self._unit = unit

    async def _trip(self, call: Callable[[], Result]) -> Result:
        return await self._db.run(lambda _conn: call())

    async def request(self, request_id: int) -> RequestRecord | None:
        return await self._trip(lambda: self._unit.request(request_id))

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """Inside a caller's transaction: undo just this part when it raises."""
        mark = await self._trip(self._unit.open_savepoint)
        try:
            yield
        except BaseException:
            await self._trip(lambda: self._unit.undo_savepoint(mark))
            raise
        await self._trip(self._unit.close_savepoint)

    async def insert_event(self, **fields: Any) -> int | None:
        """Insert inside a caller's transaction; None when the dedup key was seen."""
        return await self._trip(lambda: self._unit.insert_event(**fields))

    async def remember_idempotent_result(self, **fields: Any) -> None:
        await self._trip(lambda: self._unit.remember_idempotent_result(**fields))

    async def save_idempotent_response(
        self, scope: str, key: str, status: int, response: str
    ) -> None:
        await self._trip(lambda: self._unit.save_idempotent_response(scope, key, status, response))

    async def insert_destination(self, write: DestinationWrite, now: float) -> None:
        await self._trip(lambda: self._unit.insert_destination(write, now))

    async def insert_destinations(self, writes: Sequence[DestinationWrite], now: float) -> None:
        await self._trip(lambda: self._unit.insert_destinations(writes, now))

    async def update_destination(self, write: DestinationWrite, now: float) -> None:
        await self._trip(lambda: self._unit.update_destination(write, now))

    async def destroy_destination(
        self, destination_id: int, *, sequence: int | None, now: float
    ) -> None:
        await self._trip(
            lambda: self._unit.destroy_destination(destination_id, sequence=sequence, now=now)
        )

    async def destroy_unknown_destination(
        self, destination_id: int, *, task_id: str, sequence: int | None, now: float
    ) -> None:
        await self._trip(
            lambda: self._unit.destroy_unknown_destination(
                destination_id, task_id=task_id, sequence=sequence, now=now
            )
        )

    async def add_requests(self, requests: Sequence[NewRequest], now: float) -> range:
        return await self._trip(lambda: self._unit.add_requests(requests, now))

    async def insert_events(self, events: Sequence[NewEvent], received: float) -> None:
        await self._trip(lambda: self._unit.insert_events(events, received))

    async def set_request_state(
        self, request_id: int, new: RequestState, now: float, **fields: Any
    ) -> RequestRecord:
        return await self._trip(
            lambda: self._unit.set_request_state(request_id, new, now, **fields)
        )

    async def finish_operation(
        self,
        operation_id: int,
        state: str,
        now: float,
        *,
        error: str | None = None,
        error_class: str | None = None,
    ) -> None:
        await self._trip(
            lambda: self._unit.finish_operation(
                operation_id, state, now, error=error, error_class=error_class
            )
        )

    async def release(self, request: RequestRecord, now: float, reason: str) -> None:
        await self._trip(lambda: self._unit.release(request, now, reason))

    async def drive_freed(self, drive: int, now: float) -> None:
        await self._trip(lambda: self._unit.drive_freed(drive, now))

    async def move_tape(
        self,
        barcode: str,
        *,
        slot: int | None,
        drive: int | None,
        now: float,
        mounted: bool = False,
    ) -> None:
        await self._trip(
            lambda: self._unit.move_tape(barcode, slot=slot, drive=drive, now=now, mounted=mounted)
        )

    async def add_request(
        self,
        destination_id: int,
        *,
        barcode: str | None,
        pool: str | None,
        now: float,
        size_bytes: int | None = None,
    ) -> int:
        return await self._trip(
            lambda: self._unit.add_request(
                destination_id, barcode=barcode, pool=pool, now=now, size_bytes=size_bytes
            )
        )

    async def assign_tape(self, request_id: int, barcode: str, now: float) -> None:
        await self._trip(lambda: self._unit.assign_tape(request_id, barcode, now))

    async def make_ready(
        self, request_id: int, drive: int, now: float, hold_seconds: float
    ) -> RequestRecord:
        return await self._trip(lambda: self._unit.make_ready(request_id, drive, now, hold_seconds))

    async def renew_lease(self, request_id: int, now: float, hold_seconds: float) -> None:
        await self._trip(lambda: self._unit.renew_lease(request_id, now, hold_seconds))

    async def drive_in_use(self, drive: int) -> None:
        await self._trip(lambda: self._unit.drive_in_use(drive))

    async def drive_succeeded(self, drive: int) -> None:
        await self._trip(lambda: self._unit.drive_succeeded(drive))

    async def drive_emptied(self, drive: int) -> None:
        await self._trip(lambda: self._unit.drive_emptied(drive))

    async def count_drive_failure(self, drive: int, message: str, down_after: int) -> str | None:
        return await self._trip(lambda: self._unit.count_drive_failure(drive, message, down_after))

    async def tape_needs_check(self, barcode: str) -> None:
        await self._trip(lambda: self._unit.tape_needs_check(barcode))

    async def cleaning_done(self, barcode: str, drive: int, now: float) -> None:
        await self._trip(lambda: self._unit.cleaning_done(barcode, drive, now))
