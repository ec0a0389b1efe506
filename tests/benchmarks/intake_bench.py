"""Intake at the speed of the disk: the daemon side by side with bare consumers.

    python -m tests.benchmarks.intake_bench --messages 50000 --requests 2000

(`make bench-intake`) measures, in one run on this machine:

- MQTT durable intake: N barcode creates are queued in a persistent session of a
  real mosquitto (on a free loopback port) before the consumer starts; then the
  consumer drains them. The reference is a bare aiomqtt subscriber that commits
  each batch (at most the daemon's batch) to SQLite with `synchronous=FULL` and
  acknowledges after each commit; the daemon is the real one, as a subprocess, on
  the simulated library. Rates are from the commit times (the journal's `received`),
  overall and per tenth of the run, so one sees whether the rate falls as the
  backlog grows; the daemon's peak RSS is sampled during its drain.
- HTTP create through the daemon against a trivial FastAPI + aiosqlite app doing
  one INSERT and COMMIT per request (also a uvicorn subprocess), at concurrency 1,
  8 and 32: throughput and p50/p99 latency.

Ratios are daemon / reference, measured in the same run: the machine's speed and
load cancel out, roughly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import aiosqlite
import httpx
import paho.mqtt.client as paho
import uvicorn
from fastapi import FastAPI, Request
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.integration.broker import Broker, free_port, wait_for_port
from tests.integration.daemon import DEFINITION, REPO, Daemon, writable_tapes
from worker.intake import mqtt as daemon_mqtt

PREFIX = "tw"
TASK = "1"
CONCURRENCY = (1, 8, 32)
#: Bounds for a busy 2-core machine: far above what a run needs.
DRAIN_TIMEOUT_S = 3600.0


def _connect_properties(receive_maximum: int | None) -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    return properties


def _session_client(
    port: int, client_id: str, receive_maximum: int | None = None
) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=_connect_properties(receive_maximum),
    )


def payload_for(n: int, barcodes: list[str]) -> bytes:
    return json.dumps(
        {
            "folder_id": n,
            "folder_path": f"/container/folder-{n}",
            "tape_barcode": barcodes[n % len(barcodes)],
        }
    ).encode()


async def queue_backlog(port: int, client_id: str, messages: int) -> None:
    """Create the consumer's session, leave, and queue `messages` creates in it."""
    async with _session_client(port, client_id) as client:
        await client.subscribe(f"{PREFIX}/tasks/#", qos=1)
    barcodes = writable_tapes(DEFINITION)
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier="archive-manager",
        protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=1000,
    ) as publisher:
        # A thousand in flight is the point here, not a warning sign.
        publisher.pending_calls_threshold = 1000
        for start in range(0, messages, 1000):
            await asyncio.gather(
                *(
                    publisher.publish(
                        f"{PREFIX}/tasks/{TASK}/task_destinations/{n}/create",
                        payload_for(n, barcodes),
                        qos=1,
                    )
                    for n in range(start + 1, min(messages, start + 1000) + 1)
                )
            )


