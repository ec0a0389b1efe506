"""The MQTT intake: QoS 1, a persistent session, acknowledged only after the commit.

Topics: `<prefix>/tasks/<task>/task_destinations/<id>/<create|update|destroy|release>`,
payload the seed's create/update body (empty for destroy and release). State goes
back retained on `<prefix>/libraries/<library_id>/state/task_destinations/<id>`;
rejected input is copied to `<prefix>/dead-letter` with the reason.

Commands cannot go backwards: a retained command is rejected and cleared (the
broker would replay it at every reconnect, over later changes), and the MQTT 5
user properties `event-id` and `sequence` let the journal recognise a redelivery
and refuse a change older than the one it has applied.

aiomqtt 2.x has no public manual-ack API, so `ManualAcks` and `Inbox` reach the paho
client it wraps (the private attributes we touch are all in `ManualAcks`, `Inbox` and
`PublishWindow`, each with its own test). The subscribing connection takes its
messages from paho itself (`Inbox`): aiomqtt's queue and async iterator cost a task
and a future a message, and paho's own reader a system call or more a packet and a
turn of the event loop a packet.

Two connections: one subscribes (its persistent session holds the backlog), one
publishes (state, summaries, dead letters, and the last will). The subscribing one
can then stop reading while too many messages wait without holding back the
PUBACKs of what we publish, which would otherwise queue behind the backlog.

Flow control: a batch takes as many messages as have arrived, up to `MAX_BATCH`, and
is committed in one transaction; the client asks the broker, with MQTT 5's Receive
Maximum, for at most `RECEIVE_MAXIMUM` unacknowledged messages at a time. mosquitto
2.0.11 (Debian 12) honours it only until acknowledgements start to flow (its
accounting of the quota goes wrong after a PUBACK: with a Receive Maximum of 100,
about 4,000 messages were waiting in the client), so `Inbox` also stops reading
the subscribing socket while `QUEUE_LIMIT` messages wait: the backlog stays in the
broker, TCP holds back the rest, and memory stays flat whatever the backlog.

The work of a message overlaps the commit of the batch before it: a message is parsed
as it arrives, while the journal's thread commits the previous batch; one batch is
committed at a time, and acknowledged as soon as it is committed; the new state of
what it changed is published by a task of its own, while the next batch commits.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import json
import re
import struct
from collections.abc import Callable
from typing import Any, Literal

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from worker.callbacks import ChangeListener, Clock
from worker.errors import JournalFaultError, RejectedEventError
from worker.fleet import fleet_topic, gone_summary, library_topic
from worker.fleet.routing import Route
from worker.intake.destinations import (
    VERBS,
    DestinationEvent,
    RejectedInput,
    Verb,
    message_digest,
    parse_payload,
    record_events,
)
from worker.ops import metrics
from worker.seed.tasks import canonical_task_id
from worker.settings import MqttSettings
from worker.state.journal import Journal

log = structlog.get_logger("tapeworker.mqtt")


#: Task ids are numeric ids or names; destination ids are numbers. Nothing else
#: (no wildcards, no `..`, no deep paths) becomes an event.
_TASK_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_EVENT_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
#: A sequence is a whole number that fits SQLite's INTEGER.
_SEQUENCE_RE = re.compile(r"^[0-9]{1,19}$")
MAX_SEQUENCE = 2**63 - 1
RETAINED_REASON = (
    "retained message on a command topic: not applied, because the broker replays it "
    "at every reconnect, over later changes (publish commands with retain=false)"
)
#: The most events one commit takes: a burst is journaled with one fsync and
#: planned in one round, and the journal is not held long from the HTTP intake.
MAX_BATCH = 200
#: What we ask the broker to send before we acknowledge (MQTT 5 Receive Maximum):
#: one batch being committed and the next one arriving meanwhile.
RECEIVE_MAXIMUM = 2 * MAX_BATCH
#: Messages waiting in the client at which we stop reading the socket: above the
#: Receive Maximum, so that only a broker that overruns it is paused.
QUEUE_LIMIT = RECEIVE_MAXIMUM + MAX_BATCH
#: The most one read of the subscribing socket takes: a read is a system call, and
#: paho's own reads take a packet in three or more.
READ_CHUNK = 65536
#: QoS 1 publications awaiting their PUBACK at once: paho's own in-flight limit
#: (it queues the rest, in order) and mosquitto's default Receive Maximum.
PUBLISH_WINDOW = 20
#: The publishing connection's protocol. MQTT 5's features are the subscribing
#: connection's business (a session that outlives us, Receive Maximum, user properties
#: `event-id` and `sequence`, noLocal for clearing a retained command); the publisher
#: sends plain QoS 1 messages and a will.
PUBLISH_PROTOCOL = aiomqtt.ProtocolVersion.V311
#: Publications waiting for the publishing connection: beyond this, a state update is
#: dropped with a warning rather than held without bound while the broker is away.
OUTBOX_LIMIT = 10000
#: Back-off while the journal refuses writes: first retry, and the longest wait.
JOURNAL_RETRY_S = (0.5, 30.0)


class ManualAcks:
    """Acknowledge a QoS 1 message only after it is committed to the journal.

    Create it before the client connects: a resumed session delivers what was
    queued right after CONNACK, and paho would auto-acknowledge those.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._paho: paho.Client = client._client  # noqa: SLF001 - no public API (aiomqtt #345)
        self._paho.manual_ack_set(True)

    def ack(self, message: aiomqtt.Message) -> None:
        if message.qos > 0:
            self._paho.ack(message.mid, message.qos)


@dataclasses.dataclass(frozen=True, slots=True)
class Publish:
    """A PUBLISH packet of the subscribing connection, as it arrived."""

    mid: int
    qos: int
    retain: bool
    topic: str
    payload: bytes
    #: The MQTT 5 user properties, in their order.
    user_properties: tuple[tuple[str, str], ...] = ()

    def user_property(self, name: str) -> str | None:
        """The first value of a user property, if the publisher set it."""
        for key, value in self.user_properties:
            if key == name:
                return value
        return None


