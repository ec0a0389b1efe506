"""The seed's task_destinations resource, exactly: field names and JSON types.

0/1 flags stay integers and dates keep millisecond `Z` form, because that is what
the archive manager sends and expects back. Responses may add a `state`
attribute (the API treats added attributes as backwards compatible).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from drivers.media import BARCODE_RE


def _iso_millis(value: datetime) -> str:
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def iso_time(epoch: float) -> str:
    """A journal time (seconds since the epoch) as the API writes dates."""
    return _iso_millis(datetime.fromtimestamp(epoch, UTC))


#: ISO-8601 with milliseconds and `Z`, as the seed writes dates.
Timestamp = Annotated[datetime, PlainSerializer(_iso_millis, return_type=str)]

#: No control characters.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

#: Database ids: positive and inside SQLite's integer range.
Id = Annotated[int, Field(ge=0, le=2**53)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class Folder(_Model):
    id: Id
    #: Unknown when an event named the folder by id alone.
    name: str | None = None
    parent: int | None = None
    primary_id: int | None = None
    type: Literal["file", "folder"] | None = None
    permission: int | None = None
    size: int | None = None
    change_date: Timestamp | None = None
    modification_date: Timestamp | None = None
    access_date: Timestamp | None = None
    uid: int | None = None
    gid: int | None = None
    in_cache: str | None = None
    offline: str | None = None
    extern: int | None = None
    checksums: list[str] = Field(default_factory=list)
    tapes: list[str] = Field(default_factory=list)
    cloud_buckets: list[str] = Field(default_factory=list)
    nas_shares: list[str] = Field(default_factory=list)
    file_path: str | None = None


#: A folder known by its id and path alone shows these as null, then these as empty
#: lists, in the seed's order: the journal's listing and the published views build it.
FOLDER_UNKNOWN_FIELDS = (
    "parent",
    "primary_id",
    "type",
    "permission",
    "size",
    "change_date",
    "modification_date",
    "access_date",
    "uid",
    "gid",
    "in_cache",
    "offline",
    "extern",
)
FOLDER_LIST_FIELDS = ("checksums", "tapes", "cloud_buckets", "nas_shares")


class Container(_Model):
    id: Id
    name: str
    comment: str | None = None
    push_pool_id: int | None = None
    cleaning_pool_id: int | None = None
    quota_total_size: int | None = None
    quota_on_cache: int | None = None
    stat_total_files: int | None = None
    only_on_cache_file_count: int | None = None
    stat_total_size: int | None = None
    stat_size_on_cache: int | None = None
    only_on_cache_file_size_sum: int | None = None
    guest_right: str | None = None
    last_update: Timestamp | None = None


class Tape(_Model):
    id: Id
    tape_library_id: int | None = None
    pool_id: int | None = None
    barcode: str
    location: str | None = None
    type: str | None = None
    locked: int = 0
    scratch: int = 0
    cleaning: int = 0
    write_protect: list[str] = Field(default_factory=list)
    mounted: int = 0
    ejected: int = 0
    known: int = 1
    mount_count: int = 0
    date_in: Timestamp | None = None
    date_move: Timestamp | None = None
    free: int | None = None
    max: int | None = None
    last_size_update: Timestamp | None = None
    last_maintenance: Timestamp | None = None
    last_repack: Timestamp | None = None
    repack_status: int | None = None
    force_import_type: int | None = None
    need_to_check: int = 0


class StorageExtraData(_Model):
    id: Id
    storage_id: int
    storage_type: int
    data: str


class Pool(_Model):
    id: Id
    name: str
    comment: str | None = None
    type: str | None = None
    content: str = "tape"
    primary_id: int | None = None
    storage_id: int | None = None
    tape_write_protect_when_full: bool = False
    storage_extra_data: StorageExtraData | None = None


class TaskDestinationBody(_Model):
    """The create/update body: which folder, and a tape or a pool to write it to."""

    folder_id: Id | None = None
    folder_path: str | None = Field(default=None, max_length=4096, pattern=_PRINTABLE)
    tape_id: Id | None = None
    #: A volume tag: it may reach a command line, so only the safe alphabet.
    tape_barcode: str | None = Field(default=None, max_length=64, pattern=BARCODE_RE.pattern)
    pool_id: Id | None = None
    # No validator in Python beside the patterns: they refuse every control character
    # already (pydantic matches them in Rust, where `$` is the end of the text, so a
    # trailing newline fails too), and a body is parsed for every event.
    pool_name: str | None = Field(default=None, max_length=255, pattern=_PRINTABLE)


class DestinationState(BaseModel):
    """The worker's added attribute: where this destination stands on the hardware."""

    model_config = ConfigDict(extra="forbid")

    state: str
    barcode: str | None = None
    drive: int | None = None
    device: str | None = None
    reason: str | None = None
    updated: Timestamp | None = None
    #: The publisher's `sequence` of the last change applied (MQTT), when it gave one:
    #: seeing it on the state topic confirms the change end to end.
    sequence: int | None = None


class TaskDestination(TaskDestinationBody):
    id: Id
    folder: Folder | None = None
    container: Container | None = None
    tape: Tape | None = None
    pool: Pool | None = None
    state: DestinationState | None = None

    def to_json(self) -> dict[str, Any]:
        """The seed's shape; `state` only when the worker has one."""
        data = self.model_dump(mode="json")
        if self.state is None:
            data.pop("state")
        return data


class TaskDestinationIndex(_Model):
    count: int
    task_destinations: list[TaskDestination]

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "task_destinations": [d.to_json() for d in self.task_destinations],
        }
