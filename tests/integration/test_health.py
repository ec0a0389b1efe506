"""/healthz, /readyz and /metrics on the daemon's listener, against the real daemon."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import httpx

from tests.integration.daemon import Daemon, wait_until
from tests.integration.faults import immutable

TAPE = "NOD400L8"


def probe(daemon: Daemon, path: str) -> httpx.Response:
    """Probes and scrapers come without credentials."""
    with httpx.Client(base_url=f"http://127.0.0.1:{daemon.http_port}", timeout=10) as client:
        return client.get(path)


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from the Prometheus text format."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        found = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if found and found.group(1) == name:
            have = ",".join(sorted((found.group(2) or "").split(","))) if found.group(2) else ""
            if have == wanted:
                return float(found.group(3))
    return None


def test_health_readiness_and_metrics_of_a_mount(tmp_path: Path) -> None:
    daemon = Daemon(folder=tmp_path / "daemon")
    daemon.start()
    try:
        assert probe(daemon, "/healthz").json() == {"status": "ok"}
        ready = probe(daemon, "/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"journal": "ok", "library": "ok", "planner": "ok"}

        with daemon.http() as http:
            body = {"folder_id": 1, "folder_path": "/c/f", "tape_barcode": TAPE}
            created = http.post("/tasks/7/task_destinations", json=body)
            assert created.status_code == 201, created.text
            daemon.wait_request(created.json()["id"], "ready")
            assert http.post("/tasks/7/task_destinations", content=b"{").status_code == 400

        # The mount's duration is observed after the commit that made the request
        # ready, so the scrape waits for it rather than trusting the row.
        def mount_observed() -> str | None:
            text = probe(daemon, "/metrics").text
            return text if sample(text, "tapeworker_mount_duration_seconds_count") else None

        text = wait_until(mount_observed, what="the mount's duration in /metrics")
        assert sample(text, "tapeworker_requests", state="ready") == 1
        assert sample(text, "tapeworker_requests", state="pending") == 0
        assert sample(text, "tapeworker_mount_duration_seconds_count") == 1
        assert sample(text, "tapeworker_events_total", intake="http", outcome="applied") == 1
        assert sample(text, "tapeworker_events_total", intake="http", outcome="rejected") == 1
        assert (sample(text, "tapeworker_robot_busy_seconds_total") or 0) > 0
        assert (sample(text, "tapeworker_journal_commit_seconds_count") or 0) >= 2
        assert (sample(text, "tapeworker_journal_round_trips_total") or 0) >= 2
        assert sample(text, "tapeworker_drive_up", drive="0") == 1
        assert sample(text, "tapeworker_mqtt_connected") == 0
        assert sample(text, "tapeworker_oldest_pending_age_seconds") == 0
    finally:
        assert daemon.stop() == 0


def test_readyz_says_why_while_the_journal_refuses_writes(tmp_path: Path) -> None:
    daemon = Daemon(folder=tmp_path / "daemon")
    daemon.start()
    try:
        journal = daemon.state_dir / "journal.sqlite3"
        with contextlib.ExitStack() as stack:
            # Not the -shm file: SQLite maps it, and a write fault there is a SIGBUS.
            stack.enter_context(immutable(journal, Path(f"{journal}-wal")))
            with daemon.http() as http:
                body = {"folder_id": 1, "folder_path": "/c/f", "tape_barcode": TAPE}
                assert http.post("/tasks/7/task_destinations", json=body).status_code == 503
            unready = probe(daemon, "/readyz")
            assert unready.status_code == 503
            assert "journal" in unready.json()["details"]
            assert unready.json()["messages"][0].startswith("not ready: journal: journal read-only")
            assert probe(daemon, "/healthz").status_code == 200, "alive, only not ready"
        wait_until(
            lambda: probe(daemon, "/readyz").status_code == 200,
            timeout=60,
            what="ready again once the journal takes writes",
        )
    finally:
        assert daemon.stop() == 0
