"""The policies the benchmark compares: the planner, and the baselines
(SCHEDULING.md 4.2). Baselines speak the planner's action language and see the
same snapshot, so the engine runs every policy the same way.

- B0 first-come-first-served, one request per mount, unload at once;
- B1 first-come-first-served, tapes stay mounted until a drive is needed, LRU drive;
- B2 B1 plus a dismount delay (60 s as Enstore; 900 s as HPSS's deferred dismount);
- B3 a queue per tape (CTA-like): mount when the queue holds >= X bytes, >= Y
  files, or its oldest request is >= A old (A swept over 0, 60 and 600 s, all
  legitimate CTA settings); order by priority then age; drain the queue, then
  unload; writes to the fullest non-full tape of the pool.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from drivers.media import Media, can_read, can_write
from worker.core.actions import Action, Assign, Attach, Fail, Load, Unload
from worker.core.planner import PendingRequests, PlanPolicy, dismount_due, plan
from worker.core.requests import MountRequest
from worker.core.snapshot import DriveView, LibrarySnapshot, TapeView
from worker.simulation.model import GB

_ARRIVAL_ORDER = attrgetter("arrival", "id")


def _compatible(generation: int, media: Media | None, write: bool) -> bool:
    if media is None:
        return True
    return can_write(generation, media) if write else can_read(generation, media)


def _check_reason(barcode: str) -> str:
    """A stuck or doubtful cartridge: the planner's reason, word for word."""
    return f"tape {barcode} needs to be checked by an operator"


@dataclass
class PlannerPolicy:
    """The daemon's own planner, unchanged, fed as the daemon feeds it: a
    `PendingRequests` kept up to date as requests come and go, not rebuilt from
    the list each round (the same actions either way; the rebuild was most of a
    recall storm's run time)."""

    policy: PlanPolicy = field(default_factory=PlanPolicy)
    name: str = "planner"
    #: The requests in `queue`, by object identity: a request changed in place of
    #: another under the same id is a new object, so it is discarded and added.
    _known: dict[int, MountRequest] = field(default_factory=dict, repr=False)
    _queue: PendingRequests = field(default_factory=PendingRequests, repr=False)

    def decide(
        self, snapshot: LibrarySnapshot, pending: Sequence[MountRequest], now: float
    ) -> list[Action]:
        return plan(snapshot, self._sync(pending), self.policy, now)

    def _sync(self, pending: Sequence[MountRequest]) -> PendingRequests:
        current = {id(r): r for r in pending}
        known = self._known
        queue = self._queue
        for gone in known.keys() - current.keys():
            queue.discard(known[gone].id)
        for new in current.keys() - known.keys():
            queue.add(current[new])
        # Holding the objects keeps their identities from being reused.
        self._known = current
        return queue

    def next_wake(
        self, snapshot: LibrarySnapshot, pending: Sequence[MountRequest], now: float
    ) -> float | None:
        # The shell wakes the planner when a dismount delay runs out.
        wakes = (
            dismount_due(d, snapshot, self.policy)
            for d in snapshot.drives
            if d.barcode is not None and d.idle
        )
        return min((w for w in wakes if w is not None and w > now), default=None)


