"""The pending requests, grouped as they come and go."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_handed_out_ids_are_shared_until_the_group_changes_and_never_go_stale() -> None:
    queue = PendingRequests([read(rid, "A00001L9", float(rid)) for rid in range(1, 6)])
    group = queue.by_tape["A00001L9"]
    first = group.ids()
    assert first == (1, 2, 3, 4, 5)
    assert group.ids() is first, "an unchanged group hands out the same tuple"
    queue.add(read(6, "A00001L9", 6.0))  # the youngest: appended
    assert first == (1, 2, 3, 4, 5)
    second = group.ids()
    assert second == (1, 2, 3, 4, 5, 6)
    queue.discard(6)  # the youngest leaves again
    queue.discard(1)  # and the oldest
    assert second == (1, 2, 3, 4, 5, 6)
    assert group.ids() == (2, 3, 4, 5)
    queue.add(read(7, "A00001L9", 0.5))  # older than all: out of order
    third = group.ids()
    assert third == (7, 2, 3, 4, 5)
    queue.discard(3)
    assert (first, second, third) == ((1, 2, 3, 4, 5), (1, 2, 3, 4, 5, 6), (7, 2, 3, 4, 5))
    assert group.ids() == (7, 2, 4, 5)
    assert [r.id for r in group.ordered()] == [7, 2, 4, 5]


_BARCODE = "A00001L9"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(0, 30),
            st.integers(0, 6),
            st.integers(0, 2),
            st.sampled_from([None, 0, 1, 2, 5]),
        ),
        max_size=60,
    )
)
def test_a_group_kept_through_adds_and_removals_matches_one_built_from_scratch(
    ops: list[tuple[bool, int, int, int, int | None]],
) -> None:
    queue = PendingRequests()
    live: dict[int, MountRequest] = {}
    handed: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for adding, rid, at, priority, size in ops:
        if adding:
            request = read(rid, _BARCODE, float(at), priority=priority, size_bytes=size)
            queue.add(request)
            live[rid] = request
        else:
            assert (queue.discard(rid) is not None) == (live.pop(rid, None) is not None)
        group = queue.by_tape.get(_BARCODE)
        if not live:
            assert group is None
            continue
        assert group is not None
        expected = sorted(live.values(), key=lambda r: (r.arrival, r.id))
        sizes = [r.size_bytes or 0 for r in expected]
        stats = group.stats()
        assert (stats.oldest, stats.priority, stats.max_size, stats.min_size) == (
            expected[0].arrival,
            max(r.priority for r in expected),
            max(sizes),
            min(sizes),
        )
        assert group.work == sum(sizes) + len(expected)
        assert group.ordered() == expected
        ids = group.ids()
        assert ids == tuple(r.id for r in expected)
        handed.append((ids, tuple(ids)))
    # Whatever came after, a tuple once handed out still lists what it listed then.
    assert all(ids == copy for ids, copy in handed)
