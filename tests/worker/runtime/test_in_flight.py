"""The in-flight owner on its own: claims, where the planner sees a moving tape,
and the changer's doubts."""

from __future__ import annotations

from worker.runtime.in_flight import InFlight


def test_a_claim_holds_its_drive_and_tapes_until_released() -> None:
    in_flight = InFlight()
    assert not in_flight.moving
    in_flight.claim(1, {"AAA001L9", "AAA002L9"}, loading=["AAA002L9"])
    assert in_flight.moving
    assert in_flight.busy_drives == {1}
    assert in_flight.drive_busy(1)
    assert not in_flight.drive_busy(0)
    assert in_flight.tape_busy("AAA001L9")
    in_flight.release(1, {"AAA001L9", "AAA002L9"})
    assert not in_flight.moving
    assert not in_flight.tape_busy("AAA001L9")
    assert in_flight.position("AAA002L9", 3, None) == (3, None)


def test_a_tape_on_its_way_is_already_in_the_drive_it_is_headed_to() -> None:
    in_flight = InFlight()
    in_flight.claim(2, {"AAA001L9"}, loading=["AAA001L9"])
    assert in_flight.position("AAA001L9", 5, None) == (None, 2)
    assert in_flight.position("AAA009L9", 5, None) == (5, None)


def test_a_tape_being_unloaded_stays_in_its_drive_until_the_chain_ends() -> None:
    in_flight = InFlight()
    in_flight.claim(0, {"AAA001L9"})
    assert in_flight.position("AAA001L9", None, 0) == (None, 0)


def test_releasing_one_drive_leaves_the_other_claims() -> None:
    in_flight = InFlight()
    in_flight.claim(0, {"AAA001L9"}, loading=["AAA001L9"])
    in_flight.claim(1, {"AAA002L9"}, loading=["AAA002L9"])
    in_flight.release(0, {"AAA001L9"})
    assert in_flight.busy_drives == {1}
    assert in_flight.position("AAA002L9", 2, None) == (None, 1)


def test_doubts_last_until_an_inventory_and_a_look() -> None:
    in_flight = InFlight()
    assert not in_flight.needs_inventory
    in_flight.suspect()
    assert in_flight.needs_inventory
    assert in_flight.to_verify == frozenset()
    in_flight.suspect(["AAA001L9"])
    in_flight.inventory_taken()
    assert not in_flight.needs_inventory
    looked = in_flight.to_verify
    # A cartridge doubted while the inventory ran is looked for next time.
    in_flight.suspect(["AAA002L9"])
    in_flight.verified(looked)
    assert in_flight.to_verify == {"AAA002L9"}