class _Round:
    """Claims and slot bookkeeping shared by the baselines within one decision."""

    def __init__(self, snapshot: LibrarySnapshot) -> None:
        self.snapshot = snapshot
        self.actions: list[Action] = []
        self.drives = {d.index: d for d in snapshot.drives}
        self.claimed_drives: set[int] = set()
        self.claimed_tapes: set[str] = set()
        self.free = set(snapshot.free_slots)
        self.idle_drives = {d.index for d in snapshot.drives if d.idle}

    def free_drive(self, drive: DriveView) -> bool:
        return drive.idle and drive.index not in self.claimed_drives

    def any_free_drive(self) -> bool:
        # A set comparison: this is asked once per pending request.
        return not self.idle_drives <= self.claimed_drives

    def unload(self, drive: DriveView) -> bool:
        assert drive.barcode is not None
        tape = self.snapshot.tapes.get(drive.barcode)
        home = tape.home_slot if tape is not None else None
        if home is not None and home in self.free:
            slot = home
        elif self.free:
            slot = min(self.free)
        else:
            return False
        self.free.discard(slot)
        self.actions.append(Unload(drive.index, drive.barcode, slot))
        self.claimed_drives.add(drive.index)
        self.claimed_tapes.add(drive.barcode)
        return True

    def load(self, drive: DriveView, tape: TapeView, ids: tuple[int, ...]) -> None:
        assert tape.slot is not None
        if drive.barcode is not None:
            # The drive is already claimed by the unload; the load follows it.
            self.claimed_drives.discard(drive.index)
            if not self.unload(drive):
                return
        self.actions.append(Load(tape.barcode, tape.slot, drive.index, ids))
        self.claimed_drives.add(drive.index)
        self.claimed_tapes.add(tape.barcode)

    def attach(self, drive: DriveView, barcode: str, ids: tuple[int, ...]) -> None:
        self.actions.append(Attach(drive.index, barcode, ids))
        self.claimed_drives.add(drive.index)
        self.claimed_tapes.add(barcode)

    def empty_drive(self, media: Media | None, write: bool) -> DriveView | None:
        for drive in self.snapshot.drives:
            if (
                drive.barcode is None
                and self.free_drive(drive)
                and _compatible(drive.generation, media, write)
            ):
                return drive
        return None

    def lru_drive(
        self, media: Media | None, write: bool, keep: Iterable[str] = ()
    ) -> DriveView | None:
        kept = set(keep)
        candidates = [
            d
            for d in self.snapshot.drives
            if d.barcode is not None
            and d.barcode not in kept
            and self.free_drive(d)
            and d.barcode not in self.claimed_tapes
            and _compatible(d.generation, media, write)
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda d: (d.idle_since or -math.inf, d.index))

    def pool_tape(
        self, pool: str, size: int, prefer_mounted: bool, attach_ok: bool = True
    ) -> TapeView | None:
        """A mounted idle writable pool tape (if wanted), else the fullest non-full one
        in a slot, else scratch; never a claimed one."""
        best: TapeView | None = None
        for tape in self.snapshot.tapes.values():
            if tape.pool != pool or not tape.writable or tape.barcode in self.claimed_tapes:
                continue
            if tape.capacity_bytes and tape.used_bytes + size > tape.capacity_bytes:
                continue
            if tape.drive is not None:
                drive = self.drives[tape.drive]
                if prefer_mounted and attach_ok and self.free_drive(drive):
                    return tape
                continue
            if tape.slot is None:
                continue
            if best is None or (tape.used_bytes, tape.barcode) > (best.used_bytes, best.barcode):
                best = tape
        return best


