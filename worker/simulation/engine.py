"""The discrete-event engine: a virtual clock, a heap of events, and the library's
physical state. A policy (the planner or a baseline) is asked for actions after
every batch of simultaneous events, with the same snapshot the daemon would build;
the engine runs the actions with the timing model and records what happened.

Rule: the engine checks every action against the physical state and raises
`SimulationError` on an impossible one (a tape into an incompatible drive, a
second move of a cartridge, a load into a full drive), so a policy bug can never
hide behind good figures (and an action on a drive that is down is one).

Faults (`worker.simulation.faults`): a robot move may fail, be retried after a
backoff, and take its drive down after repeated failures; a drive may die at a
given time or be slow to become ready. Whatever happens, every request ends
served or failed with a reason, unless no drive left can ever serve it
(`unserved`).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import Protocol

from drivers.media import Media, can_read, can_write
from worker.core.actions import Action, Assign, Attach, Clean, Fail, Load, Unload
from worker.core.requests import MountRequest
from worker.core.snapshot import (
    LibrarySnapshot,
    Tape,
    TapeView,
    build_snapshot,
    drive_view,
    tape_view,
)
from worker.simulation.faults import NO_FAULTS, FaultPlan
from worker.simulation.model import TB, SimLibrary
from worker.simulation.workloads import SimRequest, Workload


class SimulationError(RuntimeError):
    """A policy asked for something the library cannot do: a bug in the policy."""


class Policy(Protocol):
    """What the engine drives: the planner, or a baseline."""

    name: str

    def decide(
        self, snapshot: LibrarySnapshot, pending: Sequence[MountRequest], now: float
    ) -> list[Action]: ...

    def next_wake(
        self, snapshot: LibrarySnapshot, pending: Sequence[MountRequest], now: float
    ) -> float | None: ...


class _Ev(IntEnum):
    ARRIVE = 0
    LOAD_DONE = 1
    SERVE_DONE = 2
    EJECTED = 3
    UNLOAD_DONE = 4
    CLEAN_IN = 5
    CLEAN_EJECT = 6
    CLEAN_DONE = 7
    WAKE = 8
    MOVE_FAILED = 9
    RETRY = 10
    KILL = 11


@dataclass(slots=True)
class _Tape:
    barcode: str
    media: Media | None
    slot: int | None
    home: int
    pool: str | None
    used: int
    capacity: int
    cleaning: bool
    uses_left: int
    view: TapeView
    drive: int | None = None
    #: A queued load or clean will take it to this drive: for the policies it is
    #: already on its way (as the daemon's executor reports tapes in flight).
    headed: int | None = None
    mounts: list[float] = field(default_factory=list)

    def refresh(self, locked: bool, write_protected: bool, need_to_check: bool) -> None:
        facts = Tape(
            barcode=self.barcode,
            slot=self.slot,
            drive=self.drive,
            home_slot=self.home,
            pool=self.pool,
            cleaning=self.cleaning,
            locked=locked,
            write_protected=write_protected,
            need_to_check=need_to_check,
            full=self.capacity > 0 and self.used >= self.capacity,
            used_bytes=self.used,
            cleaning_uses_left=self.uses_left,
        )
        # A tape a queued load takes to a drive is already on its way there.
        where = (None, self.headed) if self.headed is not None else None
        self.view = tape_view(facts, where=where, capacity_bytes=self.capacity)


@dataclass(slots=True)
class _Drive:
    index: int
    generation: int
    barcode: str | None = None
    #: Requests on the current mount that are not done yet.
    holders: list[int] = field(default_factory=list)
    #: Of those, the ones whose transfer has not started.
    queue: list[int] = field(default_factory=list)
    chain: deque[Action] = field(default_factory=deque)
    op: bool = False  # a robot or drive operation is running
    serving: bool = False
    idle_since: float | None = None
    head: float = 0.0
    moved: int = 0
    needs_cleaning: bool = False
    mounts_since_clean: int = 0
    mount_started: float | None = None
    segment: tuple[float, str] | None = None
    pending_move: tuple[str, int] | None = None
    #: With faults: the slot a loading cartridge leaves, still its own until the
    #: robot move succeeds.
    load_from: int | None = None
    #: Consecutive failed moves (reset by a successful one), and failed attempts of
    #: the current move.
    failures: int = 0
    attempt: int = 0
    #: Why the drive is down, or None: down drives get no work, ever.
    down: str | None = None

    @property
    def up(self) -> bool:
        return self.down is None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    id: int
    arrival: float
    barcode: str | None
    pool: str | None
    write: bool
    size_bytes: int
    position: float
    ready: float | None
    done: float | None
    failed: str | None
    latency_lb: float
    #: The drive that served it (None if it was not served).
    drive: int | None = None
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class RunResult:
    policy: str
    workload: Workload
    library: SimLibrary
    requests: tuple[RequestRecord, ...]
    #: (time the mount started, barcode, drive)
    mounts: tuple[tuple[float, str, int], ...]
    end: float
    makespan: float
    robot_busy_s: float
    transfer_s: float
    occupancy_s: float
    decision_s: float
    decisions: int
    unserved: int
    timeline: dict[int, list[tuple[float, float, str]]]
    faults: FaultPlan = NO_FAULTS
    failed_moves: int = 0
    retries: int = 0
    #: (drive, virtual time, reason) for each drive that went down.
    drives_down: tuple[tuple[int, float, str], ...] = ()
    #: Cartridges left stuck in a drive (need_to_check).
    stuck: tuple[str, ...] = ()


class Simulation:
    """One policy on one workload, from t = 0 until every request is done."""

    def __init__(
        self,
        library: SimLibrary,
        workload: Workload,
        policy: Policy,
        *,
        seed: int = 0,
        record_timeline: bool = False,
        clean_every_mounts: int = 0,
        max_time_s: float = 30 * 86400.0,
        faults: FaultPlan = NO_FAULTS,
    ) -> None:
        self.library = library
        self.workload = workload
        self.policy = policy
        self.timing = library.timing
        self.rng = random.Random(seed)  # noqa: S311 -- seeded, reproducible, not security
        self.record_timeline = record_timeline
        self.clean_every = clean_every_mounts
        self.max_time = max_time_s
        self._init_faults(faults, seed)
        self.now = 0.0
        self._seq = 0
        self._heap: list[tuple[float, int, _Ev, int, int]] = []
        self.robots = [0.0] * max(1, library.robots)
        self.robot_busy = 0.0
        self.drives = {d.index: _Drive(d.index, d.generation) for d in library.drives}
        self.flags = {
            t.barcode: (t.locked, t.write_protected, t.need_to_check) for t in library.tapes
        }
        self.tapes: dict[str, _Tape] = {}
        self.views: dict[str, TapeView] = {}
        occupied: set[int] = set()
        for spec in library.tapes:
            tape = _Tape(
                barcode=spec.barcode,
                media=spec.media,
                slot=None if spec.drive is not None else spec.slot,
                home=spec.slot,
                pool=spec.pool,
                used=spec.used_bytes,
                capacity=spec.capacity_bytes or (TB if not spec.cleaning else 0),
                cleaning=spec.cleaning,
                uses_left=spec.cleaning_uses_left,
                view=TapeView(spec.barcode, spec.media),
                drive=spec.drive,
            )
            if spec.full and tape.capacity > 0:
                tape.used = max(tape.used, tape.capacity)
            self.tapes[spec.barcode] = tape
            self._refresh(tape)
            if spec.drive is not None:
                self.drives[spec.drive].barcode = spec.barcode
                self.drives[spec.drive].mount_started = 0.0
            else:
                occupied.add(spec.slot)
        self.free_slots = set(range(1, library.slots + 1)) - occupied
        self.tape_views = MappingProxyType(self.views)
        self.specs = {r.id: r for r in workload.requests}
        self.pending: dict[int, MountRequest] = {}
        self.requests: dict[int, MountRequest] = {}
        self.ready: dict[int, float] = {}
        self.done: dict[int, float] = {}
        self.failed: dict[int, str] = {}
        self.assigned: dict[int, str] = {}
        self.latency_lb: dict[int, float] = {}
        self.mounts: list[tuple[float, str, int]] = []
        self.transfer_s = 0.0
        self.occupancy_s = 0.0
        self.decision_s = 0.0
        self.decisions = 0
        self.timeline: dict[int, list[tuple[float, float, str]]] = {d: [] for d in self.drives}
        self._wake_at = math.inf
        self.outstanding = len(workload.requests)
        self.last_done = 0.0
        for request in workload.requests:
            self._push(request.arrival, _Ev.ARRIVE, -1, request.id)
        for index, at in faults.kills:
            self._push(at, _Ev.KILL, index)

    def _init_faults(self, faults: FaultPlan, seed: int) -> None:
        faults.check_drives({d.index for d in self.library.drives})
        self.faults = faults
        self.fault_rng = faults.rng(seed)
        self.failed_moves = 0
        self.retries = 0
        self.drives_down: list[tuple[int, float, str]] = []
        self.stuck: list[str] = []
        #: Failed mount attempts of each request (its retry budget is faults.retries).
        self.attempts: dict[int, int] = {}
        #: The drive each request was made ready in.
        self.served_on: dict[int, int] = {}

    # -- plumbing --------------------------------------------------------------------

    def _push(self, at: float, kind: _Ev, drive: int = -1, arg: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, drive, arg))

    def _refresh(self, tape: _Tape) -> None:
        tape.refresh(*self.flags[tape.barcode])
        self.views[tape.barcode] = tape.view

    def _book_robot(self, at: float) -> float:
        """One robot move starting no earlier than `at`; returns when it ends."""
        k = min(range(len(self.robots)), key=self.robots.__getitem__)
        start = max(at, self.robots[k])
        took = self.timing.move(self.rng)
        self.robots[k] = start + took
        self.robot_busy += took
        return start + took

    def _segment(self, drive: _Drive, kind: str | None) -> None:
        """Close the drive's current timeline segment and open `kind` (None: empty)."""
        if not self.record_timeline:
            return
        if drive.segment is not None:
            start, old = drive.segment
            if self.now > start:
                self.timeline[drive.index].append((start, self.now, old))
        drive.segment = (self.now, kind) if kind is not None else None

    def snapshot(self) -> LibrarySnapshot:
        return build_snapshot(
            (
                drive_view(d, holders=d.holders, busy=d.op or bool(d.chain))
                for d in self.drives.values()
            ),
            self.tape_views,
            free_slots=self.free_slots,
            robot_busy=any(r > self.now for r in self.robots),
        )

    # -- the loop --------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> RunResult:
        total = len(self.workload.requests) or 1
        reported = 0
        while self._heap and self.outstanding > 0:
            at = self._heap[0][0]
            if at > self.max_time:
                break
            self.now = at
            while self._heap and self._heap[0][0] == at:
                _, _, kind, drive, arg = heapq.heappop(self._heap)
                self._handle(kind, drive, arg)
            self._decide()
            if progress is not None:
                finished = total - self.outstanding
                if finished - reported >= total // 100 or self.outstanding == 0:
                    reported = finished
                    progress(finished / total)
        return self._result()

    def _decide(self) -> None:
        snapshot = self.snapshot()
        pending = list(self.pending.values())
        started = time.perf_counter()
        actions = self.policy.decide(snapshot, pending, self.now)
        wake = self.policy.next_wake(snapshot, pending, self.now)
        self.decision_s += time.perf_counter() - started
        self.decisions += 1
        self._apply(actions)
        if wake is not None and self.now < wake < self._wake_at:
            self._wake_at = wake
            self._push(wake, _Ev.WAKE)
        elif self._wake_at <= self.now:
            self._wake_at = math.inf

    def _handle(self, kind: _Ev, index: int, arg: int) -> None:
        if kind is _Ev.ARRIVE:
            self._arrive(self.specs[arg])
            return
        if kind is _Ev.WAKE:
            if self._wake_at <= self.now:
                self._wake_at = math.inf
            return
        drive = self.drives[index]
        if drive.down is not None:
            return  # whatever it was doing died with it
        if kind is _Ev.LOAD_DONE:
            self._load_done(drive)
        elif kind is _Ev.SERVE_DONE:
            self._serve_done(drive, arg)
        elif kind is _Ev.EJECTED:
            self._robot(drive, _Ev.UNLOAD_DONE)
        elif kind is _Ev.UNLOAD_DONE:
            self._unload_done(drive)
        elif kind is _Ev.CLEAN_IN:
            took = self.rng.uniform(self.timing.clean_min_s, self.timing.clean_max_s)
            self._push(self.now + took, _Ev.CLEAN_EJECT, index)
        elif kind is _Ev.CLEAN_EJECT:
            self._robot(drive, _Ev.CLEAN_DONE)
        elif kind is _Ev.CLEAN_DONE:
            self._clean_done(drive)
        elif kind is _Ev.MOVE_FAILED:
            self._move_failed(drive, _Ev(arg))
        elif kind is _Ev.RETRY:
            self._robot(drive, _Ev(arg))
        elif kind is _Ev.KILL:
            self._kill(drive)

    # -- requests --------------------------------------------------------------------

    def _arrive(self, spec: SimRequest) -> None:
        request = MountRequest(
            id=spec.id,
            barcode=spec.barcode,
            pool=spec.pool,
            arrival=spec.arrival,
            write=spec.write,
            size_bytes=spec.size_bytes,
        )
        self.requests[spec.id] = request
        self.pending[spec.id] = request
        self.latency_lb[spec.id] = self._latency_lb(spec)

    def _latency_lb(self, spec: SimRequest) -> float:
        """SCHEDULING.md 4.3: a move, a load and the locate unless the tape is mounted.

        A tape whose unload has begun is not mounted: no schedule can use it before
        it is back in a slot, so it pays the move and the load like any other (the
        rest of its unload is waiting for the tape, which the floor leaves out). A
        pool write counts only the tapes it could be written on."""
        timing = self.timing
        if spec.barcode is not None:
            candidates = [self.tapes[spec.barcode]] if spec.barcode in self.tapes else []
        else:
            candidates = [t for t in self.tapes.values() if t.pool == spec.pool and t.view.writable]
        if not candidates:
            return 0.0
        best = math.inf
        gen = max(d.generation for d in self.drives.values())
        for tape in candidates:
            target = self._target(tape, spec)
            transfer = spec.size_bytes / timing.rate(gen, tape.media)
            drive = self.drives[tape.drive] if tape.drive is not None else None
            if drive is not None and drive.pending_move is None:
                cost = timing.locate(drive.head, target) + transfer
            else:
                cost = (
                    timing.mean_move_s
                    + timing.load_nominal(gen)
                    + timing.locate(0.0, target)
                    + transfer
                )
            best = min(best, cost)
        return best

    @staticmethod
    def _target(tape: _Tape, spec: SimRequest) -> float:
        if spec.write:
            return min(1.0, tape.used / tape.capacity) if tape.capacity else 0.0
        return spec.position

    # -- actions ---------------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        touched: set[int] = set()
        for action in actions:
            if isinstance(action, Assign):
                request = self.pending.get(action.request_id)
                if request is None or action.barcode not in self.tapes:
                    raise SimulationError(f"{self.policy.name}: bad {action}")
                self.assigned[action.request_id] = action.barcode
            elif isinstance(action, Fail):
                if self.pending.pop(action.request_id, None) is None:
                    raise SimulationError(f"{self.policy.name}: fails a non-pending request")
                self.failed[action.request_id] = action.reason
                self.outstanding -= 1
            else:
                drive = self.drives.get(action.drive)
                if drive is None:
                    raise SimulationError(f"{self.policy.name}: no drive {action.drive}")
                if drive.down is not None:
                    raise SimulationError(
                        f"{self.policy.name}: {action} on drive {drive.index}, "
                        f"which is down ({drive.down})"
                    )
                if drive.serving or (drive.holders and not isinstance(action, Unload | Clean)):
                    raise SimulationError(f"{self.policy.name}: {action} on a held drive")
                if action.drive not in touched and (drive.op or drive.chain):
                    raise SimulationError(f"{self.policy.name}: {action} on a busy drive")
                touched.add(action.drive)
                if isinstance(action, Load | Attach):
                    for rid in action.request_ids:
                        if self.pending.pop(rid, None) is None:
                            raise SimulationError(f"{self.policy.name}: request {rid} twice")
                        barcode = self.specs[rid].barcode or self.assigned.get(rid)
                        if barcode != action.barcode:
                            raise SimulationError(
                                f"{self.policy.name}: request {rid} is for {barcode}, "
                                f"not {action.barcode}"
                            )
                    drive.holders = list(action.request_ids)
                if isinstance(action, Load | Clean):
                    tape = self.tapes.get(action.barcode)
                    if tape is None or tape.headed is not None or tape.slot != action.slot:
                        raise SimulationError(f"{self.policy.name}: {action}: tape not there")
                    tape.headed = action.drive
                    self._refresh(tape)
                drive.chain.append(action)
        for index in touched:
            drive = self.drives[index]
            if not drive.op:
                self._next_op(drive)

    def _next_op(self, drive: _Drive) -> None:
        if not drive.chain:
            drive.op = False
            if not drive.serving and drive.barcode is not None:
                drive.idle_since = self.now
                self._segment(drive, "idle")
            return
        drive.op = True
        action = drive.chain.popleft()
        if isinstance(action, Load):
            self._start_load(drive, action)
        elif isinstance(action, Unload):
            self._start_unload(drive, action)
        elif isinstance(action, Attach):
            if drive.barcode != action.barcode:
                raise SimulationError(
                    f"{self.policy.name}: {action} but drive holds {drive.barcode}"
                )
            self._check_media(drive, action.barcode, action.request_ids)
            drive.op = False
            for rid in action.request_ids:
                self.ready[rid] = self.now
                self.served_on[rid] = drive.index
            self._start_serving(drive)
        elif isinstance(action, Clean):
            self._start_clean(drive, action)

    def _check_media(self, drive: _Drive, barcode: str, rids: tuple[int, ...]) -> None:
        tape = self.tapes[barcode]
        if tape.cleaning:
            raise SimulationError(f"{self.policy.name}: data request on {barcode}")
        if tape.media is None:
            return
        for rid in rids:
            spec = self.specs[rid]
            ok = (
                can_write(drive.generation, tape.media)
                if spec.write
                else can_read(drive.generation, tape.media)
            )
            if not ok:
                raise SimulationError(
                    f"{self.policy.name}: {barcode} into LTO-{drive.generation} drive {drive.index}"
                )

    def _start_load(self, drive: _Drive, action: Load) -> None:
        tape = self.tapes.get(action.barcode)
        if tape is None or tape.slot != action.slot or tape.drive is not None:
            raise SimulationError(f"{self.policy.name}: {action} but the tape is elsewhere")
        if drive.barcode is not None:
            raise SimulationError(f"{self.policy.name}: {action} into a full drive")
        self._check_media(drive, action.barcode, action.request_ids)
        if self.faults.move_rate > 0:
            drive.load_from = tape.slot  # the slot is free once the move succeeds
        else:
            self.free_slots.add(tape.slot)
        tape.slot = None
        tape.headed = None
        tape.drive = drive.index
        tape.mounts.append(self.now)
        self._refresh(tape)
        drive.barcode = tape.barcode
        drive.mount_started = self.now
        drive.head = 0.0
        drive.moved = 0
        drive.idle_since = None
        self.mounts.append((self.now, tape.barcode, drive.index))
        self._segment(drive, "mount")
        self._robot(drive, _Ev.LOAD_DONE)

    def _load_done(self, drive: _Drive) -> None:
        drive.op = False
        drive.mounts_since_clean += 1
        if self.clean_every and drive.mounts_since_clean >= self.clean_every:
            drive.needs_cleaning = True
        for rid in drive.holders:
            self.ready[rid] = self.now
            self.served_on[rid] = drive.index
        self._start_serving(drive)

    def _start_serving(self, drive: _Drive) -> None:
        drive.serving = True
        drive.idle_since = None
        drive.queue = list(drive.holders)
        self._serve_next(drive)

    def _serve_next(self, drive: _Drive) -> None:
        if not drive.queue:
            drive.serving = False
            drive.holders = []
            self._next_op(drive)
            return
        assert drive.barcode is not None
        tape = self.tapes[drive.barcode]
        # The data mover takes the nearest request first (a greedy RAO).
        best = min(
            drive.queue, key=lambda rid: abs(self._target(tape, self.specs[rid]) - drive.head)
        )
        drive.queue.remove(best)
        spec = self.specs[best]
        target = self._target(tape, spec)
        locate = self.timing.locate(drive.head, target)
        transfer = spec.size_bytes / self.timing.rate(drive.generation, tape.media)
        if self.record_timeline and locate > 0:
            self._segment(drive, "locate")
            self.timeline[drive.index].append((self.now, self.now + locate, "locate"))
            drive.segment = (self.now + locate, "transfer")
        else:
            self._segment(drive, "transfer")
        self.transfer_s += transfer
        drive.head = target
        self._push(self.now + locate + transfer, _Ev.SERVE_DONE, drive.index, best)

    def _serve_done(self, drive: _Drive, rid: int) -> None:
        spec = self.specs[rid]
        assert drive.barcode is not None
        tape = self.tapes[drive.barcode]
        drive.moved += spec.size_bytes
        if spec.write:
            tape.used += spec.size_bytes
            drive.head = min(1.0, tape.used / tape.capacity) if tape.capacity else 0.0
            self._refresh(tape)
        else:
            drive.head = min(1.0, drive.head + 0.0001)
        drive.holders.remove(rid)
        self.done[rid] = self.now
        self.last_done = self.now
        self.outstanding -= 1
        self._serve_next(drive)

    def _start_unload(self, drive: _Drive, action: Unload) -> None:
        if drive.barcode != action.barcode or drive.serving:
            raise SimulationError(f"{self.policy.name}: {action} but drive holds {drive.barcode}")
        if action.slot not in self.free_slots:
            raise SimulationError(f"{self.policy.name}: {action} into a full slot")
        self.free_slots.discard(action.slot)
        drive.pending_move = (action.barcode, action.slot)
        drive.idle_since = None
        self._segment(drive, "unload")
        took = self.timing.rewind(drive.generation, drive.moved, drive.head) + self.timing.unload(
            drive.generation
        )
        self._push(self.now + took, _Ev.EJECTED, drive.index)

    def _unload_done(self, drive: _Drive) -> None:
        assert drive.pending_move is not None
        barcode, slot = drive.pending_move
        drive.pending_move = None
        tape = self.tapes[barcode]
        tape.drive = None
        tape.slot = slot
        self._refresh(tape)
        drive.barcode = None
        if drive.mount_started is not None:
            self.occupancy_s += self.now - drive.mount_started
            drive.mount_started = None
        self._segment(drive, None)
        self._next_op(drive)

    def _start_clean(self, drive: _Drive, action: Clean) -> None:
        tape = self.tapes.get(action.barcode)
        if tape is None or not tape.cleaning or tape.slot != action.slot or tape.uses_left <= 0:
            raise SimulationError(f"{self.policy.name}: bad {action}")
        if drive.barcode is not None:
            raise SimulationError(f"{self.policy.name}: {action} into a full drive")
        tape.slot = None
        tape.headed = None
        tape.drive = drive.index
        self._refresh(tape)
        drive.pending_move = (action.barcode, action.slot)
        self._segment(drive, "clean")
        self._robot(drive, _Ev.CLEAN_IN)

    def _clean_done(self, drive: _Drive) -> None:
        assert drive.pending_move is not None
        barcode, slot = drive.pending_move
        drive.pending_move = None
        tape = self.tapes[barcode]
        tape.drive = None
        tape.slot = slot
        tape.uses_left -= 1
        self._refresh(tape)
        drive.needs_cleaning = False
        drive.mounts_since_clean = 0
        self._segment(drive, None)
        self._next_op(drive)

    # -- faults ----------------------------------------------------------------------

    def _robot(self, drive: _Drive, then: _Ev) -> None:
        """One robot move of the drive's operation, then `then`. With faults the move
        may fail: it still costs its robot time, and counts against the drive."""
        end = self._book_robot(self.now)
        if self.faults.move_rate > 0 and self.fault_rng.random() < self.faults.move_rate:
            self.failed_moves += 1
            drive.failures += 1
            drive.attempt += 1
            self._push(end, _Ev.MOVE_FAILED, drive.index, int(then))
            return
        drive.failures = 0
        drive.attempt = 0
        if then is _Ev.LOAD_DONE:
            if drive.load_from is not None:
                self.free_slots.add(drive.load_from)
                drive.load_from = None
            end += self.timing.load(drive.generation, self.rng) + self.faults.slow_ready.get(
                drive.index, 0.0
            )
        self._push(end, then, drive.index)

    def _move_failed(self, drive: _Drive, then: _Ev) -> None:
        """The executor's policy: retry after an exponential backoff; a drive with too
        many consecutive failures is down; a move out of retries fails its operation."""
        faults = self.faults
        if drive.failures >= faults.drive_down_after:
            self._abort(drive, then, f"down after {drive.failures} consecutive failed moves")
        elif drive.attempt > faults.retries:
            self._abort(drive, then, f"a robot move failed {drive.attempt} times")
        else:
            self.retries += 1
            delay = faults.backoff_s * 2 ** (drive.attempt - 1)
            self._push(self.now + delay, _Ev.RETRY, drive.index, int(then))

    def _abort(self, drive: _Drive, then: _Ev, why: str) -> None:
        """The drive's operation failed for good (`then` names the move that failed)."""
        drive.attempt = 0
        drive.op = False
        down = drive.failures >= self.faults.drive_down_after
        tried = self._unchain(drive)
        if then is _Ev.LOAD_DONE:
            # The cartridge never left its slot.
            assert drive.barcode is not None
            assert drive.load_from is not None
            tape = self.tapes[drive.barcode]
            tape.drive = None
            tape.slot = drive.load_from
            self.mounts.remove((tape.mounts.pop(), tape.barcode, drive.index))
            self._refresh(tape)
            drive.load_from = None
            drive.barcode = None
            drive.mount_started = None
            self._segment(drive, None)
            self._requeue(
                tried, f"HardwareError: load of {tape.barcode} into drive {drive.index}: {why}"
            )
        elif then is _Ev.CLEAN_IN:
            assert drive.pending_move is not None
            barcode, slot = drive.pending_move
            drive.pending_move = None
            tape = self.tapes[barcode]
            tape.drive = None
            tape.slot = slot
            self._refresh(tape)
            self._segment(drive, None)
        else:
            # The drive would not give the cartridge back: stuck, and the drive with it.
            assert drive.pending_move is not None
            barcode, slot = drive.pending_move
            drive.pending_move = None
            self.free_slots.add(slot)
            drive.barcode = barcode
            self._stick(barcode)
            self._down(drive, f"tape {barcode} stuck: {why}")
            return
        if down:
            self._down(drive, why)
        else:
            self._next_op(drive)

    def _kill(self, drive: _Drive) -> None:
        """The drive dies for good: its cartridge is stuck, its requests are queued again."""
        tried = self._unchain(drive)
        if drive.load_from is not None:
            self.free_slots.add(drive.load_from)
            drive.load_from = None
        if drive.pending_move is not None:
            barcode, slot = drive.pending_move
            drive.pending_move = None
            self.free_slots.add(slot)  # reserved for the unload (or the cleaning cartridge)
            drive.barcode = barcode
        if drive.barcode is not None:
            self._stick(drive.barcode)
        self._requeue(tried, f"HardwareError: drive {drive.index} died at {self.now:g} s")
        self._down(drive, f"died at {self.now:g} s")

    def _unchain(self, drive: _Drive) -> list[int]:
        """Drop the drive's queued actions (their requests go back to the queue as they
        were) and its holders; return the holders whose mount was under way."""
        waiting: set[int] = set()
        for action in drive.chain:
            if isinstance(action, Load | Clean):
                tape = self.tapes[action.barcode]
                tape.headed = None
                self._refresh(tape)
            if isinstance(action, Load | Attach):
                for rid in action.request_ids:
                    waiting.add(rid)
                    self.pending[rid] = self.requests[rid]
        drive.chain.clear()
        tried = [rid for rid in drive.holders if rid not in waiting]
        drive.holders = []
        drive.queue = []
        drive.serving = False
        return tried

    def _requeue(self, rids: list[int], reason: str) -> None:
        """Requests whose mount failed: back to the queue, or failed once the attempts
        exceed the retry budget."""
        for rid in rids:
            attempts = self.attempts.get(rid, 0) + 1
            self.attempts[rid] = attempts
            self.ready.pop(rid, None)
            self.served_on.pop(rid, None)
            if attempts > self.faults.retries:
                self.failed[rid] = f"{reason} (attempt {attempts}, out of retries)"
                self.outstanding -= 1
            else:
                self.pending[rid] = self.requests[rid]

    def _stick(self, barcode: str) -> None:
        locked, write_protected, _ = self.flags[barcode]
        self.flags[barcode] = (locked, write_protected, True)
        self._refresh(self.tapes[barcode])
        self.stuck.append(barcode)

    def _down(self, drive: _Drive, reason: str) -> None:
        drive.down = reason
        drive.op = False
        drive.idle_since = None
        self.drives_down.append((drive.index, self.now, reason))
        if drive.mount_started is not None:
            self.occupancy_s += self.now - drive.mount_started
            drive.mount_started = None
        self._segment(drive, "down")

    # -- results ---------------------------------------------------------------------

    def _result(self) -> RunResult:
        end = self.now
        for drive in self.drives.values():
            if drive.mount_started is not None:
                self.occupancy_s += max(0.0, end - drive.mount_started)
            self._segment(drive, None)
        records = tuple(
            RequestRecord(
                id=spec.id,
                arrival=spec.arrival,
                barcode=spec.barcode or self.assigned.get(spec.id),
                pool=spec.pool,
                write=spec.write,
                size_bytes=spec.size_bytes,
                position=spec.position,
                ready=self.ready.get(spec.id),
                done=self.done.get(spec.id),
                failed=self.failed.get(spec.id),
                latency_lb=self.latency_lb.get(spec.id, 0.0),
                drive=self.served_on.get(spec.id) if spec.id in self.done else None,
                attempts=self.attempts.get(spec.id, 0),
            )
            for spec in self.workload.requests
        )
        return RunResult(
            policy=self.policy.name,
            workload=self.workload,
            library=self.library,
            requests=records,
            mounts=tuple(self.mounts),
            end=end,
            makespan=self.last_done,
            robot_busy_s=self.robot_busy,
            transfer_s=self.transfer_s,
            occupancy_s=self.occupancy_s,
            decision_s=self.decision_s,
            decisions=self.decisions,
            unserved=self.outstanding,
            timeline=self.timeline,
            faults=self.faults,
            failed_moves=self.failed_moves,
            retries=self.retries,
            drives_down=tuple(self.drives_down),
            stuck=tuple(self.stuck),
        )


def simulate(
    library: SimLibrary,
    workload: Workload,
    policy: Policy,
    *,
    seed: int = 0,
    record_timeline: bool = False,
    progress: Callable[[float], None] | None = None,
    faults: FaultPlan = NO_FAULTS,
) -> RunResult:
    """Run one policy on one workload; the same seed gives the same robot and load
    times, and the same fault draws."""
    return Simulation(
        library, workload, policy, seed=seed, record_timeline=record_timeline, faults=faults
    ).run(progress)
