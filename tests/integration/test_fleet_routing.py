"""Three daemons, three simulated libraries, one mosquitto: every destination is applied
by exactly one library, the right one, even when a daemon is SIGKILLed mid-run.

1,000 destination events by default (about 75 s); `FLEET_EVENTS=150` for a quicker run.
The archive manager publishes each event once: what the killed daemon had received
and not claimed is taken over by the other library of the pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from tests.integration.broker import Broker
from tests.integration.daemon import Daemon, wait_until
from tests.integration.fleet_run import (
    HOPELESS_POOL,
    PREFIX,
    SHARED_POOL,
    TIGHT_POOL,
    ArchiveManager,
    Destination,
    fleet_daemon,
    own_barcodes,
    properties,
)
from worker.fleet import routing
from worker.fleet.ownership import rank
from worker.fleet.routing import Claim
from worker.seed.tape_ids import tape_id_block


def _log_entries(text: str) -> Iterator[dict[str, object]]:
    """The JSON log lines of a daemon's output (anything else is skipped)."""
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            yield entry


pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

EVENTS = int(os.environ.get("FLEET_EVENTS", "1000"))
LIBRARIES = {
    "a": (1, [SHARED_POOL, TIGHT_POOL, HOPELESS_POOL]),
    "b": (2, [SHARED_POOL, TIGHT_POOL, HOPELESS_POOL]),
    "c": (3, []),
}


@pytest.fixture
def fleet(tmp_path: Path, broker: Broker) -> Iterator[dict[str, Daemon]]:
    daemons = {
        name: fleet_daemon(tmp_path / name, name, number, broker.port, pools)
        for name, (number, pools) in LIBRARIES.items()
    }
    try:
        for daemon in daemons.values():
            daemon.start()
        wait_until(
            lambda: (
                all(
                    "pool intake connected" in d.log_tail(400)
                    for n, d in daemons.items()
                    if n != "c"
                )
                and "mqtt connected" in daemons["c"].log_tail(400)
            ),
            timeout=120,
            what="every daemon subscribed",
        )
        yield daemons
    finally:
        for daemon in daemons.values():
            daemon.stop()


def workload(count: int) -> list[Destination]:
    """Barcode destinations of each library and pool destinations, interleaved."""
    barcodes = [b for name in LIBRARIES for b in own_barcodes(name)]
    found = []
    for i in range(count):
        destination_id = 1000 + i
        if i % 5 in (1, 3):
            found.append(Destination(destination_id, None, SHARED_POOL))
        else:
            found.append(Destination(destination_id, barcodes[i % len(barcodes)], None))
    return found


def owner_of_barcode(barcode: str) -> str:
    return next(name for name in LIBRARIES if barcode in own_barcodes(name))


def journal_rows(daemon: Daemon, sql: str) -> list[sqlite3.Row]:
    try:
        return daemon.query(sql)
    except sqlite3.OperationalError:
        return []  # the daemon is restarting, or the journal is being created


def taken(daemons: dict[str, Daemon]) -> dict[int, list[str]]:
    """Which libraries applied each destination (a row that is theirs, with a request)."""
    owners: dict[int, list[str]] = {}
    for name, daemon in daemons.items():
        for row in journal_rows(
            daemon,
            "SELECT DISTINCT d.id FROM destinations d JOIN requests r ON r.destination_id = d.id "
            "WHERE d.status != 'ignored'",
        ):
            owners.setdefault(row["id"], []).append(name)
    return owners


