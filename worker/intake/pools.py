"""The pool intake of a library in a fleet: one library of a pool takes each destination.

A second MQTT connection, apart from the daemon's persistent one: its session lasts
only while it is connected, so a library that dies leaves the pools' shared
subscriptions at once and the broker hands the pools' destinations to the libraries
still there (mosquitto picks a group's members in turn, and would keep queueing for
a persistent member while it is away). What the connection had received and not yet
claimed when it died is lost with its session: the archive manager publishes a pool
destination again when no claim appears for it (the README, "A fleet of libraries").
What it had claimed is not: the claim holds the message, and the library journals it
when it meets its own claim again after a restart. The rules are in worker/fleet/routing.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from worker.callbacks import ChangeListener, Clock
from worker.errors import JournalFaultError, RejectedEventError
from worker.fleet import fleet_topic, routing
from worker.intake.destinations import (
    DestinationEvent,
    Outcome,
    RejectedInput,
    message_digest,
    record_events,
)
from worker.intake.mqtt import JOURNAL_RETRY_S, ManualAcks, event_id_of, to_event, user_property
from worker.settings import FleetSettings, MqttSettings
from worker.state.journal import Journal

log = structlog.get_logger("tapeworker.fleet")

DeadLetter = Callable[[dict[str, Any]], None]


class PoolIntake:
    def __init__(
        self,
        settings: MqttSettings,
        fleet: FleetSettings,
        journal: Journal,
        *,
        library_id: str,
        client_id: str,
        pools: Sequence[str],
        hold_seconds: float,
        on_change: ChangeListener,
        dead_letter: DeadLetter,
        clock: Clock,
        journal_retry_s: tuple[float, float] = JOURNAL_RETRY_S,
    ) -> None:
        self._settings = settings
        self._fleet = fleet
        self._journal = journal
        self.library_id = library_id
        self.client_id = f"{client_id}-pools"
        self.pools = tuple(pools)
        self._hold_seconds = hold_seconds
        self._on_change = on_change
        self._dead_letter = dead_letter
        self._clock = clock
        self._journal_retry_s = journal_retry_s
        #: Which library claimed each pool destination, as the retained claims say.
        self.claims: dict[int, str] = {}
        #: The pools of each library the fleet view shows alive (none when gone).
        self.members: dict[str, set[str]] = {}
        self.connected = asyncio.Event()

    @property
    def prefix(self) -> str:
        return self._settings.prefix

    def _make_client(self) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # The session ends with the connection: a dead library leaves the groups.
        properties.SessionExpiryInterval = 0
        # What a dying connection can lose is what it was sent and had not claimed.
        properties.ReceiveMaximum = self._fleet.receive_maximum
        password = self._settings.password.get_secret_value() if self._settings.password else None
        return aiomqtt.Client(
            hostname=self._settings.host or "localhost",
            port=self._settings.port,
            username=self._settings.username,
            password=password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            properties=properties,
            keepalive=self._settings.keepalive,
        )

    async def run(self) -> None:
        """Take the pools' destinations forever; reconnect with back-off."""
        delay = 1.0
        while True:
            client = self._make_client()
            acks = ManualAcks(client)
            try:
                async with client:
                    # Claims and the fleet view first: on one connection the broker
                    # sends their retained messages before any pool command of the
                    # later subscriptions.
                    await client.subscribe(routing.claims_subscription(self.prefix), qos=1)
                    await client.subscribe(fleet_topic(self.prefix, "+"), qos=1)
                    await client.subscribe(
                        routing.hand_off_subscription(self.prefix, self.library_id), qos=1
                    )
                    for pool in self.pools:
                        await client.subscribe(
                            routing.pool_subscription(self.prefix, pool, self._fleet.share_group),
                            options=SubscribeOptions(qos=1, retainAsPublished=True),
                        )
                    self.connected.set()
                    delay = 1.0
                    log.info("pool intake connected", pools=list(self.pools))
                    async for message in client.messages:
                        # One at a time: a claim is on the broker before its commit.
                        try:
                            await self._handle(client, message)
                        except aiomqtt.MqttError:
                            raise
                        except Exception as exc:
                            # A bug must not stop the intake: the message is journaled
                            # as poison, as the main intake does.
                            log.exception("poison pool message", topic=message.topic.value)
                            reason = f"poison event: handling raised {type(exc).__name__}: {exc}"
                            await self._reject(
                                message.topic.value, _raw(message.payload), reason[:1000]
                            )
                        acks.ack(message)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                log.warning("pool intake disconnected", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.reconnect_max_s)

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = _raw(message.payload)
        if message.topic.matches(routing.claims_subscription(self.prefix)):
            await self._on_claim(topic, payload)
            return
        if message.topic.matches(fleet_topic(self.prefix, "+")):
            self._on_summary(payload)
            return
        try:
            pool, command = routing.split_pool_topic(self.prefix, topic)
            hand_off = routing.parse_hand_off(
                user_property(message, routing.HAND_OFFS), user_property(message, routing.DECLINED)
            )
            event_id = event_id_of(message)
            if event_id is None:
                raise RejectedEventError(
                    "a pool destination needs an event-id user property: a library finds "
                    "it again by it after a crash, and the publisher's resend is known by it"
                )
        except RejectedEventError as exc:
            await self._reject(topic, payload, exc.reason)
            return
        event = to_event(
            self.prefix,
            command,
            payload,
            event_id,
            sequence=user_property(message, "sequence"),
            retained=bool(message.retain),
        )
        if isinstance(event, RejectedInput):
            await self._reject(topic, payload, event.reason, event.dedup_key)
            return
        event = dataclasses.replace(
            event,
            topic=topic,
            dedup_key=routing.dedup_key(event_id, hand_off),
            digest=message_digest(topic, payload),
        )
        try:
            await self._check_pool_command(event, pool)
        except RejectedEventError as exc:
            await self._reject(topic, payload, exc.reason, event.dedup_key)
            return
        if await self._journal.event_with_dedup_key(event.dedup_key or "") is not None:
            return  # handled before this restart: the claim or the hand-off is out
        decision = await self._decide(event, pool, hand_off)
        route = routing.Route(self.library_id, "pass", decision.reason, self.prefix)
        if decision.kind in ("take", "fail"):
            claim = routing.Claim(
                library_id=self.library_id,
                destination_id=event.destination_id or 0,
                status="taken" if decision.kind == "take" else "failed",
                topic=topic,
                payload=event.payload or "",
                event_id=event_id,
                sequence=user_property(message, "sequence"),
                hand_offs=hand_off.count,
                reason=decision.reason,
            )
            await client.publish(
                routing.claim_topic(self.prefix, pool, claim.destination_id),
                claim.to_json(),
                qos=1,
                retain=True,
            )
            self.claims[claim.destination_id] = self.library_id
            route = routing.Route(
                self.library_id,
                "take" if decision.kind == "take" else "fail",
                decision.reason,
                self.prefix,
            )
        elif decision.kind == "hand_on":
            assert decision.hand_off is not None
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.UserProperty = [
                ("event-id", event_id),
                *([("sequence", str(event.sequence))] if event.sequence is not None else []),
                *routing.hand_off_properties(decision.hand_off),
            ]
            # Out before the commit: a crash in between loses nothing, and the next
            # library knows this hop by its count.
            tail = command.removeprefix(f"{self.prefix}/tasks/")
            to = f"{routing.hand_off_commands(self.prefix, pool, decision.to or '')}/{tail}"
            await client.publish(to, payload, qos=1, properties=properties)
            log.info(
                "pool destination handed on",
                destination=event.destination_id,
                pool=pool,
                to=decision.to,
            )
        await self._record(dataclasses.replace(event, route=route))

    async def _decide(
        self, event: DestinationEvent, pool: str, hand_off: routing.HandOff
    ) -> routing.Decision:
        why_not = routing.why_not_here(
            pool,
            event.size_bytes,
            await self._journal.tapes(),
            await self._journal.drives(),
            draining=await self._journal.draining() is not None,
        )
        return routing.decide(
            self.library_id,
            pool,
            why_not=why_not,
            hand_off=hand_off,
            max_hand_offs=self._fleet.max_hand_offs,
            claimed_by=self.claims.get(event.destination_id or 0),
            members=[library for library, pools in self.members.items() if pool in pools],
        )

    async def _check_pool_command(self, event: DestinationEvent, pool: str) -> None:
        """A pool topic carries creates naming only that pool."""
        if event.verb != "create":
            raise RejectedEventError(
                f"{event.verb} of a pool destination goes to {self.prefix}/tasks/...: only "
                "creates are published on a pool's topic"
            )
        body = event.body
        assert body is not None
        if body.tape_id is not None or body.tape_barcode is not None:
            raise RejectedEventError(
                "a destination naming a tape goes to the library holding it, on "
                f"{self.prefix}/tasks/..., not on a pool's topic"
            )
        named = body.pool_name
        if body.pool_id is not None:
            by_id = next(
                (p for p in await self._journal.pools() if p.pool_id == body.pool_id), None
            )
            named = by_id.name if by_id is not None else named
        if named != pool:
            raise RejectedEventError(f"the destination names pool {named!r}, the topic {pool!r}")

    def _on_summary(self, payload: bytes) -> None:
        try:
            summary = json.loads(payload) if payload else None
        except ValueError:
            return
        found = routing.pool_members(summary) if isinstance(summary, dict) else None
        if found is not None:
            library, pools = found
            self.members[library] = pools

    async def _on_claim(self, topic: str, payload: bytes) -> None:
        destination = topic.rsplit("/", 1)[-1]
        claim = routing.parse_claim(payload) if payload else None
        if claim is None:
            if destination.isdigit():
                self.claims.pop(int(destination), None)
            return
        self.claims[claim.destination_id] = claim.library_id
        if claim.library_id != self.library_id:
            return
        key = routing.dedup_key(claim.event_id, routing.HandOff(claim.hand_offs))
        if await self._journal.event_with_dedup_key(key) is not None:
            return
        # Ours, and not in the journal: we claimed it and stopped before the commit.
        try:
            _, command = routing.split_pool_topic(self.prefix, claim.topic)
        except RejectedEventError:
            return
        event = to_event(
            self.prefix, command, claim.payload.encode(), claim.event_id, sequence=claim.sequence
        )
        if isinstance(event, RejectedInput):
            return
        route = routing.Route(
            self.library_id,
            "take" if claim.status == "taken" else "fail",
            claim.reason,
            self.prefix,
        )
        log.info("pool destination found again by its claim", destination=claim.destination_id)
        await self._record(
            dataclasses.replace(
                event,
                topic=claim.topic,
                dedup_key=key,
                digest=message_digest(claim.topic, claim.payload.encode()),
                route=route,
            )
        )

    async def _reject(
        self, topic: str, payload: bytes, reason: str, dedup_key: str | None = None
    ) -> None:
        text = payload.decode("utf-8", "replace")
        rejected = RejectedInput(
            reason,
            source="mqtt",
            topic=topic[:1024],
            payload=text[:65536],
            dedup_key=dedup_key,
            digest=message_digest(topic, payload),
        )
        [outcome] = await self._record(rejected)
        if outcome.status == "rejected":
            self._dead_letter(
                {"topic": topic, "payload": text, "reason": reason, "library": self.library_id}
            )

    async def _record(self, event: DestinationEvent | RejectedInput) -> list[Outcome]:
        """Journal one event, waiting (holding the message) while the journal refuses."""
        delay, longest = self._journal_retry_s
        while True:
            try:
                outcomes = await record_events(
                    self._journal, [event], now=self._clock(), hold_seconds=self._hold_seconds
                )
            except JournalFaultError as exc:
                log.warning("journal fault: pool intake paused", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
                continue
            break
        changed = {
            o.destination_id
            for o in outcomes
            if o.destination_id is not None and o.status == "applied"
        }
        if changed:
            try:
                await self._on_change(changed)
            except Exception:
                log.exception("state publication failed", destinations=sorted(changed))
        return outcomes


def _raw(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode() if payload is not None else b""
