"""The pure ownership rules of pool destinations: ranking, takeover, first claim wins."""

from __future__ import annotations

import pytest

from worker.fleet.ownership import (
    Member,
    Ownership,
    Watch,
    members_subscription,
    members_topic,
    parse_member,
    rank,
)
from worker.fleet.routing import Claim


def claim(library: str, destination_id: int) -> Claim:
    return Claim(
        library_id=library,
        destination_id=destination_id,
        status="taken",
        topic=f"tw/pools/p/tasks/9/task_destinations/{destination_id}/create",
        payload="{}",
        event_id=f"e{destination_id}",
        sequence=None,
        hand_offs=0,
    )


def ready_book(library: str, *others: str, pool: str = "p") -> Ownership:
    """A library that saw its own announcement come back, with the others alive."""
    book = Ownership(library)
    book.connecting("s1")
    for other in others:
        book.on_member(Member(other, True, frozenset({pool}), "x"))
    book.on_member(Member(library, True, frozenset({pool}), "s1"))
    assert book.ready
    return book


def test_rank_is_the_same_whatever_the_order_and_stable_when_a_member_goes() -> None:
    libraries = ["a", "b", "c", "d"]
    owners = {key: rank(key, libraries)[0] for key in (f"e{i}" for i in range(400))}
    assert owners == {key: rank(key, reversed(libraries))[0] for key in owners}
    # Spread over all members, roughly evenly.
    counts = {lib: list(owners.values()).count(lib) for lib in libraries}
    assert all(60 < n < 140 for n in counts.values()), counts
    # Without c, only c's keys change owner, each to its next in rank.
    without_c = {key: rank(key, ["a", "b", "d"])[0] for key in owners}
    for key, owner in owners.items():
        if owner == "c":
            assert without_c[key] == rank(key, libraries)[1]
        else:
            assert without_c[key] == owner
    assert rank("e1", []) == []


def test_two_libraries_agree_on_the_owner_and_the_other_takes_over_at_the_will() -> None:
    a = ready_book("a", "b")
    b = ready_book("b", "a")
    watches = [Watch(f"e{i}", "p", i) for i in range(40)]
    mine_a = {w.event_id for w in watches if a.watch(w)}
    mine_b = {w.event_id for w in watches if b.watch(w)}
    # Each destination has exactly one owner, and both have some.
    assert mine_a.isdisjoint(mine_b)
    assert mine_a | mine_b == {w.event_id for w in watches}
    assert mine_a
    assert mine_b
    # a claims its own; b's die with b: its will hands them all to a.
    for watch in watches:
        if watch.event_id in mine_a:
            assert a.on_claim(watch.destination_id, claim("a", watch.destination_id)).outcome == (
                "won"
            )
            a.settled(watch.destination_id)
    again, ours = a.on_member(Member("b", alive=False))
    assert not again
    assert {w.event_id for w in ours} == mine_b


def test_nothing_is_ours_before_our_own_announcement_comes_back() -> None:
    book = Ownership("a")
    book.connecting("s2")
    # An announcement of an earlier connection does not count.
    book.on_member(Member("a", True, frozenset({"p"}), "s1"))
    assert not book.ready
    assert book.watch(Watch("e1", "p", 1)) is False
    _, ours = book.on_member(Member("a", True, frozenset({"p"}), "s2"))
    assert book.ready
    assert [w.event_id for w in ours] == ["e1"]


def test_a_will_landing_after_our_announcement_asks_for_it_again() -> None:
    book = ready_book("a")
    again, ours = book.on_member(Member("a", alive=False))
    assert again
    assert ours == []
    assert not book.ready
    book.leaving()
    again, _ = book.on_member(Member("a", alive=False))
    assert not again  # a library that withdrew stays withdrawn


def test_the_first_claim_wins_for_everyone_and_the_winner_reasserts_it() -> None:
    a = ready_book("a", "b")
    b = ready_book("b", "a")
    for book in (a, b):
        book.watch(Watch("e7", "p", 7))
    # Both claimed during a membership change; the broker delivered a's first.
    assert a.on_claim(7, claim("a", 7)).outcome == "won"
    assert b.on_claim(7, claim("a", 7)).outcome == "settled"
    assert b.on_claim(7, claim("b", 7)).outcome == "lost"
    seen = a.on_claim(7, claim("b", 7))
    assert seen.outcome == "reassert"
    assert seen.winner is not None
    assert seen.winner.library_id == "a"
    # Once: two libraries that each believe they came first do not answer forever.
    assert a.on_claim(7, claim("b", 7)).outcome == "settled"
    # A claimed destination is nobody's to claim again.
    assert [w.event_id for w in b.settled(7)] == ["e7"]
    assert not b.watch(Watch("e7-again", "p", 7))
    # Emptied (destroyed), the topic takes a new first claim.
    b.on_claim(7, None)
    assert b.on_claim(7, claim("b", 7)).outcome == "won"


def test_only_live_members_of_the_pool_own() -> None:
    book = ready_book("a", "b")
    book.on_member(Member("c", True, frozenset({"other"}), "x"))
    assert book.live("p") == ["a", "b"]
    book.on_member(Member("b", alive=False))
    assert book.live("p") == ["a"]
    assert book.owner(Watch("e1", "p", 1)) == "a"
    assert book.owner(Watch("e1", "nobody's", 1)) is None


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"nonsense",
        b"[]",
        b'{"alive": true}',
        b'{"library_id": 3}',
        b'{"library_id": "a", "pools": "p"}',
        b'{"library_id": "a", "session": 5}',
    ],
)
def test_a_malformed_announcement_is_none(payload: bytes) -> None:
    assert parse_member(payload) is None


def test_an_announcement_round_trips_and_has_its_topic() -> None:
    member = Member("a", True, frozenset({"p", "q"}), "s1")
    assert parse_member(member.to_json()) == member
    assert parse_member(Member("a", alive=False).to_json()) == Member("a", alive=False)
    assert members_topic("tw", "a") == "tw/pool-members/a"
    assert members_subscription("tw") == "tw/pool-members/+"


def test_ours_needs_readiness_no_claim_and_the_first_rank() -> None:
    book = ready_book("a", "b")
    [mine, theirs] = [
        next(w for w in (Watch(f"e{i}", "p", i) for i in range(50)) if book.owner(w) == owner)
        for owner in ("a", "b")
    ]
    assert book.is_ours(mine)
    assert not book.is_ours(theirs)
    book.on_claim(mine.destination_id, claim("b", mine.destination_id))
    assert not book.is_ours(mine)
    book.connecting("s2")
    assert not book.is_ours(theirs)