@dataclass
class Drain:
    """One consumer's drain of the backlog, from its commit times."""

    consumer: str
    commits: list[float]
    peak_rss_bytes: int | None = None
    #: RSS once the daemon listens (it may have begun to read), and once all is journaled.
    start_rss_bytes: int | None = None
    end_rss_bytes: int | None = None
    #: A daemon started again over the drained journal: its RSS once ready, and the
    #: most it reached while starting.
    restart_rss_bytes: int | None = None
    restart_peak_rss_bytes: int | None = None
    largest_batch: int | None = None
    #: The daemon's planning rounds during the drain (its /metrics before and after).
    planning_rounds: int | None = None
    #: The daemon's trips to its journal's database thread, from its start to the
    #: drain's end.
    round_trips: int | None = None
    #: CPU time (user and system, all threads) the consumer spent on `cpu_messages`
    #: messages: the machine's load swings it far less than the rates.
    cpu_s: float | None = None
    cpu_messages: int = 0
    #: Of `cpu_s`, what the event loop's thread (the main one) spent.
    loop_cpu_s: float | None = None
    #: Of `cpu_s`, what the busiest other thread spent: the journal's database thread
    #: (the daemon's other threads barely run during a drain).
    journal_cpu_s: float | None = None
    #: Which event loop ran the consumer.
    loop: str = ""
    #: Where the wall time of each thread that did a share of the work went, over
    #: `sched_wall_s` of the drain: (thread, seconds running, seconds runnable but
    #: waiting for a core). The rest it slept: on its socket, the other thread, the
    #: interpreter lock or an fsync.
    thread_times: list[tuple[str, float, float]] = field(default_factory=list)
    sched_wall_s: float = 0.0
    #: The most messages the consumer held read but not yet taken into a batch.
    most_held: int | None = None

    @property
    def cpu_ms_a_message(self) -> float | None:
        if self.cpu_s is None or not self.cpu_messages:
            return None
        return 1000 * self.cpu_s / self.cpu_messages

    #: Times the daemon stopped reading the backlog, and its reconnections (its log).
    read_pauses: int | None = None
    reconnects: int | None = None
    #: The daemon's publications confirmed by the broker and dropped (its /metrics, at
    #: the end of the CPU window), and how long after the last commit the last of the
    #: drain's was confirmed; None from a daemon that does not count them.
    publications_confirmed: int | None = None
    publications_dropped: int | None = None
    publication_lag_s: float | None = None

    @property
    def messages(self) -> int:
        return len(self.commits)

    @property
    def seconds(self) -> float:
        return max(self.commits[-1] - self.commits[0], 1e-6)

    @property
    def rate(self) -> float:
        return (self.messages - 1) / self.seconds

    def tenths(self) -> list[float]:
        """The rate in each tenth of the messages (commit times of its first and last)."""
        n = self.messages
        rates = []
        for k in range(10):
            first, last = k * n // 10, (k + 1) * n // 10 - 1
            begin = self.commits[max(first - 1, 0)]
            span = self.commits[last] - begin
            count = last - max(first - 1, 0)
            rates.append(count / span if span > 0 else float("inf"))
        return rates


async def bare_drain(port: int, folder: Path, messages: int) -> Drain:
    """The reference: aiomqtt, batches of at most the daemon's, SQLite FULL, ack after commit."""
    client_id = "bare-consumer"
    await queue_backlog(port, client_id, messages)
    db = sqlite3.connect(folder / "bare.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, topic TEXT, payload TEXT, received REAL)"
    )
    commits: list[float] = []
    largest = held = 0
    client = _session_client(port, client_id, daemon_mqtt.RECEIVE_MAXIMUM)
    acks: paho.Client = client._client  # as the daemon does: no public manual-ack API
    acks.manual_ack_set(True)
    cpu_before = time.process_time()
    sched_before, wall_before = thread_schedstats(os.getpid()), time.monotonic()
    async with client:
        await client.subscribe(f"{PREFIX}/tasks/#", qos=1)
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            while len(commits) < messages:
                batch = [await anext(client.messages)]
                while len(batch) < daemon_mqtt.MAX_BATCH and len(client.messages):
                    batch.append(await anext(client.messages))
                held = max(held, len(batch) + len(client.messages))
                now = time.time()
                db.execute("BEGIN")
                db.executemany(
                    "INSERT INTO events (topic, payload, received) VALUES (?, ?, ?)",
                    [(m.topic.value, bytes(m.payload), now) for m in batch],
                )
                db.execute("COMMIT")
                for message in batch:
                    acks.ack(message.mid, message.qos)
                commits.extend([now] * len(batch))
                largest = max(largest, len(batch))
    cpu_s = time.process_time() - cpu_before
    wall_s = time.monotonic() - wall_before
    thread_times = busy_thread_times(os.getpid(), sched_before, wall_s, ("main", "other"))
    db.close()
    return Drain(
        "bare aiomqtt + sqlite3 (FULL)",
        commits,
        largest_batch=largest,
        cpu_s=cpu_s,
        cpu_messages=len(commits),
        thread_times=thread_times,
        sched_wall_s=wall_s,
        most_held=held,
    )


