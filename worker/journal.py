"""The SQLite journal: the source of truth after a restart.

It owns the durable inbox of events, the destinations (desired state), mount
requests and their state machine, robot/drive operations (intent before the
command, outcome after), the tape catalog with locations, the drives, and the
last inventory. WAL with synchronous=FULL: an event acknowledged to the broker
must survive a power cut. Callers batch their writes into one transaction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from drivers.base import Inventory
from drivers.definition import LibraryDefinition
from drivers.media import is_cleaning, media_of
from worker.errors import JournalError
from worker.requests import ACTIVE, RequestState, transition

SCHEMA_VERSION = 3

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
    reason TEXT
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
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS destinations_task ON destinations(task_id);
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
    comment TEXT
);
"""
    + f"{_IDEMPOTENCY_TABLE};\n{_IDEMPOTENCY_INDEX};\n"
)


@dataclass(frozen=True, slots=True)
class EventRecord:
    seq: int
    source: str
    topic: str | None
    verb: str | None
    task_id: str | None
    destination_id: int | None
    payload: str | None
    received: float
    status: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class DestinationRecord:
    id: int
    task_id: str
    body: dict[str, Any]
    barcode: str | None
    pool: str | None
    status: str
    reason: str | None
    deleted: bool
    created: float
    updated: float


@dataclass(frozen=True, slots=True)
class RequestRecord:
    id: int
    destination_id: int
    barcode: str | None
    pool: str | None
    write: bool
    state: RequestState
    drive: int | None
    reason: str | None
    attempts: int
    arrival: float
    updated: float
    lease_expires: float | None
    #: What the destination will write, when its event told us (the folder's size).
    size_bytes: int | None


@dataclass(frozen=True, slots=True)
class OperationRecord:
    id: int
    kind: str
    barcode: str | None
    slot: int | None
    drive: int | None
    request_ids: tuple[int, ...]
    state: str
    error: str | None
    error_class: str | None
    started: float
    finished: float | None


@dataclass(frozen=True, slots=True)
class TapeRecord:
    barcode: str
    tape_id: int
    pool: str | None
    media: str | None
    cleaning: bool
    locked: bool
    write_protected: bool
    full: bool
    need_to_check: bool
    ejected: bool
    used_bytes: int
    cleaning_uses_left: int
    slot: int | None
    home_slot: int | None
    drive: int | None
    mount_count: int
    date_in: float | None
    date_move: float | None
    known: bool


@dataclass(frozen=True, slots=True)
class DriveRecord:
    index: int
    generation: int
    device: str
    barcode: str | None
    up: bool
    failures: int
    reason: str | None
    idle_since: float | None
    needs_cleaning: bool


@dataclass(frozen=True, slots=True)
class PoolRecord:
    name: str
    pool_id: int
    content: str
    type: str | None
    comment: str | None


@dataclass(frozen=True, slots=True)
class IdempotentResult:
    """What a create with an Idempotency-Key did, kept to answer its retries alike."""

    fingerprint: str
    status: int
    destination_id: int | None
    reason: str | None
    #: The response body as first sent; None if the daemon stopped before saving it.
    response: str | None


Record = TypeVar("Record")


def _from_row(cls: type[Record], row: aiosqlite.Row, **overrides: Any) -> Record:
    """A record from a row of the same column names; 0/1 columns become bools."""
    values: dict[str, Any] = {}
    for spec in fields(cls):  # type: ignore[arg-type]
        if spec.name in overrides:
            values[spec.name] = overrides[spec.name]
        else:
            value = row[spec.name]
            values[spec.name] = bool(value) if spec.type == "bool" else value
    return cls(**values)


def _request(row: aiosqlite.Row) -> RequestRecord:
    return _from_row(RequestRecord, row, state=RequestState(row["state"]))


def _tape(row: aiosqlite.Row) -> TapeRecord:
    return _from_row(TapeRecord, row)


def _destination(row: aiosqlite.Row) -> DestinationRecord:
    return _from_row(DestinationRecord, row, body=json.loads(row["body"]))


def _operation(row: aiosqlite.Row) -> OperationRecord:
    return _from_row(OperationRecord, row, request_ids=tuple(json.loads(row["request_ids"])))


#: Schema version -> the statements that bring it to the next one.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE requests ADD COLUMN size_bytes INTEGER",),
    2: (_IDEMPOTENCY_TABLE, _IDEMPOTENCY_INDEX),
}


