"""A broker crash loses nothing it acknowledged, with the shipped persistence settings.

mosquitto runs with config/mosquitto.conf's `persistence`/`autosave_*` lines; the
daemon is away while an archive manager publishes; mosquitto is SIGKILLed after the
PUBACKs and restarted; the daemon, started afterwards, journals every event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.integration.broker import Broker, free_port, shipped_persistence
from tests.integration.daemon import DEFINITION, Daemon, wait_until, writable_tapes

pytestmark = pytest.mark.integration

PREFIX = "tw-kill"
EVENTS = 20


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(
        port=free_port(), folder=tmp_path / "mosquitto", extra_config=shipped_persistence()
    )
    broker.start()
    yield broker
    broker.stop()


def test_the_shipped_config_saves_on_every_change() -> None:
    settings = shipped_persistence().splitlines()
    assert "persistence true" in settings
    assert "autosave_on_changes true" in settings
    assert "autosave_interval 1" in settings


async def publish_acknowledged(broker: Broker, events: list[tuple[str, bytes, str]]) -> None:
    """Publish at QoS 1, each awaited until its PUBACK, then a barrier message.

    mosquitto sends a PUBACK before it saves, in the same turn of its event loop
    (src/loop.c: the save follows the socket handling), and reads one packet per
    client per turn. The barrier's PUBACK therefore comes after the save that
    covers the last event; without it, a kill racing that save could lose the last
    event, and the test would depend on timing.
    """
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier="archive-manager", protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        for topic, payload, event_id in events:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.UserProperty = [("event-id", event_id)]
            await client.publish(topic, payload, qos=1, properties=properties)
        await client.publish(f"{PREFIX}-barrier", b"", qos=1)


def test_events_acknowledged_before_a_broker_crash_reach_the_journal(
    tmp_path: Path, durable_broker: Broker
) -> None:
    daemon = Daemon(folder=tmp_path / "daemon", mqtt_port=durable_broker.port, prefix=PREFIX)
    daemon.start()
    try:
        # The daemon's session and subscription exist; then it goes away.
        wait_until(lambda: "mqtt connected" in daemon.log_tail(200), what="the subscription")
        daemon.stop()

        tapes = writable_tapes(DEFINITION)
        events = [
            (
                f"{PREFIX}/tasks/4/task_destinations/{n}/create",
                json.dumps({"folder_id": n, "tape_barcode": tapes[n % len(tapes)]}).encode(),
                f"kill-{n}",
            )
            for n in range(1, EVENTS + 1)
        ]
        asyncio.run(publish_acknowledged(durable_broker, events))
        durable_broker.kill()
        durable_broker.start()

        daemon.start()

        def journaled() -> set[str]:
            rows = daemon.query("SELECT dedup_key FROM events WHERE source='mqtt'")
            return {r["dedup_key"] for r in rows}

        expected = {f"mqtt:kill-{n}" for n in range(1, EVENTS + 1)}
        try:
            wait_until(lambda: journaled() == expected, timeout=60, what="every event journaled")
        except AssertionError:
            lost = sorted(expected - journaled())
            raise AssertionError(
                f"{len(lost)} of {EVENTS} acknowledged events lost: {lost}"
            ) from None
        statuses = daemon.query("SELECT status, COUNT(*) AS n FROM events GROUP BY status")
        assert {r["status"]: r["n"] for r in statuses} == {"applied": EVENTS}
    finally:
        daemon.stop()