def cpu_seconds(pid: int) -> float:
    """The process's user and system CPU time so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_thread_cpu_seconds(pid: int) -> float:
    """The CPU time of the process's main thread: the daemon's event loop."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """Each thread's user and system CPU time so far, by thread id (threads that end
    meanwhile are skipped)."""
    seconds: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def busiest_other_thread_seconds(pid: int, before: dict[int, float]) -> float:
    """The CPU time since `before` of the busiest thread other than the main one."""
    after = thread_cpu_seconds(pid)
    spent = [t - before.get(tid, 0.0) for tid, t in after.items() if tid != pid]
    return max(spent, default=0.0)


def thread_schedstats(pid: int) -> dict[int, tuple[float, float]]:
    """Each thread's time running and time runnable but waiting for a core so far
    (the kernel's /proc/PID/task/TID/schedstat), by thread id."""
    times: dict[int, tuple[float, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            running, waiting = (task / "schedstat").read_text().split()[:2]
        except FileNotFoundError:
            continue
        times[int(task.name)] = (int(running) / 1e9, int(waiting) / 1e9)
    return times


def busy_thread_times(
    pid: int, before: dict[int, tuple[float, float]], wall_s: float, names: tuple[str, str]
) -> list[tuple[str, float, float]]:
    """Since `before`: the main thread's running and waiting time, then the busiest
    other thread's if it ran a tenth of `wall_s` or more (names: main, other)."""
    spent = {
        tid: (running - before.get(tid, (0.0, 0.0))[0], waiting - before.get(tid, (0.0, 0.0))[1])
        for tid, (running, waiting) in thread_schedstats(pid).items()
    }
    main = spent.pop(pid, (0.0, 0.0))
    times = [(names[0], *main)]
    other = max(spent.values(), default=(0.0, 0.0))
    if other[0] >= wall_s / 10:
        times.append((names[1], *other))
    return times


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _received_times(daemon: Daemon) -> list[float]:
    rows = daemon.query("SELECT received FROM events WHERE source='mqtt' ORDER BY seq")
    return [row[0] for row in rows]


async def daemon_drain(port: int, folder: Path, messages: int, source: Path | None = None) -> Drain:
    """The real daemon draining the same backlog; RSS sampled meanwhile. The daemon runs
    from `source`, another checkout, when given."""
    daemon = Daemon(folder / "daemon", mqtt_port=port, prefix=PREFIX)
    if source is not None:
        daemon.source = source
    await queue_backlog(port, f"tapeworker-{daemon.http_port}", messages)
    daemon.start()
    peak = 0
    try:
        rounds_before = metric(daemon, "tapeworker_planning_rounds_total")
        assert daemon.process is not None
        pid = daemon.process.pid
        # It may have begun: the CPU counts from here, for the messages after.
        cpu_before = cpu_seconds(pid)
        loop_cpu_before = main_thread_cpu_seconds(pid)
        threads_before = thread_cpu_seconds(pid)
        sched_before, wall_before = thread_schedstats(pid), time.monotonic()
        journaled_before = daemon.query("SELECT count(*) FROM events WHERE source='mqtt'")[0][0]
        start_rss = rss_bytes(pid)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while True:
            peak = max(peak, rss_bytes(pid))
            count = daemon.query("SELECT count(*) FROM events WHERE source='mqtt'")[0][0]
            if count >= messages:
                break
            if daemon.process.poll() is not None:
                raise AssertionError(f"daemon exited:\n{daemon.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} of {messages} events after {DRAIN_TIMEOUT_S}s")
            await asyncio.sleep(0.1)
        # The CPU window ends once the drain's state publications are all confirmed by
        # the broker too (or dropped): the publisher may lag behind the commits.
        journaled_at = time.monotonic()
        lag = None
        if optional_metric(daemon, WAITING) is not None:
            while optional_metric(daemon, WAITING):
                peak = max(peak, rss_bytes(pid))
                if time.monotonic() > deadline:
                    raise AssertionError(f"publications still waiting after {DRAIN_TIMEOUT_S}s")
                await asyncio.sleep(0.2)  # each look is a scrape: the daemon's CPU
            lag = time.monotonic() - journaled_at
        end_rss = rss_bytes(pid)
        wall_s = time.monotonic() - wall_before
        thread_times = busy_thread_times(pid, sched_before, wall_s, ("event loop", "journal"))
        cpu_s = cpu_seconds(pid) - cpu_before
        loop_cpu_s = main_thread_cpu_seconds(pid) - loop_cpu_before
        journal_cpu_s = busiest_other_thread_seconds(pid, threads_before)
        rounds = metric(daemon, "tapeworker_planning_rounds_total") - rounds_before
        confirmed = optional_metric(daemon, PUBLICATIONS + '{outcome="confirmed"}')
        dropped = optional_metric(daemon, PUBLICATIONS + '{outcome="dropped"}')
        # Since it started (its start-up's few dozen included): it may have drained a
        # small backlog before it was first looked at.
        trips = metric(daemon, "tapeworker_journal_round_trips_total")
        pauses = metric(daemon, "tapeworker_mqtt_read_pauses_total")
        reconnects = daemon.log_tail(10**9).count("disconnected")
        commits = _received_times(daemon)
        batches: dict[float, int] = {}
        for when in commits:
            batches[when] = batches.get(when, 0) + 1
    finally:
        daemon.stop()
    try:
        restart_rss, restart_peak = await restarted_rss(daemon)
    finally:
        daemon.stop()
    return Drain(
        "daemon",
        commits,
        restart_rss_bytes=restart_rss,
        restart_peak_rss_bytes=restart_peak,
        peak_rss_bytes=peak,
        start_rss_bytes=start_rss,
        end_rss_bytes=end_rss,
        largest_batch=max(batches.values()),
        planning_rounds=rounds,
        round_trips=trips,
        cpu_s=cpu_s,
        loop_cpu_s=loop_cpu_s,
        journal_cpu_s=journal_cpu_s,
        cpu_messages=len(commits) - journaled_before,
        read_pauses=pauses,
        reconnects=reconnects,
        publications_confirmed=confirmed,
        publications_dropped=dropped,
        publication_lag_s=lag,
        thread_times=thread_times,
        sched_wall_s=wall_s,
    )


async def restarted_rss(daemon: Daemon) -> tuple[int, int]:
    """Start the daemon again over its journal: (RSS once ready, peak while starting)."""
    daemon.start()
    assert daemon.process is not None
    pid = daemon.process.pid
    peak = rss_bytes(pid)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    async with httpx.AsyncClient(timeout=60) as client:
        while True:
            peak = max(peak, rss_bytes(pid))
            response = await client.get(f"http://127.0.0.1:{daemon.http_port}/readyz")
            if response.status_code == 200:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready after {DRAIN_TIMEOUT_S}s: {response.text}")
            await asyncio.sleep(0.1)  # the sampling interval of the RSS
    ready = rss_bytes(pid)
    return ready, max(peak, ready)


WAITING = "tapeworker_mqtt_publications_waiting"
PUBLICATIONS = "tapeworker_mqtt_publications_total"


def metric(daemon: Daemon, name: str) -> int:
    """A counter of the daemon's, from its /metrics."""
    value = optional_metric(daemon, name)
    if value is None:
        raise AssertionError(f"no {name} in /metrics")
    return value


def optional_metric(daemon: Daemon, name: str) -> int | None:
    """A sample of the daemon's /metrics (`name` with its labels, if any), or None when
    it has none (a daemon from an older checkout)."""
    response = httpx.get(f"http://127.0.0.1:{daemon.http_port}/metrics", timeout=60)
    for line in response.text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


@dataclass
class HttpLoad:
    server: str
    concurrency: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int] = field(default_factory=dict)
    #: The daemon's transactions of HTTP writes during the run (group commit).
    commit_groups: int | None = None
    #: The daemon's planning rounds during the run.
    planning_rounds: int | None = None
    #: The server's CPU time (user and system, all threads) during the run.
    cpu_s: float | None = None
    #: The machine's load average (1 min) at the end of the run.
    load: float = field(default_factory=lambda: os.getloadavg()[0])

    @property
    def rate(self) -> float:
        """Creates done per second (a 503 asked the client to come back: not done)."""
        return self.statuses.get(201, 0) / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def http_load(
    base_url: str,
    auth: tuple[str, str] | None,
    server: str,
    concurrency: int,
    requests: int,
    first_id: int,
) -> HttpLoad:
    barcodes = writable_tapes(DEFINITION)
    counter = iter(range(first_id, first_id + requests))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, auth=auth, timeout=60, limits=limits) as client:

        async def worker() -> None:
            for n in counter:
                started = time.perf_counter()
                response = await client.post(
                    f"/api/v2/tasks/{TASK}/task_destinations",
                    content=payload_for(n, barcodes),
                    headers={"Content-Type": "application/json"},
                )
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return HttpLoad(server, concurrency, seconds, latencies, statuses)


def trivial_app(db_path: str) -> Any:
    """The reference app: FastAPI, aiosqlite, one INSERT and COMMIT per create."""
    state: dict[str, aiosqlite.Connection] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with aiosqlite.connect(db_path) as db:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute(
                "CREATE TABLE IF NOT EXISTS destinations "
                "(id INTEGER PRIMARY KEY, task TEXT, body TEXT)"
            )
            await db.commit()
            state["db"] = db
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/api/v2/tasks/{task_id}/task_destinations", status_code=201)
    async def create(task_id: str, request: Request) -> dict[str, Any]:
        body = await request.json()
        db = state["db"]
        cursor = await db.execute(
            "INSERT INTO destinations (task, body) VALUES (?, ?)", (task_id, json.dumps(body))
        )
        await db.commit()
        return {"id": cursor.lastrowid, **body}

    return app


#: The trivial app's HTTP parser: the daemon's own (its guard is built on uvicorn's
#: httptools protocol), so that the ratio compares like with like.
TRIVIAL_HTTP = "httptools"


def daemon_http(source: Path) -> str:
    """The HTTP parser under the daemon of checkout `source` (its guard's base class)."""
    guard = (source / "worker" / "intake" / "http" / "guard.py").read_text(encoding="utf-8")
    return "httptools" if "HttpToolsProtocol" in guard else "h11"


def serve_trivial(port: int, db_path: str, http: str = TRIVIAL_HTTP) -> None:
    uvicorn.run(trivial_app(db_path), host="127.0.0.1", port=port, log_level="warning", http=http)


def start_trivial(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.benchmarks.intake_bench",
            "--serve-trivial",
            str(port),
            str(folder / "trivial.sqlite3"),
            TRIVIAL_HTTP,
        ],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, timeout=120)
    return process, port


