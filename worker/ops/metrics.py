"""Prometheus metrics: counted where things happen, levels read from the journal at scrape.

Counters and histograms live in prometheus-client's default registry and are updated
by the parts that see the event (intake, executor, journal). Levels (requests by
state, the oldest pending age, drive state) are set from the journal's state model
(which keeps the counts as requests change) just before a scrape, so they never drift
from the source of truth and a scrape never scans the backlog.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from worker import logging as logs
from worker.core.requests import RequestState

if TYPE_CHECKING:  # the journal counts its commits here: no import cycle at run time
    from worker.state.journal import DriveRecord, RequestRecord

#: Mounts and unloads take seconds to minutes (load and thread 10-20 s, an unload
#: with its rewind a minute or more).
_TAPE_BUCKETS = (5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)
#: A commit is one fsync: microseconds on a VM, milliseconds on a disk.
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)

REQUESTS = Gauge("tapeworker_requests", "Mount requests by state", ["state"])
PENDING_BY_POOL = Gauge(
    "tapeworker_pending_requests_by_pool",
    "Pending mount requests per pool (a request for a tape counts for the tape's pool)",
    ["pool"],
)
OLDEST_PENDING = Gauge(
    "tapeworker_oldest_pending_age_seconds", "Age of the oldest pending request (0 if none)"
)
MOUNT_SECONDS = Histogram(
    "tapeworker_mount_duration_seconds",
    "From the load command to the drive online",
    buckets=_TAPE_BUCKETS,
)
UNLOAD_SECONDS = Histogram(
    "tapeworker_unload_duration_seconds",
    "From the unload command to the cartridge back in its slot",
    buckets=_TAPE_BUCKETS,
)
ROBOT_BUSY = Counter("tapeworker_robot_busy_seconds", "Time the robot spent moving cartridges")
DRIVE_UP = Gauge(
    "tapeworker_drive_up", "1 when the drive takes work, 0 when marked down", ["drive"]
)
DRIVE_LOADED = Gauge("tapeworker_drive_loaded", "1 when a cartridge is in the drive", ["drive"])
FAILURES = Counter(
    "tapeworker_failures", "Failed library operations by error class", ["operation", "error"]
)
EVENTS = Counter(
    "tapeworker_events", "Destination events by intake and outcome", ["intake", "outcome"]
)
MQTT_CONNECTED = Gauge("tapeworker_mqtt_connected", "1 while the MQTT intake is connected")
MQTT_PUBLICATIONS = Counter(
    "tapeworker_mqtt_publications",
    "What the MQTT intake published (state, summaries, dead letters), by outcome: "
    "confirmed by the broker's PUBACK, or dropped at a full outbox",
    ["outcome"],
)
MQTT_PUBLICATIONS_WAITING = Gauge(
    "tapeworker_mqtt_publications_waiting",
    "Committed MQTT batches and changes not yet published, and publications not yet "
    "confirmed by the broker (0 once all of it is)",
)
MQTT_READ_PAUSES = Counter(
    "tapeworker_mqtt_read_pauses",
    "Times the MQTT intake stopped reading while a backlog waited in the client",
)
MQTT_BATCH_MESSAGES = Histogram(
    "tapeworker_mqtt_batch_messages",
    "Messages committed together by the MQTT intake: near its batch limit while a "
    "backlog drains, 1 when messages come one at a time",
    # Up to the intake's MAX_BATCH (200): that limit reached means the commit, not the
    # broker, sets the pace.
    buckets=(1, 2, 5, 10, 25, 50, 100, 150, 199, 200),
)
JOURNAL_COMMIT = Histogram(
    "tapeworker_journal_commit_seconds",
    "Duration of a journal commit (the fsync an event waits for)",
    buckets=_COMMIT_BUCKETS,
)
JOURNAL_ROUND_TRIPS = Counter(
    "tapeworker_journal_round_trips",
    "Trips from the event loop to the journal's database thread (a statement, or a "
    "whole batch of events)",
)
PLANNING_ROUNDS = Counter("tapeworker_planning_rounds", "Rounds of the planning loop")
DRAINING = Gauge("tapeworker_draining", "1 while the daemon mounts nothing new")
#: `tapeworker_library_info{library_id=...} 1`: joins this daemon's series to its
#: library in a fleet's dashboards.
LIBRARY = Info("tapeworker_library", "The library this daemon drives")


def request_levels(
    requests: Iterable[RequestRecord],
) -> tuple[dict[RequestState, int], float | None]:
    """Requests per state and the oldest pending arrival, counted from records (when
    the journal has no state model to ask)."""
    counts = dict.fromkeys(RequestState, 0)
    oldest: float | None = None
    for request in requests:
        counts[request.state] += 1
        if request.state is RequestState.PENDING:
            oldest = request.arrival if oldest is None else min(oldest, request.arrival)
    return counts, oldest


class _LostLogLines(Collector):
    """The log lines the output could not write, as the logging module counts them: it
    cannot log its own failure, so a scrape is where an operator sees it."""

    def collect(self) -> Iterable[CounterMetricFamily]:
        yield CounterMetricFamily(
            "tapeworker_log_lines_lost",
            "Log lines that could not be written (stdout broken or full, journald gone)",
            value=logs.lost_lines(),
        )


REGISTRY.register(_LostLogLines())


def set_levels(
    counts: Mapping[RequestState, int],
    oldest_pending: float | None,
    drives: Iterable[DriveRecord],
    now: float,
    pending_by_pool: Mapping[str, int] | None = None,
) -> None:
    """The gauges that describe the journal's state, set just before a scrape:
    requests per state (a state not in `counts` has none), the age of the oldest
    pending request (its arrival), the drives, and pending requests per pool when
    given."""
    for state in RequestState:
        REQUESTS.labels(state.value).set(counts.get(state, 0))
    if pending_by_pool is not None:
        # A pool gone from the catalog loses its series (the caller gives every
        # pool it knows, at 0 when none waits).
        PENDING_BY_POOL.clear()
        for pool, count in pending_by_pool.items():
            PENDING_BY_POOL.labels(pool).set(count)
    OLDEST_PENDING.set(0 if oldest_pending is None else max(now - oldest_pending, 0.0))
    for drive in drives:
        DRIVE_UP.labels(str(drive.index)).set(int(drive.up))
        DRIVE_LOADED.labels(str(drive.index)).set(int(drive.barcode is not None))


def exposition() -> tuple[bytes, str]:
    """The registry in the Prometheus text format, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


class Stopwatch:
    """Elapsed monotonic seconds, for durations that cross awaits."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started
