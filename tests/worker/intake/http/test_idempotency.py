"""Idempotency-Key on creates: the real app and a real journal file, through httpx."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.types import Receive, Scope, Send

from tests.worker.harness import CATALOG
from worker.intake.http.app import create_app
from worker.intake.http.idempotency import IdempotentCreates
from worker.settings import HttpSettings, Settings
from worker.state.journal import Journal

AUTH = ("archive", "archive-secret")
OTHER = ("mover", "mover-secret")
URL = "/api/v2/tasks/7/task_destinations"
BODY = {"folder_id": 1, "folder_path": "/c/f.txt", "tape_barcode": "NOD400L9"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    await journal.sync_catalog(CATALOG, 0.0)
    yield journal
    await journal.close()


def client_for(journal: Journal, clock: Clock, keep_s: float = 3600.0) -> httpx.AsyncClient:
    users = {name: SecretStr(secret) for name, secret in (AUTH, OTHER)}
    http = HttpSettings(users=users, idempotency_keep_s=keep_s)

    async def on_change(_: set[int]) -> None:
        return None

    app = create_app(journal, Settings(http=http), on_change=on_change, clock=clock)
    guarded = IdempotentCreates(app, journal, http, clock=clock)
    transport = httpx.ASGITransport(app=guarded)
    return httpx.AsyncClient(transport=transport, base_url="http://tapeworker", auth=AUTH)


async def count(journal: Journal, table: str) -> int:
    return len(await journal._all(f"SELECT * FROM {table}"))


async def test_a_retry_gets_the_first_response_and_creates_nothing(journal: Journal) -> None:
    clock = Clock()
    async with client_for(journal, clock) as client:
        first = await client.post(URL, json=BODY, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 201
        clock.now += 60
        again = await client.post(URL, json=BODY, headers={"Idempotency-Key": "k-1"})
        assert again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        # Without a key, or with another, the same body is a create of its own.
        other = await client.post(URL, json=BODY, headers={"Idempotency-Key": "k-2"})
        assert other.json()["id"] != first.json()["id"]
    assert await count(journal, "destinations") == 2
    assert await count(journal, "events") == 2


async def test_the_same_key_with_another_body_is_422_and_changes_nothing(journal: Journal) -> None:
    async with client_for(journal, Clock()) as client:
        await client.post(URL, json=BODY, headers={"Idempotency-Key": "k-1"})
        changed = {**BODY, "folder_path": "/c/other.txt"}
        reused = await client.post(URL, json=changed, headers={"Idempotency-Key": "k-1"})
        assert reused.status_code == 422
        assert reused.json() == {
            "messages": ["This Idempotency-Key was used for a different request: use a new key."],
            "details": {"Idempotency-Key": [{"error": "reused", "value": "k-1"}]},
        }
        # Another task's path is another request too.
        elsewhere = await client.post(
            "/api/v2/tasks/8/task_destinations", json=BODY, headers={"Idempotency-Key": "k-1"}
        )
        assert elsewhere.status_code == 422
    assert await count(journal, "destinations") == 1


async def test_keys_belong_to_their_credentials(journal: Journal) -> None:
    async with client_for(journal, Clock()) as client:
        mine = await client.post(URL, json=BODY, headers={"Idempotency-Key": "k-1"})
        theirs = await client.post(URL, json=BODY, headers={"Idempotency-Key": "k-1"}, auth=OTHER)
        assert theirs.status_code == 201
        assert theirs.json()["id"] != mine.json()["id"]


async def test_a_rejected_create_is_replayed_as_rejected(journal: Journal) -> None:
    async with client_for(journal, Clock()) as client:
        bad = b'{"folder_id": 1, "tape_barcode": '
        first = await client.post(URL, content=bad, headers={"Idempotency-Key": "bad"})
        again = await client.post(URL, content=bad, headers={"Idempotency-Key": "bad"})
    assert first.status_code == again.status_code == 400
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    # One rejected event: the retry was answered from the key, not journaled again.
    assert await count(journal, "events") == 1


async def test_a_create_that_contradicts_the_library_is_replayed_as_409(
    journal: Journal,
) -> None:
    async with client_for(journal, Clock()) as client:
        body = {"tape_id": 1, "tape_barcode": "NOD401L9"}
        first = await client.post(URL, json=body, headers={"Idempotency-Key": "k"})
        again = await client.post(URL, json=body, headers={"Idempotency-Key": "k"})
    assert first.status_code == again.status_code == 409
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    [(status,)] = await journal._all("SELECT status FROM idempotency_keys")
    assert status == 409


async def test_a_key_expires_after_the_kept_time(journal: Journal) -> None:
    clock = Clock()
    async with client_for(journal, clock, keep_s=60) as client:
        first = await client.post(URL, json=BODY, headers={"Idempotency-Key": "k-1"})
        clock.now += 61
        later = await client.post(URL, json=BODY, headers={"Idempotency-Key": "k-1"})
    assert later.status_code == 201
    assert later.json()["id"] != first.json()["id"]
    assert "idempotent-replayed" not in later.headers
    # The expired row was replaced, not kept beside the new one.
    assert await count(journal, "idempotency_keys") == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "é"])
async def test_a_malformed_key_is_400(journal: Journal, key: str) -> None:
    async with client_for(journal, Clock()) as client:
        response = await client.post(URL, json=BODY, headers={b"Idempotency-Key": key.encode()})
    assert response.status_code == 400
    assert list(response.json()["details"]) == ["Idempotency-Key"]
    assert await count(journal, "destinations") == 0


async def test_a_key_whose_response_was_not_saved_answers_with_the_destination(
    journal: Journal,
) -> None:
    async with client_for(journal, Clock()) as client:
        first = await client.post(URL, json=BODY, headers={"Idempotency-Key": "k-1"})
        # As if the daemon had stopped between the commit and saving the response body.
        with sqlite3.connect(journal.path) as db:
            db.execute("UPDATE idempotency_keys SET response=NULL")
        again = await client.post(URL, json=BODY, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert await count(journal, "destinations") == 1


async def test_a_retry_while_the_first_is_in_progress_is_409(journal: Journal) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await gate.wait()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    http = HttpSettings()
    guarded = IdempotentCreates(slow_app, journal, http, clock=Clock())
    transport = httpx.ASGITransport(app=guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", auth=AUTH) as client:
        headers: dict[str, Any] = {"Idempotency-Key": "k-1"}
        first = asyncio.create_task(client.post(URL, json=BODY, headers=headers))
        async with asyncio.timeout(10):
            await entered.wait()
        second = await client.post(URL, json=BODY, headers=headers)
        gate.set()
        async with asyncio.timeout(10):
            assert (await first).status_code == 201
    assert second.status_code == 409
    assert second.headers["retry-after"] == "1"
    details = second.json()["details"]
    assert details == {"Idempotency-Key": [{"error": "in_progress", "value": "k-1"}]}
