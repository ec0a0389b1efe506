"""Fixtures of the intake's tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from worker import logging as worker_logging


@pytest.fixture
def json_lines(
    capsys: pytest.CaptureFixture[str], restored_logging: None
) -> Callable[[], list[dict[str, Any]]]:
    """The daemon's JSON lines on stdout since the last call (logging configured at the
    first call, inside the test, where stdout is the test's own); restored afterwards."""
    configured: list[bool] = []

    def read() -> list[dict[str, Any]]:
        if not configured:
            configured.append(True)
            worker_logging.configure("info", "json")
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    return read
