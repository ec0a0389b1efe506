"""The manual-ack adapter against a real mosquitto: a crash before the ack loses nothing."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import aiomqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.integration.broker import Broker, count_reads, feed_reads
from worker.intake import mqtt
from worker.intake.mqtt import Delivery, Inbox, ManualAcks, Publish

TOPIC = "t/acks/one"

# A subscriber that receives and never acknowledges, then is killed like a crash.
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from tests.integration.test_mqtt_acks import persistent_client
    from tests.integration.broker import Broker, count_reads, feed_reads
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


def delivery(message: Publish) -> Delivery:
    """A message as it arrived, parsed by nothing (the intake parses topics of its own)."""
    return Delivery(message.mid, message.qos, message.retain, message.topic, message.payload, None)


async def queue(broker: Broker, client_id: str, count: int) -> None:
    """Create `client_id`'s persistent session and queue `count` messages in it."""
    async with persistent_client(broker, client_id) as client:
        await client.subscribe("t/backlog/#", qos=1)
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier="publisher", max_inflight_messages=500
    ) as pub:
        pub.pending_calls_threshold = count
        await asyncio.gather(*(pub.publish(f"t/backlog/{n}", b"x", qos=1) for n in range(count)))


async def test_a_backlog_waits_in_the_broker_not_in_the_client(
    broker: Broker, tmp_path: Path
) -> None:
    """mosquitto 2.0.11 overruns the Receive Maximum once acknowledgements flow;
    pausing the socket keeps what waits in the client at the limit."""
    count, limit = 2000, 40
    await queue(broker, "sub-backlog", count)
    db = sqlite3.connect(tmp_path / "commits.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE seen (topic TEXT PRIMARY KEY)")
    client = persistent_client(broker, "sub-backlog")
    inbox = Inbox(client, delivery, limit)
    peak = 0
    async with client, asyncio.timeout(120):
        inbox.arm()
        received = 0
        while received < count:
            batch = await inbox.take(20)
            # A real commit per batch, as the daemon's, before the acknowledgements.
            db.execute("BEGIN")
            db.executemany("INSERT INTO seen VALUES (?)", [(d.topic,) for d in batch])
            db.execute("COMMIT")
            for message in batch:
                inbox.ack(message)
            inbox.send_acks()
            received += len(batch)
            # What arrived while we committed: the broker would send thousands.
            peak = max(peak, len(inbox))
    db.close()
    assert received == count  # each once: the primary key refuses a duplicate
    assert inbox.pauses >= 1
    # At the limit we stop reading; paho may finish the packet it was parsing.
    assert peak <= limit + 2, peak
    # Every message was acknowledged: the session holds nothing more for us.
    client = persistent_client(broker, "sub-backlog")
    inbox = Inbox(client, delivery, limit)
    async with client:
        await client.subscribe("t/backlog/probe", qos=1)
        await client.publish("t/backlog/probe", b"probe", qos=1)
        async with asyncio.timeout(10):
            [first] = await inbox.take(1)
    assert first.topic == "t/backlog/probe", "an acknowledged message came back"


async def test_one_read_of_the_socket_brings_many_messages(broker: Broker) -> None:
    """paho alone reads a packet in three system calls or more, one packet a turn of
    the event loop; the inbox hands it the packets of one large read."""
    count = 1000
    await queue(broker, "sub-reads", count)
    client = persistent_client(broker, "sub-reads")
    inbox = Inbox(client, delivery, limit=10 * count)
    reads = count_reads(inbox._chunk)
    async with client, asyncio.timeout(60):
        taken: list[Delivery] = []
        while len(taken) < count:
            batch = await inbox.take(count)
            # mosquitto sends no more than 20 unacknowledged (its max_inflight_messages).
            for message in batch:
                inbox.ack(message)
            inbox.send_acks()
            taken.extend(batch)
    assert sorted(int(d.topic.rsplit("/", 1)[1]) for d in taken) == list(range(count))
    # paho alone: three reads a message or more (8 reads here, on a quiet machine).
    assert len(reads) < count / 20, len(reads)


def publish_packet(topic: str, payload: bytes, qos: int, mid: int, event_id: str) -> bytes:
    """An MQTT 5 PUBLISH as the broker sends it, with an `event-id` user property."""
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = [("event-id", event_id)]
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + (mid.to_bytes(2, "big") if qos else b"")
    body += properties.pack() + payload  # type: ignore[no-untyped-call]
    packet: bytes = bytes((0x30 | qos << 1,)) + mqtt._remaining_length(len(body)) + body
    return packet


async def test_the_publishes_of_a_read_are_decoded_together_and_a_cut_one_by_paho(
    broker: Broker,
) -> None:
    assert broker.process is not None
    client = persistent_client(broker, "sub-chunks")
    taken: list[Publish] = []

    def parse(message: Publish) -> Delivery:
        taken.append(message)
        return delivery(message)

    inbox = Inbox(client, parse, limit=100)
    async with client:
        # A broker that sends nothing: the reads are the chunks we hand the reader.
        broker.process.send_signal(signal.SIGSTOP)
        try:
            sent = [
                ("t/a/1", b"one", 1, 1),
                ("t/a/2", b"two", 0, 0),
                ("t/a/3", b"three" * 40, 1, 3),  # a two-byte remaining length
                ("t/a/4", b"four", 1, 4),
            ]
            packets = [publish_packet(t, p, q, m, f"ev-{n}") for n, (t, p, q, m) in enumerate(sent)]
            pingresp = bytes((0xD0, 0))
            stream = packets[0] + packets[1] + pingresp + packets[2] + packets[3]
            # Cut inside the third PUBLISH's remaining length.
            cut = len(packets[0]) + len(packets[1]) + len(pingresp) + 2
            chunks = [stream[:cut], stream[cut:]]
            by_paho = 0
            handle = client._client._handle_publish

            def counted() -> MQTTErrorCode:
                nonlocal by_paho
                by_paho += 1
                return handle()

            client._client._handle_publish = counted  # type: ignore[method-assign]

            feed_reads(inbox._chunk, chunks)
            while chunks:
                inbox._read()
        finally:
            broker.process.send_signal(signal.SIGCONT)
        assert [(m.topic, m.payload, m.qos, m.mid) for m in taken] == sent
        assert [m.user_property("event-id") for m in taken] == ["ev-0", "ev-1", "ev-2", "ev-3"]
        assert len(inbox) == 4
        # paho read the first packet of each read and the one the cut left unfinished.
        assert by_paho == 2
