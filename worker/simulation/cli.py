"""`tapeworker simulate`: the planner beside the baselines, on a built-in workload
or a trace of destination events, against a library definition.

Exit status: 0 when it ran (targets missed or not: they are figures, not
errors), 2 for a bad argument, library or trace.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

from drivers.definition import load_definition
from drivers.errors import DefinitionError
from worker.core.planner import PlanPolicy
from worker.errors import ConfigError
from worker.settings import DEFAULTS, Settings, load_settings
from worker.simulation.engine import SimulationError
from worker.simulation.faults import FaultPlan, FaultSpecError, parse_kill, parse_slow
from worker.simulation.model import SimLibrary, from_definition, profile_p2
from worker.simulation.report import (
    WORKLOADS,
    Case,
    CaseResult,
    Progress,
    builtin_cases,
    judge,
    policies,
    print_targets,
    run_case,
    table,
)
from worker.simulation.workloads import WorkloadError, load_trace

EXIT_USAGE = 2
DEMO_LIBRARY = DEFAULTS / "demo-library.toml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tapeworker simulate",
        description=(
            "Compare the mount planner with first-come-first-served and CTA-like "
            "policies in simulated time (no hardware, no waiting)."
        ),
    )
    parser.add_argument(
        "--workload",
        action="append",
        choices=[*WORKLOADS, "all"],
        help="built-in workload (repeatable; default all): W1 recall storm at Zipf 0 "
        "and 1.2, W2 steady load at 30%% and 90%%, W4 fairness",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="JSON lines: the seed's create bodies plus 'timestamp' (and optional "
        "size_bytes, write, position); replaces the built-in workloads",
    )
    parser.add_argument(
        "--library",
        type=Path,
        metavar="FILE",
        help="library definition TOML (the daemon's). Default: for --trace, "
        "config/demo-library.toml; for built-in workloads, the 8 x LTO-9, 500-tape "
        "library the benchmark defines them on",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the daemon's tapeworker.toml: its [planner] settings, and its library "
        "definition unless --library is given",
    )
    parser.add_argument("--seed", type=int, default=1, help="workload and timing seed")
    parser.add_argument(
        "--quick", action="store_true", help="smaller workloads (600 requests, 4 h)"
    )
    parser.add_argument(
        "--dismount-delay", type=float, default=None, metavar="S", help="planner setting"
    )
    parser.add_argument(
        "--max-age", type=float, default=None, metavar="S", help="planner setting (default 7200)"
    )
    parser.add_argument(
        "--write-margin",
        type=float,
        default=None,
        metavar="S",
        help="planner setting write_margin_s (default 60; inf: fill one tape at a time)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="per-drive timeline of the planner beside the best baseline (needs matplotlib)",
    )
    parser.add_argument(
        "--plot-workload",
        metavar="NAME",
        help="the workload --plot shows (its key or name, as the tables print it; "
        "default: the first)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    faults = parser.add_argument_group(
        "faults",
        "seeded by --seed, the same for every policy; the daemon's policy under faults "
        "(retry with backoff, drive down after repeated failures, stuck tape need_to_check, "
        "request failed after its retry budget)",
    )
    faults.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="each robot move fails with probability P (it costs its time, is retried "
        "after a backoff and counts against its drive)",
    )
    faults.add_argument(
        "--drive-down-after",
        type=int,
        default=3,
        metavar="N",
        help="a drive is down for good after N consecutive failed moves (default 3)",
    )
    faults.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="retries of a failed move, and mount attempts a request may fail before "
        "it fails (default 3)",
    )
    faults.add_argument(
        "--backoff",
        type=float,
        default=5.0,
        metavar="S",
        help="first retry after S seconds, doubling each time (default 5)",
    )
    faults.add_argument(
        "--kill-drive",
        action="append",
        default=[],
        metavar="D@T",
        help="drive D dies at T seconds of virtual time: its tape is stuck "
        "(need_to_check), its requests go back to the queue (repeatable)",
    )
    faults.add_argument(
        "--slow-ready",
        action="append",
        default=[],
        metavar="D:S",
        help="drive D needs S more seconds to become ready after each load (repeatable)",
    )
    return parser


def _faults(args: argparse.Namespace, library: SimLibrary) -> FaultPlan:
    kills = tuple(parse_kill(text) for text in args.kill_drive)
    slow = dict(parse_slow(text) for text in args.slow_ready)
    plan = FaultPlan(
        move_rate=args.fault_rate,
        drive_down_after=args.drive_down_after,
        retries=args.retries,
        backoff_s=args.backoff,
        kills=kills,
        slow_ready=slow,
    )
    plan.check_drives({d.index for d in library.drives})
    return plan


def _plan_policy(args: argparse.Namespace, settings: Settings | None) -> PlanPolicy:
    """The daemon's [planner] settings when --config is given; flags override."""
    policy = settings.planner.policy() if settings is not None else PlanPolicy()
    if args.max_age is not None:
        policy = replace(policy, max_age_s=args.max_age)
    if args.dismount_delay is not None:
        policy = replace(policy, dismount_delay_s=args.dismount_delay)
    if args.write_margin is not None:
        policy = replace(policy, write_margin_s=args.write_margin)
    return policy


