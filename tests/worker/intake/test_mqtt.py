"""The MQTT intake's reading of one message: topic, verb, order and identity, and the
rejections that name what is wrong. The intake against a real mosquitto is in
tests/integration/test_mqtt_acks.py and test_mqtt_commands.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet as paho_packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import REGISTRY

from tests.integration.broker import Broker, count_reads, feed_reads
from tests.worker.harness import CATALOG
from worker.errors import RejectedEventError
from worker.intake import mqtt
from worker.intake.destinations import VERBS, DestinationEvent, RejectedInput, message_digest
from worker.intake.mqtt import (
    MAX_SEQUENCE,
    PUBLISH_WINDOW,
    RETAINED_REASON,
    MqttIntake,
    Publish,
    PublishWindow,
    decode_publish,
    message_to_event,
    parse_sequence,
    parse_topic,
    to_event,
)
from worker.settings import MqttSettings
from worker.state.journal import Journal, UnitOfWork

PREFIX = "tw"
NOW = 1_800_000_000.0
CREATE = f"{PREFIX}/tasks/7/task_destinations/3/create"
BODY = json.dumps({"folder_id": 1, "tape_barcode": "NOD400L9"}).encode()


@pytest.mark.parametrize(
    ("topic", "parsed"),
    [
        (CREATE, ("7", 3, "create")),
        (f"{PREFIX}/tasks/007/task_destinations/3/update", ("7", 3, "update")),
        (
            f"{PREFIX}/tasks/nightly-backup/task_destinations/0/destroy",
            ("nightly-backup", 0, "destroy"),
        ),
        (f"{PREFIX}/tasks/7/task_destinations/{'9' * 15}/release", ("7", 10**15 - 1, "release")),
    ],
)
def test_a_topic_names_the_task_the_destination_and_the_verb(
    topic: str, parsed: tuple[str, int, str]
) -> None:
    assert parse_topic(PREFIX, topic) == parsed


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("other/tasks/7/task_destinations/3/create", "is not under 'tw/tasks/'"),
        (f"{PREFIX}/tasks/7/destinations/3/create", "is not <prefix>/tasks/"),
        (f"{PREFIX}/tasks/7/task_destinations/3/create/x", "is not <prefix>/tasks/"),
        (f"{PREFIX}/tasks/../task_destinations/3/create", "invalid task id '..'"),
        (f"{PREFIX}/tasks/a b/task_destinations/3/create", "invalid task id"),
        (f"{PREFIX}/tasks/7/task_destinations/-3/create", "invalid destination id '-3'"),
        (f"{PREFIX}/tasks/7/task_destinations/{'9' * 16}/create", "invalid destination id"),
        (f"{PREFIX}/tasks/7/task_destinations/\u0663/create", "invalid destination id"),
        (f"{PREFIX}/tasks/7/task_destinations/3/delete", "unknown verb 'delete'"),
    ],
)
def test_a_topic_that_is_not_a_destination_is_rejected_with_why(topic: str, problem: str) -> None:
    with pytest.raises(RejectedEventError) as raised:
        parse_topic(PREFIX, topic)
    assert problem in raised.value.reason


_PIECES = st.one_of(
    st.sampled_from(["7", "007", "nightly-backup", ".", "..", "a" * 128, "a" * 129, "x/y", ""]),
    st.sampled_from(["3", "0", "9" * 15, "9" * 16, "-1", "٣", "3a", ""]),
    st.sampled_from([*VERBS, "Create", "remove", ""]),
    st.text(max_size=12),
)


@settings(max_examples=500, deadline=None)
@given(
    prefix=st.sampled_from([PREFIX, "a.b+c", "site/tw"]),
    task=_PIECES,
    middle=st.sampled_from(["task_destinations", "task_destination", "x"]),
    destination=_PIECES,
    verb=_PIECES,
    extra=st.sampled_from(["", "/more"]),
)
def test_a_topic_parses_in_one_match_as_it_does_piece_by_piece(
    prefix: str, task: str, middle: str, destination: str, verb: str, extra: str
) -> None:
    topic = f"{prefix}/tasks/{task}/{middle}/{destination}/{verb}{extra}"

    def outcome(parse: Callable[[str, str], object]) -> object:
        try:
            return parse(prefix, topic)
        except RejectedEventError as exc:
            return exc.reason

    assert outcome(parse_topic) == outcome(mqtt._parse_topic_slowly)


def test_the_order_is_a_whole_number_in_range() -> None:
    assert parse_sequence("0") == 0
    assert parse_sequence(str(MAX_SEQUENCE)) == MAX_SEQUENCE
    for bad in ("", "-1", "1.0", " 1", str(MAX_SEQUENCE + 1), "1" * 20):
        with pytest.raises(RejectedEventError, match="is not a whole number"):
            parse_sequence(bad)


def test_a_create_becomes_an_event_with_its_identity_and_order() -> None:
    event = to_event(PREFIX, CREATE, BODY, "evt-1", sequence="42")
    assert isinstance(event, DestinationEvent)
    assert (event.verb, event.task_id, event.destination_id) == ("create", "7", 3)
    assert event.body is not None
    assert event.body.tape_barcode == "NOD400L9"
    assert (event.source, event.topic, event.sequence) == ("mqtt", CREATE, 42)
    assert event.dedup_key == "mqtt:evt-1"
    assert event.digest == message_digest(CREATE, BODY)
    without_id = to_event(PREFIX, CREATE, BODY)
    assert isinstance(without_id, DestinationEvent)
    assert without_id.dedup_key is None


@pytest.mark.parametrize(
    ("topic", "payload", "kwargs", "problem"),
    [
        (CREATE, BODY, {"retained": True}, RETAINED_REASON),
        (f"{PREFIX}/tasks/7/task_destinations/3/destroy", b"{}", {}, "takes an empty payload"),
        (CREATE, BODY, {"sequence": "soon"}, "is not a whole number"),
        (CREATE, b"not json", {}, ""),
        ("tw/other", BODY, {}, "is not under"),
    ],
)
def test_what_cannot_be_applied_is_kept_as_rejected_input(
    topic: str, payload: bytes, kwargs: dict[str, Any], problem: str
) -> None:
    rejected = to_event(PREFIX, topic, payload, "evt-2", **kwargs)
    assert isinstance(rejected, RejectedInput)
    assert problem in rejected.reason
    assert rejected.reason
    # Nothing is lost: the rejection keeps the message, to journal it with the reason.
    assert (rejected.source, rejected.topic, rejected.payload) == ("mqtt", topic, payload.decode())
    assert rejected.dedup_key == "mqtt:evt-2"
    assert rejected.digest == message_digest(topic, payload)


def test_an_empty_payload_is_how_destroy_and_release_come() -> None:
    for verb in ("destroy", "release"):
        event = to_event(PREFIX, f"{PREFIX}/tasks/7/task_destinations/3/{verb}", b"  ")
        assert isinstance(event, DestinationEvent)
        assert event.verb == verb
        assert event.body is None


def message(
    topic: str, payload: bytes, *, retain: bool = False, user: dict[str, str] | None = None
) -> Publish:
    """A message as the subscribing connection receives it."""
    return Publish(1, 1, retain, topic, payload, tuple((user or {}).items()))


#: What MQTT allows in a string: UTF-8, no U+0000 (paho refuses it as malformed, and a
#: broker never passes it on; ours would hand it to the parsing, which refuses it).
_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12
)


@settings(max_examples=300, deadline=None)
@given(
    topic=_text.filter(bool),
    payload=st.binary(max_size=40),
    qos=st.sampled_from([0, 1]),
    retain=st.booleans(),
    mid=st.integers(1, 65535),
    users=st.lists(st.tuples(_text, _text), max_size=3),
    expiry=st.none() | st.integers(0, 2**32 - 1),
    content_type=st.none() | _text,
    correlation=st.none() | st.binary(max_size=8),
    subscription=st.none() | st.integers(1, 268_435_455),
)
def test_a_publish_decodes_as_paho_decodes_it(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    mid: int,
    users: list[tuple[str, str]],
    expiry: int | None,
    content_type: str | None,
    correlation: bytes | None,
    subscription: int | None,
) -> None:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.PayloadFormatIndicator = 1
    if users:
        properties.UserProperty = users
    if expiry is not None:
        properties.MessageExpiryInterval = expiry
    if content_type is not None:
        properties.ContentType = content_type
    if correlation is not None:
        properties.CorrelationData = correlation
    if subscription is not None:
        properties.SubscriptionIdentifier = subscription
    name = topic.encode()
    head = len(name).to_bytes(2, "big") + name + (mid.to_bytes(2, "big") if qos else b"")
    head += properties.pack()  # type: ignore[no-untyped-call]
    header = 0x30 | qos << 1 | int(retain)
    ours = decode_publish(header, bytearray(head + payload))
    v5 = MQTTProtocolVersion.MQTTv5
    theirs = paho_packet.decode_publish(header, bytearray(head + payload), v5)
    assert (ours.topic, ours.payload, ours.qos, ours.retain) == (
        theirs.topic.decode(),
        theirs.payload,
        theirs.qos,
        theirs.retain,
    )
    assert ours.mid == (theirs.mid if qos else 0)
    assert list(ours.user_properties) == (getattr(theirs.properties, "UserProperty", None) or [])
    # A packet cut short in its header is malformed, never an IndexError.
    for cut in range(len(head)):
        with pytest.raises(MalformedPacket):
            decode_publish(header, bytearray(head[:cut]))


def test_a_delivered_message_carries_its_event_id_and_sequence_as_user_properties() -> None:
    event = message_to_event(
        PREFIX, message(CREATE, BODY, user={"sequence": "7", "event-id": "e-9"})
    )
    assert isinstance(event, DestinationEvent)
    assert (event.dedup_key, event.sequence) == ("mqtt:e-9", 7)


def test_an_event_id_outside_its_alphabet_is_ignored_not_trusted() -> None:
    event = message_to_event(PREFIX, message(CREATE, BODY, user={"event-id": "a b/c"}))
    assert isinstance(event, DestinationEvent)
    assert event.dedup_key is None


def test_a_retained_delivery_is_refused() -> None:
    rejected = message_to_event(PREFIX, message(CREATE, BODY, retain=True))
    assert isinstance(rejected, RejectedInput)
    assert rejected.reason == RETAINED_REASON


# PUBACKs are handled by the window's own fast path on both protocols (a plain success
# is the message id alone on MQTT 5 too).
@pytest.mark.parametrize("protocol", [aiomqtt.ProtocolVersion.V311, aiomqtt.ProtocolVersion.V5])
async def test_a_publish_window_keeps_each_topics_order_and_confirms_every_message(
    broker: Broker, protocol: aiomqtt.ProtocolVersion
) -> None:
    topics = [f"{PREFIX}/state/{i}" for i in range(5)]
    received: dict[str, list[int]] = {topic: [] for topic in topics}
    async with (
        aiomqtt.Client("127.0.0.1", broker.port, identifier="reader") as reader,
        aiomqtt.Client("127.0.0.1", broker.port, identifier="writer", protocol=protocol) as writer,
    ):
        await reader.subscribe(f"{PREFIX}/state/#", qos=1)
        window = PublishWindow(writer, 4, timeout_s=30)
        for n in range(200):
            await window.room()
            window.send(topics[n % 5], str(n).encode(), retain=False)
            assert len(window.unconfirmed()) <= 4
        async with asyncio.timeout(30):
            async for message in reader.messages:
                received[message.topic.value].append(int(message.payload))
                if sum(map(len, received.values())) == 200:
                    break
        async with asyncio.timeout(30):
            while window.unconfirmed():
                await asyncio.sleep(0)  # a loop round: the PUBACKs are read meanwhile
    for i, topic in enumerate(topics):
        assert received[topic] == list(range(i, 200, 5))


async def test_a_burst_of_publications_leaves_in_one_write(broker: Broker) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="writer") as writer:
        window = PublishWindow(writer, PUBLISH_WINDOW, timeout_s=30)
        client: paho.Client = writer._client
        writes: list[int] = []
        send = client._sock_send

        def counted(buf: bytes | bytearray) -> int:
            writes.append(len(buf))
            return send(buf)

        client._sock_send = counted  # type: ignore[method-assign]
        for n in range(PUBLISH_WINDOW):
            window.send(f"{PREFIX}/state/{n}", b"x" * 100, retain=False)
        async with asyncio.timeout(30):
            while window.unconfirmed():
                await asyncio.sleep(0)  # a loop round: the writer and the PUBACKs run
        # paho alone writes each of them with a system call of its own.
        assert len(writes) == 1, writes
        assert writes[0] > PUBLISH_WINDOW * 100


@settings(max_examples=200, deadline=None)
@given(
    topic=st.text(
        st.characters(codec="utf-8", exclude_characters="+#\x00"),
        min_size=1,
        max_size=300,
    ),
    payload=st.binary(max_size=20000),
    mid=st.integers(1, 65535),
    retain=st.booleans(),
    mqtt5=st.booleans(),
)
def test_a_publication_is_the_packet_paho_would_send(
    topic: str, payload: bytes, mid: int, retain: bool, mqtt5: bool
) -> None:
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        protocol=MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311,
    )
    queued: list[bytes] = []

    def queue(_command: int, packet: bytes, *_: Any) -> Any:
        queued.append(bytes(packet))
        return paho.MQTT_ERR_SUCCESS

    client._packet_queue = queue  # type: ignore[method-assign,assignment]
    client._sock = object()  # type: ignore[assignment]  # "connected": paho encodes it
    try:
        client._send_publish(mid, topic.encode(), payload, 1, retain)
    finally:
        client._sock = None
    assert queued == [mqtt.encode_publish(topic, payload, mid, retain, mqtt5=mqtt5)]


async def test_the_pubacks_of_a_read_are_taken_together(broker: Broker) -> None:
    count = 200
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="writer") as writer:
        window = PublishWindow(writer, PUBLISH_WINDOW, timeout_s=30)
        reads = count_reads(window._chunk)
        for n in range(count):
            await window.room()
            window.send(f"{PREFIX}/state/{n}", b"x", retain=False)
        async with asyncio.timeout(30):
            while window.unconfirmed():
                await asyncio.sleep(0)  # a loop round: the PUBACKs are read meanwhile
    # paho alone reads each PUBACK in three calls, and tries once more when none is left.
    assert len(reads) <= count, reads


async def test_a_chunk_split_inside_a_puback_or_holding_another_packet_loses_none(
    broker: Broker,
) -> None:
    assert broker.process is not None
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="writer") as writer:
        window = PublishWindow(writer, PUBLISH_WINDOW, timeout_s=30)
        # A broker that does not answer: the PUBACKs are the chunks we hand the reader.
        broker.process.send_signal(signal.SIGSTOP)
        try:
            for n in range(5):
                window.send(f"{PREFIX}/state/{n}", b"x", retain=False)
            mids = list(window._in_flight)
            pubacks = [bytes((paho.PUBACK, 2)) + mid.to_bytes(2, "big") for mid in mids]
            pingresp = bytes((paho.PINGRESP, 0))
            stream = b"".join((pubacks[0], pubacks[1], pingresp, pubacks[2], *pubacks[3:]))
            # Split inside the third PUBACK, and one byte into the fourth.
            cut = 4 + 4 + 2 + 2
            chunks = [stream[:cut], stream[cut : cut + 5], stream[cut + 5 :]]
            confirmed = publications("confirmed")

            feed_reads(window._chunk, chunks)
            while chunks:
                window._read()
            assert window.unconfirmed() == []
            assert publications("confirmed") == confirmed + 5
            assert not window.lost
        finally:
            broker.process.send_signal(signal.SIGCONT)


async def test_a_publication_of_paho_s_own_is_confirmed_beside_the_window(
    broker: Broker,
) -> None:
    """What aiomqtt publishes on the same connection (the goodbye summary) gets its
    PUBACK from paho, among the window's."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="writer") as writer:
        window = PublishWindow(writer, PUBLISH_WINDOW, timeout_s=30)
        for n in range(PUBLISH_WINDOW // 2):
            window.send(f"{PREFIX}/state/{n}", b"x", retain=False)
        async with asyncio.timeout(30):
            await writer.publish(f"{PREFIX}/fleet", b"bye", qos=1, retain=True)
            for n in range(PUBLISH_WINDOW // 2, PUBLISH_WINDOW):
                window.send(f"{PREFIX}/state/{n}", b"x", retain=False)
            while window.unconfirmed():
                await asyncio.sleep(0)
        assert not writer._client._out_messages  # paho's own, confirmed too


async def send_until_refused(window: PublishWindow, topic: str) -> None:
    """Publish numbered messages, a loop round apart, until the window refuses one."""
    async with asyncio.timeout(30):
        for n in range(1_000_000):
            await window.room()
            window.send(topic, str(n).encode(), retain=True)
            await asyncio.sleep(0)


async def test_a_publish_window_keeps_what_a_lost_connection_did_not_confirm(
    broker: Broker,
) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="writer") as writer:
        window = PublishWindow(writer, 4, timeout_s=30)
        broker.stop()
        # paho learns of the loss when it next reads or writes the socket.
        with pytest.raises(aiomqtt.MqttError):
            await send_until_refused(window, f"{PREFIX}/state/1")
        kept = window.unconfirmed()
        assert kept, "the messages sent into the lost connection are kept"
        assert [int(p) for _, p, _ in kept] == sorted(int(p) for _, p, _ in kept)


# -- The consumer: parsing, committing, acknowledging and publishing overlap ----------


class HeldJournal:
    """Holds the first commit in the journal's thread until released, as a slow disk
    would; every commit is noted with how many messages were acknowledged by then."""

    def __init__(self, journal: Journal) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        #: Messages acknowledged when each commit returned.
        self.acknowledged_at_commit: list[int] = []
        self.intake: MqttIntake | None = None
        apply = journal.apply

        async def held_apply(work: Any) -> Any:
            def holding(unit: UnitOfWork) -> Any:
                if not self.entered.is_set():
                    self.entered.set()
                    assert self.release.wait(30), "the test never released the commit"
                return work(unit)

            result = await apply(holding)
            inbox = self.intake.inbox if self.intake else None
            self.acknowledged_at_commit.append(inbox.acknowledged if inbox is not None else -1)
            return result

        journal.apply = held_apply  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def running_intake(
    broker: Broker, journal: Journal, on_change: Any
) -> AsyncIterator[MqttIntake]:
    settings = MqttSettings(host="127.0.0.1", port=broker.port, prefix=PREFIX, client_id="sub")
    intake = MqttIntake(settings, journal, hold_seconds=60, on_change=on_change, clock=lambda: NOW)
    task = asyncio.create_task(intake.run())
    try:
        async with asyncio.timeout(30):
            await intake.connected.wait()
        yield intake
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish_creates(broker: Broker, ids: range) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="archive-manager") as client:
        for n in ids:
            body = {"folder_id": n, "tape_barcode": "NOD400L9"}
            await client.publish(
                f"{PREFIX}/tasks/7/task_destinations/{n}/create", json.dumps(body), qos=1
            )


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    """Poll a condition of the intake's, a loop round at a time, within a bound."""
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not {what} after {timeout_s}s") from None