async def http_runs(folder: Path, requests: int, source: Path | None = None) -> list[HttpLoad]:
    """Both servers at each concurrency, alternating, on the same machine; the daemon
    from `source`, another checkout, when given."""
    results: list[HttpLoad] = []
    trivial, trivial_port = start_trivial(folder)
    daemon = Daemon(folder / "http-daemon")
    if source is not None:
        daemon.source = source
    daemon.start()
    assert daemon.process is not None
    daemon_pid = daemon.process.pid
    try:
        first_id = 1
        for concurrency in CONCURRENCY:
            cpu_before = cpu_seconds(trivial.pid)
            load = await http_load(
                f"http://127.0.0.1:{trivial_port}",
                None,
                "trivial FastAPI + aiosqlite",
                concurrency,
                requests,
                first_id,
            )
            load.cpu_s = cpu_seconds(trivial.pid) - cpu_before
            results.append(load)
            groups_before = metric(daemon, "tapeworker_http_commit_groups_total")
            rounds_before = metric(daemon, "tapeworker_planning_rounds_total")
            cpu_before = cpu_seconds(daemon_pid)
            load = await http_load(
                f"http://127.0.0.1:{daemon.http_port}",
                ("tester", "secret-for-tests"),
                "daemon",
                concurrency,
                requests,
                first_id,
            )
            load.cpu_s = cpu_seconds(daemon_pid) - cpu_before
            groups = metric(daemon, "tapeworker_http_commit_groups_total") - groups_before
            load.commit_groups = groups
            rounds = metric(daemon, "tapeworker_planning_rounds_total") - rounds_before
            load.planning_rounds = rounds
            results.append(load)
            first_id += requests
    finally:
        daemon.stop()
        trivial.terminate()
        trivial.wait(timeout=30)
    return results


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


