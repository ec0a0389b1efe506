"""`tapeworker simulate`: the planner beside the baselines, on a built-in workload
or a trace of destination events, against a library definition.

Exit status: 0 when it ran (targets missed or not: they are figures, not
errors), 2 for a bad argument, library or trace.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from drivers.definition import load_definition
from drivers.errors import DefinitionError
from worker.planner import PlanPolicy
from worker.simulation.engine import SimulationError
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
DEMO_LIBRARY = Path(__file__).resolve().parents[2] / "config" / "demo-library.toml"


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
        "library issue 4 defines them on",
    )
    parser.add_argument("--seed", type=int, default=1, help="workload and timing seed")
    parser.add_argument(
        "--quick", action="store_true", help="smaller workloads (600 requests, 4 h)"
    )
    parser.add_argument(
        "--dismount-delay", type=float, default=None, metavar="S", help="planner setting"
    )
    parser.add_argument("--max-age", type=float, default=7200.0, metavar="S")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="per-drive timeline of the planner beside the best baseline (needs matplotlib)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def _library(args: argparse.Namespace) -> tuple[SimLibrary, dict[int, str]]:
    """The library, and its pools by id (a trace may name a pool by pool_id)."""
    path: Path | None = args.library
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
        library, pool_ids = _library(args)
    except DefinitionError as exc:
        print(f"tapeworker simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    plan_policy = PlanPolicy(max_age_s=args.max_age)
    if args.dismount_delay is not None:
        plan_policy = PlanPolicy(max_age_s=args.max_age, dismount_delay_s=args.dismount_delay)
    try:
        cases = _cases(args, library, pool_ids)
    except (WorkloadError, KeyError) as exc:
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
                max_age_s=args.max_age,
                record_timeline=args.plot is not None and index == 0,
                progress=bar.update,
                step=bar.step,
            )
            results.append(result)
    except SimulationError as exc:
        bar.close()
        print(f"tapeworker simulate: policy error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    targets = judge(results, args.max_age)
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
        for result in results:
            print()
            print(table(result))
        print()
        print_targets(targets, sys.stdout)
    if args.plot is not None and results:
        from worker.simulation.plot import plot_timelines  # noqa: PLC0415

        try:
            plot_timelines(results[0], args.plot)
        except ImportError:
            print(
                "tapeworker simulate: --plot needs matplotlib (pip install 'tapeworker[plot]')",
                file=sys.stderr,
            )
            return EXIT_USAGE
        if not args.json:
            print(f"\ntimeline written to {args.plot}")
    return 0


def _cases(args: argparse.Namespace, library: SimLibrary, pool_ids: dict[int, str]) -> list[Case]:
    if args.trace is not None:
        workload = load_trace(args.trace, library, pool_ids)
        return [Case("trace", workload)]
    keys: list[str] = args.workload or ["all"]
    if "all" in keys:
        keys = list(WORKLOADS)
    return builtin_cases(library, keys, args.seed, quick=args.quick)