async def nothing_redelivered(broker: Broker) -> None:
    """Reconnect as the intake's session: only a probe of ours comes, nothing it had."""
    client = aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier="sub",
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
    )
    async with client:
        await client.subscribe(f"{PREFIX}/probe", qos=1)
        await client.publish(f"{PREFIX}/probe", b"probe", qos=1)
        async with asyncio.timeout(10):
            first = await anext(client.messages)
    assert first.topic.value == f"{PREFIX}/probe", f"{first.topic} came again"


def batch_samples() -> tuple[float, float, float]:
    """The batch-size histogram's count, sum, and batches of a single message."""
    name = "tapeworker_mqtt_batch_messages"
    return (
        REGISTRY.get_sample_value(f"{name}_count") or 0.0,
        REGISTRY.get_sample_value(f"{name}_sum") or 0.0,
        REGISTRY.get_sample_value(f"{name}_bucket", {"le": "1.0"}) or 0.0,
    )


async def test_the_next_messages_are_parsed_while_a_batch_commits_and_acknowledged_after_theirs(
    broker: Broker, tmp_path: Path
) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    await journal.sync_catalog(CATALOG, NOW)
    held = HeldJournal(journal)

    async def on_change(ids: set[int]) -> None:
        pass

    batches_before = batch_samples()
    try:
        async with running_intake(broker, journal, on_change) as intake:
            held.intake = intake
            await publish_creates(broker, range(1, 2))
            assert await asyncio.to_thread(held.entered.wait, 30)
            # The first commit is held in the journal's thread; the next three arrive.
            await publish_creates(broker, range(2, 5))
            inbox = intake.inbox
            assert inbox is not None
            await wait_until(lambda: len(inbox) == 3, "three messages parsed", timeout_s=30)
            waiting = list(inbox._waiting)
            events = [d.event for d in waiting if isinstance(d.event, DestinationEvent)]
            assert [e.destination_id for e in events] == [2, 3, 4]
            assert inbox.acknowledged == 0, "acknowledged before its commit"
            held.release.set()
            await wait_until(lambda: inbox.acknowledged == 4, "all four acknowledged", timeout_s=30)
            # One commit for the first, one for the three parsed meanwhile; each batch
            # acknowledged only once its own commit returned.
            assert held.acknowledged_at_commit == [0, 1]
            assert len(await journal.events()) == 4
            # /metrics shows the two batches' sizes: one of 1, one of 3.
            after = batch_samples()
            assert [a - b for a, b in zip(after, batches_before, strict=True)] == [2, 4, 1]
        await nothing_redelivered(broker)
    finally:
        held.release.set()
        await journal.close()


