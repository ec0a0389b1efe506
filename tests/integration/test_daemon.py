"""End to end: destination events in, tapes mounted on the simulated library.

Real parts only: the daemon runs as its own process, mosquitto is a real broker,
the journal is a real SQLite file and the library is the simulator's state file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from drivers.sim.library import SimulatedLibrary
from tests.integration.broker import Broker
from tests.integration.daemon import DEFINITION, Daemon, wait_until, writable_tapes

pytestmark = pytest.mark.integration


TAPE = writable_tapes(DEFINITION)[0]
POOLS = sorted({t.pool for t in DEFINITION.tapes if t.pool})


@pytest.fixture(params=["sim", "mtx", "scsi"])
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """The daemon on the in-process simulator, and on the real mtx backend driving
    the simulator through the stand-in mtx and mt executables, and through Debian's
    own mtx and mt against the SCSI emulation."""
    daemon = Daemon(folder=tmp_path / "daemon", backend=request.param)
    daemon.start()
    yield daemon
    daemon.close()


@pytest.fixture
def mqtt_daemon(tmp_path: Path, broker: Broker) -> Iterator[Daemon]:
    daemon = Daemon(folder=tmp_path / "daemon", mqtt_port=broker.port, prefix="tw-test")
    daemon.start()
    # Listening on HTTP is not subscribed on MQTT: an event published before the
    # daemon's first subscription has no session to wait in.
    wait_until(lambda: "mqtt connected" in daemon.log_tail(200), what="the subscription")
    yield daemon
    daemon.stop()


def create_body(**fields: object) -> dict[str, object]:
    # The seed's create body, with this library's names in it.
    body: dict[str, object] = {
        "folder_id": 1,
        "folder_path": "/my-container/my-file.txt",
        "tape_id": None,
        "tape_barcode": None,
        "pool_id": None,
        "pool_name": None,
    }
    body.update(fields)
    return body


def shown_in_state(http: httpx.Client, destination: int, state: str) -> dict[str, Any]:
    """The destination as the API shows it, once it shows `state`.

    The API answers from the state in memory, which takes a commit's changes after
    the commit returns: the journal's row can be seen a moment before the answer."""

    def show() -> dict[str, Any] | None:
        shown: dict[str, Any] = http.get(f"/tasks/7/task_destinations/{destination}").json()
        return shown if shown["state"]["state"] == state else None

    return wait_until(show, what=f"the API to show destination {destination} {state}")


# -- HTTP ------------------------------------------------------------------------------


def test_http_create_mounts_the_tape_and_destroy_releases_it(daemon: Daemon) -> None:
    with daemon.http() as http:
        response = http.post("/tasks/7/task_destinations", json=create_body(tape_barcode=TAPE))
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["tape_barcode"] == TAPE
        destination = created["id"]

        ready = daemon.wait_request(destination, "ready")
        drive = ready["drive"]
        assert daemon.library_inventory().where(TAPE) == ("drive", drive)

        shown = shown_in_state(http, destination, "ready")
        assert shown["state"]["drive"] == drive
        assert shown["state"]["device"] == DEFINITION.drive(drive).device
        assert shown["tape"]["location"] == f"Drive {drive}"
        assert shown["tape"]["mounted"] == 1
        assert shown["tape"]["mount_count"] >= 1

        index = http.get("/tasks/7/task_destinations").json()
        assert index["count"] == 1
        assert index["task_destinations"][0]["id"] == destination

        assert http.delete(f"/tasks/7/task_destinations/{destination}").status_code == 204
        assert daemon.request_of(destination)["state"] == "released"  # type: ignore[index]
        assert http.get(f"/tasks/7/task_destinations/{destination}").status_code == 404

    [load] = daemon.query("SELECT * FROM operations WHERE kind='load'")
    assert (load["barcode"], load["state"]) == (TAPE, "done")


