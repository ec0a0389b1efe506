"""The simulator and the comparison, at sizes small enough for the default suite.

The full-size figures come from `python -m worker.simulation.bench` (`make bench`);
here small workloads check that the planner beats the baselines where the
targets say it must, and that the simulator itself is honest (deterministic, refuses
impossible actions, runs traces and library files).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.simulation.cli import main as simulate_main
from worker.simulation.engine import simulate
from worker.simulation.headroom import headroom
from worker.simulation.metrics import measure
from worker.simulation.model import profile_p2
from worker.simulation.policies import baselines, planner
from worker.simulation.report import Case, Progress, run_case
from worker.simulation.workloads import Workload, w1, w2

LIBRARY = profile_p2(1)


def _compare(workload: Workload) -> dict[str, float]:
    result = run_case(
        LIBRARY, Case("t", workload), [planner(), *baselines()], seed=1, max_age_s=7200.0
    )
    return (
        {m.policy: m.mean_latency_s for m in result.metrics}
        | {f"{m.policy}/mounts": m.mounts for m in result.metrics}
        | {f"{m.policy}/makespan": m.makespan_s for m in result.metrics}
        | {
            "planner/mounts_ratio": result.of("planner").mounts_ratio,
            "planner/makespan_ratio": result.of("planner").makespan_ratio,
            "planner/starved": result.of("planner").starved,
        }
    )


def _best(figures: dict[str, float], prefix: str = "B", suffix: str = "") -> float:
    return min(
        v
        for k, v in figures.items()
        if k.startswith(prefix) and k.endswith(suffix) and (suffix or "/" not in k)
    )


def test_a_recall_storm_meets_the_lower_bounds_and_beats_every_baseline() -> None:
    for zipf in (0.0, 1.2):
        figures = _compare(w1(LIBRARY, zipf, seed=3, n=400))
        assert figures["planner/mounts_ratio"] <= 1.02
        assert figures["planner/makespan_ratio"] <= 1.10
        # Level with the CTA-like baseline (robot draws differ), far ahead of FCFS.
        assert figures["planner/makespan"] <= 1.05 * _best(figures, "B", "/makespan")
        assert figures["planner/mounts"] <= _best(figures, "B", "/mounts")


def test_under_heavy_load_the_planner_halves_fcfs_latency_and_matches_cta_like() -> None:
    figures = _compare(w2(LIBRARY, 0.9, seed=3, hours=3))
    fcfs = min(figures[k] for k in figures if k.startswith(("B0", "B1", "B2")) and "/" not in k)
    assert figures["planner"] <= 0.6 * fcfs
    assert figures["planner"] <= 1.05 * _best(figures)
    assert figures["planner/starved"] == 0


def test_under_light_load_the_planner_is_no_worse_than_the_best_baseline() -> None:
    figures = _compare(w2(LIBRARY, 0.3, seed=3, hours=4))
    assert figures["planner"] <= 1.1 * _best(figures)


# -- the command -------------------------------------------------------------------

_LIBRARY_TOML = """
name = "trace-lib"
slots = 20
[[drives]]
index = 0
device = "/dev/nst0"
generation = "LTO-9"
[[drives]]
index = 1
device = "/dev/nst1"
generation = "LTO-8"
[[pools]]
id = 7
name = "offline-tapes"
[[tapes]]
barcode = "NOD401L8"
slot = 1
pool = "offline-tapes"
[[tapes]]
barcode = "NOD402L9"
slot = 2
pool = "offline-tapes"
used_bytes = 1000000000
[[tapes]]
barcode = "NOD407L7"
slot = 3
"""


def _library_file(folder: Path) -> Path:
    library = folder / "library.toml"
    library.write_text(_LIBRARY_TOML, encoding="utf-8")
    return library


def test_simulate_runs_a_trace_against_a_library_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    library = _library_file(tmp_path)
    trace = tmp_path / "trace.jsonl"
    lines = [
        {"timestamp": "2026-11-28T10:00:00Z", "folder_id": 1, "tape_barcode": "NOD407L7"},
        {"timestamp": "2026-11-28T10:00:30Z", "folder_id": 2, "pool_id": 7},
        {"timestamp": "2026-11-28T10:01:00Z", "folder_id": 3, "pool_name": "offline-tapes"},
        {"timestamp": "2026-11-28T10:02:00Z", "folder_id": 4, "tape_barcode": "NOSUCH1L9"},
        {"timestamp": "2026-11-28T10:03:00Z", "folder_id": 5, "folder_path": "/only"},
    ]
    trace.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    code = simulate_main(
        ["--trace", str(trace), "--library", str(library), "--json", "--no-progress"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    (workload,) = report["workloads"]
    planner_row = next(m for m in workload["metrics"] if m["policy"] == "planner")
    assert planner_row["requests"] == 4  # the folder-only destination asks for no tape
    assert planner_row["failed"] == 1  # the unknown barcode
    assert planner_row["unserved"] == 0


def test_simulate_rejects_a_bad_trace_and_a_missing_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"tape_barcode": "A"}\n', encoding="utf-8")
    library = _library_file(tmp_path)
    assert simulate_main(["--trace", str(trace), "--library", str(library)]) == 2
    assert "timestamp" in capsys.readouterr().err
    assert simulate_main(["--library", str(tmp_path / "nope.toml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_simulate_prints_the_table_and_draws_the_timeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "timeline.png"
    code = simulate_main(["--workload", "w1-s1.2", "--quick", "--no-progress", "--plot", str(png)])
    assert code == 0
    out = capsys.readouterr().out
    assert "planner" in out
    assert "B3 cta-like" in out
    assert "[met   ] W1 s=1.2: mounts / LB" in out
    assert png.stat().st_size > 10_000


def test_builtin_workloads_run_on_a_library_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    library = _library_file(tmp_path)
    args = ["--library", str(library), "--quick", "--no-progress"]
    assert simulate_main([*args, "--workload", "w2-0.3", "--workload", "w1-s0"]) == 0
    out = capsys.readouterr().out
    assert "library trace-lib: 2 drives" in out
    # W4 needs two pools; this library has one: a clear error, not a traceback.
    assert simulate_main([*args, "--workload", "w4"]) == 2
    assert "two pools" in capsys.readouterr().err


def test_the_progress_bar_draws_on_stderr() -> None:
    import io

    out = io.StringIO()
    bar = Progress(2, out=out, force=True)
    bar.update("W1: planner", 0.5)
    bar.step()
    bar.update("W1: B0", 1.0)
    bar.close()
    assert "25%" in out.getvalue()
    assert "100%" in out.getvalue()


def test_the_headroom_figures_separate_capacity_from_planning() -> None:
    workload = w2(LIBRARY, 0.9, 1, hours=2.0)
    case = run_case(
        LIBRARY,
        Case("w2-0.9", workload),
        [planner(), *baselines()],
        seed=1,
        max_age_s=7200.0,
        record_timeline=True,
    )
    found = headroom(case, planner(), seed=1, drive_counts=(8, 16))
    eight, sixteen = found.sweep
    # A request that waits for nothing is faster than what anyone gets at 90 % load.
    assert found.floor_mean_s < eight.mean_s
    assert found.floor_mean_s < found.baseline_mean_s
    assert found.baseline in {b.name for b in baselines()}
    for shares in found.shares.values():
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
        assert min(shares.values()) >= 0.0
    # Twice the drives for the same trace: less waiting.
    assert sixteen.mean_s < eight.mean_s
    assert eight.mean_s == pytest.approx(
        measure(simulate(LIBRARY, workload, planner(), seed=1)).mean_latency_s
    )


def test_simulate_uses_the_daemons_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    library = _library_file(tmp_path)
    config = tmp_path / "tapeworker.toml"
    config.write_text(f'library = "{library}"\n[planner]\nmax_age_s = 60\n', encoding="utf-8")
    args = ["--config", str(config), "--quick", "--no-progress", "--workload", "w2-0.3"]
    assert simulate_main(args) == 0
    out = capsys.readouterr().out
    assert "library trace-lib: 2 drives" in out  # the config's library
    assert "over 60 s" in out  # its [planner] maximum age
    config.write_text("[planner]\ndismount_delay_s = -5\n", encoding="utf-8")
    assert simulate_main(["--config", str(config), "--quick", "--no-progress"]) == 2
    assert "dismount_delay_s" in capsys.readouterr().err


def test_plot_options_are_checked_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "timeline.png"
    args = ["--quick", "--no-progress", "--plot", str(png), "--plot-workload", "w9"]
    assert simulate_main(args) == 2
    captured = capsys.readouterr()
    assert "--plot-workload 'w9': not among" in captured.err
    assert captured.out == "", "nothing ran"
    assert simulate_main(["--quick", "--plot", str(tmp_path / "no" / "t.png")]) == 2
    assert "no folder" in capsys.readouterr().err


def test_output_and_help_cite_no_internal_documents(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        simulate_main(["--help"])
    assert simulate_main(["--workload", "w1-s1.2", "--quick", "--no-progress"]) == 0
    out = capsys.readouterr().out
    for internal in ("SCHEDULING", ".md", "issue "):
        assert internal not in out


def test_the_queueing_estimate_is_erlang_c() -> None:
    from worker.simulation.headroom import erlang_c_wait_s

    # M/M/1 at half load waits one service time; M/M/2 at one drive's load a third.
    assert erlang_c_wait_s(1, 0.5, 1.0) == pytest.approx(1.0)
    assert erlang_c_wait_s(2, 1.0, 1.0) == pytest.approx(1 / 3)
    assert erlang_c_wait_s(8, 8.0, 100.0) == float("inf")