def test_every_destination_is_applied_by_exactly_one_library_through_a_kill(
    fleet: dict[str, Daemon], broker: Broker
) -> None:
    destinations = workload(EVENTS)
    kill_at = len(destinations) // 3
    pool_destinations = [d for d in destinations if d.barcode is None]
    extra = [
        Destination(900, None, TIGHT_POOL),
        Destination(901, None, TIGHT_POOL),
        Destination(902, None, HOPELESS_POOL),
    ]
    manager = ArchiveManager(broker.port)
    killed_at = 0.0

    async def run() -> None:
        nonlocal killed_at
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="archive", protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            watcher = asyncio.create_task(manager.watch_claims(client))
            for destination in extra:
                await manager.publish(client, destination)
            # Settled while both pool libraries live: only b can write the tight pool.
            await manager.until_claimed(extra, timeout=300)
            for index, destination in enumerate(destinations):
                if index == kill_at:
                    # A SIGKILL mid-run: no goodbye, whatever was in flight is in flight.
                    fleet["b"].kill()
                    killed_at = time.time()
                await manager.publish(client, destination)
            # Every pool destination is claimed with b still dead: a took b's share over.
            await manager.until_claimed([*pool_destinations, *extra], timeout=600)
            await asyncio.to_thread(fleet["b"].start)
            watcher.cancel()

    asyncio.run(run())

    everything = {d.id for d in [*extra, *destinations]}
    log = (fleet["a"].folder / "daemon.log").read_text(errors="replace")
    print(f"fleet: library a took {log.count('pool destination taken over')} over from b")

    def settled() -> dict[int, list[str]] | None:
        owners = taken(fleet)
        return owners if owners.keys() >= everything else None

    owners = wait_until(settled, timeout=600, what="every destination applied by a library")

    # Nothing stays held: each library of the pool forgot every destination once it saw
    # its claim, b too after its restart (its session kept what came while it was dead).
    def nothing_held() -> bool:
        try:
            held = [fleet[n].query("SELECT COUNT(*) AS n FROM pool_watches") for n in "ab"]
        except sqlite3.OperationalError:
            return False  # busy: ask again
        return all(rows[0]["n"] == 0 for rows in held)

    wait_until(nothing_held, timeout=300, what="no pool destination left held")
    # None twice: one library each.
    assert {i: o for i, o in owners.items() if len(o) != 1} == {}
    for destination in destinations:
        [owner] = owners[destination.id]
        if destination.barcode is not None:
            assert owner == owner_of_barcode(destination.barcode), destination
        else:
            assert owner in ("a", "b"), destination
    # The claims on the broker agree with the journals.
    assert all(manager.claims[d.id] == owners[d.id][0] for d in pool_destinations)

    # b's barcode destinations published while it was dead waited and were served
    # after its restart; the pool's went to a meanwhile.
    after_kill = destinations[kill_at + 1 :]
    b_received = {
        row["destination_id"]: row["received"]
        for row in journal_rows(
            fleet["b"], "SELECT destination_id, received FROM events WHERE status='applied'"
        )
    }
    waited = [d for d in after_kill if d.barcode and owner_of_barcode(d.barcode) == "b"]
    assert waited, "the workload gives b barcode destinations after the kill"
    # b ran nowhere between the kill and its restart: journaled after the kill is
    # journaled after the restart.
    assert all(b_received[d.id] > killed_at for d in waited)
    pool_after_kill = [d for d in after_kill if d.barcode is None]
    assert all(owners[d.id] == ["a"] for d in pool_after_kill if d.id not in b_received)
    assert sum(owners[d.id] == ["a"] for d in pool_after_kill) >= len(pool_after_kill) // 2
    assert killed_at > 0

    # The others journaled each barcode destination as not theirs, with the reason.
    c_rows = {
        row["id"]: row["reason"]
        for row in journal_rows(fleet["c"], "SELECT id, reason FROM destinations")
    }
    a_barcode = next(d for d in destinations if d.barcode and owner_of_barcode(d.barcode) == "a")
    assert c_rows[a_barcode.id] == f"not ours: tape {a_barcode.barcode} is not in library c"

    # The tight pool: a cannot write to it, so it is b's; the hopeless pool fails with
    # every library's reason after the hand-offs.
    assert (owners[900], owners[901]) == (["b"], ["b"])
    [failed] = [
        row
        for daemon in fleet.values()
        for row in journal_rows(
            daemon, "SELECT state, reason FROM requests WHERE destination_id=902"
        )
    ]
    assert failed["state"] == "failed"
    assert failed["reason"].startswith(
        "no library of pool 'hopeless' can serve it after 1 hand-offs"
    )
    assert "a: no writable tape of pool 'hopeless'" in failed["reason"]
    assert "b: no writable tape of pool 'hopeless'" in failed["reason"]

    # Each library's tapes show its own number in the archive manager's terms.
    c_destination = next(
        d for d in destinations if d.barcode and owner_of_barcode(d.barcode) == "c"
    )
    with fleet["c"].http() as http:
        shown = http.get(f"/tasks/9/task_destinations/{c_destination.id}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["tape"]["tape_library_id"] == 3
    # Tape ids are fleet-unique (library 3 numbers from 2,000,001), and a destination
    # naming only a tape id goes to the library holding the tape, like a barcode one.
    tape_id = shown.json()["tape"]["id"]
    assert tape_id in tape_id_block(3)
    by_tape_id = {"folder_id": 950, "folder_path": "/c/f950", "tape_id": tape_id}

    async def publish_by_tape_id() -> None:
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="archive", protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            await client.publish(
                f"{PREFIX}/tasks/9/task_destinations/950/create",
                json.dumps(by_tape_id).encode(),
                qos=1,
                properties=properties(Destination(950, "-", None)),
            )

    asyncio.run(publish_by_tape_id())
    # Asked of c's robot (its drives may all be held by earlier destinations' leases).
    wait_until(lambda: fleet["c"].request_of(950), timeout=120, what="c took 950")

    def not_theirs() -> list[str] | None:
        reasons = [
            row["reason"]
            for name in ("a", "b")
            for row in journal_rows(fleet[name], "SELECT reason FROM destinations WHERE id=950")
        ]
        return reasons if len(reasons) == 2 else None

    reasons = wait_until(not_theirs, timeout=60, what="a and b journaled 950 as not theirs")
    assert reasons == [
        f"not ours: tape_id {tape_id} is not in library a",
        f"not ours: tape_id {tape_id} is not in library b",
    ]
    assert taken(fleet)[950] == ["c"]


def test_a_claim_of_its_own_missing_from_its_journal_is_journaled_at_start(
    tmp_path: Path, broker: Broker
) -> None:
    # As if library a claimed destination 77 and was killed before its commit: the
    # retained claim is on the broker, the journal has nothing of it.
    claim = Claim(
        library_id="a",
        destination_id=77,
        status="taken",
        topic=f"{PREFIX}/pools/{SHARED_POOL}/tasks/9/task_destinations/77/create",
        payload=json.dumps({"folder_id": 77, "pool_name": SHARED_POOL}),
        event_id="td-77-v1",
        sequence="1",
        hand_offs=0,
    )
    no_event_id = Destination(78, None, SHARED_POOL)

    async def publish() -> None:
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="archive", protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            await client.publish(
                routing.claim_topic(PREFIX, SHARED_POOL, 77), claim.to_json(), qos=1, retain=True
            )

    asyncio.run(publish())
    daemon = fleet_daemon(tmp_path / "a", "a", 1, broker.port, [SHARED_POOL])
    try:
        daemon.start()
        row = daemon.wait_request(77, "ready", timeout=120)
        assert row["pool"] == SHARED_POOL
        [event] = daemon.query("SELECT dedup_key, status FROM events WHERE destination_id=77")
        assert (event["dedup_key"], event["status"]) == ("mqtt:td-77-v1", "applied")

        # Destroyed, its claim is cleared from the broker (no retained claims pile up).
        async def destroy_and_see_the_claim_cleared() -> None:
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, identifier="archive", protocol=aiomqtt.ProtocolVersion.V5
            ) as client:
                await client.subscribe(routing.claim_topic(PREFIX, SHARED_POOL, 77), qos=1)
                messages = aiter(client.messages)
                retained = await anext(messages)
                assert retained.payload == claim.to_json()
                await client.publish(f"{PREFIX}/tasks/9/task_destinations/77/destroy", b"", qos=1)
                async with asyncio.timeout(60):
                    cleared = await anext(messages)
                assert cleared.payload == b""

        asyncio.run(destroy_and_see_the_claim_cleared())

        # A pool command without an event-id could not be found again: refused, said why.
        async def publish_without_event_id() -> None:
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, identifier="archive", protocol=aiomqtt.ProtocolVersion.V5
            ) as client:
                await client.publish(no_event_id.topic, no_event_id.body, qos=1)

        asyncio.run(publish_without_event_id())

        def rejected() -> list[sqlite3.Row]:
            return daemon.query(
                "SELECT reason FROM events WHERE status='rejected' AND topic=?",
                (no_event_id.topic,),
            )

        [refused] = wait_until(rejected, timeout=60, what="the pool command refused")
        assert refused["reason"].startswith("a pool destination needs an event-id")
    finally:
        daemon.stop()


