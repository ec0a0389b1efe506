"""Routing in a fleet: the pure rules, then what the journal makes of a routed event."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.worker.harness import CATALOG
from tests.worker.records import drive_record, tape_record
from worker.errors import RejectedEventError
from worker.fleet import routing
from worker.fleet.routing import Claim, HandOff, Route, decide, why_not_here
from worker.intake.destinations import DestinationEvent, Outcome, Verb, record_events
from worker.seed.models import TaskDestinationBody
from worker.seed.tape_ids import TAPE_IDS_PER_LIBRARY, tape_id_block
from worker.state.journal import DriveRecord, Journal, TapeRecord


def tape(barcode: str, pool: str = "p", **flags: object) -> TapeRecord:
    return tape_record(barcode, pool=pool, media=None, **flags)


def drive(generation: int = 9, *, up: bool = True) -> DriveRecord:
    return drive_record(0, generation=generation, up=up)


def test_a_library_with_a_writable_tape_and_a_drive_for_it_can_serve() -> None:
    assert why_not_here("p", None, [tape("AAA001L9")], [drive()], draining=False) is None


@pytest.mark.parametrize(
    ("tapes", "drives", "draining", "reason"),
    [
        ([tape("AAA001L9")], [drive()], True, "draining"),
        ([tape("AAA001L9", pool="q")], [drive()], False, "no tape of pool 'p'"),
        ([tape("AAA001L9")], [drive(up=False)], False, "every drive is down"),
        ([tape("AAA001L9", full=True)], [drive()], False, "no writable tape"),
        ([tape("AAA001L9", locked=True)], [drive()], False, "no writable tape"),
        ([tape("AAA001L9", used_bytes=18 * 10**12)], [drive()], False, "with room for 1 bytes"),
        # An LTO-9 drive cannot write LTO-7: the only drive that is up is not for it.
        ([tape("AAA001L7")], [drive(9), drive(7, up=False)], False, "every drive that can"),
    ],
)
def test_why_a_library_cannot_serve_a_pool(
    tapes: list[TapeRecord], drives: list[DriveRecord], draining: bool, reason: str
) -> None:
    found = why_not_here("p", None, tapes, drives, draining=draining)
    assert found is not None
    assert reason in found


def test_a_declared_size_needs_a_tape_with_that_much_room() -> None:
    nearly_full = [tape("AAA001L9", used_bytes=17 * 10**12)]
    assert why_not_here("p", 10**12, nearly_full, [drive()], draining=False) is None
    found = why_not_here("p", 2 * 10**12, nearly_full, [drive()], draining=False)
    assert found is not None
    assert "room for 2000000000000 bytes" in found


def test_a_library_that_can_serve_takes_it_unless_another_claimed_it() -> None:
    def deciding(claimed_by: str | None) -> routing.Decision:
        return decide(
            "a",
            "p",
            why_not=None,
            hand_off=HandOff(),
            max_hand_offs=3,
            claimed_by=claimed_by,
            members=["a", "b"],
        )

    assert deciding(None).kind == "take"
    assert deciding("a").kind == "take"
    theirs = deciding("b")
    assert (theirs.kind, theirs.reason) == ("not_ours", "not ours: library b took it")


def test_a_destination_goes_to_each_member_once_then_fails_with_every_reason() -> None:
    hand_off = HandOff()
    library = "a"
    hops = []
    for _ in range(4):
        decision = decide(
            library,
            "p",
            why_not=f"{library} is full",
            hand_off=hand_off,
            max_hand_offs=5,
            claimed_by=None,
            members=["c", "b", "a"],
        )
        hops.append((library, decision.kind))
        if decision.kind != "hand_on":
            break
        assert decision.hand_off is not None
        assert decision.to is not None
        hand_off, library = decision.hand_off, decision.to
    # Declined libraries are skipped; the last member fails it.
    assert hops == [("a", "hand_on"), ("b", "hand_on"), ("c", "fail")]
    assert decision.reason == (
        "no library of pool 'p' can serve it after 2 hand-offs: "
        "a: a is full; b: b is full; c: c is full"
    )


def test_hand_offs_stop_at_the_bound_even_with_members_left() -> None:
    decision = decide(
        "a",
        "p",
        why_not="full",
        hand_off=HandOff(1, (("b", "full"),)),
        max_hand_offs=1,
        claimed_by=None,
        members=["a", "b", "c"],
    )
    assert decision.kind == "fail"
    assert decision.reason is not None
    assert decision.reason.startswith("no library of pool 'p' can serve it after 1 hand-offs")


def test_alone_in_its_pool_a_library_fails_what_it_cannot_serve() -> None:
    decision = decide(
        "a", "p", why_not="full", hand_off=HandOff(), max_hand_offs=3, claimed_by=None, members=[]
    )
    assert decision.kind == "fail"


def test_a_hand_off_to_a_library_that_went_goes_to_one_that_has_not_declined() -> None:
    passed = HandOff(1, (("a", "full"),))
    assert routing.next_hand_off(passed, ["a", "c", "d"], gone="b") == "c"
    assert routing.next_hand_off(passed, ["a", "b", "d"], gone="b") == "d"
    # Nobody else: it waits for b, which holds it in its session.
    assert routing.next_hand_off(passed, ["a"], gone="b") is None
    assert routing.next_hand_off(HandOff(2, (("a", "x"), ("c", "y"))), ["a", "c"], gone="b") is None


def test_hand_off_properties_round_trip_and_bad_ones_are_refused() -> None:
    hand_off = HandOff(2, (("a", "full"), ("b", "draining")))
    properties = dict(routing.hand_off_properties(hand_off))
    assert routing.parse_hand_off(properties["hand-offs"], properties["declined"]) == hand_off
    assert routing.parse_hand_off(None, None) == HandOff()
    for count, declined in (("-1", None), ("x", None), ("1", "[1]"), ("1", "not json")):
        with pytest.raises(RejectedEventError):
            routing.parse_hand_off(count, declined)


def test_the_fleet_view_tells_the_members_of_each_pool() -> None:
    alive = {"library_id": "a", "alive": True, "pools": {"p": {}, "q": {}}}
    assert routing.pool_members(alive) == ("a", {"p", "q"})
    assert routing.pool_members({"library_id": "a", "alive": False}) == ("a", set())
    assert routing.pool_members({"probe": 1}) is None


def test_each_hop_of_a_hand_off_is_its_own_message() -> None:
    assert routing.dedup_key("e1", HandOff()) == "mqtt:e1"
    assert routing.dedup_key("e1", HandOff(2)) == "mqtt:e1#2"


def test_pool_topics() -> None:
    assert routing.pool_subscription("tw", "offline-tapes", "g") == (
        "$share/g/tw/pools/offline-tapes/tasks/#"
    )
    assert routing.split_pool_topic("tw", "tw/pools/p/tasks/9/task_destinations/4/create") == (
        "p",
        "tw/tasks/9/task_destinations/4/create",
    )
    handed = "tw/pools/p/libraries/b/tasks/9/task_destinations/4/create"
    assert routing.split_pool_topic("tw", handed) == ("p", "tw/tasks/9/task_destinations/4/create")
    for bad in (
        "tw/tasks/9/task_destinations/4/create",
        "tw/pools/../tasks/x",
        "tw/pools/p/",
        "tw/pools/p/libraries/+/tasks/x",
        "tw/pools/p/libraries/b",
    ):
        with pytest.raises(RejectedEventError):
            routing.split_pool_topic("tw", bad)


def test_only_tape_pools_with_tapes_here_are_taken() -> None:
    # nas-copies holds no tapes and is not tape; online-tapes and offline-tapes are.
    assert routing.pools_held(CATALOG) == ("offline-tapes", "online-tapes")


def test_a_claim_round_trips_and_a_foreign_payload_is_no_claim() -> None:
    claim = Claim(
        "a", 4, "taken", "tw/pools/p/tasks/9/task_destinations/4/create", "{}", "e", "7", 1
    )
    assert routing.parse_claim(claim.to_json()) == claim
    assert routing.parse_claim(b"{}") is None
    assert routing.parse_claim(b"\xff") is None


# -- what the journal makes of routed events ------------------------------------------


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    await journal.sync_catalog(CATALOG, now=1000.0)
    yield journal
    await journal.close()


COMMON = Route("lib-a", "common", prefix="tw")


def event(
    verb: Verb, destination_id: int = 1, route: Route | None = COMMON, **body: object
) -> DestinationEvent:
    parsed = TaskDestinationBody.model_validate(body) if verb in ("create", "update") else None
    return DestinationEvent(verb, "7", destination_id, parsed, "mqtt", route=route)


async def apply(journal: Journal, *events: DestinationEvent) -> list[Outcome]:
    return await record_events(journal, list(events), now=2000.0, hold_seconds=60)


async def test_a_tape_held_here_is_applied(journal: Journal) -> None:
    [outcome] = await apply(journal, event("create", tape_barcode="NOD400L9"))
    assert outcome.status == "applied"
    [request] = await journal.requests()
    assert request.barcode == "NOD400L9"


async def test_a_tape_held_elsewhere_is_not_ours_not_a_rejection(journal: Journal) -> None:
    [outcome] = await apply(journal, event("create", tape_barcode="ZZZ900L9"))
    assert (outcome.status, outcome.reason) == (
        "ignored",
        "not ours: tape ZZZ900L9 is not in library lib-a",
    )
    assert await journal.requests() == []
    record = await journal.destination(1)
    assert record is not None
    assert (record.status, record.reason) == ("ignored", outcome.reason)
    # Alone (no fleet), the same tape is a failure to report.
    [alone] = await apply(journal, event("create", 2, route=None, tape_barcode="ZZZ900L9"))
    assert alone.status == "applied"
    assert "not in this library" in (alone.reason or "")


async def test_a_tape_id_is_routed_like_a_barcode(journal: Journal) -> None:
    tape = await journal.tape("NOD400L9")
    assert tape is not None
    # CATALOG is library 1: its tape ids are 1 to 1,000,000.
    [ours] = await apply(journal, event("create", tape_id=tape.tape_id))
    assert ours.status == "applied"
    [request] = await journal.requests()
    assert request.barcode == "NOD400L9"
    # Library 2's block is another library's: not ours, no request, no failure.
    foreign = TAPE_IDS_PER_LIBRARY + 5
    [theirs] = await apply(journal, event("create", 2, tape_id=foreign))
    assert (theirs.status, theirs.reason) == (
        "ignored",
        f"not ours: tape_id {foreign} is not in library lib-a",
    )
    assert len(await journal.requests()) == 1
    # An id of our own block that we do not know is ours to fail.
    [unknown] = await apply(journal, event("create", 3, tape_id=999_999))
    assert (unknown.status, unknown.reason) == ("applied", "unknown tape_id 999999")
    [failed] = [r for r in await journal.requests() if r.destination_id == 3]
    assert failed.state.value == "failed"


async def test_tape_ids_lie_in_the_block_of_the_library_number(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        await journal.sync_catalog(CATALOG, now=1000.0)
        first = {t.barcode: t.tape_id for t in await journal.tapes()}
        assert all(tape_id in tape_id_block(1) for tape_id in first.values())
        # Renumbered as library 3: every tape moves into block 3, in the same order.
        await journal.sync_catalog(CATALOG.model_copy(update={"tape_library_id": 3}), now=1001.0)
        third = {t.barcode: t.tape_id for t in await journal.tapes()}
        assert all(tape_id in tape_id_block(3) for tape_id in third.values())
        assert sorted(third, key=third.__getitem__) == sorted(first, key=first.__getitem__)
        assert await journal.tape_library_id() == 3
        [by_id] = [t for t in await journal.tapes() if t.tape_id == min(third.values())]
        assert await journal.tape_by_id(by_id.tape_id) == by_id
        # Synced again, nothing moves.
        await journal.sync_catalog(CATALOG.model_copy(update={"tape_library_id": 3}), now=1002.0)
        assert {t.barcode: t.tape_id for t in await journal.tapes()} == third
    finally:
        await journal.close()


async def test_an_update_moving_a_destination_to_a_tape_held_here_makes_it_ours(
    journal: Journal,
) -> None:
    await apply(journal, event("create", tape_barcode="ZZZ900L9"))
    [outcome] = await apply(journal, event("update", tape_barcode="NOD400L9"))
    assert outcome.status == "applied"
    [request] = await journal.requests()
    assert request.barcode == "NOD400L9"
    # And away again: our request is released, the destination is another library's.
    [away] = await apply(journal, event("update", tape_barcode="ZZZ901L9"))
    assert away.status == "ignored"
    [released] = await journal.requests()
    assert released.state.value == "released"


async def test_a_pool_create_on_the_common_topic_is_refused_with_the_right_topic(
    journal: Journal,
) -> None:
    [outcome] = await apply(journal, event("create", pool_name="offline-tapes"))
    assert outcome.status == "rejected"
    assert "tw/pools/offline-tapes/tasks/..." in (outcome.reason or "")


async def test_a_pool_destination_is_updated_by_the_library_that_took_it_only(
    journal: Journal,
) -> None:
    take = dataclasses.replace(COMMON, via="take")
    await apply(journal, event("create", 1, route=take, pool_name="offline-tapes"))
    [ours] = await apply(journal, event("update", 1, pool_name="online-tapes"))
    assert ours.status == "applied"
    # Destination 2 was taken by another library: its update here is not ours.
    [theirs] = await apply(journal, event("update", 2, pool_name="online-tapes"))
    assert (theirs.status, theirs.reason) == (
        "ignored",
        "not ours: library lib-a did not take this destination of pool 'online-tapes'",
    )
    assert {r.destination_id for r in await journal.requests()} == {1}


async def test_a_pool_destination_passed_on_is_journaled_without_a_row(journal: Journal) -> None:
    passed = dataclasses.replace(COMMON, via="pass", reason="handed on (1 of 3): full")
    [outcome] = await apply(journal, event("create", 1, route=passed, pool_name="offline-tapes"))
    assert (outcome.status, outcome.reason) == ("ignored", "handed on (1 of 3): full")
    assert await journal.destination(1) is None
    [journaled] = await journal.events()
    assert journaled.reason == "handed on (1 of 3): full"


async def test_a_pool_destination_nobody_can_serve_fails_with_the_reason(journal: Journal) -> None:
    failed = dataclasses.replace(COMMON, via="fail", reason="no library of pool ...")
    await apply(journal, event("create", 1, route=failed, pool_name="offline-tapes"))
    [request] = await journal.requests()
    assert (request.state.value, request.reason) == ("failed", "no library of pool ...")
