"""The operator's routes in-process, on a real journal file, through a real HTTP
client: each control changes the journal, is announced to the daemon, needs its
scope, and answers errors in the API's one shape. The CLI drives them against the
real daemon in tests/integration/test_operator.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from tests.worker.harness import definition
from tests.worker.intake.http.api_client import assert_error_shape
from tests.worker.ops.running import Daemon
from worker.intake.admin import admin_router
from worker.intake.destinations import DestinationEvent, record_events
from worker.intake.http.app import create_app
from worker.seed.models import TaskDestinationBody
from worker.settings import HttpSettings, Settings
from worker.state.journal import Journal

OPERATOR = ("ops", "pw-ops")
ARCHIVE = ("archive", "pw-archive")


@dataclass
class Admin:
    client: httpx.AsyncClient
    journal: Journal
    daemon: Daemon

    async def post(
        self, path: str, body: dict[str, Any] | None = None, auth: tuple[str, str] = OPERATOR
    ) -> httpx.Response:
        return await self.client.post(f"/admin{path}", json=body or {}, auth=auth)


@asynccontextmanager
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        await journal.sync_catalog(definition(), time.time())
        settings = Settings(
            http=HttpSettings(
                users={name: SecretStr(pw) for name, pw in (OPERATOR, ARCHIVE)},
                admin_users=[OPERATOR[0]],
            )
        )
        daemon = Daemon(journal, settings=settings)

        async def ignore(_: set[int]) -> None:
            return None

        app = create_app(journal, settings, on_change=ignore, clock=time.time)
        app.include_router(admin_router(daemon, app.state.auth))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tapeworker") as client:
            yield Admin(client, journal, daemon)
    finally:
        await journal.close()


async def test_a_drive_marked_down_is_journaled_and_announced_with_who_and_why(
    tmp_path: Path,
) -> None:
    async with admin(tmp_path) as a:
        response = await a.post("/drives/1/down", {"reason": "noisy", "by": "ann"})
        assert response.status_code == 200, response.text
        assert response.json() == {"drive": 1, "up": False}
        drive = {d.index: d for d in await a.journal.drives()}[1]
        assert (drive.up, drive.reason) == (False, "operator: noisy")
        assert a.daemon.operator_actions[-1] == {
            "action": "drive down",
            "target": "drive 1",
            "by": "ops (ann)",
            "reason": "noisy",
        }
        assert (await a.post("/drives/1/up", {"reason": "fixed"})).json() == {
            "drive": 1,
            "up": True,
        }
        drive = {d.index: d for d in await a.journal.drives()}[1]
        assert (drive.up, drive.reason, drive.failures) == (True, None, 0)


async def test_an_unknown_drive_or_tape_is_a_404_naming_it(tmp_path: Path) -> None:
    async with admin(tmp_path) as a:
        body = assert_error_shape(await a.post("/drives/7/down"), 404)
        assert body["details"] == {"drive": [{"error": "unknown", "value": "7"}]}
        body = assert_error_shape(await a.post("/tapes/ZZZ999L9/lock"), 404)
        assert body["details"] == {"tape": [{"error": "unknown", "value": "ZZZ999L9"}]}
        assert a.daemon.operator_actions == [], "nothing happened, nothing announced"


async def test_a_barcode_that_cannot_be_one_is_a_400(tmp_path: Path) -> None:
    async with admin(tmp_path) as a:
        assert_error_shape(await a.post("/tapes/-rf/lock"), 400)


async def test_tapes_are_locked_unlocked_and_cleared(tmp_path: Path) -> None:
    async with admin(tmp_path) as a:
        assert (await a.post("/tapes/AAA001L9/lock")).json() == {
            "barcode": "AAA001L9",
            "locked": True,
        }
        tape = {t.barcode: t for t in await a.journal.tapes()}["AAA001L9"]
        assert tape.locked
        await a.post("/tapes/AAA001L9/unlock")
        await a.post("/tapes/AAA001L9/clear-check")
        tape = {t.barcode: t for t in await a.journal.tapes()}["AAA001L9"]
        assert (tape.locked, tape.need_to_check) == (False, False)
        assert [x["action"] for x in a.daemon.operator_actions] == [
            "tape lock",
            "tape unlock",
            "tape clear-check",
        ]


async def test_drain_and_resume_are_announced(tmp_path: Path) -> None:
    async with admin(tmp_path) as a:
        assert (await a.post("/drain", {"reason": "maintenance"})).json() == {"draining": True}
        assert (await a.post("/resume")).json() == {"draining": False}
        assert [x["action"] for x in a.daemon.operator_actions] == ["drain", "resume"]


async def test_each_control_needs_its_scope(tmp_path: Path) -> None:
    async with admin(tmp_path) as a:
        for path in ("/drives/0/down", "/tapes/AAA001L9/lock", "/drain", "/destinations/1/release"):
            assert_error_shape(await a.post(path, auth=ARCHIVE), 403)
        assert_error_shape(await a.post("/drain", auth=("ops", "wrong")), 401)
        assert a.daemon.operator_actions == []
        assert all(d.up for d in await a.journal.drives())


async def test_an_operator_releases_a_destination(tmp_path: Path) -> None:
    async with admin(tmp_path) as a:
        body = TaskDestinationBody.model_validate({"folder_id": 1, "tape_barcode": "AAA001L9"})
        await record_events(
            a.journal,
            [DestinationEvent("create", "7", 5, body, "test")],
            now=time.time(),
            hold_seconds=3600,
        )
        response = await a.post("/destinations/5/release", {"reason": "stuck job"})
        assert response.status_code == 200, response.text
        assert response.json()["destination"] == 5
        assert a.daemon.changed == [{5}]
        assert a.daemon.operator_actions[-1]["action"] == "release"
        body404 = assert_error_shape(await a.post("/destinations/6/release"), 404)
        assert body404["details"] == {"destination": [{"error": "unknown", "value": "6"}]}


async def test_api_keys_hold_no_more_than_their_maker(tmp_path: Path) -> None:
    async with admin(tmp_path) as a:
        made = await a.post("/api_keys", {"name": "ci", "scopes": ["admin/drain"]})
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        assert made.json()["scopes"] == ["admin/drain"]
        # The key works for its scope and for nothing else.
        bearer = {"Authorization": f"Bearer {key}"}
        drained = await a.client.post("/admin/drain", json={}, headers=bearer)
        assert drained.status_code == 200, drained.text
        denied = await a.client.post("/admin/drives/0/down", json={}, headers=bearer)
        assert_error_shape(denied, 403)
        assert_error_shape(
            await a.post("/api_keys", {"name": "ci", "scopes": ["admin/drain"]}), 409
        )
        listed = (await a.client.get("/admin/api_keys", auth=OPERATOR)).json()["api_keys"]
        assert [(k["name"], k["revoked"]) for k in listed] == [("ci", None)]
        assert (await a.post("/api_keys/ci/revoke")).json() == {"name": "ci", "revoked": True}
        after = await a.client.post("/admin/drain", json={}, headers=bearer)
        assert_error_shape(after, 401)
        assert_error_shape(await a.post("/api_keys/ci/revoke"), 404)


async def test_a_key_cannot_give_scopes_it_lacks(tmp_path: Path) -> None:
    async with admin(tmp_path) as a:
        made = await a.post("/api_keys", {"name": "keymaster", "scopes": ["admin/api_keys"]})
        bearer = {"Authorization": f"Bearer {made.json()['key']}"}
        wider = {"name": "wider", "scopes": ["admin/api_keys", "admin/drives"]}
        response = await a.client.post("/admin/api_keys", json=wider, headers=bearer)
        body = assert_error_shape(response, 403)
        assert body["details"] == {"scope": [{"error": "missing", "value": "admin/drives"}]}
        names = [k.name for k in await a.journal.api_keys()]
        assert names == ["keymaster"]
