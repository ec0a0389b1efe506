"""The planner's view of the library: what makes a drive idle and a tape writable,
usable or scratch, and that the views are frozen values."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import pytest

from drivers.media import Media
from worker.core.snapshot import (
    DriveView,
    LibrarySnapshot,
    Tape,
    TapeView,
    TapeViews,
    build_snapshot,
    drive_view,
    tape_view,
)

TAPE = TapeView("NOD400L9", Media(9), slot=1, home_slot=1, pool="p", capacity_bytes=18 * 10**12)
#: Each flag that makes a tape unwritable, one at a time.
UNWRITABLE = ("cleaning", "locked", "write_protected", "need_to_check", "ejected", "full")


def flagged(flag: str) -> TapeView:
    flags: dict[str, Any] = {flag: True}
    return replace(TAPE, **flags)


def test_a_fresh_drive_is_idle() -> None:
    assert DriveView(0, 9).idle


@pytest.mark.parametrize(
    "drive",
    [
        DriveView(0, 9, barcode="NOD400L9", holders=(3,)),
        DriveView(0, 9, busy=True),
        DriveView(0, 9, available=False),
    ],
)
def test_a_held_busy_or_down_drive_is_not_idle(drive: DriveView) -> None:
    assert not drive.idle


def test_a_loaded_drive_nobody_holds_is_idle() -> None:
    # Idle means free to take work: an unheld cartridge can be swapped out.
    assert DriveView(0, 9, barcode="NOD400L9", idle_since=5.0).idle


def test_a_plain_tape_is_writable_usable_and_scratch() -> None:
    assert TAPE.writable
    assert TAPE.usable
    assert TAPE.scratch
    assert not replace(TAPE, used_bytes=1).scratch


@pytest.mark.parametrize("flag", UNWRITABLE)
def test_each_flag_makes_a_tape_unwritable(flag: str) -> None:
    assert not flagged(flag).writable


@pytest.mark.parametrize(
    ("flag", "usable"),
    [
        ("cleaning", False),
        ("need_to_check", False),
        ("ejected", False),
        # Still readable: a lock, write protection or a full tape stop writes only.
        ("locked", True),
        ("write_protected", True),
        ("full", True),
    ],
)
def test_which_flags_stop_a_mount_for_reading(flag: str, usable: bool) -> None:
    assert flagged(flag).usable is usable


def test_views_are_frozen_values() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TAPE.locked = True  # type: ignore[misc]
    drive = DriveView(0, 9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        drive.busy = True  # type: ignore[misc]
    assert DriveView(1, 8, holders=(1, 2)) == DriveView(1, 8, holders=(1, 2))
    assert hash(DriveView(1, 8)) == hash(DriveView(1, 8))


def test_a_snapshot_defaults_to_no_free_slot_an_idle_robot_and_no_caps() -> None:
    snapshot = LibrarySnapshot((DriveView(0, 9),), {TAPE.barcode: TAPE})
    assert snapshot.free_slots == ()
    assert not snapshot.robot_busy
    assert snapshot.pool_drive_caps == {}
    # Each snapshot gets its own caps mapping, never one shared default.
    other = LibrarySnapshot((), {})
    assert other.pool_drive_caps is not snapshot.pool_drive_caps


# -- the builder the daemon and the simulator share ----------------------------------


@dataclasses.dataclass(frozen=True)
class _Drive:
    index: int
    generation: int = 9
    barcode: str | None = None
    up: bool = True
    idle_since: float | None = None
    needs_cleaning: bool = False


def test_a_tape_view_takes_its_media_and_capacity_from_the_label() -> None:
    view = tape_view(Tape("NOD400L9", slot=3, home_slot=3, pool="p", used_bytes=5))
    assert (view.media, view.slot, view.drive, view.home_slot, view.pool) == (
        Media(9),
        3,
        None,
        3,
        "p",
    )
    assert view.capacity_bytes == Media(9).capacity_bytes
    assert view.used_bytes == 5
    assert tape_view(Tape("NOLABEL"), capacity_bytes=7).capacity_bytes == 7
    assert tape_view(Tape("NOLABEL")).capacity_bytes == 0


def test_a_view_holds_its_tape_facts_and_only_adds_media_and_capacity() -> None:
    facts = {f.name for f in dataclasses.fields(Tape)}
    assert {f.name for f in dataclasses.fields(TapeView)} - facts == {"media", "capacity_bytes"}
    # Every fact away from its default: the builder must copy each of them.
    tape = Tape(
        "NOD400L9",
        slot=3,
        drive=1,
        home_slot=4,
        pool="p",
        cleaning=True,
        locked=True,
        write_protected=True,
        need_to_check=True,
        ejected=True,
        full=True,
        used_bytes=5,
        cleaning_uses_left=2,
    )
    assert all(getattr(tape, f.name) != f.default for f in dataclasses.fields(Tape)[1:])
    view = tape_view(tape)
    assert isinstance(view, Tape)
    assert {name: getattr(view, name) for name in facts} == dataclasses.asdict(tape)


def test_a_tape_on_its_way_is_seen_where_it_is_headed() -> None:
    view = tape_view(Tape("NOD400L9", slot=3), where=(None, 1))
    assert (view.slot, view.drive) == (None, 1)


def test_a_drive_view_from_its_facts() -> None:
    view = drive_view(
        _Drive(2, barcode="NOD400L9", up=False, idle_since=4.0), holders=[7], busy=True
    )
    assert (view.index, view.barcode, view.holders, view.busy, view.available, view.idle_since) == (
        2,
        "NOD400L9",
        (7,),
        True,
        False,
        4.0,
    )


def test_a_snapshot_has_its_drives_and_free_slots_in_order() -> None:
    snapshot = build_snapshot(
        [DriveView(1, 9), DriveView(0, 9)], {}, free_slots={5, 2, 9}, robot_busy=True
    )
    assert [d.index for d in snapshot.drives] == [0, 1]
    assert snapshot.free_slots == (2, 5, 9)
    assert snapshot.robot_busy


def test_tape_views_are_kept_until_their_tape_changes() -> None:
    views = TapeViews()
    first, second = Tape("NOD400L9", slot=1), Tape("NOD401L9", slot=2)
    before = views.views([first, second])
    again = views.views([first, second])
    assert again["NOD400L9"] is before["NOD400L9"]
    changed = replace(second, slot=4)
    after = views.views([first, changed])
    assert after["NOD400L9"] is before["NOD400L9"]
    assert after["NOD401L9"].slot == 4
    assert sorted(views.views([first])) == ["NOD400L9"]


def test_tape_views_show_tapes_in_flight_where_they_go_without_keeping_it() -> None:
    views = TapeViews()
    tape = Tape("NOD400L9", slot=1)
    moving = views.views([tape], {"NOD400L9": (None, 0)})
    assert (moving["NOD400L9"].slot, moving["NOD400L9"].drive) == (None, 0)
    resting = views.views([tape])
    assert (resting["NOD400L9"].slot, resting["NOD400L9"].drive) == (1, None)
