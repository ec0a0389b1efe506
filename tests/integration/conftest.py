"""Fixtures with real parts: a mosquitto broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.broker import Broker, free_port


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(port=free_port(), folder=tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()
