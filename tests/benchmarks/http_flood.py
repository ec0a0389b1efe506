"""HTTP under load: a flood of concurrent requests and idle connections against the daemon.

The daemon runs as its own process with a real mosquitto. Phase one measures a valid
request (a probe every `probe_every_s`) and an MQTT event's round trip (publish ->
the daemon's retained state message) on a quiet daemon; phase two measures the same
while `flood` clients send requests back to back and `idle` connections send half a
request head and wait (reopened when closed). Figures are printed as ratios of the
flood phase to the quiet phase measured in the same run.

    python -m tests.benchmarks.http_flood [--flood 1000 --idle 2000 --seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from tests.integration.broker import Broker, free_port
from tests.integration.daemon import AUTH, REPO, Daemon

HOST = "127.0.0.1"
#: The flood asks for the index of a task (the costly read); the probe for one destination.
INDEX = "/api/v2/tasks/1/task_destinations"
SHOW = INDEX + "/1"
#: How long the last wave may take to be answered once a phase is over.
GRACE_S = 15.0
#: The flood's own credentials (another client of the daemon), unless --same-credentials.
FLOOD_USER = ("flood", "flood-secret")


def get_request(path: str, user: tuple[str, str] = AUTH) -> bytes:
    token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Basic {token}\r\n\r\n").encode()


#: What an idle attacker sends: the start of a head that never ends.
PARTIAL_HEAD = f"GET {INDEX} HTTP/1.1\r\nHost: {HOST}\r\n".encode()


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one whole response; return its status (0 when the connection closed first)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    return status


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Phase:
    probe_latencies: list[float] = field(default_factory=list)
    probe_statuses: Counter[int] = field(default_factory=Counter)
    fresh_latencies: list[float] = field(default_factory=list)
    fresh_statuses: Counter[int] = field(default_factory=Counter)
    mqtt_latencies: list[float] = field(default_factory=list)
    mqtt_sent: int = 0
    flood_statuses: Counter[int] = field(default_factory=Counter)
    flood_latencies: list[float] = field(default_factory=list)
    flood_errors: int = 0
    flood_waves: int = 0
    flood_unanswered: int = 0
    idle_opened: int = 0
    idle_refused: int = 0
    idle_closed: int = 0
    idle_lifetimes: list[float] = field(default_factory=list)


async def prober(
    port: int,
    path: str,
    phase: Phase,
    stop: asyncio.Event,
    every_s: float,
    timeout: float,
    *,
    fresh: bool = False,
) -> None:
    """A valid request every `every_s` on a keep-alive connection, as an HTTP client's pool
    would send it (reconnecting when the daemon closed it), timed until its last byte.

    With `fresh`, each request opens a connection of its own (a client arriving anew),
    timed from the connect, and recorded apart.
    """
    latencies = phase.fresh_latencies if fresh else phase.probe_latencies
    statuses = phase.fresh_statuses if fresh else phase.probe_statuses
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    request = get_request(path)
    while not stop.is_set():
        start = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                if connection is None:
                    connection = await asyncio.open_connection(HOST, port)
                reader, writer = connection
                writer.write(request)
                status = await read_response(reader)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            status = 0
        if (fresh or status in (0, 408)) and connection is not None:
            connection[1].close()
            connection = None
        statuses[status] += 1
        latencies.append(time.monotonic() - start)
        await asyncio.sleep(max(0.0, every_s - (time.monotonic() - start)))
    if connection is not None:
        connection[1].close()


async def one_request(port: int, request: bytes, phase: Phase) -> None:
    """One request on its own connection, as one of many concurrent clients would send."""
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        phase.flood_errors += 1
        return
    try:
        writer.write(request)
        status = await read_response(reader)
        phase.flood_statuses[status] += 1
        phase.flood_latencies.append(time.monotonic() - start)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        phase.flood_errors += 1
    except asyncio.CancelledError:
        # Still unanswered when the benchmark ended (see `generate`).
        phase.flood_unanswered += 1
        raise
    finally:
        writer.close()


async def flood_waves(
    port: int, flood: int, phase: Phase, stop: asyncio.Event, user: tuple[str, str]
) -> None:
    """`flood` concurrent requests at once, again as soon as all are answered."""
    request = get_request(INDEX, user)
    while not stop.is_set():
        phase.flood_waves += 1
        await asyncio.gather(*(one_request(port, request, phase) for _ in range(flood)))


async def idle_connection(port: int, phase: Phase, stop: asyncio.Event) -> None:
    """Half a request head, then silence until the daemon closes the connection."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        phase.idle_refused += 1
        return
    phase.idle_opened += 1
    opened = time.monotonic()
    try:
        writer.write(PARTIAL_HEAD)
        reading = asyncio.ensure_future(reader.read())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if reading.done():
            phase.idle_closed += 1
            phase.idle_lifetimes.append(time.monotonic() - opened)
        for task in (reading, stopping):
            task.cancel()
    except OSError:
        phase.idle_closed += 1
    finally:
        writer.close()