@dataclass
class Figures:
    #: None when the MQTT half was not run (`--messages 0`).
    bare: Drain | None
    daemon: Drain | None
    http: list[HttpLoad]
    #: Which HTTP parser each side of the HTTP half ran on.
    http_parsers: str = ""

    @property
    def mqtt_ratio(self) -> float:
        assert self.bare is not None
        assert self.daemon is not None
        return self.daemon.rate / self.bare.rate

    def http_pairs(self) -> list[tuple[HttpLoad, HttpLoad]]:
        by = {(h.server == "daemon", h.concurrency): h for h in self.http}
        return [(by[(False, c)], by[(True, c)]) for c in CONCURRENCY if (True, c) in by]

    def lines(self) -> list[str]:
        lines = self.mqtt_lines() if self.bare is not None else []
        lines.extend(self.http_lines())
        return lines

    def mqtt_lines(self) -> list[str]:
        assert self.bare is not None
        assert self.daemon is not None
        lines = [
            f"MQTT durable intake of {self.daemon.messages} queued barcode creates "
            f"(batch at most {daemon_mqtt.MAX_BATCH}):"
        ]
        for drain in (self.bare, self.daemon):
            per_tenth = " ".join(f"{r:.0f}" for r in drain.tenths())
            lines.append(
                f"  {drain.consumer:<30} {drain.rate:8.0f} msg/s  largest batch "
                f"{drain.largest_batch}  per tenth: {per_tenth}"
            )
        lines.append(
            f"  daemon / bare = {self.mqtt_ratio:.2f}x (target >= 0.5x): "
            f"{_verdict(self.mqtt_ratio >= 0.5)}"
        )
        tenths = self.daemon.tenths()
        fall = min(tenths) / max(tenths)
        lines.append(f"  daemon's slowest tenth / fastest tenth = {fall:.2f}")
        commits = len(set(self.daemon.commits))
        lines.append(
            f"  daemon: {commits} commits, {self.daemon.planning_rounds} planning rounds "
            f"during the drain ({self.daemon.seconds:.1f} s), "
            f"{self.daemon.read_pauses} read pauses, {self.daemon.reconnects} reconnections"
        )
        daemon_cpu, bare_cpu = self.daemon.cpu_ms_a_message, self.bare.cpu_ms_a_message
        if daemon_cpu is None:
            lines.append("  CPU a message: the daemon drained all before it was first looked at")
        elif bare_cpu is not None:
            lines.append(
                f"  CPU a message (user and system, all threads): daemon {daemon_cpu:.2f} ms, "
                f"bare {bare_cpu:.2f} ms: bare / daemon = {bare_cpu / daemon_cpu:.2f}x"
            )
            if self.daemon.loop_cpu_s is not None and self.daemon.cpu_messages:
                loop_ms = 1000 * self.daemon.loop_cpu_s / self.daemon.cpu_messages
                journal_ms = 1000 * (self.daemon.journal_cpu_s or 0) / self.daemon.cpu_messages
                lines.append(
                    f"    daemon: event loop's thread {loop_ms:.2f} ms, the journal's thread "
                    f"{journal_ms:.2f} ms, any others "
                    f"{max(daemon_cpu - loop_ms - journal_ms, 0):.2f} ms"
                )
        lines.append(self.wall_line())
        lines.append(
            f"  read but not yet in a batch, at most: bare {self.bare.most_held} (it reads "
            f"all the broker sends), daemon {daemon_mqtt.QUEUE_LIMIT} (then it stops reading)"
        )
        lines.append(self.publication_line())
        trips = self.daemon.round_trips or 0
        lines.append(
            f"  daemon: {trips} journal round trips, {trips / self.daemon.messages:.2f} per "
            f"event (target <= 2), {trips / max(commits, 1):.1f} per commit "
            f"(since it started: start-up, intake, planning, state publication, the scrapes)"
        )
        rss = (self.daemon.peak_rss_bytes or 0) / 1e6
        lines.append(
            f"  daemon peak RSS during the drain: {rss:.0f} MB (target < 150 MB): "
            f"{_verdict(rss < 150)}"
        )
        start = (self.daemon.start_rss_bytes or 0) / 1e6
        end = (self.daemon.end_rss_bytes or 0) / 1e6
        lines.append(
            f"  daemon RSS when it listens: {start:.0f} MB; once all is journaled: {end:.0f} MB"
        )
        ready = (self.daemon.restart_rss_bytes or 0) / 1e6
        peak = (self.daemon.restart_peak_rss_bytes or 0) / 1e6
        lines.append(
            f"  daemon restarted over that journal: RSS once ready {ready:.0f} MB "
            f"(target < 150 MB): {_verdict(ready < 150)}; peak while starting {peak:.0f} MB"
        )
        return lines

    def wall_line(self) -> str:
        """Each consumer's busy threads: the shares of the drain's wall time running,
        waiting for a core (a busy machine), and asleep (waiting for anything else)."""
        parts = []
        for drain in (self.bare, self.daemon):
            assert drain is not None
            wall = max(drain.sched_wall_s, 1e-9)
            shares = ", ".join(
                f"{name} {running / wall:.0%} / {waiting / wall:.0%} / "
                f"{max(wall - running - waiting, 0) / wall:.0%}"
                for name, running, waiting in drain.thread_times
            )
            parts.append(f"{drain.consumer.split()[0]}: {shares}")
        return (
            "  wall time of each busy thread (running / waiting for a core / asleep): "
            + "; ".join(parts)
        )

    def publication_line(self) -> str:
        daemon = self.daemon
        assert daemon is not None
        if daemon.publications_dropped is None or daemon.publication_lag_s is None:
            return "  daemon's publications: not counted by this daemon (CPU to the last commit)"
        dropped = daemon.publications_dropped
        return (
            f"  daemon's publications: {daemon.publications_confirmed} confirmed by the broker, "
            f"the last {daemon.publication_lag_s:.1f} s after the last commit (in the CPU "
            f"window); {dropped} dropped (target 0): {_verdict(dropped == 0)}"
        )

    def http_lines(self) -> list[str]:
        lines = []
        if self.http:
            lines.append(
                "HTTP create (barcode destinations, one client), daemon against the trivial app "
                f"({self.http_parsers}):"
            )
        for trivial, daemon in self.http_pairs():
            ratio = daemon.rate / trivial.rate
            p99 = daemon.percentile(0.99) / trivial.percentile(0.99)
            lines.append(
                f"  concurrency {daemon.concurrency:>2}: trivial {trivial.rate:6.0f}/s "
                f"p50 {trivial.percentile(0.5) * 1000:6.1f} ms p99 "
                f"{trivial.percentile(0.99) * 1000:7.1f} ms | daemon {daemon.rate:6.0f}/s "
                f"p50 {daemon.percentile(0.5) * 1000:6.1f} ms p99 "
                f"{daemon.percentile(0.99) * 1000:7.1f} ms {daemon.statuses}"
            )
            if daemon.commit_groups:
                per_commit = daemon.statuses.get(201, 0) / daemon.commit_groups
                rounds = (
                    f", {daemon.planning_rounds / done:.2f} planning rounds a create"
                    if daemon.planning_rounds is not None and (done := daemon.statuses.get(201))
                    else ""
                )
                lines.append(
                    f"    daemon: {daemon.commit_groups} commits, {per_commit:.1f} creates a "
                    f"commit{rounds}; load {daemon.load:.1f}"
                )
            if daemon.cpu_s is not None and trivial.cpu_s is not None:
                mine = daemon.cpu_s / max(1, sum(daemon.statuses.values())) * 1000
                theirs = trivial.cpu_s / max(1, sum(trivial.statuses.values())) * 1000
                lines.append(
                    f"    CPU a request: daemon {mine:.2f} ms, trivial {theirs:.2f} ms "
                    f"({mine / theirs if theirs else float('nan'):.1f}x)"
                )
            lines.append(
                f"    throughput {ratio:.2f}x (target >= 0.6x): {_verdict(ratio >= 0.6)}; "
                f"p99 {p99:.2f}x"
                + (
                    f" (target <= 2x): {_verdict(p99 <= 2)}"
                    if daemon.concurrency == max(CONCURRENCY)
                    else ""
                )
            )
        return lines