@dataclass
class Fcfs:
    """B0/B1/B2: oldest request first, one request per mount (first-fit: a request
    whose tape is busy does not block the ones behind it).

    dismount_delay_s: 0 unloads at once (B0); None keeps tapes until a drive is
    needed (B1); a number unloads after that much idleness (B2).
    """

    name: str
    dismount_delay_s: float | None

    def decide(
        self, snapshot: LibrarySnapshot, pending: Sequence[MountRequest], now: float
    ) -> list[Action]:
        state = _Round(snapshot)
        keep_mounted = self.dismount_delay_s != 0
        for request in sorted(pending, key=_ARRIVAL_ORDER):
            if not state.any_free_drive():
                break
            self._one(state, request, keep_mounted)
        for drive in snapshot.drives:
            if drive.barcode is None or not state.free_drive(drive):
                continue
            if drive.barcode in state.claimed_tapes:
                continue
            delay = self.dismount_delay_s
            if delay is None:
                continue
            if delay == 0 or (drive.idle_since or 0.0) + delay <= now:
                state.unload(drive)
        return state.actions

    def _one(self, state: _Round, request: MountRequest, keep_mounted: bool) -> None:
        tapes = state.snapshot.tapes
        barcode = request.barcode
        write = request.write or barcode is None
        if barcode is None:
            assert request.pool is not None
            chosen = state.pool_tape(request.pool, request.size_bytes or 0, keep_mounted)
            if chosen is None:
                if not any(t.pool == request.pool and t.writable for t in tapes.values()):
                    state.actions.append(Fail(request.id, f"no writable tape in {request.pool}"))
                return
            barcode = chosen.barcode
        tape = tapes.get(barcode)
        if tape is None:
            state.actions.append(Fail(request.id, f"unknown barcode {barcode}"))
            return
        if tape.need_to_check:
            state.actions.append(Fail(request.id, _check_reason(barcode)))
            return
        if barcode in state.claimed_tapes:
            return
        if tape.drive is not None:
            drive = state.drives[tape.drive]
            if (
                keep_mounted
                and state.free_drive(drive)
                and _compatible(drive.generation, tape.media, write)
            ):
                if request.barcode is None:
                    state.actions.append(Assign(request.id, barcode))
                state.attach(drive, barcode, (request.id,))
            return
        if tape.slot is None:
            return
        target = state.empty_drive(tape.media, write)
        if target is None and keep_mounted:
            target = state.lru_drive(tape.media, write)
        if target is None:
            return
        if request.barcode is None:
            state.actions.append(Assign(request.id, barcode))
        state.load(target, tape, (request.id,))

    def next_wake(
        self, snapshot: LibrarySnapshot, pending: Sequence[MountRequest], now: float
    ) -> float | None:
        if not self.dismount_delay_s:
            return None
        delay = self.dismount_delay_s
        wakes = [
            d.idle_since + delay
            for d in snapshot.drives
            if d.barcode is not None and d.idle and d.idle_since is not None
        ]
        return min((w for w in wakes if w > now), default=None)