async def mqtt_prober(
    port: int, prefix: str, phase: Phase, stop: asyncio.Event, first_id: int, every_s: float
) -> None:
    """Folder-only creates over MQTT, each timed until the daemon publishes its state."""
    sent: dict[int, float] = {}
    async with (
        aiomqtt.Client(HOST, port, identifier=f"watcher-{first_id}") as watcher,
        aiomqtt.Client(HOST, port, identifier=f"archive-{first_id}") as client,
    ):
        await watcher.subscribe(f"{prefix}/libraries/+/state/task_destinations/+", qos=1)

        async def listen() -> None:
            async for message in watcher.messages:
                destination = int(str(message.topic).rsplit("/", 1)[1])
                if destination in sent:
                    phase.mqtt_latencies.append(time.monotonic() - sent.pop(destination))

        listening = asyncio.create_task(listen())
        destination = first_id
        body = json.dumps({"folder_id": 1, "folder_path": "/bench/file"}).encode()
        while not stop.is_set():
            sent[destination] = time.monotonic()
            phase.mqtt_sent += 1
            await client.publish(
                f"{prefix}/tasks/1/task_destinations/{destination}/create", body, qos=1
            )
            destination += 1
            await asyncio.sleep(every_s)
        # Let the last events arrive, within a bound.
        deadline = time.monotonic() + 10
        while sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        listening.cancel()


#: What the load generator reports back.
SUMMARY_FIELDS = (
    "flood_statuses",
    "flood_latencies",
    "flood_errors",
    "flood_waves",
    "flood_unanswered",
    "idle_lifetimes",
    "idle_opened",
    "idle_refused",
    "idle_closed",
)


@dataclass
class FloodRun:
    quiet: Phase
    flood: Phase


