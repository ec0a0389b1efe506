"""A fleet of libraries on one broker: each daemon's identity and what it publishes.

One daemon runs per media changer; the broker is the only part libraries share.
Everything a daemon publishes is under its own `<prefix>/libraries/<library_id>/`, so
two daemons never overwrite each other's state (docs/failover.md has the design).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from drivers.media import media_of
from worker.core.requests import RequestState
from worker.errors import ConfigError

if TYPE_CHECKING:  # the journal imports the settings, which import this module
    from worker.state.journal import DriveRecord, TapeRecord

#: Requests the fleet view counts as the library's queue.
ACTIVE_STATES = (RequestState.PENDING, RequestState.MOUNTING, RequestState.READY)

#: One MQTT topic level, and a name an operator can type: no `/`, `+` or `#` (topic
#: separators and wildcards), no leading `$` (the broker's own topics).
LIBRARY_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"
_LIBRARY_ID = re.compile(LIBRARY_ID_PATTERN)


def resolve_library_id(configured: str | None, definition_name: str) -> str:
    """The configured library id, else the library definition's name, checked."""
    if configured is not None:
        return configured
    if not _LIBRARY_ID.match(definition_name):
        raise ConfigError(
            f"library_id: the library definition's name {definition_name[:80]!r} is not a "
            "valid library id (1 to 64 of A-Z a-z 0-9 _ . -, not starting with . or -): "
            "set library_id in the configuration"
        )
    return definition_name


def library_topic(prefix: str, library_id: str) -> str:
    """The topic under which one library publishes its state."""
    return f"{prefix}/libraries/{library_id}"


def fleet_topic(prefix: str, library_id: str) -> str:
    """Where a library's summary is retained, and its last will lands."""
    return f"{prefix}/fleet/{library_id}"


def gone_summary(library_id: str) -> dict[str, Any]:
    """The last will: what the broker retains for a library whose daemon vanished."""
    return {"library_id": library_id, "alive": False}


def library_summary(
    library_id: str,
    *,
    drives: Sequence[DriveRecord],
    tapes: Sequence[TapeRecord],
    queue: Mapping[RequestState, int],
    draining: bool,
    pending_by_pool: Mapping[str, int] | None = None,
    journal_fault: str | None,
) -> dict[str, Any]:
    """One library at a glance, for the fleet view: drives, queue (requests per active
    state, as the state model counts them), pending requests per pool, pools, health.

    A pool's free bytes are the native capacity left on its writable tapes (what the
    journal counts as written subtracted), not counting compression.
    """
    pools: dict[str, dict[str, int]] = {}
    for tape in tapes:
        if tape.pool is None or tape.cleaning:
            continue
        pool = pools.setdefault(tape.pool, {"tapes": 0, "writable": 0, "free_bytes": 0})
        pool["tapes"] += 1
        media = media_of(tape.barcode)
        unusable = tape.locked or tape.write_protected or tape.full or tape.need_to_check
        if media is None or unusable or tape.ejected:
            continue
        pool["writable"] += 1
        pool["free_bytes"] += max(0, media.capacity_bytes - tape.used_bytes)
    return {
        "library_id": library_id,
        "alive": True,
        "drives": {
            "total": len(drives),
            "up": sum(drive.up for drive in drives),
            "loaded": sum(drive.barcode is not None for drive in drives),
        },
        "queue": {state.value: queue.get(state, 0) for state in ACTIVE_STATES},
        # Apart from "pools", which names the pools this library holds tapes of (the
        # fleet routes pool destinations on it): a pool waited on is not one held.
        "pending_by_pool": dict(sorted((pending_by_pool or {}).items())),
        "pools": dict(sorted(pools.items())),
        "health": {"journal": journal_fault or "ok", "draining": draining},
    }
