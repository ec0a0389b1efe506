"""The daemon's state in memory: the library, the active requests and the destinations.

The journal stays the source of truth; this is its copy in memory, written through by
the journal alone. Each named write of a `Transaction` notes its change, and the
journal applies the notes here only after COMMIT succeeds (a rollback, or a savepoint
rolled back, drops them), so no caller can forget to update the model and no caller
may change it. The journal rebuilds it from the file at start-up (`load_model`) and
after a fault clears.

Read API (synchronous, no I/O; records are the journal's frozen records):

- `version`: bumped by each commit that changed the model (and by a rebuild); equal
  versions mean nothing changed in between. `tapes_version`: the same for the tapes.
- Library: `tapes` (barcode -> TapeRecord, every catalog row, `known` or not),
  `tape(barcode)`, `tape_by_id(tape_id)`, `drives` (index -> DriveRecord),
  `pools` (name -> PoolRecord).
- Requests: `request(id)` (an active request, or the latest of its destination),
  `active_request_for(destination_id)`, `latest_request_for(destination_id)`,
  `latest_requests_for(ids)`, `requests(states)` (active states only), `holders(drive)`
  (mounting and ready requests on a drive, by id), `pending` (a `PendingRequests` of
  every pending request, kept up to date: hand it to `plan()`; never change it),
  `request_counts()` (active requests per state, kept as they change: no scan),
  `oldest_pending_arrival()` and `pending_by_pool()` (from the pending groups, not
  from every request).
- Destinations: `destination(id)` (live or destroyed, as the table holds them),
  `destinations(task_id=None)` (the live ones, by id).

The mapping attributes are read-only views; change nothing they hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from types import MappingProxyType
from typing import Any

from worker.core import drive_health
from worker.core.pending import PendingGroup, PendingRequests
from worker.core.requests import ACTIVE, MountRequest, RequestState, lease_expiry
from worker.state.records import (
    DestinationRecord,
    DestinationWrite,
    DriveRecord,
    PoolRecord,
    RequestRecord,
    TapeRecord,
)

__all__ = ["StateModel"]

_ENGAGED = frozenset({RequestState.MOUNTING, RequestState.READY})
#: The states `request_counts` counts, in the table's order.
_COUNTED = tuple(state for state in RequestState if state in ACTIVE)
_ID = attrgetter("id")
_TAPE_FLAGS = frozenset(
    {"need_to_check", "full", "locked", "write_protected", "ejected", "cleaning"}
)


def _new_destination(write: DestinationWrite, now: float) -> DestinationRecord:
    """The record a new destination's write leaves in the table."""
    return DestinationRecord(
        id=write.destination_id,
        task_id=write.task_id,
        body_json=write.body_json,
        barcode=write.barcode,
        pool=write.pool,
        status=write.status,
        reason=write.reason,
        deleted=False,
        created=now,
        updated=now,
        sequence=write.sequence,
        nested_json=write.nested_json,
    )


def _group_ids(groups: Mapping[str, PendingGroup]) -> dict[str, list[int]]:
    return {name: [r.id for r in group.ordered()] for name, group in sorted(groups.items())}