def test_http_update_to_a_pool_mounts_a_writable_tape_of_it(daemon: Daemon) -> None:
    pool = POOLS[-1]
    with daemon.http() as http:
        destination = http.post(
            "/tasks/7/task_destinations", json=create_body(tape_barcode=TAPE)
        ).json()["id"]
        daemon.wait_request(destination, "ready")
        response = http.put(
            f"/tasks/7/task_destinations/{destination}", json=create_body(pool_name=pool)
        )
        assert response.status_code == 200, response.text
    ready = daemon.wait_request(destination, "ready")
    assert ready["pool"] == pool
    assert ready["barcode"] in writable_tapes(DEFINITION, pool)
    assert daemon.library_inventory().where(ready["barcode"]) == ("drive", ready["drive"])
    states = [r["state"] for r in daemon.query("SELECT state FROM requests ORDER BY id")]
    assert states == ["released", "ready"]


def test_http_unknown_barcode_fails_and_nothing_moves(daemon: Daemon) -> None:
    before = daemon.library_inventory()
    with daemon.http() as http:
        destination = http.post(
            "/tasks/7/task_destinations", json=create_body(tape_barcode="NOPE00L9")
        ).json()["id"]
        failed = daemon.wait_request(destination, "failed")
        assert failed["reason"] == "unknown barcode NOPE00L9: not in this library"
        shown = shown_in_state(http, destination, "failed")
        assert shown["state"]["reason"] == failed["reason"]
    assert daemon.query("SELECT * FROM operations") == []
    assert daemon.library_inventory() == before


def test_http_malformed_body_is_rejected_and_the_next_is_served(daemon: Daemon) -> None:
    with daemon.http() as http:
        bad = http.post(
            "/tasks/7/task_destinations",
            content=b'{"tape_barcode": ["not", "a", "string"]}',
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 400
        assert "tape_barcode" in bad.json()["messages"][0]
        assert bad.json()["details"]["tape_barcode"][0]["error"] == "invalid"
        good = http.post("/tasks/7/task_destinations", json=create_body(tape_barcode=TAPE))
        assert good.status_code == 201
        daemon.wait_request(good.json()["id"], "ready")
    [rejected] = daemon.query("SELECT * FROM events WHERE status='rejected'")
    assert "tape_barcode" in rejected["reason"]


def test_http_requires_credentials(daemon: Daemon) -> None:
    with daemon.http() as http:
        response = http.get("/tasks/7/task_destinations", auth=("tester", "wrong"))
    assert response.status_code == 401


# -- MQTT ------------------------------------------------------------------------------


def payload_bytes(message: aiomqtt.Message) -> bytes:
    assert isinstance(message.payload, bytes | bytearray)
    return bytes(message.payload)


async def publish(broker: Broker, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="archive-manager") as client:
        await client.publish(topic, payload, qos=1)


def test_mqtt_create_twice_leaves_one_request_and_publishes_state(
    mqtt_daemon: Daemon, broker: Broker
) -> None:
    topic = "tw-test/tasks/9/task_destinations/41/create"
    payload = json.dumps(create_body(tape_barcode=TAPE)).encode()

    async def scenario() -> dict[str, object]:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="watcher") as watcher:
            await watcher.subscribe("tw-test/libraries/demo/state/task_destinations/41", qos=1)
            await publish(broker, topic, payload)
            await publish(broker, topic, payload)
            async with asyncio.timeout(20):
                async for message in watcher.messages:
                    state: dict[str, object] = json.loads(payload_bytes(message))
                    if state.get("state", {}).get("state") == "ready":  # type: ignore[attr-defined]
                        return state
        raise AssertionError("no ready state published")

    state = asyncio.run(scenario())
    assert state["id"] == 41
    ready = mqtt_daemon.wait_request(41, "ready")
    wait_until(
        lambda: len(mqtt_daemon.query("SELECT * FROM events WHERE destination_id=41")) == 2,
        what="both deliveries journaled",
    )
    assert len(mqtt_daemon.query("SELECT * FROM requests WHERE destination_id=41")) == 1
    assert mqtt_daemon.library_inventory().where(TAPE) == ("drive", ready["drive"])

    asyncio.run(publish(broker, "tw-test/tasks/9/task_destinations/41/destroy", b""))
    mqtt_daemon.wait_request(41, "released")


