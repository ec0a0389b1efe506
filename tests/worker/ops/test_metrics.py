"""The metrics' levels as the journal describes them, and the exposition a scraper reads."""

from __future__ import annotations

import io
import logging
import sys

import pytest
import structlog
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.worker.records import drive_record, request_record
from worker import logging as logs
from worker.core.requests import RequestState
from worker.ops import metrics
from worker.state.records import DriveRecord, RequestRecord


def request(rid: int, state: RequestState, arrival: float) -> RequestRecord:
    return request_record(rid, state=state, arrival=arrival)


def drive(index: int, *, up: bool, barcode: str | None) -> DriveRecord:
    return drive_record(index, up=up, barcode=barcode)


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def levels(requests: list[RequestRecord], drives: list[DriveRecord], now: float) -> None:
    counts, oldest = metrics.request_levels(requests)
    metrics.set_levels(counts, oldest, drives, now=now)


def test_levels_count_requests_by_state_and_age_the_oldest_pending() -> None:
    requests = [
        request(1, RequestState.PENDING, arrival=100.0),
        request(2, RequestState.PENDING, arrival=40.0),
        request(3, RequestState.READY, arrival=10.0),
        request(4, RequestState.MOUNTING, arrival=5.0),
    ]
    levels(requests, [], now=160.0)
    assert sample("tapeworker_requests", state="pending") == 2
    assert sample("tapeworker_requests", state="ready") == 1
    assert sample("tapeworker_requests", state="mounting") == 1
    # Every state has its series, at 0 when no request is in it.
    assert sample("tapeworker_requests", state="failed") == 0
    assert sample("tapeworker_oldest_pending_age_seconds") == 120.0


def test_nothing_pending_is_age_zero_and_a_clock_behind_is_never_negative() -> None:
    levels([request(1, RequestState.READY, 10.0)], [], now=20.0)
    assert sample("tapeworker_oldest_pending_age_seconds") == 0
    assert sample("tapeworker_requests", state="pending") == 0
    levels([request(1, RequestState.PENDING, 50.0)], [], now=20.0)
    assert sample("tapeworker_oldest_pending_age_seconds") == 0


def test_counts_set_as_given_and_a_state_left_out_has_none() -> None:
    metrics.set_levels({RequestState.PENDING: 7, RequestState.READY: 2}, 95.0, [], now=100.0)
    assert sample("tapeworker_requests", state="pending") == 7
    assert sample("tapeworker_requests", state="ready") == 2
    assert sample("tapeworker_requests", state="mounting") == 0
    assert sample("tapeworker_oldest_pending_age_seconds") == 5.0


def test_pending_per_pool_as_given_and_a_pool_left_out_loses_its_series() -> None:
    metrics.set_levels({}, None, [], now=0.0, pending_by_pool={"a": 3, "b": 0})
    assert sample("tapeworker_pending_requests_by_pool", pool="a") == 3
    assert sample("tapeworker_pending_requests_by_pool", pool="b") == 0
    metrics.set_levels({}, None, [], now=0.0, pending_by_pool={"b": 1})
    assert sample("tapeworker_pending_requests_by_pool", pool="a") is None
    assert sample("tapeworker_pending_requests_by_pool", pool="b") == 1


def test_drive_levels_say_up_and_loaded() -> None:
    levels([], [drive(0, up=True, barcode="NOD400L9"), drive(1, up=False, barcode=None)], now=0.0)
    assert sample("tapeworker_drive_up", drive="0") == 1
    assert sample("tapeworker_drive_loaded", drive="0") == 1
    assert sample("tapeworker_drive_up", drive="1") == 0
    assert sample("tapeworker_drive_loaded", drive="1") == 0


def test_the_exposition_parses_as_the_prometheus_text_format() -> None:
    levels([request(1, RequestState.PENDING, 1.0)], [], now=3.0)
    before = sample("tapeworker_planning_rounds_total") or 0.0
    metrics.PLANNING_ROUNDS.inc()
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert {
        "tapeworker_requests",
        "tapeworker_oldest_pending_age_seconds",
        "tapeworker_mount_duration_seconds",
        "tapeworker_journal_commit_seconds",
        "tapeworker_events",
    } <= set(families)
    rounds = families["tapeworker_planning_rounds"].samples
    assert any(s.name.endswith("_total") and s.value == before + 1 for s in rounds)
    pending = [s for s in families["tapeworker_requests"].samples if s.labels["state"] == "pending"]
    assert [s.value for s in pending] == [1.0]


def test_a_stopwatch_counts_up_from_its_start() -> None:
    watch = metrics.Stopwatch()
    first = watch.elapsed()
    assert first >= 0
    assert watch.elapsed() >= first


def test_log_lines_that_could_not_be_written_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    before = sample("tapeworker_log_lines_lost_total")
    assert before is not None
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(sys, "stdout", Full())
    logs.configure("info", "json")
    try:
        structlog.get_logger("tapeworker.t").info("lost", drive=1)
        logging.getLogger("uvicorn.error").warning("lost too")
    finally:
        logs.reset()
        root.handlers[:] = handlers
        root.setLevel(level)
    assert sample("tapeworker_log_lines_lost_total") == before + 2