#: The properties MQTT 5 allows in a PUBLISH, by identifier, and how each is coded:
#: a fixed number of bytes, or a kind of variable length.
_PUBLISH_PROPERTIES: dict[int, int | str] = {
    0x01: 1,  # payload format indicator
    0x02: 4,  # message expiry interval
    0x23: 2,  # topic alias
    0x03: "string",  # content type
    0x08: "string",  # response topic
    0x09: "string",  # correlation data (binary, coded like a string)
    0x0B: "varint",  # subscription identifier
    0x26: "pair",  # user property
}


def _varint(packet: bytes | bytearray, pos: int) -> tuple[int, int]:
    """An MQTT variable byte integer at `pos`: (its value, the position after it)."""
    value = shift = 0
    for _ in range(4):
        byte = packet[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise MalformedPacket("variable byte integer longer than 4 bytes")


def decode_publish(header: int, packet: bytes | bytearray) -> Publish:
    """An MQTT 5 PUBLISH: the first byte of its fixed header, and what follows the
    remaining length. MalformedPacket when it is not one (paho then drops the
    connection, as it does for any malformed packet)."""
    try:
        qos = (header & 0x06) >> 1
        end = 2 + int.from_bytes(packet[0:2], "big")
        topic = bytes(packet[2:end]).decode("utf-8", "replace")
        mid = 0
        if qos:
            mid = int.from_bytes(packet[end : end + 2], "big")
            end += 2
        length, pos = _varint(packet, end)
        end = pos + length
        users: list[tuple[str, str]] = []
        while pos < end:
            kind = _PUBLISH_PROPERTIES.get(packet[pos], 0)
            pos += 1
            if isinstance(kind, int):
                if not kind:
                    raise MalformedPacket(f"property {packet[pos - 1]} in a PUBLISH")
                pos += kind
            elif kind == "varint":
                pos = _varint(packet, pos)[1]
            else:
                strings = []
                for _ in range(2 if kind == "pair" else 1):
                    stop = pos + 2 + int.from_bytes(packet[pos : pos + 2], "big")
                    strings.append(bytes(packet[pos + 2 : stop]).decode("utf-8", "replace"))
                    pos = stop
                if kind == "pair":
                    users.append((strings[0], strings[1]))
        if pos != end or end > len(packet):
            raise MalformedPacket("PUBLISH properties overrun their length")
    except IndexError as exc:
        raise MalformedPacket("PUBLISH shorter than its header says") from exc
    return Publish(mid, qos, bool(header & 0x01), topic, bytes(packet[end:]), tuple(users))


@dataclasses.dataclass(slots=True)
class Delivery:
    """A message of the subscribing connection, parsed as it arrived."""

    mid: int
    qos: int
    retain: bool
    topic: str
    payload: bytes
    #: What it asks for; None when parsing it raised (`error`): a bug, journaled as
    #: a poison event when its turn comes.
    event: DestinationEvent | RejectedInput | None
    error: Exception | None = None


class ReadAhead:
    """paho's reads of a connection's socket, served from one `recv` of up to
    `READ_CHUNK` bytes.

    paho reads a packet in three or more `recv` calls. Installed as its client's
    `_sock_recv`, this reads the socket once a chunk and hands paho slices of it;
    the owner takes the whole packets it knows from the chunk itself (`buffer` from
    `taken` on): PUBLISH on the subscribing connection (`Inbox`), PUBACK on the
    publishing one (`PublishWindow`).
    """

    __slots__ = ("_recv", "buffer", "taken")

    def __init__(self, client: paho.Client) -> None:
        self.buffer = b""
        self.taken = 0
        self._recv: Callable[[int], bytes] = client._sock_recv  # noqa: SLF001 - see above
        client._sock_recv = self.recv  # type: ignore[method-assign]  # noqa: SLF001

    @property
    def drained(self) -> bool:
        """Whether paho and the owner have taken all of the last read."""
        return self.taken >= len(self.buffer)

    def recv(self, bufsize: int) -> bytes:
        """What paho asks of the socket, from a read of up to `READ_CHUNK` bytes."""
        if self.taken >= len(self.buffer):
            # paho's own: BlockingIOError when nothing is there, b"" at the end.
            data = self._recv(READ_CHUNK)
            if not data:
                return data
            self.buffer, self.taken = data, 0
        start = self.taken
        self.taken = min(start + bufsize, len(self.buffer))
        return self.buffer[start : self.taken]


class Inbox:
    """The subscribing connection's messages, parsed as paho reads them and held, in
    order, until the consumer takes them; acknowledged when the consumer says.

    Installed before the client connects (a resumed session delivers what was queued
    right after CONNACK, and paho would acknowledge it at once). It takes the place
    of three parts of aiomqtt, through the paho client aiomqtt wraps:

    - the messages: paho's `on_message` appends to our queue (aiomqtt wraps each in a
      message of its own and hands it through an `asyncio.Queue` and an async
      iterator, a task and a future a message);
    - the socket's reader: paho reads a packet in three or more `recv` calls, and
      aiomqtt's reader reads one packet a turn of the event loop. Ours reads up to
      `READ_CHUNK` bytes at a time, decodes the whole PUBLISH packets of a read itself
      and hands paho the rest from the same read, all of it in one turn;
    - flow control: while `limit` messages wait, we take the socket out of the event
      loop's readers (the consumer puts it back once half of them are taken). The
      broker keeps what we did not read, TCP holds it back, and our acknowledgements
      (writes) still go out. Armed once the consumer runs (until then the socket must
      be read: the SUBACK arrives behind the queued messages). Only for a connection
      that awaits no answer from the broker while paused (what we publish goes on the
      other one).
    """

    def __init__(
        self,
        client: aiomqtt.Client,
        parse: Callable[[Publish], Delivery],
        limit: int,
        on_pause: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._paho: paho.Client = client._client  # noqa: SLF001 - no public API (aiomqtt #345)
        self._paho.manual_ack_set(True)
        self._parse = parse
        self._limit = limit
        self._on_pause = on_pause
        self._waiting: collections.deque[Delivery] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._paused_fd: int | None = None
        self._armed = False
        self.pauses = 0
        #: Messages acknowledged so far.
        self.acknowledged = 0
        #: PUBACKs to send, packed: written as one packet (`send_acks`).
        self._acks = bytearray()
        # What one read brought that paho has not taken yet.
        self._chunk = ReadAhead(self._paho)
        self._paho_handle_publish: Callable[[], MQTTErrorCode] = self._paho._handle_publish  # noqa: SLF001
        self._paho._handle_publish = self._handle_publish  # type: ignore[method-assign]  # noqa: SLF001
        self._paho.on_message = self._on_message
        opened = self._paho.on_socket_open

        def on_socket_open(client_: paho.Client, userdata: Any, sock: Any) -> None:
            if opened is not None:
                opened(client_, userdata, sock)
            # aiomqtt registers its reader the same way, from the connecting thread;
            # ours, registered after it, takes its place.
            self._loop.call_soon_threadsafe(self._take_reader, sock.fileno())

        self._paho.on_socket_open = on_socket_open

    def __len__(self) -> int:
        """Messages waiting to be taken."""
        return len(self._waiting)

    @property
    def paused(self) -> bool:
        return self._paused_fd is not None

    def arm(self) -> None:
        """From now on a full queue pauses the socket (the consumer takes from it)."""
        self._armed = True

    async def take(self, most: int) -> list[Delivery]:
        """Up to `most` messages, oldest first, once at least one has arrived.

        MqttError when the connection is lost while we wait: what was not
        acknowledged comes again on the next one.
        """
        if not self._waiting:
            disconnected = self._client._disconnected  # noqa: SLF001 - see the class docstring
            self._waiter = waiter = self._loop.create_future()
            try:
                await asyncio.wait((waiter, disconnected), return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._waiter = None
                waiter.cancel()
            if not self._waiting:
                cause = None if disconnected.cancelled() else disconnected.exception()
                raise aiomqtt.MqttError("Disconnected during message iteration") from cause
        waiting = self._waiting
        batch = [waiting.popleft() for _ in range(min(most, len(waiting)))]
        self._resume_if_drained()
        return batch

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a committed message (sent with the others, by `send_acks`)."""
        if delivery.qos == 1:
            # What paho's own `ack` sends: a PUBACK with its message id.
            self._acks += struct.pack("!BBH", paho.PUBACK, 2, delivery.mid)

    def send_acks(self) -> None:
        """Send the acknowledgements `ack` gathered, as one write."""
        if self._acks:
            packed, self._acks = bytes(self._acks), bytearray()
            self.acknowledged += len(packed) // 4
            # One packet for paho's writer, which writes it as it writes any: in order
            # with what it already queued, and nothing written on a lost connection.
            self._paho._packet_queue(paho.PUBACK, packed, 0, 0)  # noqa: SLF001

    def clear_retained(self, topic: str) -> None:
        """Delete a retained message, on this connection, without waiting for its PUBACK.

        On the subscribing connection so that its `noLocal` keeps the deletion from
        coming back to us as a command; not awaited, because the PUBACK may wait
        behind a paused backlog. If it is lost, the broker replays the retained
        command at the next connection, and it is refused and cleared again.
        """
        self._paho.publish(topic, b"", qos=1, retain=True)

    def _handle_publish(self) -> MQTTErrorCode:
        """paho's handler of a PUBLISH packet, for QoS 0 and 1: decoded here, at a
        tenth of the cost of paho's (its MQTT 5 properties, its message and the
        callback's topic matching), and delivered to our queue."""
        packet = self._paho._in_packet  # noqa: SLF001 - see the class docstring
        header = packet["command"]
        if header & 0x06 == 0x04:
            return self._paho_handle_publish()  # QoS 2: we never ask for it
        self._deliver(self._parse(decode_publish(header, packet["packet"])))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        """What paho's own handler delivers (a QoS 2 message), as ours would."""
        properties = getattr(message.properties, "UserProperty", None) or []
        topic = message._topic.decode("utf-8", "replace")  # noqa: SLF001 - see the class docstring
        self._deliver(
            self._parse(
                Publish(
                    message.mid,
                    message.qos,
                    bool(message.retain),
                    topic,
                    bytes(message.payload),
                    tuple((str(k), str(v)) for k, v in properties),
                )
            )
        )

    def _deliver(self, delivery: Delivery) -> None:
        self._waiting.append(delivery)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._armed and len(self._waiting) >= self._limit:
            self._pause()

    def _read(self) -> None:
        """The socket's reader: every packet of a read, unless a full queue pauses us.
        paho reads the first packet of a chunk (and so keeps its own time of the last
        bytes received); the whole PUBLISH packets that follow are taken here at once,
        and paho reads anything else."""
        client = self._paho
        try:
            while self._paused_fd is None:
                client.loop_read()
                if client._in_packet["command"] == 0:  # noqa: SLF001 - no packet begun
                    self._take_publishes()
                if self._chunk.drained or client.socket() is None:
                    break
        except Exception as exc:  # what aiomqtt's reader does: the connection is lost
            disconnected = self._client._disconnected  # noqa: SLF001
            if not disconnected.done():
                disconnected.set_exception(exc)

    def _take_publishes(self) -> None:
        """The whole QoS 0 and 1 PUBLISH packets at the head of the chunk, decoded and
        delivered without paho's reader (three `recv` slices and a dict a packet).
        Anything else, a packet cut by the chunk's end or one that does not decode, is
        left to paho, which handles it as ever (a malformed one drops the connection)."""
        chunk = self._chunk
        buffer, pos = chunk.buffer, chunk.taken
        size = len(buffer)
        while self._paused_fd is None and pos < size:
            header = buffer[pos]
            if header & 0xF0 != paho.PUBLISH or header & 0x06 > 0x02:
                break
            try:
                length, start = _varint(buffer, pos + 1)
            except (IndexError, MalformedPacket):
                break
            end = start + length
            if end > size:
                break
            try:
                publish = decode_publish(header, buffer[start:end])
            except MalformedPacket:
                break
            pos = chunk.taken = end
            self._deliver(self._parse(publish))

    def _take_reader(self, fd: int) -> None:
        self._loop.add_reader(fd, self._read)
        # What aiomqtt's reader may have read meanwhile and left in our buffer.
        self._read()

    def _pause(self) -> None:
        sock = self._paho.socket()
        if self._paused_fd is not None or sock is None:
            return
        fd = sock.fileno()
        self._loop.remove_reader(fd)
        self._paused_fd = fd
        self.pauses += 1
        if self._on_pause is not None:
            self._on_pause()

    def _resume_if_drained(self) -> None:
        fd = self._paused_fd
        if fd is None or len(self._waiting) > self._limit // 2:
            return
        self._paused_fd = None
        sock = self._paho.socket()
        if sock is None or sock.fileno() != fd:
            return  # the connection closed meanwhile
        self._loop.add_reader(fd, self._read)
        # What the last read brought beyond the pause: no new data may wake the reader.
        self._loop.call_soon(self._read)


_BATCH_MESSAGES = metrics.MQTT_BATCH_MESSAGES
_CONFIRMED = metrics.MQTT_PUBLICATIONS.labels("confirmed")
_DROPPED = metrics.MQTT_PUBLICATIONS.labels("dropped")
#: A PUBACK that is the message id alone (all an MQTT 3.1.1 PUBACK is, and an MQTT 5
#: one for a plain success): its fixed header.
_PUBACK_HEAD = bytes((paho.PUBACK, 2))


class PublishWindow:
    """Up to `size` QoS 1 publications awaiting their PUBACK at once, on one connection.

    Awaiting each PUBACK before the next publication costs a loop round and a timer
    per message; a window keeps the connection busy and still confirms every one.
    Publications go out in the order they are made, and the broker keeps that order,
    so a destination's later state never lands before its earlier one.

    It publishes and reads the PUBACKs itself, through the paho client aiomqtt wraps
    (aiomqtt's `publish` awaits one message at a time, and paho's cost is per packet:
    for each publication a message object with its own lock and condition, a write
    registered with the event loop through a thread-safe call, a system call; for each
    PUBACK three `recv` calls and a callback). All of this class's reaches into paho
    (pinned in pyproject.toml; tests/worker/intake/test_mqtt.py checks each behaviour):

    - `send` encodes the PUBLISH packet as paho would (a message id from paho's own
      counter, so that paho's publications on the connection never share one) and
      keeps it; what a loop turn sent leaves in one write, straight to the socket when
      paho has nothing queued before it, else queued behind what paho has;
    - the socket's reader is ours: one `recv` of up to `READ_CHUNK` bytes, the PUBACKs
      of our publications taken from it in bulk, anything else (a PINGRESP, the
      PUBACK of a publication of paho's) handed to paho's own reader from that chunk;
    - a PUBACK paho reads itself confirms our publication when it is ours.

    Our publications never enter paho's own records (its in-flight messages are
    empty): what a lost connection left unconfirmed is ours to send again
    (`unconfirmed`), as it was before.
    """

    def __init__(
        self,
        client: aiomqtt.Client,
        size: int,
        timeout_s: float,
        *,
        wake: asyncio.Event | None = None,
    ) -> None:
        self._paho: paho.Client = client._client  # noqa: SLF001 - see the class docstring
        self._loop = asyncio.get_running_loop()
        self._size = size
        self._timeout_s = timeout_s
        #: Sent and not yet confirmed, by message id, oldest first.
        self._in_flight: dict[int, tuple[str, bytes, bool]] = {}
        self._confirmed = asyncio.Event()
        #: The connection is gone: whoever waits (for room, or on `wake`) is woken to
        #: learn it now, not at the next publication or after the PUBACK timeout.
        self.lost = False
        self._why: BaseException | None = None
        self._wake = wake
        client._disconnected.add_done_callback(self._on_lost)  # noqa: SLF001 - as Inbox
        self._disconnected = client._disconnected  # noqa: SLF001
        self._mqtt5 = self._paho._protocol == paho.MQTTv5  # noqa: SLF001
        #: PUBLISH packets sent this loop turn, written together at its end (`_flush`).
        self._unwritten: list[bytes] = []
        # What one read brought that paho has not taken yet (see `_read`).
        self._chunk = ReadAhead(self._paho)
        self._paho_handle_puback = self._paho._handle_pubackcomp  # noqa: SLF001
        self._paho._handle_pubackcomp = self._handle_puback  # type: ignore[method-assign,assignment]  # noqa: SLF001
        sock = self._paho.socket()
        if sock is not None:
            # Connected already: aiomqtt's reader is registered; ours takes its place.
            self._loop.add_reader(sock.fileno(), self._read)

    def _on_lost(self, disconnected: asyncio.Future[None]) -> None:
        self.lost = True
        # Taken here (aiomqtt leaves a lost connection's error unread), and given as
        # the cause of the MqttError that `check` raises.
        self._why = None if disconnected.cancelled() else disconnected.exception()
        self._confirmed.set()
        if self._wake is not None:
            self._wake.set()

    def check(self) -> None:
        """Raise MqttError if the connection is gone."""
        if self.lost:
            raise aiomqtt.MqttError(f"connection lost: {self._why or 'closed'}") from self._why

    async def room(self) -> None:
        """Wait until fewer than `size` publications await their PUBACK."""
        self.check()
        while len(self._in_flight) >= self._size:
            self._confirmed.clear()
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._confirmed.wait()
            except TimeoutError:
                raise aiomqtt.MqttError("no PUBACK in time") from None
            self.check()

    def send(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Publish at QoS 1: written with the others of this loop turn."""
        client = self._paho
        mid = client._mid_generate()  # noqa: SLF001 - see the class docstring
        # Lost with the connection: sent again on the next one.
        self._in_flight[mid] = (topic, payload, retain)
        if client._sock is None:  # noqa: SLF001
            raise aiomqtt.MqttCodeError(paho.MQTT_ERR_NO_CONN, "Could not publish message")
        if not self._unwritten:
            self._loop.call_soon(self._flush)
        self._unwritten.append(encode_publish(topic, payload, mid, retain, mqtt5=self._mqtt5))

    def _flush(self) -> None:
        """Write what this loop turn sent, in one system call when the socket takes it."""
        packets, self._unwritten = self._unwritten, []
        client = self._paho
        data = b"".join(packets)
        written = 0
        if client._sock is not None and not client._out_packet:  # noqa: SLF001
            # Nothing of paho's before it: straight to the socket, without registering a
            # writer (a thread-safe call and two epoll changes) and a loop turn.
            try:
                written = client._sock_send(data)  # noqa: SLF001
            except OSError:
                written = 0  # paho's writer meets it again, and handles it as it does
            else:
                with client._msgtime_mutex:  # noqa: SLF001 - for paho's keep-alive
                    client._last_msg_out = paho.time_func()  # noqa: SLF001
        if written < len(data):
            # Behind what paho queued, or what the socket did not take: paho's writer
            # writes it when the socket is writable, and meets a lost connection.
            client._packet_queue(paho.PUBLISH | 0x02, data[written:], 0, 1)  # noqa: SLF001

    def _read(self) -> None:
        """The socket's reader: paho reads the first packet of a chunk (and so keeps
        its own time of the last bytes received), the PUBACKs of ours that follow are
        taken here at once, and paho reads anything else."""
        client = self._paho
        confirmed = 0
        try:
            while True:
                client.loop_read()
                if client._in_packet["command"] == 0:  # noqa: SLF001 - no packet begun
                    confirmed += self._take_pubacks()
                if self._chunk.drained or client.socket() is None:
                    break
        except Exception as exc:  # what aiomqtt's reader does: the connection is lost
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)
        if confirmed:
            self._confirm(confirmed)

    def _take_pubacks(self) -> int:
        """The PUBACKs of our publications at the head of the chunk: how many."""
        buffer, pos, in_flight = self._chunk.buffer, self._chunk.taken, self._in_flight
        end = len(buffer) - 3
        taken = 0
        while pos < end and buffer[pos : pos + 2] == _PUBACK_HEAD:
            if in_flight.pop(buffer[pos + 2] << 8 | buffer[pos + 3], None) is None:
                break  # paho's own publication: its reader takes it
            pos += 4
            taken += 1
        self._chunk.taken = pos
        return taken

    def _handle_puback(self, command: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        """paho's handling of a PUBACK it read: ours is confirmed here (whatever its
        reason code, as paho confirms its own), anything else is paho's."""
        packet = self._paho._in_packet["packet"]  # noqa: SLF001
        ours = command == "PUBACK" and len(packet) >= 2
        if ours and self._in_flight.pop(packet[0] << 8 | packet[1], None) is not None:
            self._confirm(1)
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._paho_handle_puback(command)

    def _confirm(self, count: int) -> None:
        _CONFIRMED.inc(count)
        self._confirmed.set()

    def has_room(self) -> bool:
        return len(self._in_flight) < self._size

    def __len__(self) -> int:
        """Publications sent and not yet confirmed."""
        return len(self._in_flight)

    def unconfirmed(self) -> list[tuple[str, bytes, bool]]:
        """What was sent without a PUBACK yet, oldest first."""
        return list(self._in_flight.values())


def encode_publish(topic: str, payload: bytes, mid: int, retain: bool, *, mqtt5: bool) -> bytes:
    """A QoS 1 PUBLISH packet, the bytes paho makes of the same (no properties)."""
    encoded = topic.encode()
    # MQTT 5 puts a properties length (none: 0) after the message id.
    properties = b"\x00" if mqtt5 else b""
    return b"".join(
        (
            bytes((paho.PUBLISH | 0x02 | retain,)),
            _remaining_length(4 + len(encoded) + len(properties) + len(payload)),
            len(encoded).to_bytes(2, "big"),
            encoded,
            mid.to_bytes(2, "big"),
            properties,
            payload,
        )
    )


def _remaining_length(value: int) -> bytes:
    """MQTT's variable byte integer (the fixed header's remaining length)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def parse_topic(prefix: str, topic: str) -> tuple[str, int, Verb]:
    """(task id, destination id, verb) from a topic; RejectedEventError names the problem."""
    # Every event's topic is parsed: one match for a good one, the checks one by one
    # (to say what is wrong) only for one that fails it.
    match = _topic_pattern(prefix).fullmatch(topic)
    if match is not None and match[1] not in (".", ".."):
        verb: Verb = match[3]  # type: ignore[assignment]  # one of VERBS, by the pattern
        return _canonical_task(match[1]), int(match[2]), verb
    return _parse_topic_slowly(prefix, topic)


@functools.lru_cache(maxsize=16)
def _topic_pattern(prefix: str) -> re.Pattern[str]:
    """A good topic under `prefix`: what `_parse_topic_slowly` accepts, in one pattern."""
    return re.compile(
        rf"{re.escape(prefix)}/tasks/([A-Za-z0-9_.\-]{{1,128}})/task_destinations/"
        rf"([0-9]{{1,15}})/({'|'.join(VERBS)})"
    )


@functools.lru_cache(maxsize=1024)
def _canonical_task(task_id: str) -> str:
    """`07` and `7` are one task, as on the HTTP API (a handful of tasks, seen again and
    again)."""
    return canonical_task_id(task_id) or task_id


def _parse_topic_slowly(prefix: str, topic: str) -> tuple[str, int, Verb]:
    head = prefix + "/tasks/"
    if not topic.startswith(head):
        raise RejectedEventError(f"topic {topic[:200]!r} is not under {head!r}")
    parts = topic[len(head) :].split("/")
    if len(parts) != 4 or parts[1] != "task_destinations":
        raise RejectedEventError(
            f"topic {topic[:200]!r} is not <prefix>/tasks/<task>/task_destinations/<id>/<verb>"
        )
    task_id, _, raw_id, verb = parts
    if not _TASK_RE.fullmatch(task_id) or task_id in (".", ".."):
        raise RejectedEventError(f"invalid task id {task_id[:64]!r} in topic")
    if not raw_id.isdigit() or len(raw_id) > 15 or not raw_id.isascii():
        raise RejectedEventError(f"invalid destination id {raw_id[:64]!r} in topic")
    if verb not in VERBS:
        raise RejectedEventError(f"unknown verb {verb[:64]!r}: expected one of {VERBS}")
    return _canonical_task(task_id), int(raw_id), verb


def parse_sequence(raw: str) -> int:
    """The `sequence` user property; RejectedEventError names the problem."""
    if not _SEQUENCE_RE.fullmatch(raw) or int(raw) > MAX_SEQUENCE:
        raise RejectedEventError(
            f"sequence {raw[:64]!r} is not a whole number from 0 to {MAX_SEQUENCE}"
        )
    return int(raw)


def to_event(
    prefix: str,
    topic: str,
    payload: bytes,
    event_id: str | None = None,
    *,
    sequence: str | None = None,
    retained: bool = False,
) -> DestinationEvent | RejectedInput:
    text = payload.decode("utf-8", "replace")
    dedup = f"mqtt:{event_id}" if event_id is not None else None
    digest = message_digest(topic, payload)
    try:
        if retained:
            raise RejectedEventError(RETAINED_REASON)
        task_id, destination_id, verb = parse_topic(prefix, topic)
        order = parse_sequence(sequence) if sequence is not None else None
        parsed = None
        if verb in ("create", "update"):
            parsed = parse_payload(payload)
        elif payload.strip():
            raise RejectedEventError(f"{verb} takes an empty payload")
    except RejectedEventError as exc:
        return RejectedInput(
            exc.reason,
            source="mqtt",
            topic=topic[:1024],
            payload=text[:65536],
            dedup_key=dedup,
            digest=digest,
        )
    return DestinationEvent(
        verb,
        task_id,
        destination_id,
        parsed.body if parsed else None,
        "mqtt",
        topic=topic,
        payload=text,
        dedup_key=dedup,
        size_bytes=parsed.size_bytes if parsed else None,
        sequence=order,
        digest=digest,
        nested=parsed.nested if parsed else None,
    )


def user_property(message: aiomqtt.Message, name: str) -> str | None:
    """The first value of an MQTT 5 user property, if the publisher set it."""
    properties = getattr(message.properties, "UserProperty", None) or []
    for key, value in properties:
        if key == name:
            return str(value)
    return None


def event_id_of(message: aiomqtt.Message) -> str | None:
    """The publisher's optional `event-id` user property (MQTT 5).

    With it, a redelivered event is recognised and journaled once; without it,
    replaying is still harmless because destinations are desired state.
    """
    value = user_property(message, "event-id")
    return value if value is not None and _EVENT_ID_RE.fullmatch(value) else None


def message_to_event(prefix: str, message: Publish) -> DestinationEvent | RejectedInput:
    event_id = message.user_property("event-id")
    return to_event(
        prefix,
        message.topic,
        message.payload,
        event_id if event_id is not None and _EVENT_ID_RE.fullmatch(event_id) else None,
        sequence=message.user_property("sequence"),
        retained=message.retain,
    )


class MqttIntake:
    def __init__(
        self,
        settings: MqttSettings,
        journal: Journal,
        *,
        hold_seconds: float,
        on_change: ChangeListener,
        clock: Clock,
        library_id: str = "library0",
        journal_retry_s: tuple[float, float] = JOURNAL_RETRY_S,
        route: Route | None = None,
    ) -> None:
        self._settings = settings
        self.library_id = library_id
        #: In a fleet, every library reads these topics and applies only what is its own.
        self._route = route
        #: Everything this library publishes is under it: fleet members never collide.
        self.library_prefix = library_topic(settings.prefix, library_id)
        self.client_id = settings.client_id or f"tapeworker-{library_id}"
        self.fleet_topic = fleet_topic(settings.prefix, library_id)
        self._summary: bytes | None = None
        self._stopped = False
        self._journal_retry_s = journal_retry_s
        self._journal = journal
        self._hold_seconds = hold_seconds
        self._on_change = on_change
        self._clock = clock
        #: The publishing connection, while it is up (say_goodbye publishes on it).
        self._publishing: aiomqtt.Client | None = None
        #: The subscribing connection's messages, while it is up.
        self.inbox: Inbox | None = None
        self._subscribed = False
        #: Destinations committed and not yet published, and the signal that there are.
        self._changed: set[int] = set()
        self._changes = asyncio.Event()
        #: Both connections are up: events are read and their state published.
        self.connected = asyncio.Event()
        #: (topic, payload, retain) to publish, oldest first; what a lost connection
        #: left unconfirmed is put back at its head.
        self._outbox: collections.deque[tuple[str, bytes, bool]] = collections.deque()
        self._outbox_filled = asyncio.Event()
        #: The publishing connection's window, while it is up.
        self._window: PublishWindow | None = None
        #: A batch is being committed, or its changes published (`publications_waiting`).
        self._committing = False
        self._publishing_changes = False
        metrics.MQTT_PUBLICATIONS_WAITING.set_function(self.publications_waiting)

    def publications_waiting(self) -> int:
        """What is on its way to the broker: a batch in its commit, changes not yet
        published, publications queued or awaiting their PUBACK. 0 means that all the
        committed events' states are confirmed by the broker (or were dropped)."""
        window = self._window
        return (
            int(self._committing)
            + len(self._changed)
            + int(self._publishing_changes)
            + len(self._outbox)
            + (len(window) if window is not None else 0)
        )

    @property
    def prefix(self) -> str:
        return self._settings.prefix

    @property
    def publishing_client_id(self) -> str:
        return f"{self.client_id}-pub"

    def _make_client(self, *, subscribing: bool) -> aiomqtt.Client:
        password = self._settings.password.get_secret_value() if self._settings.password else None
        if not subscribing:
            # The will goes with the summaries it stands in for: published on one
            # connection, a reconnect that republishes the summary always comes after
            # the will it replaces. The publishing connection also never stops
            # reading, so the broker does not lose it (and publish "gone") while a
            # backlog holds the subscribing one paused; a killed daemon drops both.
            # A hint that we are gone, never a lock (docs/failover.md).
            will = aiomqtt.Will(
                self.fleet_topic,
                json.dumps(gone_summary(self.library_id)).encode(),
                qos=1,
                retain=True,
            )
            # MQTT 3.1.1: what this connection does (QoS 1 publications, retained or
            # not, a retained will, a clean session) needs nothing of MQTT 5 (see
            # PUBLISH_PROTOCOL).
            return aiomqtt.Client(
                hostname=self._settings.host or "localhost",
                port=self._settings.port,
                username=self._settings.username,
                password=password,
                identifier=self.publishing_client_id,
                protocol=PUBLISH_PROTOCOL,
                # Nothing to keep: the outbox is in memory.
                clean_session=True,
                will=will,
                keepalive=self._settings.keepalive,
            )
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._settings.session_expiry_s
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        return aiomqtt.Client(
            hostname=self._settings.host or "localhost",
            port=self._settings.port,
            username=self._settings.username,
            password=password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            # The subscriber keeps its session (and the events queued for it) across
            # restarts.
            clean_start=False,
            properties=properties,
            keepalive=self._settings.keepalive,
        )

    def _set_connected(self) -> None:
        if self._subscribed and self._publishing is not None:
            self.connected.set()
        else:
            self.connected.clear()

    async def run(self) -> None:
        """Consume and publish forever, each connection reconnecting on its own."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._run_publishing(), name="mqtt-publish")
            group.create_task(self._publish_changes(), name="mqtt-changes")
            await self._run_subscribing()

    async def _run_subscribing(self) -> None:
        delay = 1.0
        while True:
            client = self._make_client(subscribing=True)
            # Before connecting: a resumed session delivers queued events at once.
            inbox = Inbox(client, self._delivery, QUEUE_LIMIT, metrics.MQTT_READ_PAUSES.inc)
            try:
                async with client:
                    await client.subscribe(
                        f"{self.prefix}/tasks/#",
                        # retainAsPublished: a retained command keeps its flag, so it
                        # is refused whether it is replayed or new; noLocal: our own
                        # clearing of a retained command does not come back to us.
                        options=SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True),
                    )
                    self.inbox = inbox
                    self._subscribed = True
                    self._set_connected()
                    delay = 1.0
                    log.info("mqtt connected", host=self._settings.host, port=self._settings.port)
                    await self._consume(inbox)
            except aiomqtt.MqttError as exc:
                log.warning("mqtt disconnected", error=str(exc), retry_in_s=delay)
            finally:
                self.inbox = None
                self._subscribed = False
                self._set_connected()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.reconnect_max_s)

    async def _run_publishing(self) -> None:
        delay = 1.0
        while True:
            client = self._make_client(subscribing=False)
            try:
                async with client:
                    self._publishing = client
                    self._set_connected()
                    if self._summary is not None:
                        # Our will may have replaced it while we were away.
                        self._enqueue(self.fleet_topic, self._summary, retain=True)
                    delay = 1.0
                    await self._publisher(client)
            except aiomqtt.MqttError as exc:
                log.warning("mqtt publisher disconnected", error=str(exc), retry_in_s=delay)
            finally:
                self._publishing = None
                self._set_connected()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.reconnect_max_s)

    def _delivery(self, message: Publish) -> Delivery:
        """A message as it arrives, parsed (through `Inbox`)."""
        topic, payload = message.topic, message.payload
        try:
            event = message_to_event(self.prefix, message)
            if self._route is not None and isinstance(event, DestinationEvent):
                event = dataclasses.replace(event, route=self._route)
        except Exception as exc:  # a bug: the message is journaled as poison, in its turn
            return Delivery(message.mid, message.qos, message.retain, topic, payload, None, exc)
        return Delivery(message.mid, message.qos, message.retain, topic, payload, event)

    async def _consume(self, inbox: Inbox) -> None:
        """Commit what has arrived, a batch at a time, and acknowledge each batch once
        it is committed. Meanwhile the next messages are read and parsed (`Inbox`), and
        the state of what the last batch changed is published (`_publish_changes`)."""
        inbox.arm()
        while True:
            batch = await inbox.take(MAX_BATCH)
            self._committing = True
            try:
                await self._commit_when_possible(batch, inbox)
            finally:
                self._committing = False
            for delivery in batch:
                inbox.ack(delivery)
            inbox.send_acks()
            _BATCH_MESSAGES.observe(len(batch))

    async def _commit_when_possible(self, batch: list[Delivery], inbox: Inbox | None) -> None:
        """Commit the batch, holding it back (unread behind it, unacknowledged) while
        the journal refuses writes: the broker keeps the rest, and redelivers all of
        it if we stop meanwhile. A message whose parsing raised is journaled as poison,
        in its place: the events of a destination apply in order."""
        start = 0
        for n, delivery in enumerate(batch):
            if delivery.error is not None:
                if start < n:
                    await self._commit_run(batch[start:n], inbox)
                await self._commit_when_possible_as_poison(delivery, delivery.error)
                start = n + 1
        if start < len(batch):
            await self._commit_run(batch[start:] if start else batch, inbox)

    async def _commit_run(self, batch: list[Delivery], inbox: Inbox | None) -> None:
        delay, longest = self._journal_retry_s
        while True:
            try:
                await self._commit(batch, inbox)
            except JournalFaultError as exc:
                log.warning(
                    "journal fault: mqtt intake paused, nothing acknowledged",
                    error=str(exc),
                    held=len(batch),
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
                continue
            except Exception as exc:
                # A bug outside the journal's guard of each event: find the message
                # that trips it, and journal that one as poison.
                if len(batch) > 1:
                    for delivery in batch:
                        await self._commit_run([delivery], inbox)
                else:
                    await self._commit_when_possible_as_poison(batch[0], exc)
            return

    async def _commit_when_possible_as_poison(self, delivery: Delivery, exc: Exception) -> None:
        reason = f"poison event: handling raised {type(exc).__name__}: {exc}"[:1000]
        log.error("poison event skipped", topic=delivery.topic, reason=reason, exc_info=exc)
        event = delivery.event
        poison = RejectedInput(
            reason,
            source="mqtt",
            topic=delivery.topic[:1024],
            payload=delivery.payload.decode("utf-8", "replace")[:65536],
            dedup_key=event.dedup_key if event is not None else None,
        )
        delay, longest = self._journal_retry_s
        while True:
            try:
                await record_events(
                    self._journal, [poison], now=self._clock(), hold_seconds=self._hold_seconds
                )
            except JournalFaultError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
                continue
            break
        self.publish_nowait(
            f"{self.prefix}/dead-letter",
            {
                "topic": poison.topic,
                "payload": poison.payload,
                "reason": reason,
                "library": self.library_id,
            },
            retain=False,
        )

    async def _commit(self, batch: list[Delivery], inbox: Inbox | None) -> None:
        """Journal a batch of parsed messages in one commit; what it changed is
        published afterwards (`_publish_changes`)."""
        events = [delivery.event for delivery in batch if delivery.event is not None]
        outcomes = await record_events(
            self._journal,
            events,
            now=self._clock(),
            hold_seconds=self._hold_seconds,
            lines="batch",
        )
        for event, outcome in zip(events, outcomes, strict=True):
            if outcome.destination_id is not None:
                self._changed.add(outcome.destination_id)
            if outcome.status == "rejected":
                log.warning("event rejected", topic=event.topic, reason=outcome.reason)
                self.publish_nowait(
                    f"{self.prefix}/dead-letter",
                    {
                        "topic": event.topic,
                        "payload": event.payload,
                        "reason": outcome.reason,
                        "library": self.library_id,
                    },
                    retain=False,
                )
        for delivery in batch:
            if delivery.retain and delivery.payload and inbox is not None:
                # Journaled above; now the broker must stop replaying it. An empty
                # retained message deletes it (if the broker's ACL lets us publish there).
                log.info("clearing a retained command", topic=delivery.topic)
                inbox.clear_retained(delivery.topic)
        if self._changed:
            self._changes.set()

    async def _publish_changes(self) -> None:
        """Publish the state of what the commits changed, while the next ones run."""
        while True:
            await self._changes.wait()
            await self.publish_changed()

    async def publish_changed(self) -> None:
        """Publish the state of the destinations committed since the last time: all
        at once when commits came faster than the publication (their latest state)."""
        self._changes.clear()
        changed, self._changed = self._changed, set()
        if not changed:
            return
        self._publishing_changes = True
        try:
            await self._on_change(changed)
        except Exception:
            # Committed and acknowledged already: the next change publishes again.
            log.exception("state publication failed", destinations=sorted(changed))
        finally:
            self._publishing_changes = False

    def clear_retained(self, topic: str) -> None:
        """Delete a retained message from the broker (an empty retained one does)."""
        self._enqueue(topic, b"", retain=True)

    def publish_nowait(self, topic: str, data: dict[str, Any], *, retain: bool) -> None:
        self._enqueue(topic, json.dumps(data).encode(), retain=retain)

    def _enqueue(self, topic: str, payload: bytes, *, retain: bool) -> None:
        if len(self._outbox) >= OUTBOX_LIMIT:
            _DROPPED.inc()
            log.warning("mqtt outbox full, state update dropped", topic=topic)
            return
        self._outbox.append((topic, payload, retain))
        self._outbox_filled.set()

    def publish_summary(self, data: dict[str, Any]) -> None:
        """This library's summary for the fleet view, retained, when it changed."""
        payload = json.dumps(data).encode()
        if payload != self._summary and not self._stopped:
            self._summary = payload
            self._enqueue(self.fleet_topic, payload, retain=True)

    async def say_goodbye(self, timeout_s: float) -> None:
        """Mark this library stopped in the fleet view, if the broker answers in time."""
        client = self._publishing
        if client is None:
            return  # the broker lost us already: it has published our will
        # No alive summary may follow the goodbye (see _publisher and publish_summary).
        self._stopped = True
        payload = json.dumps({**gone_summary(self.library_id), "stopped": True}).encode()
        try:
            async with asyncio.timeout(timeout_s):
                await client.publish(self.fleet_topic, payload, qos=1, retain=True)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning("fleet summary not updated at stop", error=str(exc) or "timed out")
        else:
            self._summary = payload

    def publish_state(self, destination_id: int, payload: bytes) -> None:
        """A destination's state (its view, serialised), retained."""
        self._enqueue(
            f"{self.library_prefix}/state/task_destinations/{destination_id}", payload, retain=True
        )

    async def _publisher(self, client: aiomqtt.Client) -> None:
        window = PublishWindow(client, PUBLISH_WINDOW, client.timeout, wake=self._outbox_filled)
        outbox = self._outbox
        self._window = window
        try:
            while True:
                window.check()
                if not outbox:
                    self._outbox_filled.clear()
                    await self._outbox_filled.wait()
                    continue
                await window.room()
                # A stop must not wait here for the next publication, even if an await
                # swallowed the cancellation (asyncio.wait_for can, in Python 3.11).
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise asyncio.CancelledError
                # As many as the window takes, in one go: one wake-up, one write.
                while outbox and window.has_room():
                    topic, payload, retain = outbox.popleft()
                    if self._stopped and topic == self.fleet_topic:
                        continue  # an alive summary queued before the goodbye
                    window.send(topic, payload, retain=retain)
        finally:
            # What this connection sent without its PUBACK goes first on the next one,
            # in order: it is older than anything still waiting.
            self._window = None
            outbox.extendleft(reversed(window.unconfirmed()))
