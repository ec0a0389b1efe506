"""A seeded workload under SIGKILLs and broker restarts, and the checks that follow.

Shared by the crash tests (a bounded number of kills) and the soak benchmark
(`python -m tests.integration.crash --kills 200`), which prints its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.integration.broker import Broker, free_port
from tests.integration.daemon import DEFINITION, Daemon, wait_until, writable_tapes

PREFIX = "tw-crash"


@dataclass(frozen=True)
class Event:
    event_id: str
    destination: int
    verb: str
    body: dict[str, object] | None

    @property
    def topic(self) -> str:
        return f"{PREFIX}/tasks/3/task_destinations/{self.destination}/{self.verb}"


def workload(seed: int, destinations: int) -> list[Event]:
    """Creates, updates to other tapes or pools, destroys; in a seeded order."""
    rng = random.Random(seed)
    tapes = writable_tapes(DEFINITION)
    pools = sorted({t.pool for t in DEFINITION.tapes if t.pool})
    events: list[Event] = []
    for destination in range(1, destinations + 1):
        verbs = ["create", *rng.choice([[], ["update"], ["destroy"], ["update", "destroy"]])]
        for verb in verbs:
            body = None
            if verb != "destroy":
                body = (
                    {"folder_id": destination, "tape_barcode": rng.choice(tapes)}
                    if rng.random() < 0.7
                    else {"folder_id": destination, "pool_name": rng.choice(pools)}
                )
            events.append(Event(f"e{seed}-{len(events)}", destination, verb, body))
    # Interleave destinations while keeping each destination's own order.
    rng.shuffle(events)
    per_destination: dict[int, list[Event]] = {}
    for event in sorted(events, key=lambda e: int(e.event_id.split("-")[1])):
        per_destination.setdefault(event.destination, []).append(event)
    ordered: list[Event] = []
    positions = dict.fromkeys(per_destination, 0)
    for event in events:
        queue = per_destination[event.destination]
        ordered.append(queue[positions[event.destination]])
        positions[event.destination] += 1
    return ordered


async def publish(broker: Broker, events: list[Event], attempts: int = 50) -> None:
    """Publish at QoS 1; a broker that is down is waited for, never skipped."""
    for attempt in range(attempts):
        try:
            async with aiomqtt.Client(
                "127.0.0.1",
                broker.port,
                identifier=f"archive-manager-{time.monotonic_ns()}",
                protocol=aiomqtt.ProtocolVersion.V5,
            ) as client:
                for event in events:
                    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                    properties.UserProperty = [("event-id", event.event_id)]
                    payload = json.dumps(event.body).encode() if event.body is not None else b""
                    await client.publish(event.topic, payload, qos=1, properties=properties)
            return
        except aiomqtt.MqttError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1)


@dataclass
class Figures:
    kills: int = 0
    broker_restarts: int = 0
    events: int = 0
    duplicates_journaled: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    restart_to_http_s: list[float] = field(default_factory=list)
    settle_s: float = 0.0
    total_s: float = 0.0


def final_state(events: list[Event]) -> dict[int, Event]:
    last: dict[int, Event] = {}
    for event in events:
        if event.destination in last and last[event.destination].verb == "destroy":
            continue
        last[event.destination] = event
    return last


def settled(daemon: Daemon, expected_events: int) -> bool:
    rows = daemon.query("SELECT COUNT(DISTINCT dedup_key) AS n FROM events WHERE source='mqtt'")
    if rows[0]["n"] < expected_events:
        return False
    open_requests = daemon.query(
        "SELECT COUNT(*) AS n FROM requests WHERE state IN ('pending','mounting')"
    )
    in_flight = daemon.query(
        "SELECT COUNT(*) AS n FROM operations WHERE state IN ('intent','moved')"
    )
    return bool(open_requests[0]["n"] == 0 and in_flight[0]["n"] == 0)


def check(daemon: Daemon, events: list[Event]) -> Figures:
    """Everything the journal and the library say after the storm."""
    figures = Figures(events=len(events))
    journaled = Counter(
        r["dedup_key"] for r in daemon.query("SELECT dedup_key FROM events WHERE source='mqtt'")
    )
    assert set(journaled) == {f"mqtt:{e.event_id}" for e in events}, "an event was lost"
    assert max(journaled.values()) == 1, "an event was journaled twice"
    rejected = daemon.query("SELECT * FROM events WHERE status='rejected'")
    assert rejected == [], [dict(r) for r in rejected]

    for destination, event in final_state(events).items():
        row = daemon.query("SELECT * FROM destinations WHERE id=?", (destination,))[0]
        if event.verb == "destroy":
            assert row["deleted"] == 1
            continue
        assert event.body is not None
        request = daemon.request_of(destination)
        assert request is not None
        barcode = event.body.get("tape_barcode")
        pool = event.body.get("pool_name")
        if barcode is not None:
            assert request["barcode"] == barcode, (destination, dict(request))
        else:
            assert request["pool"] == pool, (destination, dict(request))
        actives = daemon.query(
            "SELECT COUNT(*) AS n FROM requests WHERE destination_id=? "
            "AND state IN ('pending','mounting','ready')",
            (destination,),
        )
        assert actives[0]["n"] <= 1, f"destination {destination} holds two requests"

    for row in daemon.query("SELECT state, reason FROM requests"):
        figures.requests[row["state"]] += 1
        assert row["state"] in ("ready", "released", "failed"), dict(row)
        if row["state"] == "failed":
            assert row["reason"], "a failed request without a reason"

    inventory = daemon.library_inventory()
    seen: Counter[str] = Counter()
    for slot in inventory.slots:
        if slot.barcode:
            seen[slot.barcode] += 1
    for drive in inventory.drives:
        if drive.barcode:
            seen[drive.barcode] += 1
    assert max(seen.values()) == 1, "a tape is in two places"
    assert set(seen) == {t.barcode for t in DEFINITION.tapes}, "a tape vanished"
    for tape in daemon.query("SELECT barcode, slot, drive FROM tapes"):
        where = inventory.where(tape["barcode"])
        journal_says = (
            ("drive", tape["drive"]) if tape["drive"] is not None else ("slot", tape["slot"])
        )
        assert where == journal_says, (tape["barcode"], where, journal_says)
    for ready in daemon.query("SELECT barcode, drive FROM requests WHERE state='ready'"):
        assert inventory.where(ready["barcode"]) == ("drive", ready["drive"])
    return figures


def run_storm(
    folder: Path,
    broker: Broker,
    *,
    kills: int,
    seed: int,
    destinations: int = 30,
    broker_restarts: int = 0,
    backend: str = "sim",
) -> Figures:
    """Publish a seeded workload in chunks while killing the daemon (and the broker)."""
    started = time.monotonic()
    rng = random.Random(seed)
    events = workload(seed, destinations)
    daemon = Daemon(
        folder=folder,
        mqtt_port=broker.port,
        prefix=PREFIX,
        hold_seconds=0.5,
        backend=backend,
    )
    chunks = max(kills, broker_restarts, 1)
    size = -(-len(events) // chunks)
    pieces = [events[i * size : (i + 1) * size] for i in range(chunks)]
    figures_restart: list[float] = []
    restarts_done = 0
    for index, piece in enumerate(pieces):
        if daemon.process is None:
            t0 = time.monotonic()
            daemon.start()
            figures_restart.append(time.monotonic() - t0)
            if index == 0:
                # Until the daemon's first subscription the broker has no session to
                # queue events in and drops them; after it, the session outlives kills.
                wait_until(
                    lambda: "mqtt connected" in daemon.log_tail(400),
                    timeout=120,
                    what="the daemon's first subscription",
                )
        asyncio.run(publish(broker, piece))
        if (
            broker_restarts
            and restarts_done < broker_restarts
            and index % max(1, chunks // broker_restarts) == 0
        ):
            broker.restart()
            restarts_done += 1
        if index < kills:
            # The kill lands at a random moment of the work in progress.
            time.sleep(rng.uniform(0.0, 0.4))
            daemon.stop(signal.SIGKILL)
    if daemon.process is None:
        daemon.start()
    t_settle = time.monotonic()
    try:
        # A bound, not a speed: on a busy machine each restart takes seconds.
        wait_until(lambda: settled(daemon, len(events)), timeout=300, what="the workload to settle")
        figures = check(daemon, events)
    except AssertionError:
        print(daemon.log_tail(60))
        raise
    finally:
        daemon.close()
    figures.settle_s = time.monotonic() - t_settle
    figures.kills = min(kills, len(pieces))
    figures.broker_restarts = restarts_done
    figures.restart_to_http_s = figures_restart
    figures.total_s = time.monotonic() - started
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="crash soak: SIGKILL the daemon under load")
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--destinations", type=int, default=80)
    parser.add_argument("--broker-restarts", type=int, default=5)
    parser.add_argument(
        "--backend",
        choices=("sim", "mtx", "scsi"),
        default="sim",
        help="scsi: the mtx backend with Debian's mtx and mt against the SCSI emulation",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(port=free_port(), folder=Path(tmp) / "mosquitto")
        broker.start()
        try:
            figures = run_storm(
                Path(tmp) / "daemon",
                broker,
                kills=args.kills,
                seed=args.seed,
                destinations=args.destinations,
                broker_restarts=args.broker_restarts,
                backend=args.backend,
            )
        finally:
            broker.stop()
    restarts = sorted(figures.restart_to_http_s)
    print(f"kills: {figures.kills}, broker restarts: {figures.broker_restarts}")
    print(f"events published: {figures.events}, journaled exactly once: {figures.events}")
    print(f"requests by final state: {dict(figures.requests)}")
    print(
        f"daemon start to HTTP ready: median {restarts[len(restarts) // 2]:.2f} s, "
        f"max {restarts[-1]:.2f} s"
    )
    print(f"settle after the last restart: {figures.settle_s:.1f} s; total {figures.total_s:.1f} s")
    print("tapes in two places: 0; journal disagreeing with the library: 0")


if __name__ == "__main__":
    main()
