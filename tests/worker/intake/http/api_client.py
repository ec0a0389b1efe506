"""The HTTP app in-process on a real journal file, through a real HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from tests.worker.harness import CATALOG
from worker.intake.http.app import create_app
from worker.settings import HttpSettings, Settings
from worker.state.journal import Journal

USER, PASSWORD = "archive", "s3cret"
AUTH = (USER, PASSWORD)
NOW = 2000.0
BASE = "/api/v2/tasks/7/task_destinations"


async def _ignore(_: set[int]) -> None:
    return None


@asynccontextmanager
async def api_client(
    folder: Path, *, raise_app_exceptions: bool = True, **http: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Journal]]:
    """A client of a fresh app on a fresh journal holding the intake tests' catalog."""
    journal = await Journal.open(folder / "journal.sqlite3")
    try:
        await journal.sync_catalog(CATALOG, now=1000.0)
        settings = Settings(
            http=HttpSettings(users={USER: SecretStr(PASSWORD)}, **http),
        )
        app = create_app(journal, settings, on_change=_ignore, clock=lambda: NOW)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tapeworker", auth=AUTH
        ) as client:
            yield client, journal
    finally:
        await journal.close()


def assert_error_shape(response: httpx.Response, status: int) -> dict[str, Any]:
    """The archive manager's one error shape, and nothing else."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"messages", "details"}, body
    assert body["messages"], body
    assert all(isinstance(m, str) and m for m in body["messages"]), body
    for name, items in body["details"].items():
        assert isinstance(name, str)
        for item in items:
            assert set(item) == {"error", "value"}, item
            assert isinstance(item["error"], str)
            assert isinstance(item["value"], str)
    return dict(body)
