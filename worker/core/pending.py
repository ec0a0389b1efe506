"""Pending requests grouped by tape and by pool, kept up to date as they come and go,
so that a planning round works on tapes and drives rather than on every request.

Each group keeps what the planner's queue order needs (the oldest arrival, the
highest priority, the bytes and requests queued, whether any is a write, the
largest declared size) and its requests in arrival order, all maintained on `add`
and `discard`; a removal that takes away an extreme marks the group for one
recount at its next read. Requests are ordered by (arrival, id), so a queue built
from scratch and one kept up to date through any sequence of changes hold the
same groups in the same order, and the planner returns the same actions for both.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from operator import attrgetter

from worker.core.requests import MountRequest

__all__ = ["PendingGroup", "PendingRequests"]


def _order(request: MountRequest) -> tuple[float, int]:
    return (request.arrival, request.id)


_ORDER = attrgetter("arrival", "id")
_PRIORITY = attrgetter("priority")
_WRITE = attrgetter("write")


class PendingGroup:
    """The pending requests of one tape, or of one pool (pool-only requests)."""

    __slots__ = (
        "_by_id",
        "_ordered",
        "_stale",
        "key",
        "max_size",
        "oldest",
        "priority",
        "size_total",
        "writes",
    )

    def __init__(self) -> None:
        self._by_id: dict[int, MountRequest] = {}
        #: The requests in (arrival, id) order; None until asked for after a change
        #: that could not keep it in order cheaply.
        self._ordered: list[MountRequest] | None = []
        self._stale = False
        #: The planner's queue key for this group, kept until the group changes
        #: (so a round does not build one per group).
        self.key: object = None
        self.oldest = float("inf")
        self.priority = 0
        self.size_total = 0
        self.writes = 0
        self.max_size = 0

    def __len__(self) -> int:
        return len(self._by_id)

    @classmethod
    def of_ordered(cls, requests: list[MountRequest]) -> PendingGroup:
        """A group of requests already in (arrival, id) order, ids distinct: its
        figures in a few passes at C speed rather than one `add` each."""
        group = cls()
        group._by_id = {r.id: r for r in requests}
        group._ordered = requests
        sizes = [r.size_bytes or 0 for r in requests]
        group.oldest = requests[0].arrival
        group.priority = max(map(_PRIORITY, requests))
        group.size_total = sum(sizes)
        group.max_size = max(sizes)
        group.writes = sum(map(_WRITE, requests))
        return group

    @property
    def work(self) -> int:
        """The bytes queued plus one per request: the tie-break of a batch."""
        if self._stale:
            self._recount()
        return self.size_total + len(self._by_id)

    def stats(self) -> PendingGroup:
        """Self, with `oldest`, `priority` and `max_size` recounted if a removal took
        one of them away: read those only through this."""
        if self._stale:
            self._recount()
        return self

    def add(self, request: MountRequest) -> None:
        self.key = None
        self._by_id[request.id] = request
        size = request.size_bytes or 0
        self.size_total += size
        self.writes += request.write
        if not self._stale:
            self.oldest = min(self.oldest, request.arrival)
            self.priority = max(self.priority, request.priority)
            self.max_size = max(self.max_size, size)
        ordered = self._ordered
        if ordered is not None and ordered and _order(request) < _order(ordered[-1]):
            self._ordered = None  # out of order: sort once when next asked
        elif ordered is not None:
            ordered.append(request)

    def discard(self, request: MountRequest) -> None:
        self.key = None
        del self._by_id[request.id]
        size = request.size_bytes or 0
        self.size_total -= size
        self.writes -= request.write
        if (
            request.arrival <= self.oldest
            or request.priority >= self.priority
            or size >= self.max_size
        ):
            self._stale = True
        # Sorted again when next asked: a served group usually leaves whole.
        self._ordered = None

    def _recount(self) -> None:
        requests = self._by_id.values()
        self.oldest = min((r.arrival for r in requests), default=float("inf"))
        self.priority = max((r.priority for r in requests), default=0)
        self.max_size = max((r.size_bytes or 0 for r in requests), default=0)
        self._stale = False

    def ordered(self) -> list[MountRequest]:
        """The requests oldest first (by arrival, then id). Do not modify."""
        if self._ordered is None:
            self._ordered = sorted(self._by_id.values(), key=_order)
        return self._ordered


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