async def test_commits_go_on_while_the_state_of_the_last_batch_is_published(
    broker: Broker, tmp_path: Path
) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    await journal.sync_catalog(CATALOG, NOW)
    published: list[set[int]] = []
    publishing = asyncio.Event()
    release = asyncio.Event()

    async def on_change(ids: set[int]) -> None:
        published.append(ids)
        publishing.set()
        await release.wait()

    try:
        async with running_intake(broker, journal, on_change) as intake:
            await publish_creates(broker, range(1, 2))
            async with asyncio.timeout(30):
                await publishing.wait()
            # The publication of the first is held: the next ones commit meanwhile.
            await publish_creates(broker, range(2, 5))
            inbox = intake.inbox
            assert inbox is not None
            await wait_until(lambda: inbox.acknowledged == 4, "all four acknowledged", timeout_s=30)
            assert len(await journal.events()) == 4
            assert published == [{1}]
            # The publication under way, and the changes committed behind it.
            assert intake.publications_waiting() == 1 + 3
            release.set()
            # What was committed meanwhile is published together, once.
            await wait_until(lambda: len(published) == 2, "the second publication", timeout_s=30)
            assert published == [{1}, {2, 3, 4}]
            await wait_until(lambda: intake.publications_waiting() == 0, "all published")
    finally:
        release.set()
        await journal.close()


