"""The daemon's logs: every line JSON in json mode, and the lines an operator needs."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from tests.integration.daemon import Daemon, wait_until

TAPE = "NOD400L8"


def log_lines(daemon: Daemon) -> list[dict[str, Any]]:
    text = (daemon.folder / "daemon.log").read_text()
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from exc
    return lines


def logged(daemon: Daemon, event: str) -> list[dict[str, Any]]:
    return [line for line in log_lines(daemon) if line.get("event") == event]


def test_every_line_of_a_sample_run_is_json_with_the_operator_lines(tmp_path: Path) -> None:
    daemon = Daemon(folder=tmp_path / "daemon")
    daemon.folder.mkdir(parents=True)
    daemon.write_config()
    # Unload as soon as the destination is gone, so the run has an unload too.
    config = daemon.config_path.read_text().replace(
        "dismount_delay_s = 3600", "dismount_delay_s = 0\npool_dismount_delay_s = 0"
    )
    daemon.config_path.write_text(config)
    daemon.start()
    try:
        with daemon.http() as http:
            body = {"folder_id": 1, "folder_path": "/c/f", "tape_barcode": TAPE}
            created = http.post("/tasks/7/task_destinations", json=body)
            assert created.status_code == 201, created.text
            destination = created.json()["id"]
            daemon.wait_request(destination, "ready")
            bad = http.post("/tasks/7/task_destinations", content=b"{not json")
            assert bad.status_code == 400
            assert http.delete(f"/tasks/7/task_destinations/{destination}").status_code == 204
        wait_until(lambda: logged(daemon, "unload done"), timeout=30, what="the unload logged")

        assert daemon.process is not None
        daemon.config_path.write_text(config.replace('log_level = "info"', 'log_level = "debug"'))
        daemon.process.send_signal(signal.SIGHUP)
        [reload] = wait_until(
            lambda: logged(daemon, "configuration reloaded"), what="the reload logged"
        )
        assert reload["log_level"] == "debug"
    finally:
        assert daemon.stop() == 0

    lines = log_lines(daemon)
    assert all({"event", "level", "timestamp", "logger"} <= line.keys() for line in lines)
    received = logged(daemon, "event received")
    assert {(r["intake"], r["verb"], r["task"], r["destination"]) for r in received} >= {
        ("http", "create", "7", destination),
        ("http", "destroy", "7", destination),
    }
    [rejected] = logged(daemon, "event rejected")
    assert rejected["intake"] == "http"
    assert rejected["reason"]
    [ready] = logged(daemon, "request ready")
    assert (ready["destination"], ready["barcode"]) == (destination, TAPE)
    assert ready["wait_s"] >= 0
    assert ready["mount_s"] > 0
    [unload] = logged(daemon, "unload done")
    assert (unload["barcode"], unload["drive"]) == (TAPE, ready["drive"])
    assert unload["duration_s"] > 0
    assert logged(daemon, "stopped")