@dataclass
class QueuePerTape:
    """B3, CTA-like (Scheduler::sortAndGetTapesForMountInfo, SCHEDULING.md 1.1)."""

    name: str
    min_bytes: int = 50 * GB
    min_files: int = 10_000
    min_age_s: float = 600.0

    def _queues(
        self, pending: Sequence[MountRequest]
    ) -> tuple[dict[str, list[MountRequest]], dict[str, list[MountRequest]]]:
        by_tape: dict[str, list[MountRequest]] = {}
        by_pool: dict[str, list[MountRequest]] = {}
        for request in sorted(pending, key=_ARRIVAL_ORDER):
            if request.barcode is not None:
                by_tape.setdefault(request.barcode, []).append(request)
            elif request.pool is not None:
                by_pool.setdefault(request.pool, []).append(request)
        return by_tape, by_pool

    def _eligible(self, queue: list[MountRequest], existing: int, now: float) -> bool:
        queued = sum(r.size_bytes or 0 for r in queue)
        return (
            queued / (1 + existing) >= self.min_bytes
            or len(queue) / (1 + existing) >= self.min_files
            or (existing == 0 and now - queue[0].arrival >= self.min_age_s)
        )

    def decide(
        self, snapshot: LibrarySnapshot, pending: Sequence[MountRequest], now: float
    ) -> list[Action]:
        state = _Round(snapshot)
        tapes = snapshot.tapes
        by_tape, by_pool = self._queues(pending)
        for barcode in list(by_tape):
            if barcode not in tapes:
                for request in by_tape.pop(barcode):
                    state.actions.append(Fail(request.id, f"unknown barcode {barcode}"))
            elif tapes[barcode].need_to_check:
                for request in by_tape.pop(barcode):
                    state.actions.append(Fail(request.id, _check_reason(barcode)))
        self._drain(state, by_tape, by_pool)
        self._mount(state, by_tape, by_pool, now)
        return state.actions

    @staticmethod
    def _drain(
        state: _Round,
        by_tape: dict[str, list[MountRequest]],
        by_pool: dict[str, list[MountRequest]],
    ) -> None:
        """A session keeps fetching work for its tape until the queue is empty, then
        the tape goes home at once."""
        snapshot = state.snapshot
        tapes = snapshot.tapes
        for drive in snapshot.drives:
            if drive.barcode is None or not state.free_drive(drive):
                continue
            queue = by_tape.pop(drive.barcode, None)
            if queue:
                state.attach(drive, drive.barcode, tuple(r.id for r in queue))
                continue
            tape = tapes.get(drive.barcode)
            if tape is not None and tape.pool in by_pool and tape.writable:
                queue = by_pool.pop(tape.pool or "")
                ids = tuple(r.id for r in queue)
                state.actions.extend(Assign(rid, drive.barcode) for rid in ids)
                state.attach(drive, drive.barcode, ids)
        for drive in snapshot.drives:
            if drive.barcode is not None and state.free_drive(drive):
                state.unload(drive)

    def _mount(
        self,
        state: _Round,
        by_tape: dict[str, list[MountRequest]],
        by_pool: dict[str, list[MountRequest]],
        now: float,
    ) -> None:
        snapshot = state.snapshot
        tapes = snapshot.tapes
        existing: dict[str, int] = {}
        for busy in snapshot.drives:
            if busy.barcode is not None and busy.available and not busy.idle:
                pool = tapes[busy.barcode].pool if busy.barcode in tapes else None
                if pool is not None:
                    existing[pool] = existing.get(pool, 0) + 1
        candidates: list[tuple[int, float, str, bool]] = []
        for barcode, queue in by_tape.items():
            if self._eligible(queue, 0, now):
                candidates.append(
                    (-max(r.priority for r in queue), queue[0].arrival, barcode, False)
                )
        for pool, queue in by_pool.items():
            if self._eligible(queue, existing.get(pool, 0), now):
                candidates.append((-max(r.priority for r in queue), queue[0].arrival, pool, True))
        candidates.sort()
        for _, _, name, is_pool in candidates:
            if is_pool:
                queue = by_pool[name]
                chosen = state.pool_tape(name, 0, prefer_mounted=False)
                if chosen is None:
                    continue
                drive = state.empty_drive(chosen.media, True)
                if drive is None:
                    continue
                ids = tuple(r.id for r in queue)
                state.actions.extend(Assign(rid, chosen.barcode) for rid in ids)
                state.load(drive, chosen, ids)
                continue
            queue = by_tape[name]
            tape = tapes[name]
            if tape.slot is None or name in state.claimed_tapes:
                continue  # mounted elsewhere: served when that session drains
            write = any(r.write for r in queue)
            drive = state.empty_drive(tape.media, write)
            if drive is None:
                continue
            state.load(drive, tape, tuple(r.id for r in queue))

    def next_wake(
        self, snapshot: LibrarySnapshot, pending: Sequence[MountRequest], now: float
    ) -> float | None:
        by_tape, by_pool = self._queues(pending)
        oldest = [q[0].arrival + self.min_age_s for q in (*by_tape.values(), *by_pool.values())]
        return min((w for w in oldest if w > now), default=None)


def baselines() -> list[Fcfs | QueuePerTape]:
    """Every baseline the planner must beat; "best baseline" is the best of these
    on each metric separately."""
    return [
        Fcfs("B0 fcfs-unload", 0.0),
        Fcfs("B1 fcfs-lazy", None),
        Fcfs("B2 fcfs+60s", 60.0),
        Fcfs("B2 fcfs+900s", 900.0),
        QueuePerTape("B3 cta-like A=0s", min_age_s=0.0),
        QueuePerTape("B3 cta-like A=60s", min_age_s=60.0),
        QueuePerTape("B3 cta-like A=600s", min_age_s=600.0),
    ]


def planner(policy: PlanPolicy | None = None) -> PlannerPolicy:
    return PlannerPolicy(policy or PlanPolicy())
