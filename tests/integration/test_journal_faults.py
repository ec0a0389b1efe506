"""Journal faults against the real daemon: a full disk, a read-only journal, a
damaged page, a poison MQTT message and the start-up failures. The daemon stays
up where it must, loses nothing it acknowledged and resumes by itself; where it
cannot start it says why in one line and exits non-zero."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.integration.broker import Broker
from tests.integration.daemon import DEMO_LIBRARY, REPO, Daemon, wait_until
from tests.integration.faults import damage_page, fill, immutable, small_filesystem
from tests.worker.harness import CATALOG, plant_bug_in_handling
from worker.intake import destinations
from worker.intake import mqtt as mqtt_intake
from worker.intake.mqtt import MqttIntake
from worker.ops.health_file import read_health
from worker.settings import MqttSettings
from worker.state.journal import Journal

pytestmark = pytest.mark.integration

#: A bound, not an expectation: generous for a machine whose cores are busy.
WAIT_S = 180.0

#: Retry fast: the tests wait for the daemon to notice the cause is gone.
FAST_RETRY = "[journal]\nretry_first_s = 0.05\nretry_max_s = 0.5\n"


def body(barcode: str | None = None, pool: str | None = None) -> dict[str, object]:
    return {"folder_id": 1, "folder_path": "/c/f", "tape_barcode": barcode, "pool_name": pool}


def create(prefix: str, destination_id: int, **fields: str) -> tuple[str, bytes]:
    """An MQTT create: topic and payload."""
    topic = f"{prefix}/tasks/9/task_destinations/{destination_id}/create"
    return topic, json.dumps(body(**fields)).encode()


async def publish_all(broker: Broker, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="archive-manager") as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args, "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def journaled(daemon: Daemon, destination_ids: range) -> bool:
    rows = daemon.query(
        f"SELECT DISTINCT destination_id FROM events WHERE destination_id IN "
        f"({','.join('?' * len(destination_ids))})",
        tuple(destination_ids),
    )
    return len(rows) == len(destination_ids)


def fault_of(daemon: Daemon) -> str | None:
    health = read_health(daemon.state_dir)
    return health.get("journal_fault") if health else None


def assert_paused_then_resumed(
    daemon: Daemon, broker: Broker, prefix: str, kind: str, cause_gone: Any
) -> None:
    """While the fault lasts: MQTT events are held (not journaled, not acknowledged),
    HTTP answers 503 with Retry-After in the API's error shape, status says why, the
    daemon runs. When the cause goes: everything held is journaled, by itself."""
    ids = range(101, 106)
    asyncio.run(
        publish_all(
            broker,
            [create(prefix, i, pool="offline-tapes") for i in ids],
        )
    )
    wait_until(
        lambda: (fault_of(daemon) or "").startswith(f"journal {kind}"), timeout=WAIT_S, what=kind
    )
    wait_until(
        lambda: "mqtt intake paused" in daemon.log_tail(400),
        timeout=WAIT_S,
        what="the intake to hold its batch",
    )
    with daemon.http() as http:
        refused = http.post("/tasks/9/task_destinations", json=body(pool="offline-tapes"))
        keyed = http.post(
            "/tasks/9/task_destinations",
            json=body(pool="offline-tapes"),
            headers={"Idempotency-Key": "during-the-fault"},
        )
    assert keyed.status_code == 503
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) > 0
    error = refused.json()
    assert "journal" in error["messages"][0]
    assert error["details"]["journal"][0]["error"] == kind
    status = cli(daemon, "status")
    assert f"journal: PAUSED (journal {kind}" in status.stdout
    assert not journaled(daemon, ids)
    assert daemon.process is not None
    assert daemon.process.poll() is None

    cause_gone()
    wait_until(lambda: journaled(daemon, ids), timeout=WAIT_S, what="the held events journaled")
    wait_until(lambda: fault_of(daemon) is None, timeout=WAIT_S, what="the fault cleared")
    with daemon.http() as http:
        created = http.post("/tasks/9/task_destinations", json=body(pool="offline-tapes"))
        # The refused keyed create left nothing behind: its retry creates it now.
        retried = http.post(
            "/tasks/9/task_destinations",
            json=body(pool="offline-tapes"),
            headers={"Idempotency-Key": "during-the-fault"},
        )
    assert created.status_code == 201, created.text
    assert retried.status_code == 201, retried.text
    for i in ids:
        # Journaled once and applied: each held create has its request.
        assert len(daemon.query("SELECT * FROM events WHERE destination_id=?", (i,))) == 1
        assert daemon.request_of(i) is not None
    assert daemon.process.poll() is None


def test_a_full_disk_pauses_intake_and_it_resumes_by_itself(tmp_path: Path, broker: Broker) -> None:
    folder = tmp_path / "daemon"
    with small_filesystem(folder / "state", "6m") as state:
        daemon = Daemon(
            folder=folder, mqtt_port=broker.port, prefix="tw-full", extra_config=FAST_RETRY
        )
        daemon.start()
        try:
            wait_until(
                lambda: "mqtt connected" in daemon.log_tail(200),
                timeout=WAIT_S,
                what="mqtt connected",
            )
            filler = fill(state)
            assert_paused_then_resumed(daemon, broker, "tw-full", "disk full", filler.unlink)
        finally:
            code = daemon.stop()
        assert code == 0


def test_a_read_only_journal_pauses_intake_and_it_resumes_by_itself(
    tmp_path: Path, broker: Broker
) -> None:
    daemon = Daemon(
        folder=tmp_path / "daemon", mqtt_port=broker.port, prefix="tw-ro", extra_config=FAST_RETRY
    )
    daemon.start()
    try:
        wait_until(
            lambda: "mqtt connected" in daemon.log_tail(200),
            timeout=WAIT_S,
            what="mqtt connected",
        )
        journal = daemon.state_dir / "journal.sqlite3"
        # Not the -shm file: SQLite maps it, and a write fault there is a SIGBUS.
        with contextlib.ExitStack() as stack:
            stack.enter_context(immutable(journal, Path(f"{journal}-wal")))
            assert_paused_then_resumed(daemon, broker, "tw-ro", "read-only", stack.close)
    finally:
        code = daemon.stop()
    assert code == 0


def test_a_damaged_journal_stops_the_start_and_recover_brings_it_back(tmp_path: Path) -> None:
    daemon = Daemon(folder=tmp_path / "daemon")
    daemon.start()
    with daemon.http() as http:
        for _ in range(3):
            assert http.post("/tasks/9/task_destinations", json=body()).status_code == 201
    assert daemon.stop() == 0
    journal = daemon.state_dir / "journal.sqlite3"
    [root] = daemon.query("SELECT rootpage FROM sqlite_master WHERE name='events'")
    damage_page(journal, int(root["rootpage"]))

    started = subprocess.run(
        [sys.executable, "-m", "worker.cli", "run", "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert started.returncode == 2
    assert str(journal) in started.stderr
    assert "journal recover" in started.stderr
    assert "Traceback" not in started.stderr

    checked = cli(daemon, "journal", "check")
    assert checked.returncode == 2
    assert "damaged" in checked.stderr
    recovered = cli(daemon, "journal", "recover", "--replace")
    assert recovered.returncode == 0, recovered.stderr
    assert "3 destinations" in recovered.stdout
    assert list(daemon.state_dir.glob("journal.sqlite3.damaged-*"))
    assert cli(daemon, "journal", "check").returncode == 0

    daemon.start()
    try:
        with daemon.http() as http:
            listed = http.get("/tasks/9/task_destinations").json()
            assert listed["count"] == 3
            assert http.post("/tasks/9/task_destinations", json=body()).status_code == 201
    finally:
        assert daemon.stop() == 0


def run_expecting_failure(daemon: Daemon) -> subprocess.CompletedProcess[str]:
    started = subprocess.run(
        [sys.executable, "-m", "worker.cli", "run", "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert started.returncode != 0
    assert "Traceback" not in started.stderr
    assert len(started.stderr.strip().splitlines()) == 1, started.stderr
    return started


def test_start_up_failures_end_with_one_line_and_a_status(tmp_path: Path) -> None:
    # A state directory that takes no new file (for root too).
    daemon = Daemon(folder=tmp_path / "ro")
    daemon.folder.mkdir(parents=True)
    daemon.write_config()
    daemon.state_dir.mkdir()
    with immutable(daemon.state_dir):
        failed = run_expecting_failure(daemon)
    assert failed.returncode == 1
    assert f"{daemon.state_dir}: the state directory is not writable" in failed.stderr

    # A library definition that is not there.
    daemon = Daemon(folder=tmp_path / "nolib", library=tmp_path / "missing.toml")
    daemon.folder.mkdir(parents=True)
    daemon.write_config()
    failed = run_expecting_failure(daemon)
    assert failed.returncode == 2
    assert "missing.toml" in failed.stderr

    # A port another process listens on.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = Daemon(folder=tmp_path / "port", http_port=port)
        daemon.folder.mkdir(parents=True)
        daemon.write_config()
        failed = run_expecting_failure(daemon)
    assert failed.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in failed.stderr


# -- a poison message, in-process so that a bug can be planted -------------------------


@pytest.fixture(params=["handling", "decoding"])
def planted_bug(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Handling (inside the journal's guard of each event) or decoding (before it) of
    any event for tape NOD401L9 raises, as a bug would."""
    if request.param == "handling":
        plant_bug_in_handling(monkeypatch, KeyError("a bug in the handling of this event"))
        return
    real_to_event = mqtt_intake.to_event

    def buggy_decoding(
        prefix: str, topic: str, payload: bytes, *args: Any, **kwargs: Any
    ) -> destinations.DestinationEvent | destinations.RejectedInput:
        if b"NOD401L9" in payload:
            raise KeyError("a bug in the decoding of this event")
        return real_to_event(prefix, topic, payload, *args, **kwargs)

    monkeypatch.setattr(mqtt_intake, "to_event", buggy_decoding)


