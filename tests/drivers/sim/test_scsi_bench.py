"""The emulation's figures (`make bench-scsi`), in a bounded version: one round."""

from __future__ import annotations

from drivers.sim.scsi.bench import measure


def test_one_round_measures_both_figures_for_both_setups() -> None:
    results = measure(rounds=1)
    assert set(results) == {"mtx status", "load + offline + unload"}
    for real, standin in results.values():
        assert real > 0
        assert standin > 0
