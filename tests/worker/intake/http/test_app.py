"""The seed's task_destinations endpoints in-process on a real journal file, through a
real HTTP client: each verb's answer, what it journals, and whom it tells."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from pydantic import SecretStr

from tests.worker.harness import CATALOG
from tests.worker.intake.http.api_client import assert_error_shape
from worker.core.requests import RequestState
from worker.intake.http.app import create_app
from worker.seed.models import TaskDestination
from worker.settings import HttpSettings, Settings, TaskEntry
from worker.state.journal import Journal

BASE = "/api/v2/tasks/7/task_destinations"
NOW = 2000.0


@dataclass
class Api:
    client: httpx.AsyncClient
    journal: Journal
    #: Destinations the app said changed, in order (the planner's wake-up).
    changed: list[set[int]] = field(default_factory=list)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(BASE, json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())


@asynccontextmanager
async def api(tmp_path: Path, *, model: bool = False) -> AsyncIterator[Api]:
    """The app on a journal file; with `model`, the journal keeps its state in memory
    as the daemon's does."""
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        await journal.sync_catalog(CATALOG, now=1000.0)
        if model:
            await journal.load_model()
        settings = Settings(http=HttpSettings(users={"archive": SecretStr("pw")}))
        changed: list[set[int]] = []

        async def on_change(ids: set[int]) -> None:
            changed.append(set(ids))

        app = create_app(journal, settings, on_change=on_change, clock=lambda: NOW)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tapeworker", auth=("archive", "pw")
        ) as client:
            yield Api(client, journal, changed)
    finally:
        await journal.close()


