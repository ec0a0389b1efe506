"""The fleet's intake rate and end-to-end latency with 1, 2 and 4 daemons on one broker.

Each daemon runs its own simulated library (its own tapes, and tapes of one shared
pool) with `[fleet] routing = true`, on one real mosquitto. An archive manager
publishes a burst of destination events, half naming a tape of some library, half
naming only the pool, as fast as the broker takes them. Measured per fleet size:

- intake rate: events per second from the first publish until every destination's
  state was published by the library that took it;
- end-to-end latency: from a destination's publish to its first state (not "not
  ours") on `<prefix>/libraries/+/state/task_destinations/<id>`, p50 and p99;
- the 1-minute load average as the burst ends (the figures are only comparable
  between runs at a similar load).

The 1-daemon fleet is the reference the others are compared with, in the same run.

    python -m tests.benchmarks.fleet_bench --events 400 --daemons 1,2,4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from tests.integration.broker import Broker, free_port
from tests.integration.daemon import Daemon, wait_until
from tests.integration.fleet_run import (
    PREFIX,
    SHARED_POOL,
    ArchiveManager,
    Destination,
    fleet_daemon,
    own_barcodes,
)

NAMES = "abcdefgh"


@dataclass(frozen=True)
class FleetFigures:
    daemons: int
    events: int
    seconds: float
    latencies_s: list[float]
    #: Destinations applied by more than one library (must be none).
    twice: int
    #: The machine's 1-minute load average when the burst was served.
    load: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_fleet(folder: Path, broker: Broker, count: int) -> list[Daemon]:
    daemons = [
        fleet_daemon(folder / name, name, number, broker.port, [SHARED_POOL])
        for number, name in enumerate(NAMES[:count], start=1)
    ]
    # In parallel: a start is mostly Python importing, 10-20 s on a busy machine.
    with ThreadPoolExecutor(len(daemons)) as pool:
        list(pool.map(Daemon.start, daemons))
    wait_until(
        lambda: all("pool intake connected" in d.log_tail(400) for d in daemons),
        timeout=180,
        what="every daemon subscribed",
    )
    return daemons


def workload(names: str, events: int, first_id: int) -> list[Destination]:
    barcodes = [b for name in names for b in own_barcodes(name)]
    return [
        Destination(first_id + i, barcodes[i % len(barcodes)], None)
        if i % 2 == 0
        else Destination(first_id + i, None, SHARED_POOL)
        for i in range(events)
    ]


async def measure(broker: Broker, names: str, events: int, timeout_s: float) -> FleetFigures:
    destinations = workload(names, events, first_id=10_000)
    wanted = {d.id for d in destinations}
    first_state: dict[int, float] = {}
    owners: dict[int, set[str]] = {}
    manager = ArchiveManager(broker.port)
    async with aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=f"bench-{len(names)}",
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.subscribe(f"{PREFIX}/libraries/+/state/task_destinations/+", qos=1)

        async def states() -> None:
            async for message in client.messages:
                if not isinstance(message.payload, bytes) or not message.payload:
                    continue
                data = json.loads(message.payload)
                state = (data.get("state") or {}).get("state")
                destination_id = data.get("id")
                if destination_id not in wanted or state in (None, "ignored"):
                    continue
                first_state.setdefault(destination_id, time.monotonic())
                owners.setdefault(destination_id, set()).add(message.topic.value.split("/")[2])
                if first_state.keys() >= wanted:
                    return

        listener = asyncio.create_task(states())
        start = time.monotonic()
        for destination in destinations:
            await manager.publish(client, destination)
        async with asyncio.timeout(timeout_s):
            await listener
    end = max(first_state.values())
    return FleetFigures(
        daemons=len(names),
        events=events,
        seconds=end - start,
        latencies_s=[first_state[d.id] - manager.published_at[d.id] for d in destinations],
        twice=sum(len(o) > 1 for o in owners.values()),
        load=os.getloadavg()[0],
    )


def run_fleet(folder: Path, count: int, events: int, timeout_s: float) -> FleetFigures:
    broker = Broker(port=free_port(), folder=folder / "mosquitto")
    broker.start()
    daemons: list[Daemon] = []
    try:
        daemons = start_fleet(folder, broker, count)
        return asyncio.run(measure(broker, NAMES[:count], events, timeout_s))
    finally:
        for daemon in daemons:
            daemon.stop()
        broker.stop()


def report(figures: list[FleetFigures]) -> str:
    reference = figures[0]
    lines = [
        "daemons  events  intake/s  vs 1 daemon  latency p50  latency p99  applied twice  load",
    ]
    for f in figures:
        lines.append(
            f"{f.daemons:>7}  {f.events:>6}  {f.rate:>8.1f}  {f.rate / reference.rate:>10.2f}x"
            f"  {f.percentile(0.5) * 1000:>9.0f} ms  {f.percentile(0.99) * 1000:>9.0f} ms"
            f"  {f.twice:>13}  {f.load:>4.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--daemons", default="1,2,4", help="fleet sizes, the first the reference")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.daemons.split(",")]
    figures = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        for count in sizes:
            figures.append(run_fleet(Path(tmp) / f"fleet{count}", count, args.events, args.timeout))
            print(
                report(figures).splitlines()[-1] if len(figures) > 1 else report(figures),
                flush=True,
            )
    print()
    print(report(figures))
    return 1 if any(f.twice for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
