"""The planner's view of the library: what makes a drive idle and a tape writable,
usable or scratch, and that the views are frozen values."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import pytest

from drivers.media import Media
from worker.core.snapshot import DriveView, LibrarySnapshot, TapeView

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
