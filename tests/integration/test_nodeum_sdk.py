"""The archive manager's own Python SDK (`nodeum-sdk`, pinned) against the running daemon.

Every call goes through the SDK as a client application makes it: its query parameter
names, its Basic and Bearer headers, its models parsing our responses and its
exception carrying our error shape.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import nodeum_sdk  # type: ignore[import-untyped]
import pytest
from nodeum_sdk.rest import ApiException  # type: ignore[import-untyped]

from tests.integration.daemon import AUTH, DEFINITION, REPO, Daemon, writable_tapes
from tests.integration.test_operator import operator_daemon

pytestmark = pytest.mark.integration

POOLS = {p.name: p.id for p in DEFINITION.pools}
TAPES = writable_tapes(DEFINITION)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    # An operator (admin_users) makes the API key through the daemon.
    daemon = operator_daemon(tmp_path_factory.mktemp("sdk") / "daemon")
    yield daemon
    daemon.stop()


def api(daemon: Daemon, *, token: str | None = None) -> Any:
    configuration = nodeum_sdk.Configuration(host=f"http://127.0.0.1:{daemon.http_port}/api/v2")
    if token is None:
        configuration.username, configuration.password = AUTH
    else:
        configuration.api_key = {"Authorization": token}
        configuration.api_key_prefix = {"Authorization": "Bearer"}
    return nodeum_sdk.TaskDestinationsApi(nodeum_sdk.ApiClient(configuration))


def raw_index(client: Any, task: str, **params: Any) -> dict[str, Any]:
    """The index as JSON (the SDK's collection model keeps only the nested objects)."""
    response = client.index_task_destinations(task_id=task, _preload_content=False, **params)
    return dict(json.loads(response.data))


def ids(data: dict[str, Any]) -> list[int]:
    return [d["id"] for d in data["task_destinations"]]


def test_the_sdk_creates_pages_sorts_filters_shows_updates_and_destroys(daemon: Daemon) -> None:
    client = api(daemon)
    task = "41"
    made = []
    for n, (pool, barcode) in enumerate(
        [("offline-tapes", None), ("online-tapes", None), (None, TAPES[0]), ("offline-tapes", None)]
    ):
        body = nodeum_sdk.TaskDestinationUp(
            folder_id=10 + n % 3,
            folder_path=f"/container/f{n}",
            pool_id=POOLS[pool] if pool else None,
            tape_barcode=barcode,
        )
        created = client.create_task_destination(task_id=task, task_destination_body=body)
        assert isinstance(created, nodeum_sdk.TaskDestinationDown)
        assert created.folder.id == 10 + n % 3
        # The SDK's NodeumFile has no file_path; its name is the path's last element.
        assert created.folder.name == f"f{n}"
        made.append(created)
    by_tape = made[2]
    assert by_tape.tape.barcode == TAPES[0]
    assert by_tape.tape.type.startswith("data_lto")
    assert by_tape.tape.max > 0
    assert by_tape.pool.content == "tape"

    collection = client.index_task_destinations(task_id=task, limit=2, offset=1)
    assert collection.count == 4
    assert [d.id for d in collection.task_destinations] == [made[1].id, made[2].id]
    everything = [d.id for d in made]
    assert ids(raw_index(client, task, sort_by=["id:desc"])) == everything[::-1]
    by_folder = sorted(made, key=lambda d: (-d.folder.id, d.id))
    assert ids(raw_index(client, task, sort_by=["folder_id:desc", "id"])) == [
        d.id for d in by_folder
    ]
    offline = POOLS["offline-tapes"]
    assert ids(raw_index(client, task, pool_id=str(offline))) == [made[0].id, made[3].id]
    assert ids(raw_index(client, task, pool_id=f"!={offline}")) == [made[1].id, made[2].id]
    assert ids(raw_index(client, task, id=f"><{made[0].id}|{made[2].id}")) == [
        made[0].id,
        made[2].id,
    ]
    assert ids(raw_index(client, task, folder_id=">=11")) == [made[1].id, made[2].id]
    assert ids(raw_index(client, task, folder_id="~1_")) == everything
    assert ids(raw_index(client, task, tape_id="!~%")) == everything  # none has a tape_id

    shown = client.show_task_destination(task_id=task, task_destination_id=made[0].id)
    assert shown.pool.name == "offline-tapes"
    updated = client.update_task_destination(
        task_id=task,
        task_destination_id=made[0].id,
        task_destination_body=nodeum_sdk.TaskDestinationUp(
            folder_id=99, pool_id=POOLS["online-tapes"]
        ),
    )
    assert updated.pool.name == "online-tapes"
    assert updated.folder.id == 99
    client.destroy_task_destination(task_id=task, task_destination_id=made[3].id)
    with pytest.raises(ApiException) as missing:
        client.show_task_destination(task_id=task, task_destination_id=made[3].id)
    assert missing.value.status == 404
    error = json.loads(missing.value.body)
    assert error["details"]["task_destination_id"][0]["error"] == "not_found"

    with pytest.raises(ApiException) as bad:
        client.index_task_destinations(task_id=task, limit=-1)
    assert bad.value.status == 400
    assert "limit" in json.loads(bad.value.body)["details"]


def test_the_sdk_with_an_api_key_and_without_its_scope(daemon: Daemon) -> None:
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "api-key",
            "create",
            "--name",
            "sdk-reader",
            "--scope",
            "task_destinations/index",
            "--config",
            str(daemon.config_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    token = created.stdout.strip()
    reader = api(daemon, token=token)
    assert reader.index_task_destinations(task_id="41").count >= 0
    with pytest.raises(ApiException) as refused:
        reader.create_task_destination(
            task_id="41", task_destination_body=nodeum_sdk.TaskDestinationUp(folder_id=1)
        )
    assert refused.value.status == 403
    error = json.loads(refused.value.body)
    assert error["details"]["scope"] == [{"error": "missing", "value": "task_destinations/create"}]
    with pytest.raises(ApiException) as unknown:
        api(daemon, token=token[:-2] + "xx").index_task_destinations(task_id="41")
    assert unknown.value.status == 401