def test_the_first_claim_on_a_topic_wins_and_its_winner_publishes_it_again(
    tmp_path: Path, broker: Broker
) -> None:
    """Two owners at once (a membership change): the claims' order on the broker decides."""
    foreign = Claim(
        library_id="z",
        destination_id=60,
        status="taken",
        topic=Destination(60, None, SHARED_POOL).topic,
        payload=Destination(60, None, SHARED_POOL).body.decode(),
        event_id="td-60-v1",
        sequence="1",
        hand_offs=0,
    )
    manager = ArchiveManager(broker.port)
    daemon = fleet_daemon(tmp_path / "a", "a", 1, broker.port, [SHARED_POOL])
    try:
        daemon.start()
        wait_until(
            lambda: "pool intake connected" in daemon.log_tail(400),
            timeout=120,
            what="the pool intake subscribed",
        )

        async def run() -> None:
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, identifier="archive", protocol=aiomqtt.ProtocolVersion.V5
            ) as client:
                watcher = asyncio.create_task(manager.watch_claims(client))
                # Library z claimed 60 first: a, alone in the pool, must not apply it.
                await client.publish(
                    routing.claim_topic(PREFIX, SHARED_POOL, 60),
                    foreign.to_json(),
                    qos=1,
                    retain=True,
                )
                await manager.publish(client, Destination(60, None, SHARED_POOL))
                await manager.publish(client, Destination(61, None, SHARED_POOL))
                await manager.until_claimed([Destination(61, None, SHARED_POOL)], timeout=120)
                watcher.cancel()
                # A later claim of 61 by z loses, and a says so again, retained.
                await client.subscribe(routing.claim_topic(PREFIX, SHARED_POOL, 61), qos=1)
                late = dataclasses.replace(foreign, destination_id=61, event_id="td-61-v1")
                await client.publish(
                    routing.claim_topic(PREFIX, SHARED_POOL, 61), late.to_json(), qos=1, retain=True
                )
                async with asyncio.timeout(120):
                    seen = []
                    async for message in client.messages:
                        if not message.topic.matches(routing.claim_topic(PREFIX, SHARED_POOL, 61)):
                            continue
                        assert isinstance(message.payload, bytes)
                        claim = routing.parse_claim(message.payload)
                        assert claim is not None
                        seen.append(claim.library_id)
                        if seen[-2:] == ["z", "a"]:
                            break

        asyncio.run(run())
        assert manager.claims[60] == "z"
        assert manager.claims[61] == "a"
        # Both came in order on one subscription: 61 applied means 60 was seen, and left.
        daemon.wait_request(61, "ready", timeout=120)
        assert daemon.request_of(60) is None
        assert daemon.query("SELECT COUNT(*) AS n FROM pool_watches")[0]["n"] == 0

        # What a library starting now sees retained on 61 is a's claim.
        async def retained() -> routing.Claim | None:
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, identifier="late", protocol=aiomqtt.ProtocolVersion.V5
            ) as client:
                await client.subscribe(routing.claim_topic(PREFIX, SHARED_POOL, 61), qos=1)
                async with asyncio.timeout(30):
                    message = await anext(aiter(client.messages))
                assert message.retain
                assert isinstance(message.payload, bytes)
                return routing.parse_claim(message.payload)

        now_retained = asyncio.run(retained())
        assert now_retained is not None
        assert now_retained.library_id == "a"
    finally:
        daemon.stop()