async def test_a_poison_mqtt_message_is_journaled_dead_lettered_and_never_comes_back(
    tmp_path: Path, broker: Broker, planted_bug: None
) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    await journal.sync_catalog(CATALOG, 0.0)
    settings = MqttSettings(
        host="127.0.0.1", port=broker.port, prefix="tw-poison", client_id="poison"
    )

    async def changed(_: set[int]) -> None:
        return None

    def intake() -> MqttIntake:
        return MqttIntake(settings, journal, hold_seconds=60, on_change=changed, clock=lambda: 1.0)

    async def rows(destination_id: int) -> list[Any]:
        """The journal's events of a destination (a message that never decoded has
        only its topic)."""
        topic = f"tw-poison/tasks/9/task_destinations/{destination_id}/create"
        return [
            e
            for e in await journal.events(limit=100)
            if e.destination_id == destination_id or e.topic == topic
        ]

    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="watcher") as watcher:
            await watcher.subscribe("tw-poison/dead-letter", qos=1)
            first = intake()
            running = asyncio.create_task(first.run())
            async with asyncio.timeout(30):
                await first.connected.wait()
            await publish_all(
                broker,
                [
                    create("tw-poison", 2, barcode="NOD401L9"),
                    create("tw-poison", 3, barcode="NOD400L9"),
                ],
            )
            async with asyncio.timeout(30):
                message = await anext(watcher.messages)
            assert isinstance(message.payload, bytes)
            dead = json.loads(message.payload)
            assert "poison event" in dead["reason"]
            assert "KeyError" in dead["reason"]
            async with asyncio.timeout(30):
                while not await rows(3):
                    await asyncio.sleep(0.02)
            [poison] = await rows(2)
            assert poison.status == "rejected"
            assert poison.reason is not None
            assert poison.reason.startswith("poison event")
            assert running.done() is False  # the intake survived it

            # A restart resumes the same session: the poison message was acknowledged,
            # so it does not come back to crash anything; the next event is served.
            await stopped(running)
            second = intake()
            again = asyncio.create_task(second.run())
            async with asyncio.timeout(30):
                await second.connected.wait()
            await publish_all(
                broker,
                [create("tw-poison", 4, barcode="NOD400L9")],
            )
            async with asyncio.timeout(30):
                while not await rows(4):
                    await asyncio.sleep(0.02)
            assert len(await rows(2)) == 1
            await stopped(again)
        # The operator finds it where rejected events are listed.
        config = tmp_path / "tapeworker.toml"
        config.write_text(f'state_dir = "{tmp_path}"\nlibrary = "{DEMO_LIBRARY}"\n')
        listed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "worker.cli", "events", "--rejected", "--config", str(config)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert "poison event: handling raised KeyError" in listed.stdout
    finally:
        await journal.close()


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_the_running_daemon_prunes_what_ended_and_keeps_what_lives(tmp_path: Path) -> None:
    daemon = Daemon(
        folder=tmp_path / "daemon",
        # A retention of about a second, pruned twice a second.
        extra_config="[journal]\nretention_days = 0.00001\nprune_interval_s = 0.5\n",
    )
    daemon.start()
    try:
        with daemon.http() as http:
            live = http.post("/tasks/9/task_destinations", json=body())
            assert live.status_code == 201, live.text
            gone = http.post("/tasks/9/task_destinations", json=body())
            assert http.delete(f"/tasks/9/task_destinations/{gone.json()['id']}").status_code == 204
            assert http.post("/tasks/9/task_destinations", content=b"{").status_code == 400
            wait_until(
                lambda: not daemon.query("SELECT * FROM events"),
                timeout=WAIT_S,
                what="the events pruned",
            )
            wait_until(
                lambda: not daemon.query("SELECT * FROM destinations WHERE deleted=1"),
                timeout=WAIT_S,
                what="the destroyed destination pruned",
            )
            # The rows go before the line that reports them is written: wait for it.
            wait_until(
                lambda: '"journal pruned"' in daemon.log_tail(400),
                timeout=WAIT_S,
                what="the prune logged",
            )
            # The live destination stays, and a new one never reuses a pruned id.
            assert http.get(f"/tasks/9/task_destinations/{live.json()['id']}").status_code == 200
            again = http.post("/tasks/9/task_destinations", json=body())
            assert again.json()["id"] > gone.json()["id"]
    finally:
        assert daemon.stop() == 0
