"""The baselines the planner is measured against, deciding on one snapshot: what each
one mounts, keeps and fails."""

from __future__ import annotations

from drivers.media import Media
from worker.core.actions import Assign, Attach, Fail, Load, Unload
from worker.core.requests import MountRequest
from worker.core.snapshot import DriveView, LibrarySnapshot, TapeView
from worker.simulation.policies import Fcfs, PlannerPolicy, QueuePerTape, baselines, planner

GB = 10**9
TB = 10**12


def tape(
    barcode: str,
    slot: int | None,
    *,
    drive: int | None = None,
    used: int = TB,
    need_to_check: bool = False,
) -> TapeView:
    return TapeView(
        barcode,
        Media(9),
        slot=slot,
        drive=drive,
        home_slot=slot if slot is not None else 9,
        pool="p",
        used_bytes=used,
        capacity_bytes=18 * TB,
        need_to_check=need_to_check,
    )


def snapshot(*tapes: TapeView, drives: tuple[DriveView, ...] | None = None) -> LibrarySnapshot:
    return LibrarySnapshot(
        drives or (DriveView(0, 9), DriveView(1, 9)),
        {t.barcode: t for t in tapes},
        free_slots=(9, 10),
    )


def read(rid: int, barcode: str, arrival: float = 0.0) -> MountRequest:
    return MountRequest(rid, barcode, None, arrival, write=False, size_bytes=GB)


def test_every_baseline_has_a_distinct_name() -> None:
    names = [policy.name for policy in baselines()]
    assert len(set(names)) == len(names)
    assert any(name.startswith("B0") for name in names)
    assert any(name.startswith("B3") for name in names)
    assert isinstance(planner(), PlannerPolicy)
    assert planner().name == "planner"


def test_fcfs_mounts_the_oldest_requests_first_one_per_drive() -> None:
    state = snapshot(tape("A1L9", 1), tape("A2L9", 2), tape("A3L9", 3))
    pending = [read(3, "A3L9", 30.0), read(1, "A1L9", 10.0), read(2, "A2L9", 20.0)]
    actions = Fcfs("B0", 0.0).decide(state, pending, now=100.0)
    assert actions == [Load("A1L9", 1, 0, (1,)), Load("A2L9", 2, 1, (2,))]


def test_fcfs_unloads_an_idle_tape_after_its_delay_only() -> None:
    drives = (DriveView(0, 9, barcode="A1L9", idle_since=50.0), DriveView(1, 9))
    state = snapshot(tape("A1L9", None, drive=0), drives=drives)
    assert Fcfs("B0", 0.0).decide(state, [], now=60.0) == [Unload(0, "A1L9", 9)]
    assert Fcfs("B2", 60.0).decide(state, [], now=60.0) == []
    assert Fcfs("B2", 60.0).decide(state, [], now=110.0) == [Unload(0, "A1L9", 9)]
    assert Fcfs("B1", None).decide(state, [], now=10**6) == []


def test_fcfs_fails_what_no_tape_can_serve() -> None:
    state = snapshot(tape("A1L9", 1, need_to_check=True))
    actions = Fcfs("B0", 0.0).decide(state, [read(1, "A1L9"), read(2, "NOPE01L9")], now=0.0)
    assert [type(a) for a in actions] == [Fail, Fail]
    assert isinstance(actions[1], Fail)
    assert actions[1].reason == "unknown barcode NOPE01L9"


def test_cta_like_waits_for_age_or_volume_before_a_mount() -> None:
    state = snapshot(tape("A1L9", 1))
    young = [read(1, "A1L9", arrival=100.0)]
    b3 = QueuePerTape("B3", min_age_s=600.0)
    assert b3.decide(state, young, now=200.0) == []
    assert b3.next_wake(state, young, now=200.0) == 700.0
    assert b3.decide(state, young, now=700.0) == [Load("A1L9", 1, 0, (1,))]
    # Enough queued bytes make a mount worth it at once.
    big = [MountRequest(1, "A1L9", None, 100.0, write=False, size_bytes=60 * GB)]
    assert b3.decide(state, big, now=101.0) == [Load("A1L9", 1, 0, (1,))]


def test_cta_like_drains_a_mounted_tapes_queue_then_sends_it_home() -> None:
    drives = (DriveView(0, 9, barcode="A1L9", idle_since=0.0), DriveView(1, 9))
    state = snapshot(tape("A1L9", None, drive=0), tape("A2L9", 2), drives=drives)
    b3 = QueuePerTape("B3", min_age_s=0.0)
    assert b3.decide(state, [read(1, "A1L9"), read(2, "A1L9")], now=0.0) == [
        Attach(0, "A1L9", (1, 2))
    ]
    assert b3.decide(state, [], now=0.0) == [Unload(0, "A1L9", 9)]


def test_cta_like_sends_a_pools_writes_to_its_fullest_tape() -> None:
    state = snapshot(tape("A1L9", 1, used=2 * TB), tape("A2L9", 2, used=5 * TB))
    writes = [
        MountRequest(1, None, "p", 0.0, write=True, size_bytes=GB),
        MountRequest(2, None, "p", 1.0, write=True, size_bytes=GB),
    ]
    actions = QueuePerTape("B3", min_age_s=0.0).decide(state, writes, now=10.0)
    assert actions == [Assign(1, "A2L9"), Assign(2, "A2L9"), Load("A2L9", 2, 0, (1, 2))]