async def test_a_committed_batch_is_one_line_at_info_and_each_event_one_at_debug(
    broker: Broker, tmp_path: Path, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    assert json_lines() == []
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    await journal.sync_catalog(CATALOG, NOW)

    async def on_change(_: set[int]) -> None:
        return None

    try:
        async with running_intake(broker, journal, on_change) as intake:
            await publish_creates(broker, range(1, 41))
            inbox = intake.inbox
            assert inbox is not None
            await wait_until(lambda: inbox.acknowledged == 40, "all acknowledged", timeout_s=30)
    finally:
        await journal.close()
    lines = json_lines()
    assert not [line for line in lines if line["event"] == "event received"]
    committed = [line for line in lines if line["event"] == "events committed"]
    assert committed, [line["event"] for line in lines]
    assert {line["level"] for line in committed} == {"info"}
    assert sum(line["events"] for line in committed) == 40
    assert sum(line["create"] for line in committed) == 40
    assert committed[0]["first_destination"] == 1
    assert committed[-1]["last_destination"] == 40


async def retained_states(port: int, prefix: str, count: int) -> dict[str, bytes]:
    """The retained state of `count` destinations, as a new subscriber gets it."""
    found: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier="state-reader") as reader:
        await reader.subscribe(f"{prefix}/state/task_destinations/+", qos=1)
        async with asyncio.timeout(60):
            async for message in reader.messages:
                assert isinstance(message.payload, bytes)
                found[message.topic.value] = message.payload
                if len(found) == count:
                    break
    return found


