"""Pending requests grouped by tape and by pool, kept up to date as they come and go,
so that a planning round works on tapes and drives rather than on every request.

Each group keeps what the planner's queue order needs (the oldest arrival, the
highest priority, the bytes and requests queued, whether any is a write, the
largest and smallest declared size) and its requests in arrival order, all
maintained on `add` and `discard`; a removal that takes away the last request
holding an extreme marks the group for one recount at its next read. A group also
hands out its ids as one immutable tuple, built once after each change and shared
by every action that serves the whole group, so a round does not copy the ids of
a group that has not changed. Requests are ordered by (arrival, id), so a queue built
from scratch and one kept up to date through any sequence of changes hold the
same groups in the same order, and the planner returns the same actions for both.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Iterator
from operator import attrgetter

from worker.core.requests import MountRequest

__all__ = ["PendingGroup", "PendingRequests"]


def _order(request: MountRequest) -> tuple[float, int]:
    return (request.arrival, request.id)


_ORDER = attrgetter("arrival", "id")
#: How far from the youngest end a removal is done in place in a group's list.
_TAIL = 64
_ARRIVAL = attrgetter("arrival")
_PRIORITY = attrgetter("priority")
_WRITE = attrgetter("write")


class PendingGroup:
    """The pending requests of one tape, or of one pool (pool-only requests)."""

    __slots__ = (
        "_by_id",
        "_ids",
        "_in_order",
        "_n_max",
        "_n_min",
        "_n_oldest",
        "_n_priority",
        "_ordered",
        "_stale",
        "key",
        "max_size",
        "min_size",
        "oldest",
        "priority",
        "size_total",
        "writes",
    )

    def __init__(self) -> None:
        #: The requests by id; inserted in (arrival, id) order while `_in_order`.
        self._by_id: dict[int, MountRequest] = {}
        self._in_order = True
        #: The requests in (arrival, id) order; None until asked for after a change
        #: that could not keep it in order cheaply; only ever set while `_in_order`.
        self._ordered: list[MountRequest] | None = []
        #: The ids in that order, an immutable snapshot handed to actions as is;
        #: None until asked for after a change.
        self._ids: tuple[int, ...] | None = ()
        self._stale = False
        #: The planner's queue key for this group, kept until the group changes
        #: (so a round does not build one per group).
        self.key: object = None
        self.oldest = float("inf")
        self.priority = 0
        self.size_total = 0
        self.writes = 0
        self.max_size = 0
        self.min_size = 0
        # How many requests hold each extreme: a removal marks the group for a
        # recount only when it takes away the last of them.
        self._n_oldest = 0
        self._n_priority = 0
        self._n_max = 0
        self._n_min = 0

    def __len__(self) -> int:
        return len(self._by_id)

    @classmethod
    def of_ordered(cls, requests: list[MountRequest]) -> PendingGroup:
        """A group of requests already in (arrival, id) order, ids distinct: its
        figures in a few passes at C speed rather than one `add` each."""
        group = cls()
        group._by_id = {r.id: r for r in requests}
        group._ordered = requests
        group._ids = None
        group.writes = sum(map(_WRITE, requests))
        group._recount()
        return group

    @property
    def work(self) -> int:
        """The bytes queued plus one per request: the tie-break of a batch."""
        if self._stale:
            self._recount()
        return self.size_total + len(self._by_id)

    def stats(self) -> PendingGroup:
        """Self, with `oldest`, `priority`, `max_size` and `min_size` recounted if a
        removal took one of them away: read those only through this."""
        if self._stale:
            self._recount()
        return self

    def add(self, request: MountRequest) -> None:
        self.key = None
        self._ids = None
        by_id = self._by_id
        if self._in_order and by_id and _order(request) < _order(next(reversed(by_id.values()))):
            self._in_order = False
            self._ordered = None  # out of order: sort once when next asked
        by_id[request.id] = request
        if self._ordered is not None:
            self._ordered.append(request)
        size = request.size_bytes or 0
        self.size_total += size
        self.writes += request.write
        if self._stale:
            return  # the recount will see it
        first = len(by_id) == 1
        if first or request.arrival < self.oldest:
            self.oldest, self._n_oldest = request.arrival, 1
        elif request.arrival == self.oldest:
            self._n_oldest += 1
        if first or request.priority > self.priority:
            self.priority, self._n_priority = request.priority, 1
        elif request.priority == self.priority:
            self._n_priority += 1
        if first or size > self.max_size:
            self.max_size, self._n_max = size, 1
        elif size == self.max_size:
            self._n_max += 1
        if first or size < self.min_size:
            self.min_size, self._n_min = size, 1
        elif size == self.min_size:
            self._n_min += 1

    def discard(self, request: MountRequest) -> None:
        self.key = None
        self._ids = None
        del self._by_id[request.id]
        size = request.size_bytes or 0
        self.size_total -= size
        self.writes -= request.write
        ordered = self._ordered
        if ordered is not None:
            # One of the youngest (a recent arrival cancelled or held back): taken
            # out in place, a short move. Elsewhere the list is dropped, to be
            # copied once when next asked (a served group leaves whole, and one
            # removal at a time from the front would move the list each time).
            at = bisect_left(ordered, _order(request), lo=max(0, len(ordered) - _TAIL), key=_order)
            if at < len(ordered) and ordered[at] is request:
                del ordered[at]
            else:
                self._ordered = None
        if self._stale:
            return
        if request.arrival == self.oldest:
            self._n_oldest -= 1
            self._stale |= not self._n_oldest
        if request.priority == self.priority:
            self._n_priority -= 1
            self._stale |= not self._n_priority
        if size == self.max_size:
            self._n_max -= 1
            self._stale |= not self._n_max
        if size == self.min_size:
            self._n_min -= 1
            self._stale |= not self._n_min

    def _recount(self) -> None:
        requests = self._by_id.values()
        self._stale = False
        if not requests:
            self.oldest, self.priority, self.max_size, self.min_size = float("inf"), 0, 0, 0
            self._n_oldest = self._n_priority = self._n_max = self._n_min = 0
            return
        arrivals = list(map(_ARRIVAL, requests))
        self.oldest = min(arrivals)
        self._n_oldest = arrivals.count(self.oldest)
        priorities = list(map(_PRIORITY, requests))
        self.priority = max(priorities)
        self._n_priority = priorities.count(self.priority)
        sizes = _sizes(requests)
        self.size_total = sum(sizes)
        self.max_size = max(sizes)
        self._n_max = sizes.count(self.max_size)
        self.min_size = min(sizes)
        self._n_min = sizes.count(self.min_size)

    def ordered(self) -> list[MountRequest]:
        """The requests oldest first (by arrival, then id). Do not modify."""
        if self._ordered is None:
            if self._in_order:
                self._ordered = list(self._by_id.values())
            else:
                self._ordered = sorted(self._by_id.values(), key=_order)
                # Kept in order from now on, so a removal needs no sort again.
                self._by_id = {r.id: r for r in self._ordered}
                self._in_order = True
        return self._ordered

    def ids(self) -> tuple[int, ...]:
        """The ids of `ordered()`, as one immutable tuple kept until the group
        changes: an action serving the whole group shares it instead of copying,
        and a later change builds a new one rather than touching this one."""
        if self._ids is None:
            if not self._in_order:
                self.ordered()  # puts `_by_id` in order too
            # The keys in insertion order: no request is read for its id.
            self._ids = tuple(self._by_id)
        return self._ids


def _sizes(requests: Iterable[MountRequest]) -> list[int]:
    """Declared sizes, an unknown size counting nothing."""
    return [r.size_bytes or 0 for r in requests]


class PendingRequests:
    """Every pending request, grouped: by tape for requests naming one, by pool for
    pool-only ones; requests naming neither are kept apart for the planner to fail."""

    def __init__(self, requests: Iterable[MountRequest] = ()) -> None:
        self._requests: dict[int, MountRequest] = {}
        self.by_tape: dict[str, PendingGroup] = {}
        self.by_pool: dict[str, PendingGroup] = {}
        self.unaddressed: dict[int, MountRequest] = {}
        #: How many pending requests carry a priority (the key skips it when none do).
        self.prioritised = 0
        ordered = sorted(requests, key=_ORDER)
        by_id = {r.id: r for r in ordered}
        if len(by_id) != len(ordered):
            for request in ordered:  # the same id twice: the later one replaces
                self.add(request)
            return
        # The common case, a round from a plain list: group in one pass, then each
        # group's figures at once.
        self._requests = by_id
        self.prioritised = sum(1 for r in ordered if r.priority)
        grouped: defaultdict[str | None, list[MountRequest]] = defaultdict(list)
        for request in ordered:
            grouped[request.barcode].append(request)
        for request in grouped.pop(None, ()):
            if request.pool is None:
                self.unaddressed[request.id] = request
            else:
                pool = self.by_pool.get(request.pool)
                if pool is None:
                    pool = self.by_pool[request.pool] = PendingGroup()
                pool.add(request)
        self.by_tape = {b: PendingGroup.of_ordered(g) for b, g in grouped.items() if b is not None}

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._requests

    def __iter__(self) -> Iterator[MountRequest]:
        return iter(self._requests.values())

    def get(self, request_id: int) -> MountRequest | None:
        return self._requests.get(request_id)

    def add(self, request: MountRequest) -> None:
        """Add a request, or replace the one with the same id."""
        if request.id in self._requests:
            self.discard(request.id)
        self._requests[request.id] = request
        if request.priority:
            self.prioritised += 1
        if request.barcode is not None:
            group = self.by_tape.get(request.barcode)
            if group is None:
                group = self.by_tape[request.barcode] = PendingGroup()
            group.add(request)
        elif request.pool is not None:
            group = self.by_pool.get(request.pool)
            if group is None:
                group = self.by_pool[request.pool] = PendingGroup()
            group.add(request)
        else:
            self.unaddressed[request.id] = request

    def discard(self, request_id: int) -> MountRequest | None:
        """Remove a request (served, failed, released); None if it was not pending."""
        request = self._requests.pop(request_id, None)
        if request is None:
            return None
        if request.priority:
            self.prioritised -= 1
        if request.barcode is not None:
            self._discard_from(self.by_tape, request.barcode, request)
        elif request.pool is not None:
            self._discard_from(self.by_pool, request.pool, request)
        else:
            del self.unaddressed[request.id]
        return request

    @staticmethod
    def _discard_from(groups: dict[str, PendingGroup], name: str, request: MountRequest) -> None:
        group = groups[name]
        group.discard(request)
        if not len(group):
            del groups[name]
