"""Nothing lost, nothing done twice: SIGKILLs at random moments, broker restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.broker import Broker
from tests.integration.crash import run_storm

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(1800)
def test_fifty_kills_lose_nothing_and_do_nothing_twice(tmp_path: Path, broker: Broker) -> None:
    figures = run_storm(tmp_path / "daemon", broker, kills=50, seed=11, destinations=40)
    assert figures.kills == 50
    assert sum(figures.requests.values()) >= 40


@pytest.mark.timeout(1200)
def test_five_broker_restarts_lose_no_event(tmp_path: Path, broker: Broker) -> None:
    figures = run_storm(
        tmp_path / "daemon", broker, kills=0, seed=5, destinations=30, broker_restarts=5
    )
    assert figures.broker_restarts == 5


@pytest.mark.timeout(900)
def test_ten_kills_on_debians_mtx_and_mt_lose_nothing(tmp_path: Path, broker: Broker) -> None:
    """The mtx backend with the real tools against the SCSI emulation: a kill may land
    between `mt offline` and `mtx unload`, and the emulated drive finishes the offline
    whether or not mt is still there, as a real drive does."""
    figures = run_storm(
        tmp_path / "daemon", broker, kills=10, seed=13, destinations=15, backend="scsi"
    )
    assert figures.kills == 10
    assert sum(figures.requests.values()) >= 15
