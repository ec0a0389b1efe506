"""API keys with scopes next to HTTP Basic: keys made by the real CLI, checked by the app."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.worker.api_client import BASE, api_client, assert_error_shape
from worker.http_auth import SCOPES

REPO = Path(__file__).resolve().parents[2]


def tapeworker(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tapeworker.toml"
    path.write_text(f'state_dir = "{tmp_path}"\n', encoding="utf-8")
    return path


def make_key(config: Path, name: str, *scopes: str) -> str:
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    result = tapeworker(config, "api-key", "create", "--name", name, *args)
    assert result.returncode == 0, result.stderr
    [token] = result.stdout.split()
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_key_opens_exactly_its_scopes(tmp_path: Path, config: Path) -> None:
    token = make_key(config, "mover1", "task_destinations/index", "task_destinations/show")
    async with api_client(tmp_path) as (client, _):
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


async def test_unknown_malformed_and_revoked_keys_are_401(tmp_path: Path, config: Path) -> None:
    token = make_key(config, "mover2", *SCOPES)
    async with api_client(tmp_path) as (client, _):
        assert (await client.get(BASE, headers=bearer(token), auth=None)).status_code == 200
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        for wrong in (forged, "tw_0000000000000000_" + "A" * 43, "nonsense", ""):
            response = await client.get(BASE, headers=bearer(wrong), auth=None)
            body = assert_error_shape(response, 401)
            assert "Bearer" in response.headers["www-authenticate"]
            assert body["details"]["Authorization"][0]["error"] == "invalid"
        revoked = tapeworker(config, "api-key", "revoke", "--name", "mover2")
        assert revoked.returncode == 0, revoked.stderr
        assert_error_shape(await client.get(BASE, headers=bearer(token), auth=None), 401)


def test_the_cli_lists_keys_without_their_secret(config: Path) -> None:
    token = make_key(config, "mover3", "task_destinations/show")
    duplicate = tapeworker(config, "api-key", "create", "--name", "mover3", "--scope", SCOPES[0])
    assert duplicate.returncode == 1
    assert "exists" in duplicate.stderr
    unknown = tapeworker(config, "api-key", "create", "--name", "x", "--scope", "everything")
    assert unknown.returncode == 2
    listed = tapeworker(config, "api-key", "list")
    assert listed.returncode == 0
    assert "mover3: live" in listed.stdout
    assert "task_destinations/show" in listed.stdout
    secret = token.rsplit("_", 1)[1]
    assert secret not in listed.stdout
    journal = (config.parent / "journal.sqlite3").read_bytes()
    assert secret.encode() not in journal, "the secret is never stored"
    assert tapeworker(config, "api-key", "revoke", "--name", "nobody").returncode == 1


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