async def _migrate(db: aiosqlite.Connection, version: int) -> None:
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

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        # One connection serves the HTTP handlers, the MQTT intake and the executor:
        # transactions take turns.
        self._tx_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Journal:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except Exception as exc:
            raise JournalError(f"{path}: cannot open the journal: {exc}") from exc
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss,
        # and those may be events we already acknowledged.
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.executescript(_SCHEMA)
        async with db.execute("SELECT value FROM meta WHERE key='schema'") as cur:
            row = await cur.fetchone()
        if row is None:
            await db.execute(
                "INSERT INTO meta(key, value) VALUES('schema', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) in _MIGRATIONS:
            await _migrate(db, int(row[0]))
        elif int(row[0]) != SCHEMA_VERSION:
            await db.close()
            raise JournalError(f"{path}: schema version {row[0]}, expected {SCHEMA_VERSION}")
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
            db = await aiosqlite.connect(uri, uri=True, isolation_level=None)
            db.row_factory = aiosqlite.Row
            await db.execute("PRAGMA busy_timeout=5000")
            async with db.execute("SELECT value FROM meta WHERE key='schema'") as cur:
                row = await cur.fetchone()
        except Exception as exc:
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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One atomic batch: everything inside commits together, or nothing does."""
        async with self._tx_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self._db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self._db.execute(sql, params) as cur:
            return await cur.fetchone()

    # -- catalog -------------------------------------------------------------------

    async def sync_catalog(self, definition: LibraryDefinition, now: float) -> None:
        """Bring pools, drives and tapes in from the definition; keep what we learnt."""
        async with self.transaction() as db:
            for pool in definition.pools:
                await db.execute(
                    "INSERT INTO pools(name, pool_id, content, type, comment) VALUES(?,?,?,?,?) "
                    "ON CONFLICT(name) DO UPDATE SET pool_id=excluded.pool_id, "
                    "content=excluded.content, type=excluded.type, comment=excluded.comment",
                    (pool.name, pool.id, pool.content, pool.type, pool.comment),
                )
            for drive in definition.drives:
                await db.execute(
                    "INSERT INTO drives(idx, generation, device) VALUES(?,?,?) "
                    "ON CONFLICT(idx) DO UPDATE SET generation=excluded.generation, "
                    "device=excluded.device",
                    (drive.index, drive.generation, drive.device),
                )
            row = await self._one("SELECT COALESCE(MAX(tape_id), 0) FROM tapes")
            next_id = (row[0] if row else 0) + 1
            for tape in definition.tapes:
                media = media_of(tape.barcode)
                exists = await self._one("SELECT 1 FROM tapes WHERE barcode=?", (tape.barcode,))
                if exists:
                    # The definition owns pool membership and operator flags.
                    await db.execute(
                        "UPDATE tapes SET pool=?, locked=?, write_protected=?, known=1 "
                        "WHERE barcode=?",
                        (tape.pool, int(tape.locked), int(tape.write_protected), tape.barcode),
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

    async def apply_inventory(self, inventory: Inventory, now: float) -> list[str]:
        """Record where the library says each cartridge is; return what surprised us."""
        surprises: list[str] = []
        async with self.transaction() as db:
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
        return surprises

    async def _place(
        self,
        db: aiosqlite.Connection,
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

    async def tapes(self) -> list[TapeRecord]:
        return [_tape(r) for r in await self._all("SELECT * FROM tapes ORDER BY barcode")]

    async def tape(self, barcode: str) -> TapeRecord | None:
        row = await self._one("SELECT * FROM tapes WHERE barcode=?", (barcode,))
        return _tape(row) if row else None

    async def tape_by_id(self, tape_id: int) -> TapeRecord | None:
        row = await self._one("SELECT * FROM tapes WHERE tape_id=?", (tape_id,))
        return _tape(row) if row else None

    async def pools(self) -> list[PoolRecord]:
        rows = await self._all("SELECT * FROM pools ORDER BY pool_id")
        return [_from_row(PoolRecord, r) for r in rows]

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
        async with self.transaction() as db:
            await db.execute(
                f"UPDATE tapes SET {sets} WHERE barcode=?",  # noqa: S608 - keys checked above
                (*[int(v) if isinstance(v, bool) else v for v in fields.values()], barcode),
            )

    # -- events --------------------------------------------------------------------

    async def insert_event(
        self,
        db: aiosqlite.Connection,
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
    ) -> int | None:
        """Insert inside a caller's transaction; None when the dedup key was seen."""
        cur = await db.execute(
            "INSERT INTO events(source, dedup_key, topic, verb, task_id, destination_id, "
            "payload, received, status, reason) VALUES(?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(dedup_key) DO NOTHING",
            (
                source,
                dedup_key,
                topic,
                verb,
                task_id,
                destination_id,
                payload,
                received,
                status,
                reason,
            ),
        )
        return cur.lastrowid if cur.rowcount else None

    async def event_seen(self, dedup_key: str) -> bool:
        return await self._one("SELECT 1 FROM events WHERE dedup_key=?", (dedup_key,)) is not None

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

    async def remember_idempotent_result(
        self,
        db: aiosqlite.Connection,
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
        """Inside the event's own transaction: the key and what it did commit together."""
        # Expired keys go as new ones come: the table holds one keep_s of creates.
        await db.execute("DELETE FROM idempotency_keys WHERE expires<=?", (now,))
        await db.execute(
            "INSERT OR REPLACE INTO idempotency_keys(scope, key, fingerprint, status, "
            "destination_id, reason, created, expires) VALUES(?,?,?,?,?,?,?,?)",
            (scope, key, fingerprint, status, destination_id, reason, now, now + keep_s),
        )

    async def save_idempotent_response(
        self, scope: str, key: str, status: int, response: str
    ) -> None:
        """The response body as sent, for retries to get the very same answer."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE idempotency_keys SET status=?, response=? WHERE scope=? AND key=?",
                (status, response, scope, key),
            )

    # -- destinations ----------------------------------------------------------------

    async def destination(self, destination_id: int) -> DestinationRecord | None:
        row = await self._one("SELECT * FROM destinations WHERE id=?", (destination_id,))
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

    async def next_destination_id(self) -> int:
        row = await self._one("SELECT COALESCE(MAX(id), 0) + 1 FROM destinations")
        return int(row[0]) if row else 1

    # -- requests ----------------------------------------------------------------------

    async def request(self, request_id: int) -> RequestRecord | None:
        row = await self._one("SELECT * FROM requests WHERE id=?", (request_id,))
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
        marks = ",".join("?" * len(ACTIVE))
        row = await self._one(
            f"SELECT * FROM requests WHERE destination_id=? AND state IN ({marks}) "  # noqa: S608
            "ORDER BY id DESC LIMIT 1",
            (destination_id, *[s.value for s in ACTIVE]),
        )
        return _request(row) if row else None

    async def latest_request_for(self, destination_id: int) -> RequestRecord | None:
        row = await self._one(
            "SELECT * FROM requests WHERE destination_id=? ORDER BY id DESC LIMIT 1",
            (destination_id,),
        )
        return _request(row) if row else None

    async def set_request_state(
        self,
        db: aiosqlite.Connection,
        request_id: int,
        new: RequestState,
        now: float,
        **fields: Any,
    ) -> RequestRecord:
        """Move a request along the state table (inside a caller's transaction)."""
        current = await self.request(request_id)
        if current is None:
            raise KeyError(request_id)
        transition(current.state, new)
        allowed = {"drive", "reason", "barcode", "attempts", "lease_expires"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not request fields: {sorted(unknown)}")
        sets = "".join(f", {k}=?" for k in fields)
        await db.execute(
            f"UPDATE requests SET state=?, updated=?{sets} WHERE id=?",  # noqa: S608
            (new.value, now, *fields.values(), request_id),
        )
        updated = await self.request(request_id)
        assert updated is not None
        return updated

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
        async with self.transaction() as db:
            cur = await db.execute(
                "INSERT INTO operations(kind, barcode, slot, drive, request_ids, state, started) "
                "VALUES(?,?,?,?,?, 'intent', ?)",
                (kind, barcode, slot, drive, json.dumps(list(request_ids)), now),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    async def finish_operation(
        self,
        db: aiosqlite.Connection,
        operation_id: int,
        state: str,
        now: float,
        *,
        error: str | None = None,
        error_class: str | None = None,
    ) -> None:
        await db.execute(
            "UPDATE operations SET state=?, error=?, error_class=?, finished=? WHERE id=?",
            (state, error, error_class, now, operation_id),
        )

    async def operations(self, state: str | None = None) -> list[OperationRecord]:
        if state is None:
            rows = await self._all("SELECT * FROM operations ORDER BY id")
        else:
            rows = await self._all("SELECT * FROM operations WHERE state=? ORDER BY id", (state,))
        return [_operation(r) for r in rows]

    async def release(
        self, db: aiosqlite.Connection, request: RequestRecord, now: float, reason: str
    ) -> None:
        """End a request (inside the caller's transaction): its drive starts idling,
        and a write that was ready counts its size onto the tape, so that the
        planner's estimate of the free space follows what was written."""
        await self.set_request_state(db, request.id, RequestState.RELEASED, now, reason=reason)
        if (
            request.state is RequestState.READY
            and request.write
            and request.size_bytes
            and request.barcode is not None
        ):
            await db.execute(
                "UPDATE tapes SET used_bytes=used_bytes+? WHERE barcode=?",
                (request.size_bytes, request.barcode),
            )
        if request.drive is not None:
            await self.drive_freed(db, request.drive, now)

    async def drive_freed(self, db: aiosqlite.Connection, drive: int, now: float) -> None:
        """Start a drive's idle clock when its last holder lets go (in the caller's transaction)."""
        async with db.execute(
            "SELECT COUNT(*) FROM requests WHERE drive=? AND state IN ('ready','mounting')",
            (drive,),
        ) as cur:
            row = await cur.fetchone()
        if row is not None and row[0] == 0:
            await db.execute("UPDATE drives SET idle_since=? WHERE idx=?", (now, drive))

    async def move_tape(
        self,
        db: aiosqlite.Connection,
        barcode: str,
        *,
        slot: int | None,
        drive: int | None,
        now: float,
        mounted: bool = False,
    ) -> None:
        """Record a completed move (inside the caller's transaction)."""
        await db.execute(
            "UPDATE tapes SET slot=?, drive=?, date_move=?, "
            "mount_count = mount_count + ? WHERE barcode=?",
            (slot, drive, now, int(mounted), barcode),
        )
        if drive is not None:
            await db.execute("UPDATE drives SET barcode=? WHERE idx=?", (barcode, drive))
        else:
            await db.execute("UPDATE drives SET barcode=NULL WHERE barcode=?", (barcode,))