@pytest.fixture
async def publishing(broker: Broker, tmp_path: Path) -> AsyncIterator[MqttIntake]:
    """An intake whose publishing connection alone runs (nothing is consumed)."""
    journal = await Journal.open(tmp_path / "journal.sqlite3")

    async def on_change(_: set[int]) -> None:
        return None

    intake = MqttIntake(
        MqttSettings(host="127.0.0.1", port=broker.port, prefix=PREFIX, reconnect_max_s=1),
        journal,
        hold_seconds=60,
        on_change=on_change,
        clock=lambda: 0.0,
        library_id="lib",
    )
    task = asyncio.create_task(intake._run_publishing())
    try:
        await wait_until(lambda: intake._publishing is not None, "connected")
        yield intake
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await journal.close()


async def test_the_publisher_speaks_mqtt_3_1_1_and_each_state_lands_in_order(
    broker: Broker, publishing: MqttIntake
) -> None:
    count = 300  # far more than the window: every PUBACK must be confirmed to get here
    received: dict[str, list[bytes]] = {}
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="reader") as reader:
        await reader.subscribe(f"{publishing.library_prefix}/state/task_destinations/+", qos=1)
        for version in (b"1", b"2"):
            for n in range(count):
                publishing.publish_state(n, b'{"version": ' + version + b"}")
        async with asyncio.timeout(60):
            async for message in reader.messages:
                assert isinstance(message.payload, bytes)
                received.setdefault(message.topic.value, []).append(message.payload)
                if sum(map(len, received.values())) == 2 * count:
                    break
    assert len(received) == count
    for payloads in received.values():
        assert payloads == [b'{"version": 1}', b'{"version": 2}']
    log = (broker.folder / "mosquitto.log").read_text(encoding="utf-8")
    # mosquitto logs the protocol of each client: p2 is MQTT 3.1.1, p5 MQTT 5.
    assert f"as {publishing.publishing_client_id} (p2," in log