async def test_create_answers_the_seeds_resource_with_its_state(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        created = await a.create({"folder_id": 1, "tape_barcode": "NOD400L9"})
        TaskDestination.model_validate(created)
        assert created["tape_barcode"] == "NOD400L9"
        assert created["state"]["state"] == "pending"
        assert a.changed == [{created["id"]}]
        request = await a.journal.latest_request_for(created["id"])
        assert request is not None
        assert (request.barcode, request.state, request.arrival) == (
            "NOD400L9",
            RequestState.PENDING,
            NOW,
        )


async def test_an_answer_is_the_compact_utf8_json_of_its_view(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        response = await a.client.post(
            BASE, json={"folder_id": 2, "folder_path": "/données/été", "tape_barcode": "NOD400L9"}
        )
        assert response.status_code == 201
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["content-length"]) == len(response.content)
        # What Starlette's own JSONResponse would send: compact, non-ASCII as UTF-8.
        view = response.json()
        assert view["folder_path"] == "/données/été"
        assert response.content == json.dumps(
            view, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")


async def test_answers_from_memory_show_a_tape_as_it_is_now(tmp_path: Path) -> None:
    async with api(tmp_path, model=True) as a:
        assert a.journal.current_model is not None
        body = {"folder_id": 2, "folder_path": '/données/"q"', "tape_barcode": "NOD400L9"}
        first = await a.client.post(BASE, json=body)
        assert first.status_code == 201
        assert first.json()["tape"]["location"] == "Slot 1"

        async with a.journal.transaction() as tx:
            await tx.move_tape("NOD400L9", slot=None, drive=0, now=NOW, mounted=True)
        second = await a.client.post(BASE, json=body)
        shown = await a.client.get(f"{BASE}/{first.json()['id']}")
        for response in (second, shown):
            assert response.status_code in (200, 201)
            assert response.json()["tape"]["location"] == "Drive 0"
            # The bytes of the view itself, compact UTF-8.
            assert response.content == json.dumps(
                response.json(), ensure_ascii=False, separators=(",", ":")
            ).encode("utf-8")


async def test_a_request_does_not_consult_opentelemetry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real = trace.get_tracer_provider

    def counted() -> trace.TracerProvider:
        asked.append("tracer")
        return real()

    monkeypatch.setattr(trace, "get_tracer_provider", counted)
    async with api(tmp_path) as a:
        created = await a.create({"folder_id": 1, "tape_barcode": "NOD400L9"})
        shown = await a.client.get(f"{BASE}/{created['id']}")
        assert shown.status_code == 200
    assert asked == []


async def test_show_update_release_and_destroy(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        created = await a.create({"folder_id": 1, "tape_barcode": "NOD400L9"})
        item = f"{BASE}/{created['id']}"
        shown = await a.client.get(item)
        assert shown.status_code == 200
        assert shown.json() == created

        updated = await a.client.put(item, json={"folder_id": 1, "pool_name": "offline-tapes"})
        assert updated.status_code == 200, updated.text
        assert updated.json()["pool_name"] == "offline-tapes"
        assert updated.json()["tape_barcode"] is None, "the whole body is replaced"
        request = await a.journal.latest_request_for(created["id"])
        assert request is not None
        assert request.pool == "offline-tapes"

        released = await a.client.post(f"{item}/release")
        assert released.status_code == 204
        assert released.content == b""

        destroyed = await a.client.delete(item)
        assert destroyed.status_code == 204
        assert_error_shape(await a.client.get(item), 404)
        assert a.changed == [{created["id"]}] * 4, "create, update, release, destroy"


async def test_another_tasks_destination_is_not_found_here(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        created = await a.create({"folder_id": 1})
        other = f"/api/v2/tasks/8/task_destinations/{created['id']}"
        for method in ("GET", "DELETE"):
            body = assert_error_shape(await a.client.request(method, other), 404)
            assert body["details"] == {
                "task_destination_id": [{"error": "not_found", "value": str(created["id"])}]
            }
        assert_error_shape(await a.client.put(other, json={"folder_id": 2}), 404)
        assert_error_shape(await a.client.post(f"{other}/release"), 404)
        assert a.changed == [{created["id"]}], "nothing else happened"


async def test_a_rejected_create_is_a_4xx_journaled_in_the_inbox_only(
    tmp_path: Path,
) -> None:
    async with api(tmp_path) as a:
        # A contradiction with the library is a 409, a malformed body a 400: both rejected.
        response = await a.client.post(
            BASE, json={"folder_id": 1, "tape_barcode": "NOD400L9", "pool_name": "online-tapes"}
        )
        assert_error_shape(response, 409)
        response = await a.client.post(BASE, json={"folder_id": 1, "tape_barcode": "NOD 400"})
        assert_error_shape(response, 400)
        assert (await a.client.get(BASE)).json()["count"] == 0
        events = await a.journal.events()
        assert [e.status for e in events] == ["rejected"] * 2, "journaled with their reasons"
        assert a.changed == [], "a refused create changes no destination: no wake, no publish"


async def test_an_update_that_is_rejected_keeps_the_destination_as_it_was(
    tmp_path: Path,
) -> None:
    async with api(tmp_path) as a:
        created = await a.create({"folder_id": 1, "tape_barcode": "NOD400L9"})
        item = f"{BASE}/{created['id']}"
        bad = await a.client.put(item, json={"folder_id": 1, "tape_barcode": "NOD 400"})
        assert_error_shape(bad, 400)
        assert (await a.client.get(item)).json() == created
        assert a.changed == [{created["id"]}], "only the create changed it"


async def _answers_of_creates(journal_path: Path, *, directly: bool) -> list[tuple[Any, ...]]:
    """Each create case's status, answer and headers, from an app that serves creates
    directly or one whose router serves them."""
    journal = await Journal.open(journal_path)
    try:
        await journal.sync_catalog(CATALOG, now=1000.0)
        settings = Settings(
            http=HttpSettings(
                users={"archive": SecretStr("pw"), "reader": SecretStr("pw")},
                user_scopes={"reader": ["task_destinations/index"]},
                tasks=[
                    TaskEntry(id=7, name="nightly"),
                    TaskEntry(id=9, name="twice"),
                    TaskEntry(id=12, name="twice"),
                ],
            )
        )

        async def on_change(_: set[int]) -> None:
            return None

        app = create_app(journal, settings, on_change=on_change, clock=lambda: NOW)
        assert app.front is not None
        if not directly:
            app.front = None
        transport = httpx.ASGITransport(app=app)
        answers: list[tuple[Any, ...]] = []
        async with httpx.AsyncClient(transport=transport, base_url="http://tapeworker") as client:
            good = {"folder_id": 1, "tape_barcode": "NOD400L9"}
            archive, reader = ("archive", "pw"), ("reader", "pw")
            cases: list[tuple[str, dict[str, Any]]] = [
                (BASE, {"json": good, "auth": archive}),
                (BASE, {"json": {"folder_id": "x"}, "auth": archive}),
                (BASE, {"content": b"{not json", "auth": archive}),
                (
                    BASE,
                    {"content": b"{}", "auth": archive, "headers": {"content-type": "text/csv"}},
                ),
                (BASE, {"json": good}),
                (BASE, {"json": good, "auth": ("archive", "wrong")}),
                (BASE, {"json": good, "headers": {"authorization": "Token abc"}}),
                (BASE, {"json": good, "auth": reader}),
                ("/api/v2/tasks/nope/task_destinations", {"json": good, "auth": archive}),
                ("/api/v2/tasks/nope/task_destinations", {"json": good}),
                ("/api/v2/tasks/twice/task_destinations", {"json": good, "auth": archive}),
                ("/api/v2/tasks/nightly/task_destinations", {"json": good, "auth": archive}),
                (BASE + "/", {"json": good, "auth": archive}),
            ]
            for path, request in cases:
                response = await client.post(path, **request)
                answers.append(
                    (
                        path,
                        response.status_code,
                        response.content,
                        # Every header, in order (the answer's are built by hand).
                        response.headers.raw,
                    )
                )
        return answers
    finally:
        await journal.close()


async def test_a_create_served_directly_answers_as_its_route_would(tmp_path: Path) -> None:
    direct = await _answers_of_creates(tmp_path / "direct.sqlite3", directly=True)
    routed = await _answers_of_creates(tmp_path / "routed.sqlite3", directly=False)
    assert direct == routed
    statuses = [answer[1] for answer in direct]
    assert statuses == [201, 400, 400, 415, 401, 401, 401, 403, 404, 404, 400, 201, 307]


async def test_a_create_is_served_in_front_of_fastapis_own_layers(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        await journal.sync_catalog(CATALOG, now=1000.0)
        settings = Settings(http=HttpSettings(users={"archive": SecretStr("pw")}))

        async def on_change(_: set[int]) -> None:
            return None

        app = create_app(journal, settings, on_change=on_change, clock=lambda: NOW)
        stack = app.build_middleware_stack()
        through_fastapi: list[tuple[str, str]] = []

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            through_fastapi.append((scope["method"], scope["path"]))
            await stack(scope, receive, send)

        app.middleware_stack = recording
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tapeworker", auth=("archive", "pw")
        ) as client:
            created = await client.post(BASE, json={"folder_id": 1})
            assert created.status_code == 201, created.text
            assert through_fastapi == []
            item = f"{BASE}/{created.json()['id']}"
            assert (await client.get(item)).json() == created.json()
            # A trailing slash is the router's (its redirect), as before.
            assert (await client.post(BASE + "/", json={"folder_id": 1})).status_code == 307
            assert through_fastapi == [("GET", item), ("POST", BASE + "/")]
    finally:
        await journal.close()