def _library(
    args: argparse.Namespace, settings: Settings | None
) -> tuple[SimLibrary, dict[int, str]]:
    """The library, and its pools by id (a trace may name a pool by pool_id)."""
    path: Path | None = args.library
    if path is None and settings is not None:
        path = settings.library
    if path is None and args.trace is not None:
        path = DEMO_LIBRARY
    if path is None:
        return profile_p2(args.seed), {}
    definition = load_definition(path)
    return from_definition(definition), {p.id: p.name for p in definition.pools}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config) if args.config is not None else None
        library, pool_ids = _library(args, settings)
    except (ConfigError, DefinitionError) as exc:
        print(f"tapeworker simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        faults = _faults(args, library)
    except FaultSpecError as exc:
        print(f"tapeworker simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    plan_policy = _plan_policy(args, settings)
    try:
        cases = _cases(args, library, pool_ids)
    except (WorkloadError, KeyError) as exc:
        print(f"tapeworker simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        plotted = _plotted_case(args, cases)
    except ValueError as exc:
        print(f"tapeworker simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    chosen = policies(plan_policy)
    bar = Progress(len(cases) * len(chosen))
    bar.enabled = bar.enabled and not args.no_progress
    results: list[CaseResult] = []
    try:
        for index, case in enumerate(cases):
            result = run_case(
                library,
                case,
                chosen,
                seed=args.seed,
                max_age_s=plan_policy.max_age_s,
                record_timeline=index == plotted,
                progress=bar.update,
                step=bar.step,
                faults=faults,
            )
            results.append(result)
    except SimulationError as exc:
        bar.close()
        print(f"tapeworker simulate: policy error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    targets = judge(results, plan_policy.max_age_s)
    if args.json:
        print(
            json.dumps(
                {
                    "library": {
                        "name": library.name,
                        "drives": len(library.drives),
                        "tapes": len(library.tapes),
                        "robots": library.robots,
                    },
                    "seed": args.seed,
                    "faults": faults.as_dict(),
                    "workloads": [
                        {
                            "key": r.case.key,
                            "name": r.case.workload.name,
                            "description": r.case.workload.description,
                            "metrics": [m.as_dict() for m in r.metrics],
                        }
                        for r in results
                    ],
                    "targets": [
                        {
                            "name": t.name,
                            "value": t.value,
                            "limit": t.limit,
                            "met": t.met,
                            "detail": t.detail,
                        }
                        for t in targets
                    ],
                },
                indent=2,
            )
        )
    else:
        print(
            f"library {library.name}: {len(library.drives)} drives, "
            f"{len(library.data_tapes)} data tapes, {library.robots} robot(s); seed {args.seed}"
        )
        if faults.active:
            print(f"faults: {faults.describe()}")
        for result in results:
            print()
            print(table(result))
        print()
        print_targets(targets, sys.stdout)
    if args.plot is not None and plotted is not None:
        from worker.simulation.plot import plot_timelines  # noqa: PLC0415

        plot_timelines(results[plotted], args.plot)
        if not args.json:
            print(f"\ntimeline written to {args.plot}")
    return 0


def _plotted_case(args: argparse.Namespace, cases: list[Case]) -> int | None:
    """Which case --plot draws; checked before the run, so that a missing matplotlib or a
    wrong name fails in a second rather than after the whole simulation."""
    if args.plot is None:
        if args.plot_workload is not None:
            raise ValueError("--plot-workload needs --plot FILE.png")
        return None
    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib (pip install 'tapeworker[plot]')")
    if not args.plot.parent.resolve().is_dir():
        raise ValueError(f"--plot {args.plot}: no folder {args.plot.parent}")
    if args.plot_workload is None:
        return 0
    for index, case in enumerate(cases):
        if args.plot_workload in (case.key, case.workload.name):
            return index
    known = ", ".join(case.key for case in cases)
    raise ValueError(f"--plot-workload {args.plot_workload!r}: not among {known}")


def _cases(args: argparse.Namespace, library: SimLibrary, pool_ids: dict[int, str]) -> list[Case]:
    if args.trace is not None:
        workload = load_trace(args.trace, library, pool_ids)
        return [Case("trace", workload)]
    keys: list[str] = args.workload or ["all"]
    if "all" in keys:
        keys = list(WORKLOADS)
    return builtin_cases(library, keys, args.seed, quick=args.quick)