def test_mqtt_malformed_event_goes_to_dead_letter_and_next_is_served(
    mqtt_daemon: Daemon, broker: Broker
) -> None:
    async def scenario() -> dict[str, object]:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="watcher") as watcher:
            await watcher.subscribe("tw-test/dead-letter", qos=1)
            await publish(broker, "tw-test/tasks/9/task_destinations/5/create", b"{not json")
            async with asyncio.timeout(20):
                message = await anext(watcher.messages)
            letter: dict[str, object] = json.loads(payload_bytes(message))
            return letter

    letter = asyncio.run(scenario())
    assert str(letter["reason"]).startswith("payload is not JSON")
    [rejected] = mqtt_daemon.query("SELECT * FROM events WHERE status='rejected'")
    assert rejected["topic"] == "tw-test/tasks/9/task_destinations/5/create"

    payload = json.dumps(create_body(tape_barcode=TAPE)).encode()
    asyncio.run(publish(broker, "tw-test/tasks/9/task_destinations/6/create", payload))
    mqtt_daemon.wait_request(6, "ready")


def test_mqtt_events_published_while_the_daemon_is_down_arrive(
    mqtt_daemon: Daemon, broker: Broker
) -> None:
    # The session exists once the daemon has connected; then it goes away.
    wait_until(
        lambda: "mqtt connected" in mqtt_daemon.log_tail(200), what="daemon connected to broker"
    )
    mqtt_daemon.stop()
    payload = json.dumps(create_body(tape_barcode=TAPE)).encode()
    asyncio.run(publish(broker, "tw-test/tasks/9/task_destinations/77/create", payload))
    mqtt_daemon.start()
    mqtt_daemon.wait_request(77, "ready")


# -- systemd ---------------------------------------------------------------------------


def test_daemon_tells_systemd_it_is_ready_and_stops_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(30)
        daemon = Daemon(
            folder=tmp_path / "daemon",
            # A 0.2 s watchdog: the daemon must ping every 0.1 s.
            extra_env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"},
        )
        daemon.start()
        try:
            seen: list[str] = []
            while seen.count("WATCHDOG=1") < 3:
                seen += sock.recv(4096).decode().splitlines()
            assert "READY=1" in seen
        finally:
            code = daemon.stop()
        assert code == 0
        while "STOPPING=1" not in seen:
            seen += sock.recv(4096).decode().splitlines()
    assert '"stopped"' in daemon.log_tail()


@pytest.mark.parametrize("backend", ["sim", "mtx", "scsi"])
def test_inventory_command_shows_the_library_with_both_backends(
    tmp_path: Path, backend: str
) -> None:
    daemon = Daemon(folder=tmp_path / "daemon", backend=backend)
    daemon.folder.mkdir(parents=True)
    if backend == "mtx":
        daemon.prepare_mtx_backend()
    elif backend == "scsi":
        daemon.prepare_scsi_backend()
    else:
        # The simulated library is the daemon's state: the CLI reads it, never makes one.
        SimulatedLibrary.open(
            DEFINITION, state_file=daemon.state_dir / "sim-library.json", speed=500.0
        )
    daemon.write_config()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "inventory",
            "--json",
            "--config",
            str(daemon.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **daemon.extra_env},
    )
    daemon.close()
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [d["index"] for d in data["drives"]] == [d.index for d in DEFINITION.drives]
    assert [d["device"] for d in data["drives"]] == [d.device for d in DEFINITION.drives]
    assert len(data["slots"]) == DEFINITION.slots + DEFINITION.import_export
    by_slot = {s["number"]: s for s in data["slots"]}
    for tape in DEFINITION.tapes:
        assert tape.slot is not None
        assert by_slot[tape.slot] == {
            "number": tape.slot,
            "full": True,
            "barcode": tape.barcode,
            "import_export": tape.slot > DEFINITION.slots,
        }
    assert sum(s["import_export"] for s in data["slots"]) == DEFINITION.import_export


