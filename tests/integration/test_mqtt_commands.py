"""MQTT commands cannot go backwards: retained commands, stale changes, reused event-ids.

The daemon runs as its own process against a real mosquitto; the publisher is a
real MQTT 5 client setting the user properties an archive manager would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.benchmarks import intake_bench as bench
from tests.integration.broker import Broker
from tests.integration.daemon import DEFINITION, Daemon, wait_until, writable_tapes
from worker.intake import mqtt
from worker.intake.mqtt import RETAINED_REASON

pytestmark = pytest.mark.integration

PREFIX = "tw-cmd"
TAPES = writable_tapes(DEFINITION)
POOL = sorted({t.pool for t in DEFINITION.tapes if t.pool})[0]


@pytest.fixture
def daemon(tmp_path: Path, broker: Broker) -> Iterator[Daemon]:
    daemon = Daemon(folder=tmp_path / "daemon", mqtt_port=broker.port, prefix=PREFIX)
    daemon.start()
    wait_until(lambda: "mqtt connected" in daemon.log_tail(200), what="the daemon to subscribe")
    yield daemon
    daemon.stop()


def topic(destination: int, verb: str) -> str:
    return f"{PREFIX}/tasks/9/task_destinations/{destination}/{verb}"


def body(**fields: object) -> bytes:
    return json.dumps({"folder_id": 1, "folder_path": "/c/f", **fields}).encode()


async def publish(
    broker: Broker,
    destination: int,
    verb: str,
    payload: bytes = b"",
    *,
    retain: bool = False,
    **user_properties: str,
) -> None:
    """Publish one command at QoS 1 as an archive manager would (MQTT 5)."""
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if user_properties:
        properties.UserProperty = [(k.replace("_", "-"), v) for k, v in user_properties.items()]
    async with aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=f"archive-manager-{time.monotonic_ns()}",
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.publish(
            topic(destination, verb), payload, qos=1, retain=retain, properties=properties
        )


async def retained_on(broker: Broker, topic_name: str) -> bytes | None:
    """The retained message the broker holds on a topic, or None.

    The broker sends a topic's retained message while handling our SUBSCRIBE, so a
    probe we publish after the SUBACK arrives after it: the first message tells.
    """
    probe = f"{PREFIX}-probe/{time.monotonic_ns()}"
    async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe(topic_name, qos=1)
        await c.subscribe(probe, qos=1)
        await c.publish(probe, b"probe", qos=1)
        async with asyncio.timeout(10):
            message = await anext(c.messages)
    if message.topic.matches(probe):
        return None
    assert isinstance(message.payload, bytes)
    return message.payload


def ready_in_pool(daemon: Daemon, destination: int) -> bool:
    row = daemon.request_of(destination)
    return row is not None and row["state"] == "ready" and row["pool"] == POOL


def rejected(daemon: Daemon, topic_name: str) -> list[dict[str, object]]:
    rows = daemon.query(
        "SELECT * FROM events WHERE status='rejected' AND topic=? ORDER BY seq", (topic_name,)
    )
    return [dict(r) for r in rows]


def test_a_retained_command_is_not_applied_and_is_cleared(daemon: Daemon, broker: Broker) -> None:
    asyncio.run(publish(broker, 61, "create", body(tape_barcode=TAPES[0]), event_id="c-61"))
    first = daemon.wait_request(61, "ready")

    # Someone publishes a create for the same destination with the retain flag.
    asyncio.run(publish(broker, 61, "create", body(tape_barcode=TAPES[1]), retain=True))
    [row] = wait_until(lambda: rejected(daemon, topic(61, "create")), what="the rejection")
    assert row["reason"] == RETAINED_REASON
    wait_until(
        lambda: asyncio.run(retained_on(broker, topic(61, "create"))) is None,
        what="the retained command to be cleared",
    )

    # A newer update, then a reconnect: nothing replays over it.
    asyncio.run(publish(broker, 61, "update", body(pool_name=POOL), event_id="u-61"))
    wait_until(lambda: ready_in_pool(daemon, 61), what="the update to be served")
    daemon.stop()
    daemon.start()
    # Counted over the whole log (both runs append to it), not the last lines only.
    wait_until(
        lambda: len([e for e in daemon.log_entries() if e.get("event") == "mqtt connected"]) >= 2,
        what="the daemon to resubscribe",
    )
    # Anything replayed at the subscription comes before this marker.
    asyncio.run(publish(broker, 69, "create", body(tape_barcode=TAPES[2])))
    daemon.wait_request(69, "ready")
    requests = daemon.query("SELECT * FROM requests WHERE destination_id=61 ORDER BY id")
    assert [r["id"] for r in requests if r["state"] not in ("released", "failed")] == [
        requests[-1]["id"]
    ]
    assert requests[-1]["pool"] == POOL
    assert requests[0]["id"] == first["id"]
    assert all(r["barcode"] != TAPES[1] for r in requests), "the retained create was applied"
    assert len(rejected(daemon, topic(61, "create"))) == 1


def test_a_command_retained_while_the_daemon_was_away_is_refused_at_subscribe(
    daemon: Daemon, broker: Broker
) -> None:
    daemon.stop()
    asyncio.run(publish(broker, 62, "create", body(tape_barcode=TAPES[0]), retain=True))
    daemon.start()
    rows = wait_until(lambda: rejected(daemon, topic(62, "create")), what="the rejection")
    # Queued in our session and replayed at the subscription: each delivery is refused.
    assert {r["reason"] for r in rows} == {RETAINED_REASON}
    assert daemon.query("SELECT * FROM requests WHERE destination_id=62") == []
    wait_until(
        lambda: asyncio.run(retained_on(broker, topic(62, "create"))) is None,
        what="the retained command to be cleared",
    )


def test_a_stale_update_is_not_applied_after_a_newer_one(daemon: Daemon, broker: Broker) -> None:
    asyncio.run(publish(broker, 63, "create", body(tape_barcode=TAPES[0]), sequence="10"))
    asyncio.run(publish(broker, 63, "update", body(pool_name=POOL), sequence="30"))
    # The change of sequence 20 reaches us last (say, redelivered after a reconnect).
    asyncio.run(publish(broker, 63, "update", body(tape_barcode=TAPES[1]), sequence="20"))
    [row] = wait_until(lambda: rejected(daemon, topic(63, "update")), what="the rejection")
    assert row["reason"] == (
        "stale update: sequence 20 is older than sequence 30 already applied to destination 63"
    )
    ready = daemon.wait_request(63, "ready")
    assert ready["pool"] == POOL
    [destination] = daemon.query("SELECT * FROM destinations WHERE id=63")
    assert (destination["pool"], destination["sequence"]) == (POOL, 30)
    warning = daemon.wait_logged("event rejected", intake="mqtt", verb="update", destination=63)
    assert "sequence 20" in str(warning["reason"])
    # The state topic says which change it shows: the publisher's confirmation.
    state = asyncio.run(published_state(broker, 63, lambda s: s["state"].get("sequence") == 30))
    assert state["pool_name"] == POOL


async def published_state(
    broker: Broker, destination: int, wanted: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first state the daemon publishes (or has retained) for a destination that fits."""
    async with aiomqtt.Client("127.0.0.1", broker.port) as watcher:
        await watcher.subscribe(
            f"{PREFIX}/libraries/demo/state/task_destinations/{destination}", qos=1
        )
        async with asyncio.timeout(20):
            async for message in watcher.messages:
                assert isinstance(message.payload, bytes)
                state: dict[str, Any] = json.loads(message.payload)
                if wanted(state):
                    return state
    raise AssertionError("the subscription ended")


