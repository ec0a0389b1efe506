"""`tapeworker simulate`: traces and library files, the daemon's configuration, the
table and the timeline, and clear errors before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.simulation.cli import _plan_policy, build_parser
from worker.simulation.cli import main as simulate_main

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


def test_write_placement_is_a_flag_and_inf_fills_one_tape_at_a_time() -> None:
    parser = build_parser()
    assert _plan_policy(parser.parse_args([]), None).write_margin_s == 60.0
    fill = _plan_policy(parser.parse_args(["--write-margin", "inf"]), None)
    assert fill.write_margin_s == float("inf")
