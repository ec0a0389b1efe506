"""Several daemons, one real mosquitto: each library publishes only under its own id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

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
    assert '"library": "alpha"' in alpha.log_tail(5)
    assert '"library": "beta"' in beta.log_tail(5)