def test_a_destination_handed_to_a_library_that_dies_goes_on_to_another(
    tmp_path: Path, broker: Broker
) -> None:
    """a cannot write the tight pool and hands on by name to x, which is frozen and then
    killed before it claims: at x's will, a hands it on to y, which takes it; x, back,
    finds y's claim first and applies nothing."""
    names = ("a", "x", "y")
    # A destination a owns by rank, so that a is the one that hands it on.
    destination = next(
        Destination(i, None, TIGHT_POOL)
        for i in range(500, 600)
        if rank(f"td-{i}-v1", names)[0] == "a"
    )
    daemons = {
        name: fleet_daemon(tmp_path / name, name, number, broker.port, [TIGHT_POOL])
        for number, name in enumerate(names, start=1)
    }
    manager = ArchiveManager(broker.port)
    try:
        for daemon in daemons.values():
            daemon.start()
        wait_until(
            lambda: all("pool intake connected" in d.log_tail(400) for d in daemons.values()),
            timeout=120,
            what="every pool intake subscribed",
        )
        x = daemons["x"]
        assert x.process is not None
        x.process.send_signal(signal.SIGSTOP)  # alive for the broker, claims nothing

        def handed_to(library: str) -> bool:
            # Read as JSON: how a line spaces its keys is the renderer's business.
            return any(
                entry.get("event") == "pool destination handed on"
                and entry.get("to") == library
                and entry.get("destination") == destination.id
                for entry in _log_entries(daemons["a"].log_tail(400))
            )

        async def publish() -> None:
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, identifier="archive", protocol=aiomqtt.ProtocolVersion.V5
            ) as client:
                await manager.publish(client, destination)

        asyncio.run(publish())
        wait_until(lambda: handed_to("x"), timeout=120, what="a handed it to x")
        x.kill()  # its will lands now
        wait_until(lambda: handed_to("y"), timeout=120, what="a handed it on to y")
        wait_until(lambda: daemons["y"].request_of(destination.id), timeout=120, what="y took it")
        x.start()
        key = f"mqtt:td-{destination.id}-v1#1"

        def x_settled() -> list[sqlite3.Row]:
            return journal_rows(x, f"SELECT status, reason FROM events WHERE dedup_key='{key}'")

        [lost] = wait_until(x_settled, timeout=120, what="x met the hand-off again")
        assert (lost["status"], lost["reason"]) == (
            "ignored",
            "not ours: library y claimed it first",
        )
        assert x.request_of(destination.id) is None
        assert daemons["a"].request_of(destination.id) is None
        assert taken(daemons)[destination.id] == ["y"]
    finally:
        for daemon in daemons.values():
            daemon.stop()
