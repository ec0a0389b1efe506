"""Scoped operator controls and API keys, through the running daemon and the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.daemon import AUTH, Daemon
from tests.integration.test_operator import operator_daemon

REPO = Path(__file__).resolve().parents[2]
ARCHIVE = ("archive", "archive-password")


def cli(daemon: Daemon, *args: str, api_key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEWORKER_")}
    if api_key is not None:
        env["TAPEWORKER_API_KEY"] = api_key
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args, "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def create_key(daemon: Daemon, name: str, *scopes: str, api_key: str | None = None) -> str:
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    [token] = ok(cli(daemon, "api-key", "create", "--name", name, *args, api_key=api_key)).split()
    return token


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    running = operator_daemon(tmp_path / "daemon", extra_users={ARCHIVE[0]: ARCHIVE[1]})
    yield running
    assert running.stop() == 0


def test_the_operator_makes_keys_through_the_daemon_and_they_are_scoped(daemon: Daemon) -> None:
    # The first key: made by the configuration's admin user (HTTP Basic).
    drain_key = create_key(daemon, "ops1", "admin/drain", "task_destinations/index")
    ok(cli(daemon, "drain", "--reason", "maintenance", api_key=drain_key))
    ok(cli(daemon, "resume", "--api-key", drain_key))

    refused = cli(daemon, "drive", "down", "1", "--reason", "noisy", api_key=drain_key)
    assert refused.returncode == 1
    assert "(403)" in refused.stderr
    assert "admin/drives" in refused.stderr

    # A key with admin/api_keys makes keys, but none holding more than it does.
    keys_key = create_key(daemon, "keys1", "admin/api_keys", "admin/tapes")
    create_key(daemon, "tapes1", "admin/tapes", api_key=keys_key)
    beyond = cli(
        daemon, "api-key", "create", "--name", "x", "--scope", "admin/drives", api_key=keys_key
    )
    assert beyond.returncode == 1
    assert "admin/drives" in beyond.stderr
    no_keys = cli(daemon, "api-key", "list", api_key=drain_key)
    assert no_keys.returncode == 1
    assert "admin/api_keys" in no_keys.stderr

    duplicate = cli(daemon, "api-key", "create", "--name", "ops1", "--scope", "admin/drain")
    assert duplicate.returncode == 1
    assert "exists" in duplicate.stderr

    listed = ok(cli(daemon, "api-key", "list"))
    assert "ops1: live" in listed
    assert "tapes1: live" in listed
    assert "admin/drain task_destinations/index" in listed
    files = b"".join(p.read_bytes() for p in daemon.folder.glob("**/journal.sqlite3*"))
    for token in (drain_key, keys_key):
        secret = token.split("_", 2)[2]  # tw_<id>_<secret>; the secret may hold "_"
        assert secret not in listed
        assert secret.encode() not in files, "the secret is never stored"

    ok(cli(daemon, "api-key", "revoke", "--name", "ops1", "--reason", "rotated"))
    revoked = cli(daemon, "drain", api_key=drain_key)
    assert revoked.returncode == 1
    assert "(401)" in revoked.stderr
    assert "no live API key" in cli(daemon, "api-key", "revoke", "--name", "ops1").stderr

    events = json.loads(ok(cli(daemon, "events", "--json")))["events"]
    made = [e for e in events if e["verb"] == "api-key create"]
    assert len(made) == 3, "one event per key made, none for the refused ones"
    [revoke] = [e for e in events if e["verb"] == "api-key revoke"]
    assert revoke["source"] == "operator"
    assert "tester" in revoke["reason"]
    assert "rotated" in revoke["reason"]


def test_admin_routes_take_basic_and_bearer_with_their_scope(daemon: Daemon) -> None:
    token = create_key(daemon, "tapes2", "admin/tapes")
    root = f"http://127.0.0.1:{daemon.http_port}"
    with httpx.Client(base_url=root, timeout=10) as http:
        bearer = {"Authorization": f"Bearer {token}"}
        locked = http.post("/admin/tapes/NOD400L8/lock", json={}, headers=bearer)
        assert locked.status_code == 200, locked.text
        refused = http.post("/admin/drain", json={}, headers=bearer)
        assert refused.status_code == 403
        assert refused.json()["details"] == {
            "scope": [{"error": "missing", "value": "admin/drain"}]
        }

        # A Basic user outside admin_users keeps the task routes, not the controls.
        archive = http.post("/admin/drain", json={}, auth=ARCHIVE)
        assert archive.status_code == 403
        assert archive.json()["details"]["scope"][0]["value"] == "admin/drain"
        assert http.get("/api/v2/tasks/7/task_destinations", auth=ARCHIVE).status_code == 200
        assert http.get("/admin/api_keys", auth=ARCHIVE).status_code == 403
        assert http.get("/admin/api_keys", auth=AUTH).status_code == 200
        assert http.post("/admin/drain", json={}).status_code == 401
