"""Shared fixtures: where the reference material lives, and a real mosquitto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.broker import Broker, free_port

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"reference folder {SHARED} is missing: tests read ../shared at run time")
    return SHARED


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A mosquitto of the test's own, on a free loopback port."""
    broker = Broker(port=free_port(), folder=tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()
