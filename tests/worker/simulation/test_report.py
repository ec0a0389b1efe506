"""The simulator's report: the progress bar."""

from __future__ import annotations

import io

from worker.simulation.report import Progress


def test_the_progress_bar_draws_on_stderr() -> None:
    out = io.StringIO()
    bar = Progress(2, out=out, force=True)
    bar.update("W1: planner", 0.5)
    bar.step()
    bar.update("W1: B0", 1.0)
    bar.close()
    assert "25%" in out.getvalue()
    assert "100%" in out.getvalue()
