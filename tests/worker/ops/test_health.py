"""Readiness and the watchdog's verdict, from the parts of the daemon they read: a
real journal file, a real simulated library's inventory, the executor's real
in-flight record. The daemon's wiring is checked end to end in
tests/integration/test_health.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.worker.harness import definition
from tests.worker.ops.running import Broker, Daemon, Loop, inventoried
from worker.ops.health import STUCK_AFTER_S, Check, alive_for_watchdog, planning_stuck, readiness
from worker.settings import FleetSettings, MqttSettings, Settings
from worker.state.journal import Journal


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        await journal.sync_catalog(definition(), time.time())
        yield journal
    finally:
        await journal.close()


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


async def test_ready_when_every_part_is(journal: Journal, tmp_path: Path) -> None:
    await inventoried(journal, tmp_path)
    checks = await readiness(Daemon(journal))
    assert checks == [Check("journal", True), Check("library", True), Check("planner", True)]


async def test_not_ready_before_the_first_inventory(journal: Journal) -> None:
    library = by_name(await readiness(Daemon(journal)))["library"]
    assert library == Check("library", False, "the library has not been inventoried yet")


async def test_not_ready_while_a_move_left_the_changer_in_doubt(
    journal: Journal, tmp_path: Path
) -> None:
    await inventoried(journal, tmp_path)
    daemon = Daemon(journal)
    assert daemon.executor is not None
    daemon.executor.in_flight.suspect(["AAA001L9"])
    library = by_name(await readiness(daemon))["library"]
    assert not library.ok
    assert library.reason == "an uncertain move: the library is re-inventoried"
    daemon.executor.in_flight.inventory_taken()
    assert by_name(await readiness(daemon))["library"].ok


async def test_a_journal_fault_is_reported_with_its_reason(journal: Journal) -> None:
    daemon = Daemon(journal, journal_fault="journal full: database or disk is full")
    check = by_name(await readiness(daemon))["journal"]
    assert check == Check("journal", False, "journal full: database or disk is full")


async def test_mqtt_is_checked_only_when_configured(journal: Journal) -> None:
    assert "mqtt" not in by_name(await readiness(Daemon(journal)))
    settings = Settings(mqtt=MqttSettings(host="broker.example"))
    daemon = Daemon(journal, settings=settings, mqtt=Broker())
    assert by_name(await readiness(daemon))["mqtt"] == Check(
        "mqtt", False, "not connected to broker.example"
    )
    assert daemon.mqtt is not None
    daemon.mqtt.connected.set()
    assert by_name(await readiness(daemon))["mqtt"].ok
    # An intake not started yet is not connected either.
    not_started = Daemon(journal, settings=settings, mqtt=None)
    assert not by_name(await readiness(not_started))["mqtt"].ok


async def test_a_planning_loop_that_does_not_come_round_is_stuck(journal: Journal) -> None:
    assert planning_stuck(Daemon(journal)) is None
    assert planning_stuck(Daemon(journal, reconciler=None)) == "not started"
    quiet = Daemon(journal, reconciler=Loop(time.monotonic() - STUCK_AFTER_S - 5))
    reason = planning_stuck(quiet)
    assert reason is not None
    assert reason.startswith("the planning loop has not come round for ")
    planner = by_name(await readiness(quiet))["planner"]
    assert not planner.ok
    assert (planner.reason or "").startswith("the planning loop has not come round for ")


async def test_the_watchdog_is_pinged_while_the_loop_turns_and_the_journal_answers(
    journal: Journal,
) -> None:
    assert await alive_for_watchdog(Daemon(journal)) is None
    # A journal that refuses writes still answers: no restart for a full disk.
    assert await alive_for_watchdog(Daemon(journal, journal_fault="journal full: x")) is None


async def test_the_watchdog_is_withheld_for_a_stuck_loop_or_a_journal_that_fails(
    journal: Journal, tmp_path: Path
) -> None:
    stuck = Daemon(journal, reconciler=Loop(time.monotonic() - STUCK_AFTER_S - 5))
    assert (await alive_for_watchdog(stuck) or "").startswith("the planning loop")
    assert await alive_for_watchdog(Daemon(None)) == "no journal"
    closed = await Journal.open(tmp_path / "closed.sqlite3")
    await closed.close()
    reason = await alive_for_watchdog(Daemon(closed))
    assert reason is not None
    assert reason.startswith("the journal failed to answer: ")


async def test_the_pool_intake_is_checked_only_in_a_fleet(journal: Journal) -> None:
    settings = Settings(mqtt=MqttSettings(host="broker.example"))
    assert "pools" not in by_name(await readiness(Daemon(journal, settings=settings)))
    fleet = Settings(mqtt=MqttSettings(host="broker.example"), fleet=FleetSettings(routing=True))
    daemon = Daemon(journal, settings=fleet, mqtt=Broker(), pools=Broker())
    assert by_name(await readiness(daemon))["pools"] == Check(
        "pools", False, "the pool intake is not connected"
    )
    assert daemon.pools is not None
    daemon.pools.connected.set()
    assert by_name(await readiness(daemon))["pools"].ok
