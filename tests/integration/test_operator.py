"""The operator's controls, through the running daemon, with the CLI as its client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from tests.integration.broker import Broker
from tests.integration.daemon import AUTH, DEMO_LIBRARY, Daemon, wait_until
from tests.integration.test_health import probe, sample

REPO = Path(__file__).resolve().parents[2]


def operator_daemon(
    folder: Path,
    library: Path = DEMO_LIBRARY,
    mqtt_port: int | None = None,
    extra_users: dict[str, str] | None = None,
) -> Daemon:
    daemon = Daemon(folder=folder, library=library, mqtt_port=mqtt_port, prefix="tw-op")
    folder.mkdir(parents=True)
    daemon.write_config()
    config = daemon.config_path.read_text()
    users = "".join(f'{name} = "{password}"\n' for name, password in (extra_users or {}).items())
    daemon.config_path.write_text(
        config.replace("[http.users]\n", f'admin_users = ["tester"]\n[http.users]\n{users}')
    )
    daemon.start()
    return daemon


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args, "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("TAPEWORKER_")},
        timeout=60,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def status(daemon: Daemon) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok(cli(daemon, "status", "--json")))
    return data


def create(daemon: Daemon, barcode: str) -> int:
    with daemon.http() as http:
        body = {"folder_id": 1, "folder_path": "/c/f", "tape_barcode": barcode}
        response = http.post("/tasks/7/task_destinations", json=body)
        assert response.status_code == 201, response.text
        destination: int = response.json()["id"]
        return destination


def planning_rounds(daemon: Daemon) -> float:
    return sample(probe(daemon, "/metrics").text, "tapeworker_planning_rounds_total") or 0


def after_rounds(daemon: Daemon, rounds: int) -> None:
    """Until the planning loop has come round `rounds` more times (it plans every
    pending request each round)."""
    target = planning_rounds(daemon) + rounds
    wait_until(lambda: planning_rounds(daemon) >= target, what=f"{rounds} planning rounds")


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    running = operator_daemon(tmp_path / "daemon")
    yield running
    assert running.stop() == 0


def test_a_drive_brought_back_up_gets_work_again(daemon: Daemon) -> None:
    for index in range(4):
        ok(cli(daemon, "drive", "down", str(index), "--reason", "cleaning the heads"))
    destination = create(daemon, "NOD400L8")
    after_rounds(daemon, 3)
    [request] = [r for r in status(daemon)["requests"] if r["destination"] == destination]
    assert request["state"] == "pending"
    assert request["waiting"].startswith("drive down: 0 (operator: cleaning the heads)")

    ok(cli(daemon, "drive", "up", "2", "--reason", "heads clean"))
    ready = daemon.wait_request(destination, "ready")
    assert ready["drive"] == 2

    drives = {d["index"]: d for d in status(daemon)["drives"]}
    assert drives[2]["up"] is True
    assert drives[0]["up"] is False
    events = json.loads(ok(cli(daemon, "events", "--json")))["events"]
    operator = [e for e in events if e["source"] == "operator"]
    assert operator[-1]["verb"] == "drive up"
    assert "tester" in operator[-1]["reason"]
    assert "heads clean" in operator[-1]["reason"]


def test_a_drained_daemon_mounts_nothing_new_and_says_so(daemon: Daemon) -> None:
    first = create(daemon, "NOD400L8")
    daemon.wait_request(first, "ready")
    ok(cli(daemon, "drain", "--reason", "robot maintenance"))
    second = create(daemon, "NOD402L8")
    after_rounds(daemon, 3)
    assert daemon.request_of(second)["state"] == "pending"  # type: ignore[index]
    assert daemon.request_of(first)["state"] == "ready", "what is mounted keeps its drive"  # type: ignore[index]
    shown = status(daemon)
    assert shown["draining"]["reason"] == "robot maintenance"
    [waiting] = [r for r in shown["requests"] if r["destination"] == second]
    assert waiting["waiting"].startswith("draining")
    assert "draining since" in ok(cli(daemon, "status"))
    assert sample(probe(daemon, "/metrics").text, "tapeworker_draining") == 1

    ok(cli(daemon, "resume"))
    daemon.wait_request(second, "ready")


def test_release_through_the_daemon(daemon: Daemon) -> None:
    destination = create(daemon, "NOD400L8")
    daemon.wait_request(destination, "ready")
    ok(cli(daemon, "release", str(destination), "--reason", "the mover hung"))
    daemon.wait_request(destination, "released")
    refused = cli(daemon, "release", "999")
    assert refused.returncode == 1
    assert "no destination 999" in refused.stderr


def test_a_cleared_tape_is_planned_again(tmp_path: Path) -> None:
    library = tmp_path / "library.toml"
    text = DEMO_LIBRARY.read_text()
    marked = text.replace(
        'barcode = "NOD400L8"\nslot = 2\n', 'barcode = "NOD400L8"\nslot = 2\nneed_to_check = true\n'
    )
    assert marked != text
    library.write_text(marked)
    daemon = operator_daemon(tmp_path / "daemon", library)
    try:
        refused = create(daemon, "NOD400L8")
        failed = daemon.wait_request(refused, "failed")
        assert "checked by an operator" in failed["reason"]

        ok(cli(daemon, "tape", "clear-check", "NOD400L8", "--reason", "label re-read fine"))
        assert "NOD400L8" not in status(daemon)["need_to_check"]
        planned = create(daemon, "NOD400L8")
        daemon.wait_request(planned, "ready")
    finally:
        assert daemon.stop() == 0


def test_controls_need_an_operator_account(daemon: Daemon) -> None:
    root = f"http://127.0.0.1:{daemon.http_port}"
    with httpx.Client(base_url=root, auth=AUTH, timeout=10) as http:
        assert http.post("/admin/drain", json={}).status_code == 200
        assert http.post("/admin/resume", json={}).status_code == 200
        assert http.post("/admin/drain", json={}, auth=("tester", "wrong")).status_code == 401
        unknown = http.post("/admin/tapes/NOT-A-TAPE/lock", json={})
        assert unknown.status_code == 404
        assert unknown.json()["messages"] == ["no tape NOT-A-TAPE"]


def test_actions_are_published_on_mqtt(tmp_path: Path, broker: Broker) -> None:
    daemon = operator_daemon(tmp_path / "daemon", mqtt_port=broker.port)
    try:
        wait_until(lambda: "mqtt connected" in daemon.log_tail(200), what="mqtt connected")

        async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="ops") as ops:
                await ops.subscribe("tw-op/libraries/demo/operator", qos=1)
                await ops.subscribe("tw-op/libraries/demo/state/drives/1", qos=1)
                await asyncio.to_thread(
                    lambda: ok(cli(daemon, "drive", "down", "1", "--reason", "noisy"))
                )
                action: dict[str, Any] | None = None
                async with asyncio.timeout(20):
                    async for message in ops.messages:
                        assert isinstance(message.payload, bytes | bytearray)
                        data = json.loads(bytes(message.payload))
                        if message.topic.matches("tw-op/libraries/demo/operator"):
                            action = data
                        elif data.get("up") is False and action is not None:
                            return action, data
                raise AssertionError("not published")

        action, drive = asyncio.run(scenario())
        assert (action["action"], action["target"], action["reason"]) == (
            "drive down",
            "drive 1",
            "noisy",
        )
        assert action["by"].startswith("tester")
        assert drive["reason"] == "operator: noisy"
    finally:
        assert daemon.stop() == 0