async def generate(
    port: int, flood: int, idle: int, seconds: float, user: tuple[str, str]
) -> Phase:
    """The load itself (run in a process of its own, so that it does not slow the probes'
    own event loop): idle connections first, then waves of concurrent requests."""
    phase = Phase()
    stop = asyncio.Event()
    idlers = [asyncio.create_task(idle_connection(port, phase, stop)) for _ in range(idle)]
    while phase.idle_opened + phase.idle_refused < idle and not all(t.done() for t in idlers):
        await asyncio.sleep(0.01)
    print("idle connections open", flush=True)
    waves = asyncio.create_task(flood_waves(port, flood, phase, stop, user))
    await asyncio.sleep(seconds)
    stop.set()
    # The last wave gets GRACE_S to be answered; what is left then counts as unanswered.
    _, pending = await asyncio.wait([waves, *idlers], timeout=GRACE_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return phase


async def measure(
    http_port: int,
    mqtt_port: int,
    prefix: str,
    phase: Phase,
    *,
    seconds: float,
    first_id: int,
    probe_every_s: float = 0.1,
    probe_path: str = SHOW,
    probe_timeout_s: float = 10.0,
) -> None:
    """Probes and MQTT events for `seconds`, recorded into `phase`."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(mqtt_prober(mqtt_port, prefix, phase, stop, first_id, 0.2)),
        asyncio.create_task(
            prober(http_port, probe_path, phase, stop, probe_every_s, probe_timeout_s)
        ),
        asyncio.create_task(
            prober(http_port, probe_path, phase, stop, 0.5, probe_timeout_s, fresh=True)
        ),
    ]
    await asyncio.sleep(seconds)
    stop.set()
    async with asyncio.timeout(probe_timeout_s + 30):
        await asyncio.gather(*tasks)


async def run_phases(
    http_port: int,
    mqtt_port: int,
    prefix: str,
    *,
    flood: int,
    idle: int,
    seconds: float,
    same_credentials: bool = False,
) -> FloodRun:
    quiet, loud = Phase(), Phase()
    await measure(http_port, mqtt_port, prefix, quiet, seconds=seconds, first_id=100_000)
    generator = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.benchmarks.http_flood",
        "--generate",
        str(http_port),
        "--flood",
        str(flood),
        "--idle",
        str(idle),
        "--seconds",
        str(seconds),
        *(["--same-credentials"] if same_credentials else []),
        stdout=asyncio.subprocess.PIPE,
    )
    assert generator.stdout is not None
    try:
        async with asyncio.timeout(60):
            await generator.stdout.readline()
        await measure(http_port, mqtt_port, prefix, loud, seconds=seconds, first_id=200_000)
        async with asyncio.timeout(GRACE_S + 60):
            summary = json.loads(await generator.stdout.read())
    finally:
        if generator.returncode is None:
            generator.kill()
        await generator.wait()
    loud.flood_statuses = Counter({int(k): v for k, v in summary["flood_statuses"].items()})
    for name in SUMMARY_FIELDS[1:]:
        setattr(loud, name, summary[name])
    return FloodRun(quiet, loud)


def raise_own_open_files(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def report(
    run: FloodRun, flood: int, idle: int, seconds: float, *, same_credentials: bool = False
) -> str:
    q, f = run.quiet, run.flood

    def row(name: str, quiet: list[float], loud: list[float]) -> str:
        qp50, qp99 = percentile(quiet, 0.5), percentile(quiet, 0.99)
        fp50, fp99 = percentile(loud, 0.5), percentile(loud, 0.99)
        return (
            f"{name:<24} quiet p50 {qp50 * 1000:7.1f} ms  p99 {qp99 * 1000:7.1f} ms | "
            f"flood p50 {fp50 * 1000:7.1f} ms  p99 {fp99 * 1000:7.1f} ms "
            f"(max {max(loud, default=float('nan')) * 1000:.0f} ms) | p99 ratio {fp99 / qp99:.1f}x"
        )

    flood_total = sum(f.flood_statuses.values())
    lines = [
        f"HTTP flood: waves of {flood} concurrent index requests (each on its own "
        f"connection, {'the probe' if same_credentials else 'another client'}'s credentials), "
        f"{idle} idle connections (half a head "
        f"each), {seconds:.0f} s per phase; a show request every 0.1 s on a keep-alive "
        "connection and every 0.5 s on a new one, an MQTT create every 0.2 s",
        row("valid request (probe)", q.probe_latencies, f.probe_latencies),
        f"{'':<24} probe statuses quiet {dict(q.probe_statuses)} flood {dict(f.probe_statuses)}",
        row("new client (fresh conn.)", q.fresh_latencies, f.fresh_latencies),
        f"{'':<24} statuses quiet {dict(q.fresh_statuses)} flood {dict(f.fresh_statuses)}",
        row("MQTT event round trip", q.mqtt_latencies, f.mqtt_latencies),
        f"{'':<24} MQTT events answered: quiet {len(q.mqtt_latencies)}/{q.mqtt_sent}, "
        f"flood {len(f.mqtt_latencies)}/{f.mqtt_sent}",
        f"flood requests: {f.flood_waves} waves, {flood_total} answered "
        f"({flood_total / seconds:.0f}/s) {dict(sorted(f.flood_statuses.items()))}, "
        f"p50 {percentile(f.flood_latencies, 0.5) * 1000:.0f} ms "
        f"p99 {percentile(f.flood_latencies, 0.99) * 1000:.0f} ms, "
        f"{f.flood_errors} connections closed or refused, "
        f"{f.flood_unanswered} unanswered {GRACE_S:.0f} s after the phase",
        f"idle connections: {f.idle_opened} opened ({f.idle_refused} refused), "
        f"{f.idle_closed} closed by the daemon, lifetime p50 "
        f"{percentile(f.idle_lifetimes, 0.5):.1f} s max {max(f.idle_lifetimes, default=0):.1f} s",
    ]
    return "\n".join(lines)


def run_benchmark(
    folder: Path,
    *,
    flood: int,
    idle: int,
    seconds: float,
    destinations: int = 20,
    same_credentials: bool = False,
    source: Path = REPO,
    extra_env: dict[str, str] | None = None,
) -> FloodRun:
    """A broker and the daemon in `folder`, `destinations` to index, then both phases."""
    raise_own_open_files(flood * 2 + idle * 2 + 256)
    broker = Broker(port=free_port(), folder=folder / "mosquitto")
    broker.start()
    daemon = Daemon(
        folder=folder / "daemon",
        mqtt_port=broker.port,
        prefix="flood",
        source=source,
        extra_env={f"TAPEWORKER_HTTP__USERS__{FLOOD_USER[0]}": FLOOD_USER[1], **(extra_env or {})},
    )
    try:
        daemon.start()
        with daemon.http() as http:
            for n in range(destinations):
                http.post(
                    "/tasks/1/task_destinations",
                    json={"folder_id": n, "folder_path": f"/bench/{n}"},
                ).raise_for_status()
        return asyncio.run(
            run_phases(
                daemon.http_port,
                broker.port,
                "flood",
                flood=flood,
                idle=idle,
                seconds=seconds,
                same_credentials=same_credentials,
            )
        )
    finally:
        daemon.stop()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--destinations", type=int, default=20)
    parser.add_argument(
        "--same-credentials",
        action="store_true",
        help="flood with the probe's own credentials (one client overloading itself)",
    )
    parser.add_argument("--folder", help="keep the daemon's state and log there")
    parser.add_argument("--source", help="run the daemon of another checkout (to compare versions)")
    parser.add_argument("--generate", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate:
        raise_own_open_files(args.flood * 2 + args.idle * 2 + 256)
        user = AUTH if args.same_credentials else FLOOD_USER
        phase = asyncio.run(generate(args.generate, args.flood, args.idle, args.seconds, user))
        summary = {name: getattr(phase, name) for name in SUMMARY_FIELDS}
        print(json.dumps(summary), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="tw-flood-") as scratch:
        run = run_benchmark(
            Path(args.folder or scratch),
            flood=args.flood,
            idle=args.idle,
            seconds=args.seconds,
            destinations=args.destinations,
            same_credentials=args.same_credentials,
            source=Path(args.source) if args.source else REPO,
        )
    print(report(run, args.flood, args.idle, args.seconds, same_credentials=args.same_credentials))
    return 0


if __name__ == "__main__":
    sys.exit(main())