def test_a_failing_drive_is_marked_down_on_mqtt_and_in_status(
    tmp_path: Path, broker: Broker
) -> None:
    daemon = Daemon(
        folder=tmp_path / "daemon", mqtt_port=broker.port, prefix="tw-down", drive_down_after=1
    )
    daemon.start()
    try:
        state_file = daemon.state_dir / "sim-library.json"
        for drive in DEFINITION.drives:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "drivers.sim",
                    "fault",
                    "--state",
                    str(state_file),
                    "kill-drive",
                    str(drive.index),
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )

        async def scenario() -> dict[str, object]:
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="ops") as ops:
                await ops.subscribe("tw-down/libraries/demo/state/drives/+", qos=1)
                await publish(
                    broker,
                    "tw-down/tasks/1/task_destinations/3/create",
                    json.dumps(create_body(tape_barcode=TAPE)).encode(),
                )
                async with asyncio.timeout(20):
                    async for message in ops.messages:
                        drive: dict[str, object] = json.loads(payload_bytes(message))
                        if drive["up"] is False:
                            return drive
            raise AssertionError("no drive published as down")

        down = asyncio.run(scenario())
        assert "down after repeated failures" in str(down["reason"])
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "worker.cli",
                "status",
                "--json",
                "--config",
                str(daemon.config_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        drives = json.loads(status.stdout)["drives"]
        assert any(d["index"] == down["index"] and d["up"] is False for d in drives)
    finally:
        daemon.stop()


def test_mqtt_update_to_a_pool_and_an_unknown_barcode(mqtt_daemon: Daemon, broker: Broker) -> None:
    pool = POOLS[0]
    base = "tw-test/tasks/9/task_destinations"
    before = mqtt_daemon.library_inventory()
    asyncio.run(publish(broker, f"{base}/50/create", dump_body(tape_barcode="NOPE01L9")))
    failed = mqtt_daemon.wait_request(50, "failed")
    assert failed["reason"] == "unknown barcode NOPE01L9: not in this library"
    assert mqtt_daemon.query("SELECT * FROM operations") == []
    assert mqtt_daemon.library_inventory() == before

    asyncio.run(publish(broker, f"{base}/51/create", dump_body(tape_barcode=TAPE)))
    mqtt_daemon.wait_request(51, "ready")
    asyncio.run(publish(broker, f"{base}/51/update", dump_body(pool_name=pool)))

    def pool_ready() -> object:
        row = mqtt_daemon.request_of(51)
        return row if row is not None and row["pool"] == pool and row["state"] == "ready" else None

    ready = wait_until(pool_ready, what="the pool request ready")
    assert ready["barcode"] in writable_tapes(DEFINITION, pool)  # type: ignore[index]
    assert mqtt_daemon.library_inventory().where(ready["barcode"]) == (  # type: ignore[index]
        "drive",
        ready["drive"],  # type: ignore[index]
    )


def dump_body(**fields: object) -> bytes:
    return json.dumps(create_body(**fields)).encode()


def test_sighup_reloads_planner_settings_and_refuses_a_bad_file(tmp_path: Path) -> None:
    daemon = Daemon(folder=tmp_path / "daemon")
    daemon.start()
    try:
        assert daemon.process is not None
        good = daemon.config_path.read_text().replace(
            "dismount_delay_s = 3600", "dismount_delay_s = 42"
        )
        daemon.config_path.write_text(good)
        daemon.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: '"dismount_delay_s":42.0' in daemon.log_tail(20), what="the reload logged"
        )
        daemon.config_path.write_text(good.replace("[planner]", "[planner\n"))
        daemon.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in daemon.log_tail(20), what="the refusal logged")
        with daemon.http() as http:
            assert http.get("/tasks/7/task_destinations").status_code == 200
    finally:
        assert daemon.stop() == 0


def test_a_library_that_needs_a_person_fails_the_mount_at_once(tmp_path: Path) -> None:
    """Debian's mtx reports not ready, manual intervention required (02/04/03): the
    destination fails with that reason on the first attempt, no retries spent."""
    daemon = Daemon(folder=tmp_path / "daemon", backend="scsi")
    daemon.start()
    try:
        SimulatedLibrary.open(
            DEFINITION, state_file=daemon.state_dir / "sim-library.json", speed=500.0
        ).inject("load", "manual_intervention", count=5)
        with daemon.http() as http:
            response = http.post("/tasks/7/task_destinations", json=create_body(tape_barcode=TAPE))
            assert response.status_code == 201, response.text
            failed = daemon.wait_request(response.json()["id"], "failed")
        assert failed["attempts"] == 1
        assert "manual intervention required" in failed["reason"]
        loads = daemon.query("SELECT state, error_class FROM operations WHERE kind='load'")
        assert [tuple(row) for row in loads] == [("failed", "InterventionRequiredError")]
    finally:
        daemon.close()