class StateModel:
    """The journal's state in memory. Only the journal changes it (the `apply_*`
    methods replay its named writes, in commit order)."""

    def __init__(
        self,
        *,
        tapes: Iterable[TapeRecord] = (),
        drives: Iterable[DriveRecord] = (),
        pools: Iterable[PoolRecord] = (),
        destinations: Iterable[DestinationRecord] = (),
        requests: Iterable[RequestRecord] = (),
    ) -> None:
        self.version = 0
        #: Bumped by every change to a tape (and by a rebuild): equal values mean the
        #: same tapes, so what is built from them alone can be kept.
        self.tapes_version = 0
        self._tapes: dict[str, TapeRecord] = {}
        self._tape_ids: dict[int, str] = {}
        self._drives: dict[int, DriveRecord] = {}
        self._pools: dict[str, PoolRecord] = {}
        self._destinations: dict[int, DestinationRecord] = {}
        #: Every active request, and the latest request of each destination.
        self._requests: dict[int, RequestRecord] = {}
        #: destination id -> the id of its latest request.
        self._latest: dict[int, int] = {}
        #: destination id -> the id of its newest active request; the others, nearly
        #: always none, in `_more_active` (a list per destination would cost a hundred
        #: bytes each at a large backlog, for the rare second one).
        self._active: dict[int, int] = {}
        self._more_active: dict[int, list[int]] = {}
        #: The ids of the mounting and ready requests.
        self._engaged: set[int] = set()
        #: drive -> the ids of the mounting and ready requests on it.
        self._holders: dict[int, set[int]] = {}
        #: Active requests per state, kept on every change (a scrape or a summary
        #: every few seconds must not count a large backlog).
        self._counts: dict[RequestState, int] = dict.fromkeys(_COUNTED, 0)
        self.pending = PendingRequests()
        self._fill(tapes, drives, pools, destinations, requests)

    def _fill(
        self,
        tapes: Iterable[TapeRecord],
        drives: Iterable[DriveRecord],
        pools: Iterable[PoolRecord],
        destinations: Iterable[DestinationRecord],
        requests: Iterable[RequestRecord],
    ) -> None:
        self._tapes = {t.barcode: t for t in tapes}
        self._tape_ids = {t.tape_id: t.barcode for t in self._tapes.values()}
        self._drives = {d.index: d for d in drives}
        self._pools = {p.name: p for p in pools}
        self._destinations = {d.id: d for d in destinations}
        self._requests = {}
        self._latest = {}
        self._active = {}
        self._more_active = {}
        self._engaged = set()
        self._holders = {}
        self._counts = dict.fromkeys(_COUNTED, 0)
        pending: list[MountRequest] = []
        ended: list[RequestRecord] = []
        kept, latest, counts = self._requests, self._latest, self._counts
        # The journal reads requests in id order already: sorting them again is a
        # single pass.
        for record in sorted(requests, key=_ID):
            rid, state = record.id, record.state
            kept[rid] = record
            latest[record.destination_id] = rid
            if state is RequestState.PENDING:
                pending.append(record)
            elif state not in ACTIVE:
                ended.append(record)
                continue
            else:
                self._engaged.add(rid)
                if record.drive is not None:
                    self._holders.setdefault(record.drive, set()).add(rid)
            self._add_active(record.destination_id, rid)
            counts[state] += 1
        # Ended requests that are not the latest of their destination are not kept.
        for record in ended:
            if latest[record.destination_id] != record.id:
                del kept[record.id]
        self.pending = PendingRequests(pending)

    def replace_with(self, other: StateModel) -> None:
        """Take another model's contents (a rebuild), keeping this object: readers
        hold on to the model, not to its parts."""
        self._tapes = other._tapes
        self._tape_ids = other._tape_ids
        self._drives = other._drives
        self._pools = other._pools
        self._destinations = other._destinations
        self._requests = other._requests
        self._latest = other._latest
        self._active = other._active
        self._more_active = other._more_active
        self._engaged = other._engaged
        self._holders = other._holders
        self._counts = other._counts
        self.pending = other.pending
        self.version += 1
        self.tapes_version += 1

    # -- reads: the library ----------------------------------------------------------

    @property
    def tapes(self) -> Mapping[str, TapeRecord]:
        return MappingProxyType(self._tapes)

    @property
    def drives(self) -> Mapping[int, DriveRecord]:
        return MappingProxyType(self._drives)

    @property
    def pools(self) -> Mapping[str, PoolRecord]:
        return MappingProxyType(self._pools)

    def tape(self, barcode: str) -> TapeRecord | None:
        return self._tapes.get(barcode)

    def tape_by_id(self, tape_id: int) -> TapeRecord | None:
        barcode = self._tape_ids.get(tape_id)
        return None if barcode is None else self._tapes.get(barcode)

    # -- reads: requests -------------------------------------------------------------

    def request(self, request_id: int) -> RequestRecord | None:
        """An active request, or the latest of its destination; None otherwise."""
        return self._requests.get(request_id)

    def active_request_for(self, destination_id: int) -> RequestRecord | None:
        rid = self._active.get(destination_id)
        return None if rid is None else self._requests[rid]

    def latest_request_for(self, destination_id: int) -> RequestRecord | None:
        rid = self._latest.get(destination_id)
        return None if rid is None else self._requests[rid]

    def latest_requests_for(self, destination_ids: Iterable[int]) -> dict[int, RequestRecord]:
        found: dict[int, RequestRecord] = {}
        for destination_id in destination_ids:
            rid = self._latest.get(destination_id)
            if rid is not None:
                found[destination_id] = self._requests[rid]
        return found

    def requests(self, states: Iterable[RequestState] = ACTIVE) -> list[RequestRecord]:
        """The requests in these states (active states only), by id."""
        wanted = frozenset(states)
        if not wanted <= ACTIVE:
            raise ValueError(f"the model keeps active requests only, not {sorted(wanted - ACTIVE)}")
        # Mounting and ready requests are few (a handful per drive): look only at them.
        ids = self._engaged if wanted <= _ENGAGED else self._requests
        found = [self._requests[rid] for rid in sorted(ids)]
        return [r for r in found if r.state in wanted]

    def request_counts(self) -> dict[RequestState, int]:
        """How many requests are in each active state (every one, zeros included)."""
        return dict(self._counts)

    def oldest_pending_arrival(self) -> float | None:
        """The arrival of the oldest pending request; None when none is pending."""
        pending = self.pending
        groups = [*pending.by_tape.values(), *pending.by_pool.values()]
        arrivals = [group.stats().oldest for group in groups]
        arrivals += [request.arrival for request in pending.unaddressed.values()]
        return min(arrivals, default=None)

    def pending_by_pool(self) -> dict[str, int]:
        """Pending requests per pool, by name: a pool-only request counts for its pool,
        one for a tape for the tape's pool (a tape of no pool, or unknown, for none)."""
        counts: dict[str, int] = {}
        for barcode, group in self.pending.by_tape.items():
            tape = self._tapes.get(barcode)
            if tape is not None and tape.pool is not None:
                counts[tape.pool] = counts.get(tape.pool, 0) + len(group)
        for pool, group in self.pending.by_pool.items():
            counts[pool] = counts.get(pool, 0) + len(group)
        return dict(sorted(counts.items()))

    def holders(self, drive: int) -> tuple[int, ...]:
        """The mounting and ready requests on a drive, by id."""
        return tuple(sorted(self._holders.get(drive, ())))

    # -- reads: destinations ---------------------------------------------------------

    def destination(self, destination_id: int) -> DestinationRecord | None:
        return self._destinations.get(destination_id)

    def destinations(self, task_id: str | None = None) -> list[DestinationRecord]:
        """The live destinations (of one task), by id."""
        return sorted(
            (
                d
                for d in self._destinations.values()
                if not d.deleted and (task_id is None or d.task_id == task_id)
            ),
            key=lambda d: d.id,
        )

    # -- comparison ------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """Everything the model holds as plain values (two models are equal when
        their exports are)."""
        return {
            "tapes": dict(sorted(self._tapes.items())),
            "drives": dict(sorted(self._drives.items())),
            "pools": dict(sorted(self._pools.items())),
            "destinations": dict(sorted(self._destinations.items())),
            "requests": dict(sorted(self._requests.items())),
            "latest": dict(sorted(self._latest.items())),
            "active": {
                k: sorted([rid, *self._more_active.get(k, ())])
                for k, rid in sorted(self._active.items())
            },
            "more_active": {k: sorted(v) for k, v in sorted(self._more_active.items())},
            "engaged": sorted(self._engaged),
            "holders": {k: sorted(v) for k, v in sorted(self._holders.items()) if v},
            "counts": dict(sorted(self._counts.items())),
            "pending": sorted((r.id, r) for r in self.pending),
            "pending_by_tape": _group_ids(self.pending.by_tape),
            "pending_by_pool": _group_ids(self.pending.by_pool),
            "unaddressed": sorted(self.pending.unaddressed),
        }

    # -- writes: the journal's named writes, replayed after COMMIT -------------------
    # Each mirrors its SQL statement exactly, including what the statement does when
    # its row is missing (nothing) or its condition does not hold.

    def _put_request(self, record: RequestRecord, before: RequestRecord | None) -> None:
        """Store a request's new record and keep every index in step with it."""
        rid, destination_id = record.id, record.destination_id
        if before is not None:
            if before.state in ACTIVE:
                self._counts[before.state] -= 1
            if before.state is RequestState.PENDING:
                self.pending.discard(rid)
            self._engaged.discard(rid)
            if before.state in _ENGAGED and before.drive is not None:
                held = self._holders.get(before.drive)
                if held is not None:
                    held.discard(rid)
                    if not held:
                        del self._holders[before.drive]
        self._requests[rid] = record
        was_active = before is not None and before.state in ACTIVE
        if record.state in ACTIVE and not was_active:
            self._add_active(destination_id, rid)
        elif was_active and record.state not in ACTIVE:
            self._drop_active(destination_id, rid)
        if record.state in ACTIVE:
            self._counts[record.state] += 1
        if record.state is RequestState.PENDING:
            self.pending.add(record)
        elif record.state in _ENGAGED:
            self._engaged.add(rid)
            if record.drive is not None:
                self._holders.setdefault(record.drive, set()).add(rid)
        latest = self._latest.get(destination_id)
        if latest is None or rid > latest:
            self._latest[destination_id] = rid
            if latest is not None:
                self._forget_if_ended(latest)
        elif rid != latest:
            self._forget_if_ended(rid)

    def _add_active(self, destination_id: int, rid: int) -> None:
        newest = self._active.get(destination_id)
        if newest is None:
            self._active[destination_id] = rid
        elif rid > newest:
            self._active[destination_id] = rid
            self._more_active.setdefault(destination_id, []).append(newest)
        elif rid != newest:
            self._more_active.setdefault(destination_id, []).append(rid)

    def _drop_active(self, destination_id: int, rid: int) -> None:
        more = self._more_active.get(destination_id)
        if self._active.get(destination_id) == rid:
            if more:
                self._active[destination_id] = max(more)
                more.remove(self._active[destination_id])
            else:
                self._active.pop(destination_id, None)
        elif more is not None and rid in more:
            more.remove(rid)
        if more is not None and not more:
            del self._more_active[destination_id]

    def _uncount(self, record: RequestRecord) -> None:
        if record.state in ACTIVE:
            self._counts[record.state] -= 1

    def _forget_if_ended(self, rid: int) -> None:
        record = self._requests.get(rid)
        if (
            record is not None
            and record.state not in ACTIVE
            and self._latest.get(record.destination_id) != rid
        ):
            del self._requests[rid]

    def apply_add_request(
        self,
        rid: int,
        destination_id: int,
        barcode: str | None,
        pool: str | None,
        now: float,
        size_bytes: int | None,
    ) -> None:
        record = RequestRecord(
            id=rid,
            destination_id=destination_id,
            barcode=barcode,
            pool=pool,
            write=True,
            state=RequestState.PENDING,
            drive=None,
            reason=None,
            attempts=0,
            arrival=now,
            updated=now,
            lease_expires=None,
            size_bytes=size_bytes,
        )
        self._put_request(record, None)

    def apply_add_requests(
        self,
        first: int,
        requests: Sequence[tuple[int, str | None, str | None, int | None]],
        now: float,
    ) -> None:
        for rid, (destination_id, barcode, pool, size_bytes) in enumerate(requests, first):
            self.apply_add_request(rid, destination_id, barcode, pool, now, size_bytes)

    def apply_request_state(
        self, rid: int, new: RequestState, now: float, fields: Mapping[str, Any]
    ) -> None:
        before = self._requests.get(rid)
        if before is None:
            return
        record = dataclasses.replace(before, state=new, updated=now, **fields)
        self._put_request(record, before)

    def apply_assign_tape(self, rid: int, barcode: str, now: float) -> None:
        before = self._requests.get(rid)
        if before is None or before.state is not RequestState.PENDING:
            return
        self._put_request(dataclasses.replace(before, barcode=barcode, updated=now), before)

    def apply_renew_lease(self, rid: int, now: float, hold_seconds: float) -> None:
        before = self._requests.get(rid)
        if before is None or before.state is not RequestState.READY:
            return
        record = dataclasses.replace(before, lease_expires=lease_expiry(now, hold_seconds))
        self._put_request(record, before)

    def _change_tape(self, barcode: str, **fields: Any) -> None:
        tape = self._tapes.get(barcode)
        if tape is not None:
            self._tapes[barcode] = dataclasses.replace(tape, **fields)
            self.tapes_version += 1

    def _change_drive(self, index: int, **fields: Any) -> None:
        drive = self._drives.get(index)
        if drive is not None:
            self._drives[index] = dataclasses.replace(drive, **fields)

    def apply_tape_written(self, barcode: str, size_bytes: int) -> None:
        tape = self._tapes.get(barcode)
        if tape is not None:
            self._change_tape(barcode, used_bytes=tape.used_bytes + size_bytes)

    def apply_drive_freed(self, drive: int, now: float) -> None:
        if not self._holders.get(drive):
            self._change_drive(drive, idle_since=now)

    def apply_move_tape(
        self, barcode: str, slot: int | None, drive: int | None, now: float, mounted: bool
    ) -> None:
        tape = self._tapes.get(barcode)
        if tape is not None:
            self._change_tape(
                barcode,
                slot=slot,
                drive=drive,
                date_move=now,
                mount_count=tape.mount_count + int(mounted),
            )
        if drive is not None:
            self._change_drive(drive, barcode=barcode)
        else:
            for record in list(self._drives.values()):
                if record.barcode == barcode:
                    self._change_drive(record.index, barcode=None)

    def apply_drive_fields(self, drive: int, fields: Mapping[str, Any]) -> None:
        self._change_drive(drive, **fields)

    def apply_drive_failure(self, drive: int, message: str, down_after: int) -> None:
        record = self._drives.get(drive)
        if record is None:
            return
        failures = record.failures + 1
        if record.up and drive_health.goes_down(failures, down_after):
            self._change_drive(
                drive, failures=failures, up=False, reason=drive_health.down_reason(message)
            )
        else:
            self._change_drive(drive, failures=failures)

    def apply_tape_fields(self, barcode: str, fields: Mapping[str, Any]) -> None:
        self._change_tape(
            barcode, **{k: bool(v) if k in _TAPE_FLAGS else v for k, v in fields.items()}
        )

    def apply_cleaning_done(self, barcode: str, drive: int, now: float) -> None:
        tape = self._tapes.get(barcode)
        if tape is not None:
            self._change_tape(
                barcode,
                cleaning_uses_left=max(tape.cleaning_uses_left - 1, 0),
                mount_count=tape.mount_count + 1,
                date_move=now,
            )
        self._change_drive(drive, needs_cleaning=False)

    def apply_library(
        self,
        tapes: Sequence[TapeRecord] | None,
        drives: Sequence[DriveRecord] | None,
        pools: Sequence[PoolRecord] | None,
    ) -> None:
        """Whole tables as a catalog sync or an inventory left them."""
        if tapes is not None:
            self.tapes_version += 1
            self._tapes = {t.barcode: t for t in tapes}
            self._tape_ids = {t.tape_id: t.barcode for t in tapes}
        if drives is not None:
            self._drives = {d.index: d for d in drives}
        if pools is not None:
            self._pools = {p.name: p for p in pools}

    def apply_insert_destination(self, write: DestinationWrite, now: float) -> None:
        self._destinations[write.destination_id] = _new_destination(write, now)

    def apply_insert_destinations(self, writes: Sequence[DestinationWrite], now: float) -> None:
        for write in writes:
            self._destinations[write.destination_id] = _new_destination(write, now)

    def apply_update_destination(self, write: DestinationWrite, now: float) -> None:
        before = self._destinations.get(write.destination_id)
        if before is None:
            return
        self._destinations[write.destination_id] = dataclasses.replace(
            before,
            body_json=write.body_json,
            barcode=write.barcode,
            pool=write.pool,
            status=write.status,
            reason=write.reason,
            updated=now,
            sequence=before.sequence if write.sequence is None else write.sequence,
            nested_json=write.nested_json or before.nested_json,
        )

    def apply_destroy_destination(
        self, destination_id: int, sequence: int | None, now: float
    ) -> None:
        before = self._destinations.get(destination_id)
        if before is None:
            return
        self._destinations[destination_id] = dataclasses.replace(
            before,
            deleted=True,
            status="destroyed",
            updated=now,
            sequence=before.sequence if sequence is None else sequence,
        )

    def apply_destroy_unknown_destination(
        self, destination_id: int, task_id: str, sequence: int | None, now: float
    ) -> None:
        self._destinations[destination_id] = DestinationRecord(
            id=destination_id,
            task_id=task_id,
            body_json="{}",
            barcode=None,
            pool=None,
            status="destroyed",
            reason="destroyed before it was created",
            deleted=True,
            created=now,
            updated=now,
            sequence=sequence,
            nested_json=None,
        )

    def apply_pruned(
        self,
        destination_ids: Sequence[int],
        request_ids: Sequence[int],
        latest: Sequence[RequestRecord],
    ) -> None:
        """Rows retention deleted, and the latest requests of the destinations whose
        latest request went (read after the deletion)."""
        for destination_id in destination_ids:
            self._destinations.pop(destination_id, None)
        touched: set[int] = set()
        for rid in request_ids:
            record = self._requests.pop(rid, None)
            if record is not None:
                touched.add(record.destination_id)
                self._uncount(record)
        for destination_id in touched:
            if self._latest.get(destination_id) not in self._requests:
                self._latest.pop(destination_id, None)
        for record in latest:
            before = self._requests.get(record.id)
            if before is not None:
                self._uncount(before)
            if record.state in ACTIVE:
                self._counts[record.state] += 1
            self._requests[record.id] = record
            self._latest[record.destination_id] = record.id
