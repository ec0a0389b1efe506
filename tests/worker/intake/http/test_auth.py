"""API keys with scopes next to HTTP Basic, checked by the app.

Keys are stored here as the daemon's admin API stores them; the CLI making them through
the running daemon is tested in tests/integration/test_admin_keys.py.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from tests.worker.intake.http.api_client import BASE, api_client, assert_error_shape
from worker.intake.http.auth import ADMIN_SCOPES, SCOPES, TASK_SCOPES, Authenticator, new_key
from worker.state.journal import Journal


async def make_key(journal: Journal, name: str, *scopes: str) -> str:
    key = new_key()
    assert await journal.add_api_key(name, key.key_id, key.digest, scopes, 1000.0)
    return key.token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_key_opens_exactly_its_scopes(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, journal):
        token = await make_key(
            journal, "mover1", "task_destinations/index", "task_destinations/show"
        )
        created = await client.post(BASE, json={"folder_id": 1})  # as the Basic user
        assert created.status_code == 201
        item = f"{BASE}/{created.json()['id']}"
        assert (await client.get(BASE, headers=bearer(token), auth=None)).status_code == 200
        assert (await client.get(item, headers=bearer(token), auth=None)).status_code == 200
        refused = {
            "task_destinations/create": ("POST", BASE),
            "task_destinations/update": ("PUT", item),
            "task_destinations/destroy": ("DELETE", item),
            "task_destinations/release": ("POST", item + "/release"),
        }
        for scope, (method, url) in refused.items():
            response = await client.request(
                method, url, json={"folder_id": 2}, headers=bearer(token), auth=None
            )
            body = assert_error_shape(response, 403)
            assert body["details"] == {"scope": [{"error": "missing", "value": scope}]}
            assert scope in body["messages"][0]
        assert (await client.get(item)).json()["folder_id"] == 1, "nothing refused changed"


async def test_unknown_malformed_and_revoked_keys_are_401(tmp_path: Path) -> None:
    async with api_client(tmp_path) as (client, journal):
        token = await make_key(journal, "mover2", *SCOPES)
        assert (await client.get(BASE, headers=bearer(token), auth=None)).status_code == 200
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        for wrong in (forged, "tw_0000000000000000_" + "A" * 43, "nonsense", ""):
            response = await client.get(BASE, headers=bearer(wrong), auth=None)
            body = assert_error_shape(response, 401)
            assert "Bearer" in response.headers["www-authenticate"]
            assert body["details"]["Authorization"][0]["error"] == "invalid"
        assert await journal.revoke_api_key("mover2", 2000.0)
        assert_error_shape(await client.get(BASE, headers=bearer(token), auth=None), 401)


async def test_basic_users_have_the_task_scopes_and_admin_users_the_admin_ones(
    tmp_path: Path,
) -> None:
    async with api_client(tmp_path) as (_, journal):
        auth = Authenticator(
            journal,
            {"archive": "a", "operator": "o", "reader": "r"},
            {"reader": ["task_destinations/index"]},
            admin_users=["operator", "reader"],
        )

        def basic(user: str, password: str) -> str:
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

        assert (await auth.principal(basic("archive", "a"))).scopes == TASK_SCOPES
        assert (await auth.principal(basic("operator", "o"))).scopes == TASK_SCOPES | ADMIN_SCOPES
        reader = await auth.principal(basic("reader", "r"))
        assert reader.scopes == {"task_destinations/index"} | ADMIN_SCOPES
        assert {
            "admin/drives",
            "admin/tapes",
            "admin/drain",
            "admin/release",
            "admin/api_keys",
        } == ADMIN_SCOPES


async def test_basic_users_have_every_scope_unless_configured(tmp_path: Path) -> None:
    async with api_client(tmp_path, user_scopes={"archive": ["task_destinations/index"]}) as (
        client,
        _,
    ):
        assert (await client.get(BASE)).status_code == 200
        body = assert_error_shape(await client.post(BASE, json={"folder_id": 1}), 403)
        assert body["details"]["scope"][0]["value"] == "task_destinations/create"


@pytest.mark.parametrize(
    "header",
    ["Basic !!!", "Basic " + "YXJjaGl2ZQ==", "Digest abc", "Bearer", "Basic"],
)
async def test_malformed_authorization_is_a_401(tmp_path: Path, header: str) -> None:
    async with api_client(tmp_path) as (client, _):
        response = await client.get(BASE, headers={"Authorization": header}, auth=None)
        assert_error_shape(response, 401)
        assert isinstance(response, httpx.Response)


async def test_a_verified_key_is_not_read_again_until_the_keys_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_client(tmp_path) as (client, journal):
        token = await make_key(journal, "mover3", *SCOPES)
        reads: list[str] = []
        real = journal.api_key

        async def counted(key_id: str) -> object:
            reads.append(key_id)
            return await real(key_id)

        monkeypatch.setattr(journal, "api_key", counted)
        for _ in range(3):
            assert (await client.get(BASE, headers=bearer(token), auth=None)).status_code == 200
        assert len(reads) == 1
        # Another token of the same key id is checked, not taken from memory.
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert_error_shape(await client.get(BASE, headers=bearer(forged), auth=None), 401)
        assert len(reads) == 2
        # Any key made or revoked: the next request reads the journal again.
        await make_key(journal, "mover4", *SCOPES)
        assert (await client.get(BASE, headers=bearer(token), auth=None)).status_code == 200
        assert len(reads) == 3
        assert await journal.revoke_api_key("mover3", 2000.0)
        assert_error_shape(await client.get(BASE, headers=bearer(token), auth=None), 401)
