"""The planner's rules, one small scenario each, plus invariants over random libraries."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.media import can_read, can_write, media_of
from worker.core.actions import Action, Assign, Attach, Clean, Fail, Load, Unload
from worker.core.pending import PendingRequests
from worker.core.planner import PlanPolicy, next_change, plan
from worker.core.requests import MountRequest
from worker.core.snapshot import DriveView, LibrarySnapshot, TapeView
from worker.settings import PlannerSettings

#: The rules one at a time: no spare-drive unloads unless a test asks for them.
POLICY = PlanPolicy(dismount_delay_s=100.0, max_age_s=7200.0, spare_drives=0)
#: Writes fill one tape at a time whatever the locate to its end costs.
FILL = replace(POLICY, write_margin_s=math.inf)


def tape(
    barcode: str, slot: int | None = None, *, drive: int | None = None, **kw: object
) -> TapeView:
    home = kw.pop("home_slot", slot if slot is not None else 100 + (drive or 0))
    return TapeView(
        barcode=barcode,
        media=media_of(barcode),
        slot=slot,
        drive=drive,
        home_slot=home,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def library(
    drives: Sequence[DriveView],
    tapes: Iterable[TapeView],
    free_slots: Sequence[int] = (90, 91, 92, 93),
) -> LibrarySnapshot:
    tapes = list(tapes)
    homes = tuple(t.home_slot for t in tapes if t.drive is not None and t.home_slot is not None)
    return LibrarySnapshot(
        drives=tuple(drives),
        tapes={t.barcode: t for t in tapes},
        free_slots=tuple(free_slots) + homes,
    )


def read(rid: int, barcode: str, at: float = 0.0, **kw: object) -> MountRequest:
    return MountRequest(id=rid, barcode=barcode, pool=None, arrival=at, write=False, **kw)  # type: ignore[arg-type]


def write(rid: int, barcode: str, at: float = 0.0) -> MountRequest:
    return MountRequest(id=rid, barcode=barcode, pool=None, arrival=at, write=True)


def to_pool(rid: int, pool: str, at: float = 0.0, size: int | None = None) -> MountRequest:
    return MountRequest(id=rid, barcode=None, pool=pool, arrival=at, write=True, size_bytes=size)


def fails(actions: list[Action]) -> dict[int, str]:
    return {a.request_id: a.reason for a in actions if isinstance(a, Fail)}


# -- the basic rules ---------------------------------------------------------------


def test_requests_of_one_tape_ride_on_one_mount() -> None:
    snap = library([DriveView(0, 9), DriveView(1, 9)], [tape("A00001L9", 1)])
    actions = plan(snap, [read(1, "A00001L9"), read(2, "A00001L9", 5)], POLICY, 10)
    assert actions == [Load("A00001L9", 1, 0, (1, 2))]


def test_a_tape_idle_in_a_drive_is_attached_without_a_move() -> None:
    snap = library(
        [DriveView(0, 9), DriveView(1, 9, barcode="A00001L9", idle_since=0)],
        [tape("A00001L9", drive=1)],
    )
    assert plan(snap, [read(7, "A00001L9")], POLICY, 10) == [Attach(1, "A00001L9", (7,))]


def test_a_tape_in_a_held_drive_waits_for_it() -> None:
    snap = library(
        [DriveView(0, 9), DriveView(1, 9, barcode="A00001L9", holders=(3,))],
        [tape("A00001L9", drive=1)],
    )
    assert plan(snap, [read(7, "A00001L9")], POLICY, 10) == []


def test_busy_and_down_drives_get_no_work() -> None:
    snap = library(
        [DriveView(0, 9, busy=True), DriveView(1, 9, available=False)],
        [tape("A00001L9", 1)],
    )
    assert plan(snap, [read(1, "A00001L9")], POLICY, 10) == []


def test_an_empty_drive_is_preferred_to_unloading_an_idle_one() -> None:
    snap = library(
        [DriveView(0, 9, barcode="B00001L9", idle_since=5), DriveView(1, 9)],
        [tape("A00001L9", 1), tape("B00001L9", drive=0)],
    )
    assert plan(snap, [read(1, "A00001L9")], POLICY, 10) == [Load("A00001L9", 1, 1, (1,))]


def test_when_every_drive_holds_a_tape_the_least_recently_used_idle_one_is_emptied() -> None:
    snap = library(
        [
            DriveView(0, 9, barcode="B00001L9", idle_since=50),
            DriveView(1, 9, barcode="B00002L9", idle_since=20),
            DriveView(2, 9, barcode="B00003L9", holders=(9,)),
        ],
        [
            tape("A00001L9", 1),
            tape("B00001L9", drive=0, home_slot=11),
            tape("B00002L9", drive=1, home_slot=12),
            tape("B00003L9", drive=2, home_slot=13),
        ],
    )
    actions = plan(snap, [read(1, "A00001L9")], POLICY, 60)
    # The load is not bound to the drive being emptied: whichever drive empties
    # first takes the oldest group then.
    assert actions == [Unload(1, "B00002L9", 12)]
    emptied = replace(
        snap,
        drives=(snap.drives[0], DriveView(1, 9), snap.drives[2]),
        tapes={**snap.tapes, "B00002L9": tape("B00002L9", 12)},
    )
    assert plan(emptied, [read(1, "A00001L9")], POLICY, 100) == [Load("A00001L9", 1, 1, (1,))]


def test_an_unload_uses_a_free_slot_when_the_home_slot_is_taken() -> None:
    snap = LibrarySnapshot(
        drives=(DriveView(0, 9, barcode="B00001L9", idle_since=0),),
        tapes={
            "A00001L9": tape("A00001L9", 1),
            "B00001L9": tape("B00001L9", drive=0, home_slot=12),
        },
        free_slots=(40,),
    )
    actions = plan(snap, [read(1, "A00001L9")], POLICY, 10)
    assert actions == [Unload(0, "B00001L9", 40)]


def test_no_free_slot_means_no_unload() -> None:
    snap = LibrarySnapshot(
        drives=(DriveView(0, 9, barcode="B00001L9", idle_since=0),),
        tapes={
            "A00001L9": tape("A00001L9", 1),
            "B00001L9": tape("B00001L9", drive=0, home_slot=12),
        },
        free_slots=(),
    )
    assert plan(snap, [read(1, "A00001L9")], POLICY, 1000) == []


# -- compatibility --------------------------------------------------------------------


def test_media_goes_only_into_a_drive_that_can_read_it() -> None:
    # LTO-9 reads L8 and L9 only; the L7 tape needs the LTO-8 drive.
    snap = library([DriveView(0, 9), DriveView(1, 8)], [tape("A00001L7", 1)])
    assert plan(snap, [read(1, "A00001L7")], POLICY, 0) == [Load("A00001L7", 1, 1, (1,))]


def test_the_least_capable_compatible_drive_is_chosen() -> None:
    # An L8 tape fits both; keeping the LTO-9 drive free leaves room for L9 media.
    snap = library([DriveView(0, 9), DriveView(1, 8)], [tape("A00001L8", 1)])
    assert plan(snap, [read(1, "A00001L8")], POLICY, 0) == [Load("A00001L8", 1, 1, (1,))]


def test_a_write_needs_a_drive_that_writes_the_media() -> None:
    # LTO-7 reads L5 but writes only L6 and L7: a write to L5 fails in this library.
    snap = library([DriveView(0, 7)], [tape("A00001L5", 1)])
    assert plan(snap, [read(1, "A00001L5")], POLICY, 0) == [Load("A00001L5", 1, 0, (1,))]
    assert "can write" in fails(plan(snap, [write(2, "A00001L5")], POLICY, 0))[2]


def test_a_tape_readable_here_but_not_writable_goes_home_before_a_write() -> None:
    snap = library(
        [DriveView(0, 7, barcode="A00001L5", idle_since=0), DriveView(1, 6)],
        [tape("A00001L5", drive=0, home_slot=5)],
    )
    actions = plan(snap, [write(1, "A00001L5")], POLICY, 1)
    assert actions == [Unload(0, "A00001L5", 5)]


def test_the_same_drive_is_never_given_to_two_tapes() -> None:
    snap = library([DriveView(0, 9)], [tape("A00001L9", 1), tape("A00002L9", 2)])
    actions = plan(snap, [read(1, "A00001L9"), read(2, "A00002L9")], POLICY, 0)
    assert actions == [Load("A00001L9", 1, 0, (1,))]


# -- requests that can never be served ------------------------------------------------


def test_impossible_requests_fail_with_a_reason() -> None:
    snap = library(
        [DriveView(0, 9)],
        [
            tape("CLN001L1", 1, cleaning=True, cleaning_uses_left=5),
            tape("A00001L6", 2),
            tape("A00002L9", 3, need_to_check=True),
            tape("A00003L9", 4, ejected=True),
            tape("A00004L9", 5, write_protected=True),
            tape("A00005L9", 6, locked=True),
            tape("A00006L9", 7, full=True),
        ],
    )
    pending = [
        read(1, "NOSUCH"),
        read(2, "CLN001L1"),
        read(3, "A00001L6"),
        read(4, "A00002L9"),
        read(5, "A00003L9"),
        write(6, "A00004L9"),
        write(7, "A00005L9"),
        write(8, "A00006L9"),
        MountRequest(9, None, None, 0.0),
    ]
    reasons = fails(plan(snap, pending, POLICY, 0))
    assert set(reasons) == set(range(1, 10))
    assert "unknown barcode" in reasons[1]
    assert "cleaning cartridge" in reasons[2]
    assert "can read" in reasons[3]
    assert "checked" in reasons[4]
    assert "ejected" in reasons[5]
    assert "write-protected" in reasons[6]
    assert "locked" in reasons[7]
    assert "full" in reasons[8]
    assert "neither" in reasons[9]


def test_a_read_of_a_full_or_locked_tape_is_fine() -> None:
    snap = library([DriveView(0, 9)], [tape("A00006L9", 7, full=True, locked=True)])
    assert plan(snap, [read(1, "A00006L9")], POLICY, 0) == [Load("A00006L9", 7, 0, (1,))]


def test_a_write_fails_but_a_read_of_the_same_tape_goes_ahead() -> None:
    snap = library([DriveView(0, 9)], [tape("A00006L9", 7, full=True)])
    actions = plan(snap, [read(1, "A00006L9"), write(2, "A00006L9")], POLICY, 0)
    assert actions[0] == Fail(2, "tape A00006L9 is full")
    assert actions[1] == Load("A00006L9", 7, 0, (1,))


# -- pools ---------------------------------------------------------------------------


def test_a_pool_request_prefers_a_writable_pool_tape_idle_in_a_drive() -> None:
    snap = library(
        [DriveView(0, 9, barcode="P00002L9", idle_since=0), DriveView(1, 9)],
        [
            tape("P00001L9", 1, pool="p", used_bytes=900),
            tape("P00002L9", drive=0, pool="p", used_bytes=10),
        ],
    )
    actions = plan(snap, [to_pool(1, "p")], POLICY, 5)
    assert actions == [Assign(1, "P00002L9"), Attach(0, "P00002L9", (1,))]


def test_a_pool_fills_its_fullest_appendable_tape_before_a_scratch_tape() -> None:
    snap = library(
        [DriveView(0, 9)],
        [
            tape("P00001L9", 1, pool="p", used_bytes=0),
            tape("P00002L9", 2, pool="p", used_bytes=100),
            tape("P00003L9", 3, pool="p", used_bytes=700),
            tape("P00004L9", 4, pool="p", used_bytes=900, full=True),
            tape("P00005L9", 5, pool="p", used_bytes=800, locked=True),
            tape("Q00001L9", 6, pool="q", used_bytes=999),
        ],
    )
    actions = plan(snap, [to_pool(1, "p"), to_pool(2, "p", 1)], POLICY, 5)
    assert actions == [
        Assign(1, "P00003L9"),
        Assign(2, "P00003L9"),
        Load("P00003L9", 3, 0, (1, 2)),
    ]


def test_a_scratch_tape_is_taken_when_no_appendable_one_is_left() -> None:
    snap = library(
        [DriveView(0, 9)],
        [
            tape("P00001L9", 1, pool="p", used_bytes=0),
            tape("P00002L9", 2, pool="p", used_bytes=100, write_protected=True),
        ],
    )
    actions = plan(snap, [to_pool(1, "p")], POLICY, 5)
    assert actions == [Assign(1, "P00001L9"), Load("P00001L9", 1, 0, (1,))]


def test_a_pool_without_a_writable_tape_fails_its_requests() -> None:
    snap = library(
        [DriveView(0, 9)],
        [
            tape("P00001L9", 1, pool="p", full=True),
            tape("CLN001L1", 2, pool="p", cleaning=True),
        ],
    )
    assert "no writable tape left in pool 'p'" in fails(plan(snap, [to_pool(1, "p")], POLICY, 0))[1]
    assert "no writable tape" in fails(plan(snap, [to_pool(2, "nowhere")], POLICY, 0))[2]


def test_pool_requests_that_do_not_fit_wait_for_the_next_tape() -> None:
    snap = library(
        [DriveView(0, 9), DriveView(1, 9)],
        [
            tape("P00001L9", 1, pool="p", used_bytes=80, capacity_bytes=100),
            tape("P00002L9", 2, pool="p", used_bytes=0, capacity_bytes=100),
        ],
    )
    actions = plan(snap, [to_pool(1, "p", 0, 15), to_pool(2, "p", 1, 15)], FILL, 5)
    assert actions == [Assign(1, "P00001L9"), Load("P00001L9", 1, 0, (1,))]


def test_a_pool_never_holds_more_drives_than_its_cap() -> None:
    snap = library(
        [DriveView(0, 9, barcode="A00001L9", holders=(1,)), DriveView(1, 9), DriveView(2, 9)],
        [
            tape("A00001L9", drive=0, pool="a"),
            tape("A00002L9", 2, pool="a"),
            tape("A00003L9", 3, pool="a"),
            tape("B00001L9", 4, pool="b"),
        ],
    )
    pending = [read(2, "A00002L9", 0), read(3, "A00003L9", 1), read(4, "B00001L9", 2)]
    actions = plan(snap, pending, replace(POLICY, pool_drive_cap=2), 10)
    assert actions == [Load("A00002L9", 2, 1, (2,)), Load("B00001L9", 4, 2, (4,))]
    capped = replace(POLICY, pool_drive_caps={"a": 1})
    assert plan(snap, pending, capped, 10) == [Load("B00001L9", 4, 1, (4,))]


# -- order: age, priority, work ------------------------------------------------------


def test_the_oldest_request_goes_first() -> None:
    snap = library([DriveView(0, 9)], [tape("A00001L9", 1), tape("A00002L9", 2)])
    actions = plan(snap, [read(1, "A00001L9", 50), read(2, "A00002L9", 10)], POLICY, 60)
    assert actions == [Load("A00002L9", 2, 0, (2,))]


def test_priority_goes_before_age_but_not_before_the_maximum_age() -> None:
    snap = library([DriveView(0, 9)], [tape("A00001L9", 1), tape("A00002L9", 2)])
    pending = [read(1, "A00001L9", 50, priority=5), read(2, "A00002L9", 10)]
    assert plan(snap, pending, POLICY, 60) == [Load("A00001L9", 1, 0, (1,))]
    # Request 2 has now waited past max_age_s: it goes first, whatever the priority.
    assert plan(snap, pending, POLICY, 7230) == [Load("A00002L9", 2, 0, (2,))]


def test_on_a_batch_the_largest_work_starts_first() -> None:
    snap = library([DriveView(0, 9)], [tape("A00001L9", 1), tape("A00002L9", 2)])
    pending = [
        read(1, "A00001L9", size_bytes=10),
        read(2, "A00002L9", size_bytes=10),
        read(3, "A00002L9", size_bytes=10),
    ]
    assert plan(snap, pending, POLICY, 0) == [Load("A00002L9", 2, 0, (2, 3))]


# -- dismount delay ------------------------------------------------------------------


def test_an_unneeded_tape_is_unloaded_after_the_dismount_delay() -> None:
    snap = library(
        [DriveView(0, 9, barcode="A00001L9", idle_since=100)],
        [tape("A00001L9", drive=0, home_slot=3)],
    )
    assert plan(snap, [], POLICY, 199) == []
    assert plan(snap, [], POLICY, 200) == [Unload(0, "A00001L9", 3)]


def test_a_pools_writable_tape_stays_for_the_pool_dismount_delay() -> None:
    snap = library(
        [
            DriveView(0, 9, barcode="P00001L9", idle_since=100),
            DriveView(1, 9, barcode="A00001L9", idle_since=100),
            DriveView(2, 9),
        ],
        [
            tape("P00001L9", drive=0, home_slot=3, pool="p", used_bytes=10),
            tape("A00001L9", drive=1, home_slot=4, pool="p", full=True),
        ],
    )
    policy = replace(POLICY, pool_dismount_delay_s=900.0, spare_drives=1)
    # The full tape of the same pool goes at the ordinary delay; the writable one stays
    # for the pool's next write.
    assert plan(snap, [], policy, 200) == [Unload(1, "A00001L9", 4)]
    assert plan(snap, [], policy, 999) == [Unload(1, "A00001L9", 4)]
    assert plan(snap, [], policy, 1000) == [Unload(0, "P00001L9", 3), Unload(1, "A00001L9", 4)]
    # It still yields when too few drives are empty.
    crowded = replace(snap, drives=snap.drives[:2])
    assert Unload(0, "P00001L9", 3) in plan(crowded, [], policy, 200)


def test_a_needed_tape_is_kept_and_a_held_one_is_never_unloaded() -> None:
    snap = library(
        [
            DriveView(0, 9, barcode="A00001L9", holders=(1,), idle_since=None),
            DriveView(1, 9, barcode="A00002L9", busy=True, idle_since=0),
        ],
        [tape("A00001L9", drive=0), tape("A00002L9", drive=1)],
    )
    assert plan(snap, [read(5, "A00001L9")], POLICY, 10_000) == []


def test_too_few_empty_drives_send_the_least_recently_used_idle_tape_home_early() -> None:
    snap = library(
        [
            DriveView(0, 9, barcode="A00001L9", idle_since=90),
            DriveView(1, 9, barcode="A00002L9", idle_since=80),
            DriveView(2, 9, barcode="A00003L9", holders=(1,)),
        ],
        [
            tape("A00001L9", drive=0, home_slot=1),
            tape("A00002L9", drive=1, home_slot=2),
            tape("A00003L9", drive=2, home_slot=3),
        ],
    )
    spare = replace(POLICY, spare_drives=1)
    assert plan(snap, [], spare, 100) == [Unload(1, "A00002L9", 2)]
    # With an empty drive already there, the delay rules again.
    roomy = replace(snap, drives=(*snap.drives, DriveView(3, 9)))
    assert plan(roomy, [], spare, 100) == []


# -- pools writing ----------------------------------------------------------------


def test_a_pool_writing_on_a_tape_waits_for_it_rather_than_opening_another() -> None:
    snap = library(
        [DriveView(0, 9, barcode="P00001L9", holders=(1,)), DriveView(1, 9)],
        [tape("P00001L9", drive=0, pool="p", used_bytes=5), tape("P00002L9", 2, pool="p")],
    )
    small = [to_pool(2, "p", 100, size=10**9)]
    assert plan(snap, small, POLICY, 200) == []
    # ...until it has waited pool_open_after_s, or enough data is queued.
    assert plan(snap, small, POLICY, 400) == [Assign(2, "P00002L9"), Load("P00002L9", 2, 1, (2,))]
    big = [to_pool(2, "p", 100, size=200 * 10**9)]
    assert plan(snap, big, POLICY, 101) == [Assign(2, "P00002L9"), Load("P00002L9", 2, 1, (2,))]


def test_a_pool_whose_tape_is_unloading_opens_another_at_once() -> None:
    # Busy with no request holding it: the drive is sending the tape home.
    snap = library(
        [DriveView(0, 9, barcode="P00001L9", busy=True), DriveView(1, 9)],
        [tape("P00001L9", drive=0, pool="p", used_bytes=5), tape("P00002L9", 2, pool="p")],
    )
    small = [to_pool(2, "p", 100, size=10**9)]
    assert plan(snap, small, POLICY, 101) == [Assign(2, "P00002L9"), Load("P00002L9", 2, 1, (2,))]


# -- cleaning ------------------------------------------------------------------------


def test_a_drive_asking_for_cleaning_is_cleaned_before_its_next_data_mount() -> None:
    snap = library(
        [DriveView(0, 9, needs_cleaning=True), DriveView(1, 9)],
        [
            tape("A00001L9", 1),
            tape("CLN001L1", 5, cleaning=True, cleaning_uses_left=10),
            tape("CLN002L1", 6, cleaning=True, cleaning_uses_left=2),
            tape("CLN003L1", 7, cleaning=True, cleaning_uses_left=0),
        ],
    )
    actions = plan(snap, [read(1, "A00001L9")], POLICY, 0)
    # The cartridge with the fewest uses left (but some) is used up first.
    assert actions == [Clean(0, "CLN002L1", 6), Load("A00001L9", 1, 1, (1,))]


def test_a_dirty_drive_with_a_tape_is_unloaded_then_cleaned() -> None:
    snap = library(
        [DriveView(0, 9, barcode="B00001L9", idle_since=0, needs_cleaning=True)],
        [
            tape("B00001L9", drive=0, home_slot=4),
            tape("CLN001L1", 5, cleaning=True, cleaning_uses_left=10),
        ],
    )
    assert plan(snap, [], POLICY, 1) == [Unload(0, "B00001L9", 4), Clean(0, "CLN001L1", 5)]


def test_without_a_usable_cleaning_cartridge_the_dirty_drive_still_works() -> None:
    snap = library(
        [DriveView(0, 9, needs_cleaning=True)],
        [tape("A00001L9", 1), tape("CLN001L1", 5, cleaning=True, cleaning_uses_left=0)],
    )
    assert plan(snap, [read(1, "A00001L9")], POLICY, 0) == [Load("A00001L9", 1, 0, (1,))]


# -- invariants over random libraries ------------------------------------------------

_MEDIA = ["L5", "L6", "L7", "L8", "L9", "M8"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[LibrarySnapshot, list[MountRequest]]:
    n_drives = draw(st.integers(1, 5))
    generations = [draw(st.integers(7, 9)) for _ in range(n_drives)]
    n_tapes = draw(st.integers(1, 12))
    tapes: dict[str, TapeView] = {}
    slots = iter(range(1, 200))
    drive_tape: dict[int, str] = {}
    for i in range(n_tapes):
        barcode = f"T{i:05d}{draw(st.sampled_from(_MEDIA))}"
        home = next(slots)
        in_drive = draw(st.integers(0, n_drives * 3))
        if in_drive < n_drives and in_drive not in drive_tape:
            drive_tape[in_drive] = barcode
            tapes[barcode] = TapeView(
                barcode,
                media_of(barcode),
                drive=in_drive,
                home_slot=home,
                pool=draw(st.sampled_from(["a", "b", None])),
                used_bytes=draw(st.integers(0, 3)),
                # Small known capacities, so that a pool's writes fill a tape.
                capacity_bytes=draw(st.sampled_from([0, 8, 12])),
                full=draw(st.booleans()) and draw(st.booleans()),
            )
        else:
            tapes[barcode] = TapeView(
                barcode,
                media_of(barcode),
                slot=home,
                home_slot=home,
                pool=draw(st.sampled_from(["a", "b", None])),
                used_bytes=draw(st.integers(0, 3)),
                # Small known capacities, so that a pool's writes fill a tape.
                capacity_bytes=draw(st.sampled_from([0, 8, 12])),
                full=draw(st.booleans()) and draw(st.booleans()),
            )
    tapes["CLN000L1"] = TapeView(
        "CLN000L1",
        None,
        slot=150,
        home_slot=150,
        cleaning=True,
        cleaning_uses_left=draw(st.integers(0, 3)),
    )
    drives = tuple(
        DriveView(
            i,
            generations[i],
            barcode=drive_tape.get(i),
            idle_since=draw(st.sampled_from([None, 0.0, 50.0])),
            needs_cleaning=draw(st.booleans()) and draw(st.booleans()),
            # Hardware in every state at the start: busy, held, down.
            busy=draw(st.integers(0, 5)) == 0,
            holders=(10_000 + i,) if drive_tape.get(i) and draw(st.integers(0, 3)) == 0 else (),
            available=draw(st.integers(0, 5)) != 0,
        )
        for i in range(n_drives)
    )
    occupied = {t.slot for t in tapes.values() if t.slot is not None}
    snap = LibrarySnapshot(
        drives=drives,
        tapes=tapes,
        free_slots=tuple(s for s in range(1, 200) if s not in occupied),
    )
    names = [*tapes, "UNKNOWN1L9"]
    pending = [
        MountRequest(
            id=rid,
            barcode=None if pooled else draw(st.sampled_from(names)),
            pool=draw(st.sampled_from(["a", "b"])) if pooled else None,
            arrival=draw(st.floats(0, 100)),
            write=draw(st.booleans()),
            priority=draw(st.integers(0, 2)),
            size_bytes=draw(st.sampled_from([None, 1, 2, 2, 3, 5, 16])),
        )
        for rid, pooled in enumerate(draw(st.lists(st.booleans(), max_size=15)))
    ]
    return snap, pending


def _check_invariants(
    snap: LibrarySnapshot, pending: list[MountRequest], actions: list[Action]
) -> None:
    by_id = {r.id: r for r in pending}
    assigned: dict[int, str] = {}
    loads: dict[int, int] = {}
    unloads: dict[int, int] = {}
    moved_tapes: list[str] = []
    drives = {d.index: d for d in snap.drives}
    for action in actions:
        if isinstance(action, Assign):
            assert by_id[action.request_id].barcode is None
            assigned[action.request_id] = action.barcode
        elif isinstance(action, Unload):
            assert action.drive not in loads, "an unload after the drive's load"
            unloads[action.drive] = unloads.get(action.drive, 0) + 1
            moved_tapes.append(action.barcode)
            assert drives[action.drive].barcode == action.barcode
            assert drives[action.drive].idle, "an unload under a holder, a move or a down drive"
        elif isinstance(action, Load | Attach | Clean):
            loads[action.drive] = loads.get(action.drive, 0) + 1
            moved_tapes.append(action.barcode)
            drive = drives[action.drive]
            assert drive.available
            assert not drive.busy
            assert not drive.holders
            tape = snap.tapes[action.barcode]
            if isinstance(action, Clean):
                assert tape.cleaning
                assert tape.cleaning_uses_left > 0
                continue
            assert not tape.cleaning
            for rid in action.request_ids:
                request = by_id[rid]
                assert (request.barcode or assigned[rid]) == action.barcode
                assert tape.media is not None
                if request.write or request.barcode is None:
                    assert can_write(drive.generation, tape.media)
                    assert tape.writable
                else:
                    assert can_read(drive.generation, tape.media)
            if isinstance(action, Load):
                assert action.slot == tape.slot
                assert drive.barcode is None or action.drive in unloads
    assert all(n == 1 for n in loads.values())
    assert all(n == 1 for n in unloads.values())
    assert len(moved_tapes) == len(set(moved_tapes)), "one move per tape per plan"
    served = [rid for a in actions if isinstance(a, Load | Attach) for rid in a.request_ids]
    failed = [a.request_id for a in actions if isinstance(a, Fail)]
    assert len(served) + len(failed) == len(set(served) | set(failed))


def _apply(
    snap: LibrarySnapshot, pending: list[MountRequest], actions: list[Action]
) -> tuple[LibrarySnapshot, list[MountRequest], set[int]]:
    """A toy library: moves happen at once, and ready requests are released at once."""
    drives = {d.index: d for d in snap.drives}
    tapes = dict(snap.tapes)
    free = set(snap.free_slots)
    assigned = {a.request_id: a.barcode for a in actions if isinstance(a, Assign)}
    done: set[int] = set()
    for action in actions:
        if isinstance(action, Unload):
            tapes[action.barcode] = replace(tapes[action.barcode], drive=None, slot=action.slot)
            free.discard(action.slot)
            drives[action.drive] = replace(drives[action.drive], barcode=None)
        elif isinstance(action, Load):
            tapes[action.barcode] = replace(tapes[action.barcode], drive=action.drive, slot=None)
            free.add(action.slot)
            drives[action.drive] = replace(
                drives[action.drive], barcode=action.barcode, idle_since=1e9
            )
            done.update(action.request_ids)
        elif isinstance(action, Attach):
            done.update(action.request_ids)
        elif isinstance(action, Clean):
            cln = tapes[action.barcode]
            tapes[action.barcode] = replace(cln, cleaning_uses_left=cln.cleaning_uses_left - 1)
            drives[action.drive] = replace(drives[action.drive], needs_cleaning=False)
        elif isinstance(action, Fail):
            done.add(action.request_id)
    left = [replace(r, barcode=assigned.get(r.id, r.barcode)) for r in pending if r.id not in done]
    # Between rounds every operation finishes, every holder lets go and downed
    # drives come back: "when hardware is up".
    settled = tuple(replace(d, busy=False, holders=(), available=True) for d in drives.values())
    snap = replace(snap, drives=settled, tapes=tapes, free_slots=tuple(sorted(free)))
    return snap, left, done


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants_hold_and_every_request_is_eventually_planned(
    scenario: tuple[LibrarySnapshot, list[MountRequest]],
) -> None:
    snap, pending = scenario
    now = 200.0
    for _ in range(60):
        actions = plan(snap, pending, POLICY, now)
        _check_invariants(snap, pending, actions)
        snap, pending, _ = _apply(snap, pending, actions)
        if not pending:
            return
        now += 1000.0
    raise AssertionError(f"requests never planned: {pending}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.randoms(use_true_random=False))
def test_a_queue_kept_up_to_date_plans_as_a_round_from_scratch(
    scenario: tuple[LibrarySnapshot, list[MountRequest]], rnd: random.Random
) -> None:
    snap, pending = scenario
    queue = PendingRequests()
    # Requests arrive in any order, and strays come and go before them.
    stray = 10**6
    for request in rnd.sample(pending, len(pending)):
        if rnd.random() < 0.3:
            queue.add(replace(request, id=stray, arrival=request.arrival - 1, priority=9))
            queue.discard(stray)
            stray += 1
        queue.add(request)
    now = 200.0
    for _ in range(60):
        # As the daemon plans: requests handed to the executor are taken out of the
        # kept queue for one round and put back (they are still pending).
        held = {r.id for r in pending if rnd.random() < 0.2}
        taken = [r for r in map(queue.discard, sorted(held)) if r is not None]
        shown = [r for r in pending if r.id not in held]
        assert plan(snap, queue, POLICY, now) == plan(snap, shown, POLICY, now)
        for request in taken:
            queue.add(request)
        from_scratch = plan(snap, rnd.sample(pending, len(pending)), POLICY, now)
        kept = plan(snap, queue, POLICY, now)
        assert kept == from_scratch
        snap, left, done = _apply(snap, pending, kept)
        for rid in done:
            assert queue.discard(rid) is not None
        for request in left:
            if queue.get(request.id) != request:
                queue.add(request)  # a pool request now names its tape
        assert sorted(r.id for r in queue) == sorted(r.id for r in left)
        pending = left
        if not pending:
            return
        now += 1000.0
    raise AssertionError(f"requests never planned: {pending}")


def test_unknown_sizes_always_fit_and_a_request_larger_than_a_cartridge_opens_a_scratch_tape() -> (
    None
):
    snap = library(
        [DriveView(0, 9), DriveView(1, 9)],
        [
            # Compressed data may take a tape past its native capacity.
            tape("P00001L9", 1, pool="p", used_bytes=120, capacity_bytes=100),
            tape("P00002L9", 2, pool="p", used_bytes=0, capacity_bytes=100),
        ],
    )
    assert plan(snap, [to_pool(1, "p")], FILL, 5) == [
        Assign(1, "P00001L9"),
        Load("P00001L9", 1, 0, (1,)),
    ]
    assert plan(snap, [to_pool(2, "p", 0, 500)], POLICY, 5) == [
        Assign(2, "P00002L9"),
        Load("P00002L9", 2, 0, (2,)),
    ]


def test_a_write_no_tape_of_the_pool_has_room_for_fails_with_the_reason() -> None:
    snap = library(
        [DriveView(0, 9)],
        [
            tape("P00001L9", 1, pool="p", used_bytes=90, capacity_bytes=100),
            tape("P00002L9", 2, pool="p", used_bytes=70, capacity_bytes=100),
        ],
    )
    actions = plan(snap, [to_pool(1, "p", 0, 50), to_pool(2, "p", 1, 20)], POLICY, 5)
    assert fails(actions) == {1: "no tape of pool 'p' has room for 50 bytes (at most 30 free)"}
    assert actions[1:] == [Assign(2, "P00002L9"), Load("P00002L9", 2, 0, (2,))]


def test_the_daemons_planner_settings_default_to_the_planners_own() -> None:
    assert PlannerSettings().policy() == PlanPolicy()
    assert PlannerSettings(pool_open_after_s=5.0).policy().pool_open_after_s == 5.0


def test_a_write_goes_to_a_cheaper_tape_of_its_pool_only_past_the_margin() -> None:
    capacity = 18 * 10**12
    snap = library(
        [DriveView(0, 9)],
        [
            # The fullest: a locate to 90 % of the tape, about 94 s.
            tape("P00001L9", 1, pool="p", used_bytes=capacity * 9 // 10, capacity_bytes=capacity),
            tape("P00002L9", 2, pool="p", used_bytes=capacity // 10, capacity_bytes=capacity),
            tape("P00003L9", 3, pool="p", used_bytes=0, capacity_bytes=capacity),
        ],
    )
    chosen = {
        margin: next(
            a.barcode for a in plan(snap, [to_pool(1, "p")], policy, 5) if isinstance(a, Load)
        )
        for margin, policy in (
            (60.0, replace(POLICY, write_margin_s=60.0)),
            (120.0, replace(POLICY, write_margin_s=120.0)),
            (math.inf, FILL),
        )
    }
    # Scratch needs no locate at all: 94 s saved is past a 60 s margin, not a 120 s one.
    assert chosen == {60.0: "P00003L9", 120.0: "P00001L9", math.inf: "P00001L9"}


# -- when a plan can change with the clock alone --------------------------------------


def test_the_next_change_is_a_dismount_falling_due() -> None:
    snap = library(
        [DriveView(0, 9, barcode="A00001L9", idle_since=100)],
        [tape("A00001L9", drive=0, home_slot=3)],
    )
    assert next_change(snap, [], POLICY, 150) == 200
    assert math.isinf(next_change(snap, [], POLICY, 200))


def test_the_next_change_is_a_group_reaching_the_maximum_age() -> None:
    snap = library([DriveView(0, 9, available=False)], [tape("A00001L9", 1)])
    policy = replace(POLICY, max_age_s=300)
    assert next_change(snap, [read(1, "A00001L9", at=50)], policy, 60) == 350


def test_the_next_change_is_a_pool_queue_waiting_long_enough() -> None:
    snap = library(
        [DriveView(0, 9, barcode="P00001L9", holders=(1,)), DriveView(1, 9)],
        [tape("P00001L9", drive=0, pool="p", used_bytes=5), tape("P00002L9", 2, pool="p")],
    )
    small = [to_pool(2, "p", 100, size=10**9)]
    due = next_change(snap, small, POLICY, 200)
    assert due == 100 + POLICY.pool_open_after_s
    assert plan(snap, small, POLICY, due - 0.001) == []
    assert plan(snap, small, POLICY, due) != []


CLOCKED = PlanPolicy(dismount_delay_s=100.0, pool_dismount_delay_s=250.0, max_age_s=300.0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenarios(),
    st.floats(0, 5000),
    st.floats(0, 1, exclude_max=True),
    st.sampled_from([POLICY, CLOCKED]),
)
def test_before_the_next_change_the_plan_is_the_same(
    scenario: tuple[LibrarySnapshot, list[MountRequest]],
    now: float,
    fraction: float,
    policy: PlanPolicy,
) -> None:
    snap, pending = scenario
    due = next_change(snap, pending, policy, now)
    assert due > now
    later = now + fraction * (due - now) if math.isfinite(due) else now + 10**6 * (1 + fraction)
    assert plan(snap, pending, policy, later) == plan(snap, pending, policy, now)