def test_a_reused_event_id_with_another_payload_is_rejected_and_journaled(
    daemon: Daemon, broker: Broker
) -> None:
    asyncio.run(publish(broker, 64, "create", body(tape_barcode=TAPES[0]), event_id="ev-64"))
    daemon.wait_request(64, "ready")
    # The same event-id, another message.
    asyncio.run(publish(broker, 64, "update", body(pool_name=POOL), event_id="ev-64"))
    [row] = wait_until(lambda: rejected(daemon, topic(64, "update")), what="the rejection")
    assert str(row["reason"]).startswith("event-id 'ev-64' was already used by journal event")
    assert row["payload"] == body(pool_name=POOL).decode()
    # The warning is written after the commit that made the row visible.
    warning = daemon.wait_logged("event rejected", intake="mqtt", verb="update", destination=64)
    assert "ev-64" in str(warning["reason"])
    [request] = daemon.query("SELECT * FROM requests WHERE destination_id=64")
    assert (request["barcode"], request["state"]) == (TAPES[0], "ready")
    # The same message again stays a harmless duplicate: no new row at all.
    asyncio.run(publish(broker, 64, "create", body(tape_barcode=TAPES[0]), event_id="ev-64"))
    asyncio.run(publish(broker, 65, "create", body(tape_barcode=TAPES[1]), event_id="ev-65"))
    daemon.wait_request(65, "ready")
    assert len(daemon.query("SELECT * FROM events WHERE destination_id=64")) == 2


async def test_a_backlog_beyond_the_read_pause_drains_without_reconnecting(
    tmp_path: Path, broker: Broker
) -> None:
    """The subscribing connection stops reading while a backlog waits in the client;
    the state publications' acknowledgements come on the other one, so none of them
    waits behind the backlog and times out (which dropped both before)."""
    # Enough that on one connection a PUBACK would wait more than aiomqtt's 10 s
    # behind the backlog at a few hundred events a second (it did, at this size).
    count = 15 * mqtt.QUEUE_LIMIT
    daemon = Daemon(folder=tmp_path / "daemon", mqtt_port=broker.port, prefix=bench.PREFIX)
    await bench.queue_backlog(broker.port, f"tapeworker-{daemon.http_port}", count)
    daemon.start()
    try:
        await asyncio.to_thread(
            wait_until,
            lambda: daemon.query("SELECT count(*) FROM events WHERE source='mqtt'")[0][0] >= count,
            timeout=600,
            what=f"{count} queued events journaled",
        )
        state_topic = f"{bench.PREFIX}/libraries/demo/state/task_destinations/{count}"

        async def last_state_retained() -> bytes:
            while (state := await retained_on(broker, state_topic)) is None:
                await asyncio.sleep(0.2)
            return state

        async with asyncio.timeout(60):
            state = await last_state_retained()
        assert json.loads(state)["id"] == count
        # The broker overran the Receive Maximum, and the intake stopped reading.
        assert bench.metric(daemon, "tapeworker_mqtt_read_pauses_total") >= 1
        log = daemon.log_tail(100_000)
        assert log.count("mqtt connected") == 1, log
        assert "disconnected" not in log, log
    finally:
        daemon.stop()
    # Each event journaled once: nothing was redelivered by a reconnect.
    assert daemon.query("SELECT count(*) FROM events WHERE source='mqtt'")[0][0] == count
