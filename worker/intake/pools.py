"""The pool intake of a library in a fleet: exactly one library of a pool applies each
destination, and none is lost when a library dies.

Its own MQTT connection, on a persistent session: every library of a pool subscribes
(not shared) to the pool's topics. The owner of a destination (worker/fleet/
ownership.py: a rendezvous ranking over the pool's live members) publishes a retained
claim holding the whole message before it acknowledges it, and applies it once its
claim comes back to it as the first one on the topic; every other library journals
it as *watched* before it acknowledges it, and forgets it when a claim appears. When
a member's last will arrives, the others rank its unclaimed destinations again and the
new owner takes them. A library that cannot serve a destination hands it on by name
(worker/fleet/routing.py).
docs/failover.md says why, and which races this leaves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from worker.callbacks import ChangeListener, Clock
from worker.errors import JournalFaultError, RejectedEventError
from worker.fleet import routing
from worker.fleet.ownership import (
    Member,
    Ownership,
    Watch,
    members_subscription,
    members_topic,
    parse_member,
)
from worker.intake.destinations import (
    DestinationEvent,
    Outcome,
    RejectedInput,
    message_digest,
    record_events,
)
from worker.intake.mqtt import JOURNAL_RETRY_S, ManualAcks, event_id_of, to_event, user_property
from worker.settings import FleetSettings, MqttSettings
from worker.state.journal import Journal, PoolWatchRecord

log = structlog.get_logger("tapeworker.fleet")

DeadLetter = Callable[[dict[str, Any]], None]
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class _Claiming:
    """A claim of ours on its way: applied once it comes back as the first."""

    event: DestinationEvent
    route: routing.Route
    claim: routing.Claim
    #: The held destination it settles, if it came as one.
    watched: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class _HandedOn:
    """A pool destination we passed on by name, until some library claims it."""

    event: DestinationEvent
    event_id: str
    pool: str
    hand_off: routing.HandOff
    to: str


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
        #: Who owns what, as this library sees the pool members and the claims.
        self.book = Ownership(library_id)
        #: The held destinations, as journaled.
        self._held: dict[str, PoolWatchRecord] = {}
        self._claiming: dict[int, _Claiming] = {}
        #: What we handed on by name and nobody claimed yet (kept in memory only).
        self._handed: dict[int, _HandedOn] = {}
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()

    @property
    def prefix(self) -> str:
        return self._settings.prefix

    def _make_client(self) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # The session outlives the connection: what arrives while we are away waits
        # for us, and the others of the pool hold it too meanwhile.
        properties.SessionExpiryInterval = self._settings.session_expiry_s
        properties.ReceiveMaximum = self._fleet.receive_maximum
        password = self._settings.password.get_secret_value() if self._settings.password else None
        # The others take our unclaimed destinations over when this lands.
        will = aiomqtt.Will(
            members_topic(self.prefix, self.library_id),
            Member(self.library_id, alive=False).to_json(),
            qos=1,
            retain=True,
        )
        return aiomqtt.Client(
            hostname=self._settings.host or "localhost",
            port=self._settings.port,
            username=self._settings.username,
            password=password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            will=will,
            keepalive=self._settings.keepalive,
        )

    def _announcement(self) -> Member:
        return Member(self.library_id, True, frozenset(self.pools), self.book.session)

    async def run(self) -> None:
        """Take the pools' destinations forever; reconnect with back-off."""
        for held in await self._until_journaled(self._journal.pool_watches):
            self._held[held.event_id] = held
            self.book.watch(Watch(held.event_id, held.pool, held.destination_id))
        delay = 1.0
        while True:
            self.book.connecting(secrets.token_hex(8))
            client = self._make_client()
            # Before connecting: the session delivers what waited for us at once.
            acks = ManualAcks(client)
            try:
                async with client:
                    # Members and claims first, so that their retained messages are in
                    # before our announcement comes back and we take anything.
                    await client.subscribe(members_subscription(self.prefix), qos=1)
                    await client.subscribe(routing.claims_subscription(self.prefix), qos=1)
                    await client.subscribe(
                        routing.hand_off_subscription(self.prefix, self.library_id), qos=1
                    )
                    for pool in self.pools:
                        await client.subscribe(
                            f"{routing.pool_commands(self.prefix, pool)}/#",
                            options=SubscribeOptions(qos=1, retainAsPublished=True),
                        )
                    # Only now: whoever sees us alive knows we receive the pools.
                    await self._announce(client)
                    self._client = client
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
                log.warning("pool intake disconnected", error=str(exc), retry_in_s=delay)
            finally:
                self._client = None
                self.connected.clear()
                self.book.ready = False
                # What we claimed and did not see come back is found again by its
                # retained claim after the reconnection.
                self._claiming.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.reconnect_max_s)

    async def _announce(self, client: aiomqtt.Client) -> None:
        await client.publish(
            members_topic(self.prefix, self.library_id),
            self._announcement().to_json(),
            qos=1,
            retain=True,
        )

    async def say_goodbye(self, timeout_s: float) -> None:
        """At a clean stop (which sends no will): the others take our share now."""
        client = self._client
        self.book.leaving()
        if client is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await client.publish(
                    members_topic(self.prefix, self.library_id),
                    Member(self.library_id, alive=False).to_json(),
                    qos=1,
                    retain=True,
                )
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning("pool membership not withdrawn at stop", error=str(exc) or "timed out")

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = _raw(message.payload)
        if message.topic.matches(routing.claims_subscription(self.prefix)):
            await self._on_claim(client, topic, payload)
            return
        if message.topic.matches(members_subscription(self.prefix)):
            member = parse_member(payload) if payload else None
            if member is not None:
                again, ours = self.book.on_member(member)
                if again:
                    await self._announce(client)
                for watch in ours:
                    await self._take_held(client, watch)
                if not member.alive and self.book.ready:
                    await self._hand_on_again(client, member.library_id)
            return
        try:
            pool, command = routing.split_pool_topic(self.prefix, topic)
            hand_off = routing.parse_hand_off(
                user_property(message, routing.HAND_OFFS), user_property(message, routing.DECLINED)
            )
            event_id = event_id_of(message)
            if event_id is None:
                raise RejectedEventError(
                    "a pool destination needs an event-id user property: the libraries of "
                    "the pool rank it by it, and know a redelivery by it"
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
        destination_id = event.destination_id or 0
        if destination_id in self.book.claims or destination_id in self._claiming:
            return  # claimed already: by another library, or ours on its way
        if hand_off.count > 0 or self.book.is_ours(Watch(event_id, pool, destination_id)):
            # Handed to us by name, or ours by rank: claimed (or passed on) before the
            # acknowledgement, so that the claim on the broker, which holds the whole
            # message, is what survives a crash, and no watch needs journaling.
            await self._settle(client, event, pool, hand_off, watched=None)
            return
        held = PoolWatchRecord(
            event_id=event_id,
            pool=pool,
            destination_id=destination_id,
            topic=topic,
            payload=payload.decode("utf-8", "replace"),
            sequence=user_property(message, "sequence"),
            received=self._clock(),
        )
        # Journaled before the acknowledgement: from here on the broker may forget it.
        await self._until_journaled(lambda: self._journal.watch_pool_event(held))
        self._held[event_id] = held
        if self.book.watch(Watch(event_id, pool, destination_id)):
            await self._settle(client, event, pool, hand_off, watched=event_id)

    async def _take_held(self, client: aiomqtt.Client, watch: Watch) -> None:
        """A held destination became ours (its owner went, or we became ready)."""
        held = self._held.get(watch.event_id)
        if held is None or watch.destination_id in self._claiming:
            return
        _, command = routing.split_pool_topic(self.prefix, held.topic)
        event = to_event(
            self.prefix, command, held.payload.encode(), held.event_id, sequence=held.sequence
        )
        if isinstance(event, RejectedInput):  # journaled after the same checks
            return
        event = dataclasses.replace(
            event,
            topic=held.topic,
            digest=message_digest(held.topic, held.payload.encode()),
        )
        if await self._journal.event_with_dedup_key(event.dedup_key or "") is not None:
            # We handed it on before a restart: the library we named has it.
            await self._forget(watch.event_id)
            return
        log.info("pool destination taken over", destination=watch.destination_id, pool=watch.pool)
        await self._settle(client, event, watch.pool, routing.HandOff(), watched=watch.event_id)

    async def _settle(
        self,
        client: aiomqtt.Client,
        event: DestinationEvent,
        pool: str,
        hand_off: routing.HandOff,
        *,
        watched: str | None,
    ) -> None:
        """Ours to decide: claim it (taken or failed), or hand it on."""
        event_id = (event.dedup_key or "").removeprefix("mqtt:").partition("#")[0]
        decision = await self._decide(event, pool, hand_off)
        if decision.kind in ("take", "fail"):
            claim = routing.Claim(
                library_id=self.library_id,
                destination_id=event.destination_id or 0,
                status="taken" if decision.kind == "take" else "failed",
                topic=event.topic or "",
                payload=event.payload or "",
                event_id=event_id,
                sequence=None if event.sequence is None else str(event.sequence),
                hand_offs=hand_off.count,
                reason=decision.reason,
            )
            route = routing.Route(
                self.library_id,
                "take" if decision.kind == "take" else "fail",
                decision.reason,
                self.prefix,
            )
            self._claiming[claim.destination_id] = _Claiming(event, route, claim, watched)
            # Applied when it comes back to us as the destination's first claim.
            await client.publish(
                routing.claim_topic(self.prefix, pool, claim.destination_id),
                claim.to_json(),
                qos=1,
                retain=True,
            )
            return
        route = routing.Route(self.library_id, "pass", decision.reason, self.prefix)
        if decision.kind == "hand_on":
            assert decision.hand_off is not None
            assert decision.to is not None
            # Out before the commit: a crash in between loses nothing, and the next
            # library knows this hop by its count.
            hand = _HandedOn(event, event_id, pool, decision.hand_off, decision.to)
            await self._hand_on(client, hand)
        await self._record(dataclasses.replace(event, route=route))
        if watched is not None:
            await self._forget(watched)

    async def _hand_on(self, client: aiomqtt.Client, hand: _HandedOn) -> None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = [
            ("event-id", hand.event_id),
            *([("sequence", str(hand.event.sequence))] if hand.event.sequence is not None else []),
            *routing.hand_off_properties(hand.hand_off),
        ]
        command = (hand.event.topic or "").split("/tasks/", 1)[-1]
        to = f"{routing.hand_off_commands(self.prefix, hand.pool, hand.to)}/{command}"
        await client.publish(to, hand.event.payload or "", qos=1, properties=properties)
        self._handed[hand.event.destination_id or 0] = hand
        log.info(
            "pool destination handed on",
            destination=hand.event.destination_id,
            pool=hand.pool,
            to=hand.to,
        )

    async def _hand_on_again(self, client: aiomqtt.Client, gone: str) -> None:
        """A library we handed destinations to went before claiming them: each goes to
        another live library of the pool that has not declined it, if there is one (else
        it waits in the gone library's session for its restart)."""
        for destination_id, hand in list(self._handed.items()):
            if hand.to != gone or destination_id in self.book.claims:
                continue
            to = routing.next_hand_off(hand.hand_off, self.book.live(hand.pool), gone=gone)
            if to is not None:
                await self._hand_on(client, dataclasses.replace(hand, to=to))

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
            claimed_by=None,
            members=self.book.live(pool),
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

    async def _on_claim(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        destination = topic.rsplit("/", 1)[-1]
        claim = routing.parse_claim(payload) if payload else None
        if claim is None:
            if destination.isdigit():
                self.book.on_claim(int(destination), None)
            return
        seen = self.book.on_claim(claim.destination_id, claim)
        self._handed.pop(claim.destination_id, None)
        mine = (
            self._claiming.pop(claim.destination_id, None)
            if claim.library_id == self.library_id
            else None
        )
        if seen.outcome == "reassert":
            # Ours came first: the retained claim must say so again.
            assert seen.winner is not None
            await client.publish(topic, seen.winner.to_json(), qos=1, retain=True)
        elif seen.outcome == "won":
            if mine is not None:
                await self._record(dataclasses.replace(mine.event, route=mine.route))
            else:
                await self._found_again(claim)
        elif seen.outcome == "lost" and mine is not None:
            assert seen.winner is not None
            reason = f"not ours: library {seen.winner.library_id} claimed it first"
            log.info("pool destination claimed first by another library", reason=reason)
            # Journaled, so that our own claim, if it stays the retained one for a
            # moment, is not taken for one we failed to commit.
            route = routing.Route(self.library_id, "pass", reason, self.prefix)
            await self._record(dataclasses.replace(mine.event, route=route))
        for watch in self.book.settled(claim.destination_id):
            await self._forget(watch.event_id)

    async def _found_again(self, claim: routing.Claim) -> None:
        """Our claim, first on its topic, and not in the journal: we claimed it and
        stopped before the commit."""
        key = routing.dedup_key(claim.event_id, routing.HandOff(claim.hand_offs))
        if await self._journal.event_with_dedup_key(key) is not None:
            return
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

    async def _forget(self, event_id: str) -> None:
        self.book.forget(event_id)
        if self._held.pop(event_id, None) is not None:
            await self._until_journaled(lambda: self._journal.forget_pool_watch(event_id))

    async def _until_journaled(self, write: Callable[[], Awaitable[T]]) -> T:
        """A journal call, retried (holding the message) while the journal refuses."""
        delay, longest = self._journal_retry_s
        while True:
            try:
                return await write()
            except JournalFaultError as exc:
                log.warning("journal fault: pool intake paused", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)

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
