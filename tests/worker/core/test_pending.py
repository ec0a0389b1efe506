"""The pending requests, grouped as they come and go."""

from __future__ import annotations

from worker.core.pending import PendingRequests
from worker.core.requests import MountRequest


def read(rid: int, barcode: str, at: float, **kw: object) -> MountRequest:
    return MountRequest(id=rid, barcode=barcode, pool=None, arrival=at, write=False, **kw)  # type: ignore[arg-type]


def test_requests_are_grouped_by_tape_and_by_pool_and_kept_apart_when_they_name_neither() -> None:
    queue = PendingRequests(
        [
            read(1, "A00001L9", 5.0),
            read(2, "A00001L9", 3.0),
            MountRequest(3, None, "p", 4.0, size_bytes=10),
            MountRequest(4, None, None, 1.0),
        ]
    )
    assert len(queue) == 4
    assert [r.id for r in queue.by_tape["A00001L9"].ordered()] == [2, 1]
    assert [r.id for r in queue.by_pool["p"].ordered()] == [3]
    assert list(queue.unaddressed) == [4]
    assert queue.by_pool["p"].size_total == 10


def test_the_oldest_and_highest_priority_are_recounted_when_they_leave() -> None:
    queue = PendingRequests(
        [read(1, "A00001L9", 1.0, priority=5), read(2, "A00001L9", 2.0), read(3, "A00001L9", 3.0)]
    )
    group = queue.by_tape["A00001L9"]
    assert (group.stats().oldest, group.stats().priority) == (1.0, 5)
    assert queue.discard(1) is not None
    assert (group.stats().oldest, group.stats().priority) == (2.0, 0)
    assert [r.id for r in group.ordered()] == [2, 3]


def test_a_group_leaves_with_its_last_request_and_unknown_ids_change_nothing() -> None:
    queue = PendingRequests([read(1, "A00001L9", 1.0)])
    assert queue.discard(99) is None
    assert queue.discard(1) is not None
    assert not queue.by_tape
    assert len(queue) == 0


def test_adding_an_id_again_replaces_the_request() -> None:
    # A pool request once assigned names its tape: it moves from the pool's group.
    queue = PendingRequests([MountRequest(1, None, "p", 1.0)])
    queue.add(MountRequest(1, "P00001L9", "p", 1.0))
    assert not queue.by_pool
    assert [r.id for r in queue.by_tape["P00001L9"].ordered()] == [1]
    assert len(queue) == 1


def test_arrivals_out_of_order_are_still_served_oldest_first() -> None:
    queue = PendingRequests()
    for rid, at in ((1, 5.0), (2, 1.0), (3, 5.0), (4, 3.0)):
        queue.add(read(rid, "A00001L9", at))
    assert [r.id for r in queue.by_tape["A00001L9"].ordered()] == [2, 4, 1, 3]
    queue.add(read(5, "A00001L9", 9.0))
    assert [r.id for r in queue.by_tape["A00001L9"].ordered()] == [2, 4, 1, 3, 5]
