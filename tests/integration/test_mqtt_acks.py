"""The manual-ack adapter against a real mosquitto: a crash before the ack loses nothing."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.integration.broker import Broker
from worker.intake.mqtt import ManualAcks

TOPIC = "t/acks/one"

# A subscriber that receives and never acknowledges, then is killed like a crash.
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from tests.integration.test_mqtt_acks import persistent_client
    from tests.integration.broker import Broker
    from worker.intake.mqtt import ManualAcks

    async def main():
        broker = Broker(port={port}, folder=None)
        client = persistent_client(broker, "sub-acks")
        ManualAcks(client)
        async with client:
            async for message in client.messages:
                print(message.payload.decode(), flush=True)

    asyncio.run(main())
    """
)


def persistent_client(broker: Broker, identifier: str) -> aiomqtt.Client:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    return aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=properties,
    )


async def receive_one(client: aiomqtt.Client, timeout: float = 5.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        return await anext(client.messages)


async def publish(broker: Broker, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="publisher") as pub:
        await pub.publish(topic, payload, qos=1)


async def test_a_crash_before_the_ack_gets_the_message_again(broker: Broker) -> None:
    root = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    async with persistent_client(broker, "sub-acks") as client:
        await client.subscribe(TOPIC, qos=1)
    await publish(broker, TOPIC, b"first")

    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD.format(root=root, port=broker.port),
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    async with asyncio.timeout(10):
        line = await child.stdout.readline()
    assert line.strip() == b"first"
    child.send_signal(signal.SIGKILL)
    await child.wait()

    client = persistent_client(broker, "sub-acks")
    acks = ManualAcks(client)
    async with client:
        again = await receive_one(client)
        assert again.payload == b"first"
        acks.ack(again)
        # A round trip on our own topic proves the ack left before we disconnect.
        await client.subscribe("t/acks/probe", qos=1)
        await client.publish("t/acks/probe", b"probe", qos=1)
        probe = await receive_one(client)
        assert probe.payload == b"probe"
        acks.ack(probe)

    await publish(broker, TOPIC, b"second")
    client = persistent_client(broker, "sub-acks")
    ManualAcks(client)
    async with client:
        message = await receive_one(client)
        assert message.payload == b"second", "an acknowledged message came back"