async def test_what_a_lost_publishing_connection_left_unconfirmed_is_sent_first_on_the_next(
    broker: Broker, publishing: MqttIntake
) -> None:
    assert broker.process is not None
    # A broker that stops answering: what we send is never acknowledged.
    broker.process.send_signal(signal.SIGSTOP)
    count = 100
    topics = [f"{publishing.library_prefix}/state/task_destinations/{n}" for n in range(count)]
    for n in range(count):
        publishing.publish_state(n, str(n).encode())
    await wait_until(lambda: len(publishing._outbox) == count - PUBLISH_WINDOW, "window full")
    broker.kill()
    await wait_until(lambda: publishing._publishing is None, "aware of the lost connection")
    # Nothing was confirmed: all of it waits, the unconfirmed first, in their order.
    assert [topic for topic, _, _ in publishing._outbox] == topics
    broker.start()
    await wait_until(lambda: not publishing._outbox, "all sent again")
    states = await retained_states(broker.port, publishing.library_prefix, count)
    assert states == {topic: str(n).encode() for n, topic in enumerate(topics)}


def publications(outcome: str) -> float:
    labels = {"outcome": outcome}
    return REGISTRY.get_sample_value("tapeworker_mqtt_publications_total", labels) or 0.0


async def test_publications_wait_until_confirmed_and_a_full_outbox_drops_and_counts(
    broker: Broker, publishing: MqttIntake, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert broker.process is not None
    monkeypatch.setattr(mqtt, "OUTBOX_LIMIT", 50)
    confirmed, dropped = publications("confirmed"), publications("dropped")
    # A broker that does not answer: nothing is confirmed.
    broker.process.send_signal(signal.SIGSTOP)
    try:
        for n in range(PUBLISH_WINDOW):
            publishing.publish_state(n, b"{}")
        await wait_until(lambda: not publishing._outbox, "the window sent")
        for n in range(PUBLISH_WINDOW, PUBLISH_WINDOW + 50 + 3):
            publishing.publish_state(n, b"{}")
        assert publications("dropped") == dropped + 3
        assert publishing.publications_waiting() == PUBLISH_WINDOW + 50
        assert REGISTRY.get_sample_value("tapeworker_mqtt_publications_waiting") == (
            PUBLISH_WINDOW + 50
        )
    finally:
        broker.process.send_signal(signal.SIGCONT)
    await wait_until(lambda: publishing.publications_waiting() == 0, "all confirmed")
    assert publications("confirmed") == confirmed + PUBLISH_WINDOW + 50
