"""SIGTERM with a robot move that never ends: the daemon stops within its limit,
says what it left, and the next start finds the move interrupted."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from drivers.sim.library import SimulatedLibrary
from tests.integration.daemon import DEFINITION, Daemon, wait_until, writable_tapes

pytestmark = pytest.mark.integration

TAPE = writable_tapes(DEFINITION)[0]


def _set_robot_speed(daemon: Daemon, speed: float) -> None:
    # The daemon reads the simulator's state file at every step: its next move
    # takes 7 s / speed.
    SimulatedLibrary.open(DEFINITION, state_file=daemon.state_dir / "sim-library.json", speed=speed)


def test_sigterm_does_not_wait_for_a_move_that_never_ends(tmp_path: Path) -> None:
    daemon = Daemon(
        folder=tmp_path / "daemon", extra_env={"TAPEWORKER_EXECUTOR__STOP_TIMEOUT_S": "1"}
    )
    daemon.start()
    try:
        _set_robot_speed(daemon, 1e-9)
        with daemon.http() as http:
            created = http.post(
                "/tasks/7/task_destinations",
                json={"folder_id": 1, "tape_barcode": TAPE},
            )
        assert created.status_code == 201, created.text
        destination = created.json()["id"]
        wait_until(
            lambda: daemon.query("SELECT id FROM operations WHERE state='intent'"),
            what="the load to begin",
        )
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        # The move would take 7e9 s: the daemon ends only because its wait is bounded.
        code = daemon.process.wait(timeout=120)
    finally:
        daemon.stop()
    assert code == 0
    log = daemon.log_tail(200)
    assert "stopped with moves in progress" in log
    assert f"load {TAPE} from slot" in log
    [load] = daemon.query("SELECT * FROM operations")
    assert (load["kind"], load["state"]) == ("load", "intent")

    _set_robot_speed(daemon, 500.0)
    daemon.start()
    try:
        ready = daemon.wait_request(destination, "ready", timeout=60)
        assert ready["barcode"] == TAPE
        states = [r["state"] for r in daemon.query("SELECT state FROM operations ORDER BY id")]
        assert states[0] == "interrupted"
    finally:
        daemon.stop()
