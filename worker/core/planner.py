"""The mount planner: a pure function from (snapshot, pending requests, policy, now)
to the next actions. No awaits, no clock, no logging, no I/O.

Theory of operation
-------------------
Mounts are the scarce resource (a robot exchange, 15-17 s of load, up to minutes of
rewind and unload, cartridge wear), so one round of planning tries to serve as many
requests as possible per mount, and to keep the unload of an unwanted tape off the
critical path of the next request. One call does, in this order:

1. **Refuse what can never be served** (`Fail`): an unknown barcode, a cleaning
   cartridge, a tape that needs checking or was ejected, a tape no drive of this
   library can read (or write, for a write), a write to a locked, write-protected
   or full tape, a pool with no writable tape left. Everything else waits, however
   long, for hardware to come back.
2. **Group by tape.** All pending requests of one tape ride on one mount (CTA's
   queue per tape, Enstore's bound volume). Pool requests are grouped by pool and
   resolved to one tape at a time: a writable tape of the pool already idle in a
   drive, else the fullest appendable one (so tapes fill one at a time, as CTA's
   `ORDER BY DATA_IN_BYTES DESC`), else a scratch tape; unless another tape of
   the pool is cheaper to start writing on by more than `write_margin_s` (the
   fullest tape needs a locate to near its end, about 90 s on LTO-9; a scratch
   tape none): write placement is a cost decision. A pool request gets its
   `Assign` only in the round that also moves or attaches its tape, so a request
   is never bound to a tape it is not about to get.
3. **Attach** groups whose tape is already in an idle drive: no robot move at all.
4. **Clean** drives that asked for cleaning before their next data mount, with the
   cartridge that has the fewest uses left (use cleaners up one at a time).
5. **Load** the remaining groups, most urgent first: requests older than
   `max_age_s` first (nobody starves while others are served), then priority, then
   the oldest request, then the largest amount of work (on a batch, longest job
   first keeps the makespan near its lower bound). A group goes to a compatible
   empty drive if there is one (the least capable generation that fits, so newer
   drives stay free for newer media). Without one, the least recently used idle
   tape nobody waits for is sent home, and the load waits for a later round:
   bound now, the group would wait that drive's whole rewind and unload even if
   another drive emptied first. A pool never holds more drives
   than its cap. A pool already writing on a tape waits for that tape rather than
   opening a second one (a tape on its way home does not count), unless enough
   data is queued or its oldest request has waited `pool_open_after_s` (CTA's
   bytes/(1+E) rule): one mount saved per write that would otherwise open a tape.
6. **Dismount** tapes that nobody needs after `dismount_delay_s` of idleness: about
   one unload's cost, the ski-rental break-even, so the next mount does not pay the
   unload (the lesson of SCHEDULING.md 4.6). A pool's writable tape stays longer
   (`pool_dismount_delay_s`): writes to a pool come steadily, and the next one then
   appends at once instead of paying a mount and a locate to the end of data
   (measured in `worker/simulation`: 10 % fewer mounts and 6-14 % lower mean
   latency at 30 % load). Sooner when fewer than `spare_drives` drives are empty:
   under load an idle tape is rarely wanted again before its drive is, so its
   unload is better done now than on the next request's critical path (measured
   in `worker/simulation`: the largest single gain at 90 % load; at 30 % load
   most drives are empty and the rule rarely fires).

Invariants of the returned list (the executor relies on them): per drive, at most
one `Unload` and at most one of `Load`/`Attach`/`Clean`, the `Unload` first; per
tape, at most one move (`Load`, `Unload`, `Attach` or `Clean`); a pool request's
`Assign` comes before the move that serves it.

Cost: the requests come grouped by tape and by pool (`worker.core.pending`), each
group with its oldest arrival, priority, bytes and queue key kept up to date as
requests come and go, so a round is one pass over the tape groups, one over the
tapes when pool requests are pending, a sort of the groups, and drive choice from
per-generation free lists. A group served whole hands its kept tuple of ids to the
action; requests are touched one by one only to fail them, to assign pool writes
(read oldest first only as far as they fit) and to list part of a group. Given a
plain list, `plan` groups it first (linear in the requests), with the same result.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple, cast

from drivers.media import Media, can_read, can_write
from worker.core.actions import Action, Assign, Attach, Clean, Fail, Load, Unload
from worker.core.pending import PendingGroup, PendingRequests
from worker.core.requests import MountRequest
from worker.core.snapshot import DriveView, LibrarySnapshot, TapeView

__all__ = ["PendingRequests", "PlanPolicy", "dismount_due", "next_change", "plan"]


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    """Settings of the planner; the daemon builds it from `[planner]` in its config."""

    #: Unload a tape nobody needs after this long idle (about one unload's cost).
    dismount_delay_s: float = 120.0
    #: Requests older than this go before every younger one.
    max_age_s: float = 7200.0
    #: At most this many drives per pool (0 = no cap); per-pool caps in the
    #: snapshot or in `pool_drive_caps` override it.
    pool_drive_cap: int = 0
    pool_drive_caps: Mapping[str, int] = field(default_factory=dict, hash=False)
    #: Mount a cleaning cartridge before the next data mount of a drive that asks.
    clean_drives: bool = True
    #: Keep this many drives empty (or emptying) for the next mount: when fewer
    #: are, idle tapes nobody waits for go home before their dismount delay, least
    #: recently used first. Under load this takes the unload off the next
    #: request's critical path; when the library is quiet it never triggers.
    #: None = three quarters of the available drives, at least one (on 8 drives
    #: at 90 % load in the W2 benchmark, seeds 1-5: p99 0.85-0.93x the best
    #: baseline, against 0.83-0.96x with half and 0.89-1.00x with a quarter);
    #: 0 = off.
    spare_drives: int | None = None
    #: A pool that is already writing on a tape opens another one only for this
    #: much queued data per tape in use, or once its oldest request has waited
    #: this long; otherwise its requests wait for the tape in use (CTA's
    #: bytes/(1+E) rule), which saves a mount and fills tapes one at a time.
    pool_open_bytes: int = 50 * 10**9
    pool_open_after_s: float = 300.0
    #: A pool's writable tape idle in a drive stays this long (instead of
    #: `dismount_delay_s`): the pool's next write appends at once, with no mount
    #: and no locate to the end of data. It still yields to `spare_drives`.
    pool_dismount_delay_s: float = 900.0
    #: Write placement: a pool write goes to its pool's next tape in fill order
    #: (the fullest appendable, then scratch) unless another tape of the pool is
    #: cheaper to start writing on by more than this many seconds (a scratch tape
    #: needs no locate; the fullest one a locate to near its end). inf = always
    #: fill one tape at a time.
    write_margin_s: float = 60.0
    #: The planner's estimate of a locate from the load point: a constant plus a
    #: share of this per whole tape length (SCHEDULING.md 4.1; LTO-9 averages 45 s
    #: from the load point).
    locate_base_s: float = 4.0
    locate_per_length_s: float = 100.0


# -- small helpers -------------------------------------------------------------------


def _compatible(generation: int, media: Media | None, write: bool) -> bool:
    # A label without an LTO suffix tells us nothing: let the drive decide (the
    # executor turns a refusal into a clear failure).
    if media is None:
        return True
    return can_write(generation, media) if write else can_read(generation, media)


def _write_refusal(tape: TapeView) -> str | None:
    if tape.locked:
        return f"tape {tape.barcode} is locked"
    if tape.write_protected:
        return f"tape {tape.barcode} is write-protected"
    if tape.full:
        return f"tape {tape.barcode} is full"
    return None


def _read_refusal(tape: TapeView) -> str | None:
    if tape.cleaning:
        return f"{tape.barcode} is a cleaning cartridge, never a data destination"
    if tape.need_to_check:
        return f"tape {tape.barcode} needs to be checked by an operator"
    if tape.ejected:
        return f"tape {tape.barcode} was ejected from the library"
    return None


_TAPE = 0
_POOL = 1


class _Key(NamedTuple):
    """A group's place in the queue: keys sort most urgent first, after the groups
    whose oldest request is past the maximum age (see `_in_queue_order`)."""

    neg_priority: int
    oldest: float
    #: Minus the bytes and requests queued: on ties, the largest work first.
    neg_work: int
    #: _TAPE (name = barcode) or _POOL (name = pool).
    kind: int
    name: str


@dataclass(slots=True)
class _Group:
    """The pending requests that one mount would serve (a tape's, or a pool's)."""

    #: None: all of `source`'s, listed only if asked for (`requests`).
    kept: list[MountRequest] | None
    barcode: str | None  # None: a pool group, its tape chosen at its turn
    pool: str | None
    key: _Key
    write: bool
    #: The declared bytes of `requests` (unknown sizes count nothing).
    total_bytes: int
    #: The smallest declared size in `requests` (unknown counts as 0).
    min_size: int
    #: The queue's own group while `requests` is all of it: its ids are shared.
    source: PendingGroup | None

    @property
    def requests(self) -> list[MountRequest]:
        """Oldest first; shared with the queue: never modify it."""
        if self.kept is None:
            assert self.source is not None
            self.kept = self.source.ordered()
        return self.kept

    def all_ids(self) -> tuple[int, ...]:
        """The ids of all of `requests`: the queue's kept tuple when the round took
        none of them out, so a tape served whole is never listed request by request."""
        if self.source is not None:
            return self.source.ids()
        return tuple(map(_ID, self.requests))

    def ids_of(self, served: list[MountRequest]) -> tuple[int, ...]:
        """The ids of `served`, some of `requests` in their order."""
        if served is self.kept:
            return self.all_ids()
        return tuple(map(_ID, served))


_ID = attrgetter("id")
_PRIORITY = attrgetter("priority")
_WRITE = attrgetter("write")


class _Round:
    """Mutable scratch state of one `plan` call; never escapes it."""

    def __init__(self, snapshot: LibrarySnapshot, policy: PlanPolicy, now: float) -> None:
        self.snapshot = snapshot
        self.policy = policy
        self.now = now
        self.actions: list[Action] = []
        self.claimed_drives: set[int] = set()
        self.claimed_tapes: set[str] = set()
        self.media_ok: dict[int, bool] = {}
        self.key_of: dict[str, _Key] = {}
        self.used_slots: set[int] = set()
        self.free_slots = list(snapshot.free_slots)
        self.free_slot_set = set(snapshot.free_slots)
        self.generations = frozenset(d.generation for d in snapshot.drives)
        self._some_drive: dict[tuple[int, bool], bool] = {}
        self.drives = {d.index: d for d in snapshot.drives}
        # Drives a pool holds now (held or busy with one of its tapes).
        self.pool_drives: dict[str, int] = {}
        #: Of those, drives holding a writable tape of the pool for requests (writing,
        #: we assume). A busy drive that no request holds is unloading: its tape
        #: takes no more writes, so the pool's writes need not wait for it.
        self.pool_writing: dict[str, int] = {}
        for drive in snapshot.drives:
            if drive.barcode is None or not (drive.holders or drive.busy):
                continue
            tape = snapshot.tapes.get(drive.barcode)
            if tape is not None and tape.pool is not None:
                self.pool_drives[tape.pool] = self.pool_drives.get(tape.pool, 0) + 1
                if tape.writable and drive.holders:
                    self.pool_writing[tape.pool] = self.pool_writing.get(tape.pool, 0) + 1

    # -- bookkeeping ---------------------------------------------------------------

    def some_drive_can(self, media: Media | None, write: bool) -> bool:
        """Whether any drive of the library (up or down) reads, or writes, this media."""
        key = (_media_key(media), write)
        known = self._some_drive.get(key)
        if known is None:
            known = any(_compatible(g, media, write) for g in self.generations)
            self._some_drive[key] = known
        return known

    def media_fine(self, tape: TapeView | None, writes: bool) -> bool:
        """The slow half of the fast path: no flag refuses any request of this tape
        (a write flag only when some request writes), and some drive reads and
        writes its media (memoised in `media_ok`, whatever the tape's flags)."""
        if tape is None:
            return False
        fine = self.some_drive_can(tape.media, False) and self.some_drive_can(tape.media, True)
        self.media_ok[_media_key(tape.media)] = fine
        return fine and not (
            tape.cleaning
            or tape.need_to_check
            or tape.ejected
            or (writes and (tape.locked or tape.write_protected or tape.full))
        )

    def cap(self, pool: str | None) -> int:
        if pool is None:
            return 0
        if pool in self.policy.pool_drive_caps:
            return self.policy.pool_drive_caps[pool]
        if pool in self.snapshot.pool_drive_caps:
            return self.snapshot.pool_drive_caps[pool]
        return self.policy.pool_drive_cap

    def pool_has_room(self, pool: str | None) -> bool:
        cap = self.cap(pool)
        return cap <= 0 or pool is None or self.pool_drives.get(pool, 0) < cap

    def count_pool(self, pool: str | None) -> None:
        if pool is not None:
            self.pool_drives[pool] = self.pool_drives.get(pool, 0) + 1

    def unload_slot(self, tape: TapeView | None) -> int | None:
        """The home slot when it is empty, else any empty slot not promised yet."""
        home = tape.home_slot if tape is not None else None
        if home is not None and home in self.free_slot_set and home not in self.used_slots:
            self.used_slots.add(home)
            return home
        while self.free_slots:
            slot = self.free_slots.pop()
            if slot not in self.used_slots and slot != home:
                self.used_slots.add(slot)
                return slot
        return None

    def emit_unload(self, drive: DriveView) -> bool:
        assert drive.barcode is not None
        if drive.barcode in self.claimed_tapes:
            return False
        slot = self.unload_slot(self.snapshot.tapes.get(drive.barcode))
        if slot is None:
            return False
        self.actions.append(Unload(drive.index, drive.barcode, slot))
        self.claimed_tapes.add(drive.barcode)
        return True


def _media_key(media: Media | None) -> int:
    """A cheap dictionary key for a media: Media's own hash runs Python code, and
    the planner's loops look media up once per tape."""
    return -1 if media is None else media.generation + 100 * media.type_m


def _free(drive: DriveView) -> bool:
    return drive.available and not drive.busy and not drive.holders


# -- the planner ---------------------------------------------------------------------


def plan(
    snapshot: LibrarySnapshot,
    pending: Sequence[MountRequest] | PendingRequests,
    policy: PlanPolicy,
    now: float,
) -> list[Action]:
    """The next actions for the library, in the order the executor must run them.

    `pending` is either the pending requests, or a `PendingRequests` the shell keeps
    up to date as requests come and go: then a round costs what the tapes and
    drives cost, not what the backlog does. Both give the same actions."""
    queue = pending if isinstance(pending, PendingRequests) else PendingRequests(pending)
    state = _Round(snapshot, policy, now)
    groups = _Groups(state, queue)
    for request in queue.unaddressed.values():
        state.actions.append(Fail(request.id, "request names neither a tape nor a pool"))
    keys = _tape_keys(state, groups)
    pool_tapes = _pool_tapes(state, queue.by_pool) if queue.by_pool else {}
    keys.extend(_pool_keys(state, groups, pool_tapes))
    groups.keys = _in_queue_order(keys, now - policy.max_age_s)
    if state.actions:
        # Only failures so far; in request order, whatever order the groups came in.
        state.actions.sort(key=lambda a: _order_of(queue, a))
    _attach_step(state, groups, pool_tapes)
    if policy.clean_drives:
        _plan_cleaning(state, groups.needed)
    _load_step(state, groups, pool_tapes, groups.needed)
    _dismount_step(state, groups.needed)
    return state.actions


def _in_queue_order(keys: list[_Key], aged_before: float) -> list[_Key]:
    """Groups past the maximum age first (nobody starves while others are served),
    then the rest; each part by its keys."""
    aged = [k for k in keys if k.oldest <= aged_before]
    if not aged:
        keys.sort()
        return keys
    young = [k for k in keys if k.oldest > aged_before]
    aged.sort()
    young.sort()
    return aged + young


def _bytes(requests: Sequence[MountRequest]) -> int:
    """The declared sizes of these requests (unknown sizes count nothing)."""
    return sum(r.size_bytes or 0 for r in requests)


def _order_of(queue: PendingRequests, action: Action) -> tuple[float, int]:
    assert isinstance(action, Fail)
    request = queue.get(action.request_id)
    assert request is not None
    return (request.arrival, request.id)


def _tape_keys(state: _Round, groups: _Groups) -> list[_Key]:
    """Each tape group's queue key; groups that can never be served are failed and
    dropped (so their tape counts as unneeded)."""
    tapes = state.snapshot.tapes
    keys: list[_Key] = []
    key_of = state.key_of
    media_ok = state.media_ok
    overrides = groups.overrides
    # The hot loop: once per tape with requests, never per request. Flags are read
    # inline and the media check is memoised per media, because a call costs more
    # than the test. A tape that refuses writes (full, locked, write-protected) is
    # looked at closely only when some of its requests write.
    for barcode, group in groups.queue.by_tape.items():
        tape = tapes.get(barcode)
        media = tape.media if tape is not None else None
        if (
            tape is None
            or tape.cleaning
            or tape.need_to_check
            or tape.ejected
            or (group.writes and (tape.locked or tape.write_protected or tape.full))
            or not media_ok.get(
                -1 if media is None else media.generation + 100 * media.type_m, False
            )
        ) and not state.media_fine(tape, group.writes > 0):
            requests = group.ordered()
            kept = _check_tape_group(state, barcode, requests)
            if not kept:
                groups.dropped.add(barcode)
                continue
            if len(kept) != len(requests):
                overrides[(_TAPE, barcode)] = kept
                oldest = kept[0].arrival
                priority = max(map(_PRIORITY, kept))
                key = _Key(-priority, oldest, -(_bytes(kept) + len(kept)), _TAPE, barcode)
                keys.append(key)
                key_of[barcode] = key
                continue
        cached = cast("_Key | None", group.key)
        if cached is None:
            stats = group.stats()
            # The work term only breaks ties on the oldest arrival (a batch); it is
            # kept up to date with the group, so it costs nothing to carry.
            cached = group.key = _Key(-stats.priority, stats.oldest, -stats.work, _TAPE, barcode)
        keys.append(cached)
        key_of[barcode] = cached
    return keys


def _pool_keys(
    state: _Round,
    groups: _Groups,
    pool_tapes: Mapping[str, list[TapeView]],
) -> list[_Key]:
    keys: list[_Key] = []
    for pool, group in groups.queue.by_pool.items():
        if pool not in pool_tapes:
            reason = f"no writable tape left in pool {pool!r}"
            state.actions.extend(Fail(r.id, reason) for r in group.ordered())
            groups.dropped_pools.add(pool)
            continue
        stats = group.stats()
        if stats.max_size > _most_room(pool_tapes[pool]):
            # Some write may fit no tape of the pool: look at each (rare).
            requests = group.ordered()
            kept = _room_somewhere(state, pool, requests, pool_tapes[pool])
            if not kept:
                groups.dropped_pools.add(pool)
                continue
            if len(kept) != len(requests):
                groups.overrides[(_POOL, pool)] = kept
        requests_kept = groups.overrides.get((_POOL, pool))
        if requests_kept is None:
            oldest, priority = stats.oldest, stats.priority
        else:
            oldest = requests_kept[0].arrival
            priority = max(map(_PRIORITY, requests_kept))
        keys.append(
            _Key(
                neg_priority=-priority,
                oldest=oldest,
                neg_work=-groups.work(_POOL, pool),
                kind=_POOL,
                name=pool,
            )
        )
    return keys


class _Needed:
    """The tapes some pending request waits for (those not failed this round)."""

    __slots__ = ("by_tape", "dropped")

    def __init__(self, by_tape: Mapping[str, object], dropped: set[str]) -> None:
        self.by_tape = by_tape
        self.dropped = dropped

    def __contains__(self, barcode: object) -> bool:
        return barcode in self.by_tape and barcode not in self.dropped


class _Groups:
    """The round's view of the queue: its groups in queue order, the requests this
    round failed taken out (`overrides`, `dropped`), built lazily: a round looks at
    only as many groups as there are drives to give them."""

    def __init__(self, state: _Round, queue: PendingRequests) -> None:
        self.state = state
        self.queue = queue
        self.keys: list[_Key] = []
        #: A group's remaining requests when this round failed or served some of them.
        self.overrides: dict[tuple[int, str], list[MountRequest]] = {}
        self.dropped: set[str] = set()
        self.dropped_pools: set[str] = set()
        self.done: set[tuple[int, str]] = set()
        self.needed = _Needed(queue.by_tape, self.dropped)

    def work(self, kind: int, name: str) -> int:
        kept = self.overrides.get((kind, name))
        if kept is not None:
            return _bytes(kept) + len(kept)
        source = self.queue.by_tape if kind == _TAPE else self.queue.by_pool
        return source[name].work

    def make(self, key: _Key) -> _Group:
        name = key.name
        kind = key.kind
        requests = self.overrides.get((kind, name))
        source: PendingGroup | None
        if requests is not None:
            write = any(map(_WRITE, requests))
            total = _bytes(requests)
            smallest = min((r.size_bytes or 0 for r in requests), default=0)
            source = None
        else:
            source = (self.queue.by_tape if kind == _TAPE else self.queue.by_pool)[name]
            write = source.writes > 0
            total = source.size_total
            smallest = source.stats().min_size
        if kind == _POOL:
            return _Group(requests, None, name, key, True, total, smallest, source)
        pool = self.state.snapshot.tapes[name].pool
        return _Group(requests, name, pool, key, write, total, smallest, source)

    def attachable(self) -> list[_Group]:
        """Groups that might be served without a move: pool groups, and tapes
        already in a free drive; in queue order."""
        state = self.state
        keys: list[_Key] = [k for k in self.keys if k.kind == _POOL] if self.queue.by_pool else []
        key_of = state.key_of
        needed = self.needed
        for drive in state.snapshot.drives:
            if drive.barcode is not None and _free(drive) and drive.barcode in needed:
                keys.append(key_of[drive.barcode])
        return [self.make(k) for k in _in_queue_order(keys, state.now - state.policy.max_age_s)]


def _attach_step(state: _Round, groups: _Groups, pool_tapes: Mapping[str, list[TapeView]]) -> None:
    """Serve the groups whose tape is already idle in a drive: no robot move."""
    for group in groups.attachable():
        if group.barcode is None:
            assert group.pool is not None
            if _attach_pool(state, groups, group, pool_tapes[group.pool]):
                groups.done.add((_POOL, group.pool))
            continue
        tape = state.snapshot.tapes[group.barcode]
        assert tape.drive is not None
        drive = state.drives[tape.drive]
        if drive.index in state.claimed_drives:
            continue
        if not _compatible(drive.generation, tape.media, group.write):
            # Readable here but not writable: send it home, load it elsewhere next round.
            if state.emit_unload(drive):
                state.claimed_drives.add(drive.index)
            continue
        if not state.pool_has_room(group.pool):
            continue
        ids = group.all_ids()
        state.actions.append(Attach(drive.index, tape.barcode, ids))
        state.claimed_drives.add(drive.index)
        state.claimed_tapes.add(tape.barcode)
        state.count_pool(group.pool)
        groups.done.add((_TAPE, tape.barcode))


def _load_step(
    state: _Round,
    groups: _Groups,
    pool_tapes: Mapping[str, list[TapeView]],
    needed: Container[str],
) -> None:
    """Loads, most urgent group first, into free drives."""
    free = _FreeDrives(state, needed)
    tapes = state.snapshot.tapes
    claimed = state.claimed_tapes
    for key in groups.keys:
        if free.exhausted:
            return
        if key.kind == _TAPE:
            tape = tapes[key.name]
            if tape.slot is None or tape.barcode in claimed:
                continue  # in a drive (held, busy or just attached) or in flight
        elif (_POOL, key.name) in groups.done:
            continue
        group = groups.make(key)
        if not state.pool_has_room(group.pool):
            continue
        if group.barcode is None:
            assert group.pool is not None
            _load_pool(state, group, pool_tapes[group.pool], free)
            continue
        drive = free.take(tape.media, group.write)
        if drive is None:
            free.make_room(tape.media, group.write)
            continue
        _emit_load(state, drive, tape, group.all_ids())
        state.count_pool(group.pool)


def _dismount_step(state: _Round, needed: Container[str]) -> None:
    """Unload what nobody needs once it has been idle for the dismount delay, or
    sooner when too few drives are empty for the next mount."""
    idle: list[DriveView] = []
    spare = 0
    for drive in state.snapshot.drives:
        if not _free(drive) or drive.index in state.claimed_drives:
            continue
        if drive.barcode is None:
            spare += 1
        elif drive.barcode not in needed:
            idle.append(drive)
    # Drives this round empties and does not refill count as spare too.
    emptied = {a.drive for a in state.actions if isinstance(a, Unload)}
    spare += len(emptied - {a.drive for a in state.actions if isinstance(a, Load | Clean)})
    wanted = state.policy.spare_drives
    if wanted is None:
        wanted = max(1, sum(1 for d in state.snapshot.drives if d.available) * 3 // 4)
    # Least recently used first; a tape with no idle clock has waited since before we knew.
    idle.sort(key=lambda d: (d.idle_since if d.idle_since is not None else -math.inf, d.index))
    for drive in idle:
        due = dismount_due(drive, state.snapshot, state.policy)
        expired = due is None or due <= state.now
        if not expired and spare >= wanted:
            continue
        if state.emit_unload(drive):
            state.claimed_drives.add(drive.index)
            spare += 1


def dismount_due(drive: DriveView, snapshot: LibrarySnapshot, policy: PlanPolicy) -> float | None:
    """When the tape idle in this drive is due to go home if nobody asks for it
    (None: it has been idle since before we knew, so it is due now)."""
    if drive.idle_since is None:
        return None
    tape = snapshot.tapes.get(drive.barcode) if drive.barcode is not None else None
    if tape is not None and tape.pool is not None and tape.writable:
        return drive.idle_since + policy.pool_dismount_delay_s
    return drive.idle_since + policy.dismount_delay_s


def next_change(
    snapshot: LibrarySnapshot,
    pending: Sequence[MountRequest] | PendingRequests,
    policy: PlanPolicy,
    now: float,
) -> float:
    """When `plan` of these same inputs could first come out other than at `now`
    (math.inf: never): a tape idle in a drive falls due to go home, a group of
    requests reaches the maximum age, or a pool's queue has waited long enough to
    open another tape. Those are the planner's only uses of the clock; the shell
    need not plan again before then unless its inputs change."""
    due = math.inf
    for drive in snapshot.drives:
        if drive.barcode is not None and _free(drive):
            at = dismount_due(drive, snapshot, policy)
            if at is not None and now < at < due:
                due = at
    queue = pending if isinstance(pending, PendingRequests) else PendingRequests(pending)
    for groups, limits in (
        (queue.by_tape, (policy.max_age_s,)),
        (queue.by_pool, (policy.max_age_s, policy.pool_open_after_s)),
    ):
        for group in groups.values():
            oldest = group.stats().oldest
            for limit in limits:
                at = oldest + limit
                if now < at < due:
                    due = at
    return due


def _check_tape_group(
    state: _Round, barcode: str, requests: list[MountRequest]
) -> list[MountRequest]:
    """Fail what this tape can never serve; return the requests that may wait."""
    tape = state.snapshot.tapes.get(barcode)
    reason: str | None
    if tape is None:
        reason = f"unknown barcode {barcode!r}: not in this library"
    else:
        reason = _read_refusal(tape)
        if reason is None and not state.some_drive_can(tape.media, False):
            reason = f"no drive of this library can read {barcode} ({_media_label(tape)})"
    if reason is not None:
        state.actions.extend(Fail(r.id, reason) for r in requests)
        return []
    assert tape is not None
    writes = [r for r in requests if r.write]
    if not writes:
        return requests
    write_reason = _write_refusal(tape)
    if write_reason is None and not state.some_drive_can(tape.media, True):
        write_reason = f"no drive of this library can write {barcode} ({_media_label(tape)})"
    if write_reason is None:
        return requests
    state.actions.extend(Fail(r.id, write_reason) for r in writes)
    return [r for r in requests if not r.write]


def _media_label(tape: TapeView) -> str:
    return tape.media.label if tape.media is not None else "unknown media"


def _pool_tapes(state: _Round, by_pool: Mapping[str, object]) -> dict[str, list[TapeView]]:
    """Writable tapes of each wanted pool, in fill order: fullest appendable first,
    then scratch (by barcode, for a stable choice)."""
    found: dict[str | None, list[TapeView]] = {pool: [] for pool in by_pool}
    for tape in state.snapshot.tapes.values():
        bucket = found.get(tape.pool)
        if bucket is None or not tape.writable or not state.some_drive_can(tape.media, True):
            continue
        bucket.append(tape)
    for bucket in found.values():
        bucket.sort(key=lambda t: (t.scratch, -t.used_bytes, t.barcode))
    return {pool: bucket for pool, bucket in found.items() if bucket and pool is not None}


def _most_room(candidates: list[TapeView]) -> float:
    """The most free space of any writable tape of the pool (a tape of unknown
    capacity: unlimited)."""
    return max(
        (t.capacity_bytes - t.used_bytes if t.capacity_bytes > 0 else math.inf) for t in candidates
    )


def _room_somewhere(
    state: _Round, pool: str, requests: list[MountRequest], candidates: list[TapeView]
) -> list[MountRequest]:
    """Fail the writes no tape of the pool could take, rather than let them wait
    unseen; keep the rest (the same rules as `_fits`)."""
    if not any(r.size_bytes for r in requests):
        return requests
    most = _most_room(candidates)
    scratch = [t.capacity_bytes for t in candidates if t.scratch and t.capacity_bytes > 0]
    kept: list[MountRequest] = []
    for request in requests:
        size = request.size_bytes
        if size is None or size <= most or any(size > c for c in scratch):
            kept.append(request)
        else:
            state.actions.append(
                Fail(
                    request.id,
                    f"no tape of pool {pool!r} has room for {size:,} bytes "
                    f"(at most {max(0, int(most)):,} free)",
                )
            )
    return kept


def _fits(tape: TapeView, group: _Group) -> list[MountRequest]:
    """The oldest requests of the group that fit in the tape's estimated free space.

    A request of unknown size always fits (the writer meets the end of the tape
    and the archive manager goes on elsewhere), and so does one larger than a whole
    cartridge, first on a scratch tape: no tape could hold it alone."""
    requests = group.requests
    room = tape.capacity_bytes - tape.used_bytes
    if tape.capacity_bytes <= 0 or room >= group.total_bytes:
        return requests  # the common case: all of it fits, no need to look at each
    smallest = group.min_size  # at most the smallest size in `requests`
    kept: list[MountRequest] = []
    for request in requests:
        size = request.size_bytes
        if size is None or size <= room:
            kept.append(request)
            room -= size or 0
        elif size > tape.capacity_bytes and tape.scratch and not kept:
            kept.append(request)
            room = 0
        if kept and smallest > 0 and room < smallest:
            # Every size left is at least `smallest` (no unknown one when it is
            # above 0): nothing more fits, so a long queue is not read to its end.
            break
    return kept


def _attach_pool(state: _Round, groups: _Groups, group: _Group, candidates: list[TapeView]) -> bool:
    """Serve a pool group from a writable pool tape idle in a drive; True if done."""
    for tape in candidates:
        if tape.drive is None or tape.barcode in state.claimed_tapes:
            continue
        drive = state.drives.get(tape.drive)
        if drive is None or drive.index in state.claimed_drives or not _free(drive):
            continue
        if not _compatible(drive.generation, tape.media, True):
            continue
        served = _fits(tape, group)
        if not served:
            continue
        if not state.pool_has_room(group.pool):
            return True  # capped: nothing more for this pool this round
        ids = group.ids_of(served)
        state.actions.extend(Assign(rid, tape.barcode) for rid in ids)
        state.actions.append(Attach(drive.index, tape.barcode, ids))
        state.claimed_drives.add(drive.index)
        state.claimed_tapes.add(tape.barcode)
        state.count_pool(group.pool)
        if len(served) == len(group.requests):
            return True
        # The rest wait for another tape (the queue's own list is never modified).
        requests = group.requests
        if requests[len(served) - 1] is served[-1]:
            # The oldest ones were served (the usual case): the rest is a slice.
            rest = requests[len(served) :]
            group.total_bytes -= _bytes(served)
        else:
            done = set(ids)
            rest = [r for r in requests if r.id not in done]
            group.total_bytes = _bytes(rest)
            group.min_size = min(r.size_bytes or 0 for r in rest)
        assert group.pool is not None
        groups.overrides[(_POOL, group.pool)] = rest
        group.kept = rest
        group.source = None
        return False
    return False


def _load_pool(state: _Round, group: _Group, candidates: list[TapeView], free: _FreeDrives) -> None:
    writing = state.pool_writing.get(group.pool or "", 0)
    if writing:
        queued = group.total_bytes
        waited = state.now - group.requests[0].arrival
        if (
            queued / (1 + writing) < state.policy.pool_open_bytes
            and waited < state.policy.pool_open_after_s
        ):
            return  # the tape in use will take them when it is free
    for tape, served in _placements(state, group, candidates):
        drive = free.take(tape.media, True)
        if drive is None:
            if free.make_room(tape.media, True):
                return
            continue
        ids = group.ids_of(served)
        state.actions.extend(Assign(rid, tape.barcode) for rid in ids)
        _emit_load(state, drive, tape, ids)
        state.count_pool(group.pool)
        return


def _placements(
    state: _Round, group: _Group, candidates: list[TapeView]
) -> Iterator[tuple[TapeView, list[MountRequest]]]:
    """The tapes in a slot that could take (some of) a pool's writes, in the order to
    try them: fill order, except that the cheapest to start writing on goes first
    when it saves more than `write_margin_s` over the first in fill order. Lazily:
    a load usually takes the first."""
    claimed = state.claimed_tapes
    ready = [t for t in candidates if t.slot is not None and t.barcode not in claimed]
    first: tuple[TapeView, list[MountRequest]] | None = None
    for tape in ready:
        served = _fits(tape, group)
        if served:
            first = (tape, served)
            break
    if first is None:
        return
    margin = state.policy.write_margin_s
    if not math.isinf(margin):
        limit = _start_cost(state.policy, first[0]) - margin
        cheaper = sorted(
            (cost, index)
            for index, tape in enumerate(ready)
            if (cost := _start_cost(state.policy, tape)) < limit
        )
        for _, index in cheaper:
            served = _fits(ready[index], group)
            if served:
                yield ready[index], served
                break
    yield first
    seen = first[0].barcode
    for tape in ready[ready.index(first[0]) + 1 :]:
        if tape.barcode != seen and (served := _fits(tape, group)):
            yield tape, served


def _start_cost(policy: PlanPolicy, tape: TapeView) -> float:
    """Seconds from the load point to the end of data (a scratch tape: none)."""
    if tape.used_bytes <= 0:
        return 0.0
    share = min(1.0, tape.used_bytes / tape.capacity_bytes) if tape.capacity_bytes > 0 else 0.5
    return policy.locate_base_s + policy.locate_per_length_s * share


def _emit_load(state: _Round, drive: DriveView, tape: TapeView, ids: tuple[int, ...]) -> None:
    assert tape.slot is not None
    state.actions.append(Load(tape.barcode, tape.slot, drive.index, ids))
    state.claimed_tapes.add(tape.barcode)
    state.claimed_drives.add(drive.index)


def _plan_cleaning(state: _Round, needed: Container[str]) -> None:
    if not any(d.needs_cleaning for d in state.snapshot.drives):
        return  # the common case: no scan of the cartridges
    cartridges = sorted(
        (
            t
            for t in state.snapshot.tapes.values()
            if t.cleaning and t.slot is not None and t.cleaning_uses_left > 0
        ),
        key=lambda t: (t.cleaning_uses_left, t.barcode),
    )
    if not cartridges:
        return
    for drive in state.snapshot.drives:
        if not cartridges:
            return
        if not drive.needs_cleaning or drive.index in state.claimed_drives or not _free(drive):
            continue
        if drive.barcode is not None and drive.barcode in needed:
            # Its tape is about to be wanted; cleaning now would force a remount.
            continue
        if drive.barcode is not None and not state.emit_unload(drive):
            continue
        cartridge = cartridges.pop(0)
        assert cartridge.slot is not None
        state.actions.append(Clean(drive.index, cartridge.barcode, cartridge.slot))
        state.claimed_drives.add(drive.index)
        state.claimed_tapes.add(cartridge.barcode)


class _FreeDrives:
    """Drives a load may use, kept per generation so that a choice costs O(generations).

    A load takes an empty drive; without one, an idle drive whose tape nobody
    waits for, least recently used first, is emptied for a later round.
    """

    def __init__(self, state: _Round, needed: Container[str]) -> None:
        self.state = state
        self.empty: dict[int, list[DriveView]] = {}
        self.loaded: dict[int, list[DriveView]] = {}
        # Without a cleaning cartridge a dirty drive is still better than none.
        can_clean = (
            state.policy.clean_drives
            and any(
                t.cleaning and t.slot is not None and t.cleaning_uses_left > 0
                for t in state.snapshot.tapes.values()
            )
            if any(d.needs_cleaning for d in state.snapshot.drives)
            else False
        )
        for drive in state.snapshot.drives:
            if drive.index in state.claimed_drives or not _free(drive):
                continue
            if drive.needs_cleaning and can_clean:
                continue
            if drive.barcode is None:
                self.empty.setdefault(drive.generation, []).append(drive)
            elif drive.barcode not in needed:
                self.loaded.setdefault(drive.generation, []).append(drive)
        for drives in self.empty.values():
            drives.sort(key=lambda d: d.index, reverse=True)
        for drives in self.loaded.values():
            # pop() takes from the end: the least recently used goes last.
            drives.sort(
                key=lambda d: (
                    d.idle_since if d.idle_since is not None else float("-inf"),
                    d.index,
                ),
                reverse=True,
            )
        self.gens = sorted(set(self.empty) | set(self.loaded))
        self.count = sum(map(len, self.empty.values())) + sum(map(len, self.loaded.values()))

    @property
    def exhausted(self) -> bool:
        return self.count <= 0

    def take(self, media: Media | None, write: bool) -> DriveView | None:
        """An empty compatible drive, the least capable generation that fits first
        (newer drives stay free for newer media). None when there is none: then
        `make_room` may send an idle tape home for the next round."""
        for generation in self.gens:
            drives = self.empty.get(generation)
            if drives and _compatible(generation, media, write):
                self.count -= 1
                return drives.pop()
        return None

    def make_room(self, media: Media | None, write: bool) -> bool:
        """Unload the least recently used idle tape of a compatible drive; the load
        waits for the next round. Binding a group to that drive now would make it
        wait the whole rewind and unload even if another drive empties first (the
        W2 benchmark at 90 % load: p99 310 s with the binding, 257 s without)."""
        for generation in self.gens:
            drives = self.loaded.get(generation)
            if not drives or not _compatible(generation, media, write):
                continue
            while drives:
                drive = drives.pop()
                self.count -= 1
                if self.state.emit_unload(drive):
                    self.state.claimed_drives.add(drive.index)
                    return True
        return False
