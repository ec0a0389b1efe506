"""/healthz, /readyz and /metrics as routes of their own, through a real HTTP client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.worker.harness import definition
from tests.worker.intake.http.api_client import assert_error_shape
from tests.worker.ops.running import Broker, Daemon, inventoried
from worker.intake.destinations import DestinationEvent, record_events
from worker.ops.http import health_router
from worker.seed.models import TaskDestinationBody
from worker.settings import MqttSettings, Settings
from worker.state.journal import Journal


@asynccontextmanager
async def routes(daemon: Daemon) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(health_router(daemon))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tapeworker") as client:
        yield client


@asynccontextmanager
async def journal_of(tmp_path: Path, *, with_inventory: bool) -> AsyncIterator[Journal]:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        await journal.sync_catalog(definition(), time.time())
        if with_inventory:
            await inventoried(journal, tmp_path)
        yield journal
    finally:
        await journal.close()


async def test_healthz_answers_whatever_the_state(tmp_path: Path) -> None:
    async with routes(Daemon(None, reconciler=None, executor=None)) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_lists_each_check(tmp_path: Path) -> None:
    async with (
        journal_of(tmp_path, with_inventory=True) as journal,
        routes(Daemon(journal)) as client,
    ):
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "checks": {"journal": "ok", "library": "ok", "planner": "ok"},
    }


async def test_not_ready_is_a_503_in_the_apis_error_shape(tmp_path: Path) -> None:
    settings = Settings(mqtt=MqttSettings(host="broker.example"))
    async with journal_of(tmp_path, with_inventory=False) as journal:
        daemon = Daemon(journal, settings=settings, mqtt=Broker(), journal_fault="journal full: x")
        async with routes(daemon) as client:
            body = assert_error_shape(await client.get("/readyz"), 503)
    assert body["messages"] == [
        "not ready: journal: journal full: x",
        "not ready: library: the library has not been inventoried yet",
        "not ready: mqtt: not connected to broker.example",
    ]
    assert body["details"] == {
        "journal": [{"error": "not ready", "value": "journal full: x"}],
        "library": [{"error": "not ready", "value": "the library has not been inventoried yet"}],
        "mqtt": [{"error": "not ready", "value": "not connected to broker.example"}],
    }


async def test_metrics_read_the_levels_from_the_journal_at_scrape(tmp_path: Path) -> None:
    async with journal_of(tmp_path, with_inventory=True) as journal:
        body = TaskDestinationBody.model_validate({"folder_id": 1, "tape_barcode": "AAA001L9"})
        await record_events(
            journal,
            [DestinationEvent("create", "7", 1, body, "test")],
            now=time.time(),
            hold_seconds=3600,
        )
        broker = Broker()
        broker.connected.set()
        async with routes(Daemon(journal, mqtt=broker)) as client:
            response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("tapeworker_requests", (("state", "pending"),))] == 1
    assert samples[("tapeworker_mqtt_connected", ())] == 1
    assert samples[("tapeworker_drive_up", (("drive", "0"),))] == 1
