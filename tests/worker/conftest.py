"""Fixtures shared by the worker's tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from worker import logging as worker_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Leave the process's logging as the test found it (pytest captures through it)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    worker_logging.reset()
