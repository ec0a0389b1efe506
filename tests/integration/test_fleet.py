"""Several daemons, one real mosquitto: each library publishes only under its own id."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from tests.integration.broker import Broker
from tests.integration.daemon import AUTH, Daemon, wait_until

PREFIX = "tw-fleet"


@pytest.fixture
def two_daemons(tmp_path: Path, broker: Broker) -> Iterator[tuple[Daemon, Daemon]]:
    daemons = tuple(
        Daemon(
            folder=tmp_path / name,
            mqtt_port=broker.port,
            prefix=PREFIX,
            extra_config=f'library_id = "{name}"',
        )
        for name in ("alpha", "beta")
    )
    try:
        for daemon in daemons:
            daemon.folder.mkdir(parents=True)
            daemon.write_config()
            config = daemon.config_path.read_text()
            daemon.config_path.write_text(
                config.replace("[http.users]", 'admin_users = ["tester"]\n[http.users]')
            )
            daemon.start()
        wait_until(
            lambda: all("mqtt connected" in d.log_tail(200) for d in daemons),
            what="both daemons subscribed",
        )
        yield daemons[0], daemons[1]
    finally:
        for daemon in daemons:
            daemon.stop()


def test_two_libraries_on_one_broker_never_overwrite_each_others_state(
    two_daemons: tuple[Daemon, Daemon], broker: Broker
) -> None:
    alpha, beta = two_daemons
    # A drive down in one library only: if both published on one topic, the last
    # writer would hide the other's drive state.
    root = f"http://127.0.0.1:{alpha.http_port}"
    with httpx.Client(base_url=root, auth=AUTH, timeout=10) as http:
        down = http.post("/admin/drives/1/down", json={"reason": "heads need cleaning"})
    assert down.status_code == 200, down.text

    async def scenario() -> dict[str, dict[str, object]]:
        retained: dict[str, dict[str, object]] = {}
        wanted = {
            f"{PREFIX}/libraries/{library}/state/{what}"
            for library in ("alpha", "beta")
            for what in ("drives/1", "task_destinations/41")
        }
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="archive") as client:
            await client.publish(
                f"{PREFIX}/tasks/9/task_destinations/41/create",
                json.dumps({"folder_id": 1, "folder_path": "/c/f"}).encode(),
                qos=1,
            )
            await client.subscribe(f"{PREFIX}/#", qos=1)
            async with asyncio.timeout(60):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    if message.payload and message.topic.value.startswith(f"{PREFIX}/libraries/"):
                        retained[message.topic.value] = json.loads(message.payload)
                    drives_settled = (
                        retained.get(f"{PREFIX}/libraries/alpha/state/drives/1", {}).get("up")
                        is False
                    )
                    if wanted <= retained.keys() and drives_settled:
                        return retained
        raise AssertionError("unreachable")

    retained = asyncio.run(scenario())
    assert retained[f"{PREFIX}/libraries/alpha/state/drives/1"]["up"] is False
    assert retained[f"{PREFIX}/libraries/beta/state/drives/1"]["up"] is True
    # Nothing published outside the libraries' own topics but the shared dead-letter.
    assert not [t for t in retained if "/state/" in t and "/libraries/" not in t]
    # Every log line names its library.
    assert '"library":"alpha"' in alpha.log_tail(5)
    assert '"library":"beta"' in beta.log_tail(5)


def fleet_status(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "worker.cli", "fleet", "status"]
    return subprocess.run(
        [*command, "--config", str(daemon.config_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def summaries(daemon: Daemon) -> dict[str, dict[str, Any]]:
    done = fleet_status(daemon, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return {summary["library_id"]: summary for summary in json.loads(done.stdout)}


def test_fleet_status_shows_every_library_and_the_one_whose_daemon_is_gone(
    two_daemons: tuple[Daemon, Daemon],
) -> None:
    alpha, beta = two_daemons

    def both_published() -> dict[str, dict[str, Any]] | None:
        found = summaries(alpha)
        return found if found.keys() == {"alpha", "beta"} else None

    both = wait_until(both_published, timeout=60, what="both libraries' summaries")
    for library_id in ("alpha", "beta"):
        assert both[library_id]["alive"] is True
        assert both[library_id]["drives"] == {"total": 4, "up": 4, "loaded": 0}
        assert both[library_id]["pools"]["offline-tapes"]["writable"] > 0
        assert both[library_id]["pools"]["offline-tapes"]["free_bytes"] > 0

    beta.kill()

    # The broker sees the connection drop and retains beta's last will.
    def beta_gone() -> dict[str, dict[str, Any]] | None:
        found = summaries(alpha)
        return found if found["beta"]["alive"] is False else None

    gone = wait_until(beta_gone, timeout=60, what="beta shown gone")
    assert gone["alpha"]["alive"] is True
    table = fleet_status(alpha).stdout
    assert re.search(r"^beta\s+GONE", table, re.MULTILINE), table
    assert re.search(r"^alpha\s+up\s+4/4", table, re.MULTILINE), table


def test_a_daemon_stopped_cleanly_is_shown_stopped(two_daemons: tuple[Daemon, Daemon]) -> None:
    alpha, beta = two_daemons
    wait_until(
        lambda: summaries(alpha).get("beta", {}).get("alive") is True,
        timeout=60,
        what="beta's summary",
    )
    assert beta.stop() == 0
    stopped = summaries(alpha)["beta"]
    assert (stopped["alive"], stopped["stopped"]) == (False, True)
    table = fleet_status(alpha).stdout
    assert re.search(r"^beta\s+STOPPED", table, re.MULTILINE), table
