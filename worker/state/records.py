"""The journal's records: frozen rows of its tables, as the journal reads them and
the state model keeps them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from worker.core.requests import MountRequest, RequestState

__all__ = [
    "ApiKeyRecord",
    "DestinationRecord",
    "DestinationWrite",
    "DriveRecord",
    "EventRecord",
    "IdempotentResult",
    "OperationRecord",
    "PoolRecord",
    "RequestRecord",
    "TapeRecord",
    "json_text",
]


#: One encoder for every value: `json.dumps` with options builds one a call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def json_text(value: Any) -> str:
    """A JSON value as the journal's columns store it (compact: no spaces)."""
    return _COMPACT.encode(value)


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
    #: sha256 of the topic and the whole payload: tells a redelivery from a reused
    #: event-id even when the stored payload is cut short.
    digest: str | None


@dataclass(frozen=True, slots=True)
class PoolWatchRecord:
    """A pool destination this library of a fleet received and holds until some
    library of the pool claims it (worker/intake/pools.py)."""

    event_id: str
    pool: str
    destination_id: int
    #: The message as received: enough to take it over later.
    topic: str
    payload: str
    sequence: str | None
    received: float


@dataclass(frozen=True, slots=True)
class DestinationRecord:
    """A destination as its row holds it. The body and the nested objects stay the
    row's JSON text, parsed when read: a parsed body costs several times the memory
    of its text, and the state model keeps every destination."""

    id: int
    task_id: str
    #: The seed's flat fields as the event sent them (`json_text` of a dict).
    body_json: str
    barcode: str | None
    pool: str | None
    status: str
    reason: str | None
    deleted: bool
    created: float
    updated: float
    #: The publisher's order of the last change applied (MQTT `sequence`), if it said.
    sequence: int | None
    #: The nested `folder` and `container` a full TaskDestination event carried.
    nested_json: str | None = None

    @property
    def body(self) -> dict[str, Any]:
        """The body, parsed (a new dict each time: change it freely)."""
        body: dict[str, Any] = json.loads(self.body_json)
        return body

    @property
    def nested(self) -> dict[str, Any] | None:
        """The nested `folder` and `container`, parsed; None if no event carried them."""
        if self.nested_json is None:
            return None
        nested: dict[str, Any] = json.loads(self.nested_json)
        return nested


@dataclass(frozen=True, slots=True)
class DestinationWrite:
    """A destination's desired state as one write sets it (`insert_destination`,
    `update_destination`, `insert_destinations`).

    An update keeps the destination's task, and keeps its sequence and nested objects
    when the write has none (see `update_destination`).
    """

    destination_id: int
    task_id: str
    #: The seed's flat body (JSON values).
    body: dict[str, Any]
    nested: dict[str, Any] | None
    barcode: str | None
    pool: str | None
    status: str
    reason: str | None
    #: The publisher's order of the change, when it gives one.
    sequence: int | None = None
    #: `body` and `nested` as their columns store them, made once for the row and
    #: the state model alike.
    body_json: str = field(init=False, repr=False, compare=False)
    nested_json: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "body_json", json_text(self.body))
        nested = json_text(self.nested) if self.nested else None
        object.__setattr__(self, "nested_json", nested)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord(MountRequest):
    """A row of the requests table: what the planner sees of the request (its
    `MountRequest` part, so a pending record is handed to the planner as it is, not
    copied) and the state machine's bookkeeping. `size_bytes` is what the destination
    will write, when its event told us (the folder's size)."""

    destination_id: int
    state: RequestState
    drive: int | None
    reason: str | None
    attempts: int
    updated: float
    lease_expires: float | None


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
    write_protect_when_full: bool = True


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as stored: its name, the public part of the key, a digest of the
    secret part (never the secret), its scopes."""

    name: str
    key_id: str
    digest: str
    scopes: tuple[str, ...]
    created: float
    revoked: float | None


@dataclass(frozen=True, slots=True)
class IdempotentResult:
    """What a create with an Idempotency-Key did, kept to answer its retries alike."""

    fingerprint: str
    status: int
    destination_id: int | None
    reason: str | None
    #: The response body as first sent; None if the daemon stopped before saving it.
    response: str | None
