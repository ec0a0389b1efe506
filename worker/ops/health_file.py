"""The daemon's health where the CLI can read it: `state_dir/health.json`.

The daemon writes it in place, into space it claimed at start, so that it can still
say "disk full" on a full disk; `tapeworker status` and `tapeworker journal check`
read it. Only a file written by a running process (its pid alive) counts.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("tapeworker.health")

#: Claimed at start and overwritten in place: no new blocks needed later.
SIZE = 4096


def health_path(state_dir: Path) -> Path:
    return state_dir / "health.json"


class HealthFile:
    """Owned by the daemon; `write` never raises (the journal's fault is the news)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._last: dict[str, Any] | None = None

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(self._fd, SIZE)

    def write(self, data: dict[str, Any]) -> None:
        if self._fd is None or data == self._last:
            return
        raw = json.dumps({"pid": os.getpid(), **data}).encode()
        try:
            os.pwrite(self._fd, raw.ljust(SIZE)[:SIZE], 0)
        except OSError as exc:
            log.warning("health file not written", path=str(self.path), error=str(exc))
            return
        self._last = data

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.pwrite(self._fd, b" " * SIZE, 0)
            os.close(self._fd)
            self._fd = None


def read_health(state_dir: Path) -> dict[str, Any] | None:
    """What the running daemon last said about itself, or None (no daemon running)."""
    try:
        data = json.loads(health_path(state_dir).read_bytes().strip() or b"null")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None
    try:
        os.kill(data["pid"], 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return data