async def measure(
    messages: int,
    requests: int,
    source: Path | None = None,
    mqtt_source: Path | None = None,
) -> Figures:
    with tempfile.TemporaryDirectory(prefix="tw-intake-bench-") as tmp:
        folder = Path(tmp)
        drains: list[Drain | None] = [None, None]
        for n, name in enumerate(("bare", "daemon") if messages else ()):
            broker = Broker(port=free_port(), folder=folder / f"mosquitto-{name}")
            broker.start()
            try:
                if name == "bare":
                    drains[n] = await bare_drain(broker.port, folder, messages)
                else:
                    drains[n] = await daemon_drain(broker.port, folder, messages, mqtt_source)
            finally:
                broker.stop()
        http = await http_runs(folder, requests, source) if requests else []
    parsers = (
        f"uvicorn + {TRIVIAL_HTTP} for the trivial app, "
        f"uvicorn + {daemon_http(source or REPO)} for the daemon"
    )
    return Figures(drains[0], drains[1], http, parsers)


def _main_trivial(argv: list[str]) -> int:
    serve_trivial(int(argv[0]), argv[1], *argv[2:3])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--serve-trivial":
        return _main_trivial(argv[1:])
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=50000)
    parser.add_argument("--requests", type=int, default=2000, help="HTTP creates per level")
    parser.add_argument(
        "--http-daemon-source",
        type=Path,
        default=None,
        help="run the HTTP half's daemon from this checkout (e.g. a `git archive` of an "
        "earlier commit), to compare its CPU a create with this one's",
    )
    parser.add_argument(
        "--mqtt-daemon-source",
        type=Path,
        default=None,
        help="run the MQTT half's daemon from this checkout, to compare its CPU a message",
    )
    args = parser.parse_args(argv)
    figures = asyncio.run(
        measure(args.messages, args.requests, args.http_daemon_source, args.mqtt_daemon_source)
    )
    print(f"CPU: {_cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("\n".join(figures.lines()))
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
