"""`python -m worker.simulation.bench` (`make bench`): issue 4's figures at full size,
every policy on every workload, the targets met or missed, and the planning cost
of one round over 100,000 requests, 10,000 tapes and 64 drives."""

from __future__ import annotations

import argparse
import json
import sys

from worker.planner import PlanPolicy
from worker.simulation.cost import LIMIT_MS, measure_cost
from worker.simulation.model import profile_p2
from worker.simulation.report import (
    WORKLOADS,
    CaseResult,
    Progress,
    Target,
    builtin_cases,
    judge,
    policies,
    print_targets,
    run_case,
    table,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.simulation.bench")
    parser.add_argument("--quick", action="store_true", help="the test suite's small sizes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    library = profile_p2(args.seed)
    max_age = PlanPolicy().max_age_s
    cases = builtin_cases(library, WORKLOADS, args.seed, quick=args.quick)
    chosen = policies()
    bar = Progress(len(cases) * len(chosen))
    bar.enabled = bar.enabled and not args.no_progress
    results: list[CaseResult] = [
        run_case(
            library,
            case,
            chosen,
            seed=args.seed,
            max_age_s=max_age,
            progress=bar.update,
            step=bar.step,
        )
        for case in cases
    ]
    bar.close()
    cost = measure_cost()
    targets = [
        *judge(results, max_age),
        Target(
            f"planning cost, one round: {cost.requests:,} requests, {cost.tapes:,} tapes, "
            f"{cost.drives} drives (ms, median of {len(cost.runs_ms)})",
            cost.median_ms,
            LIMIT_MS,
            "runs " + ", ".join(f"{t:.0f}" for t in cost.runs_ms) + f" ms; {cost.actions} actions",
        ),
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "seed": args.seed,
                    "workloads": [
                        {
                            "key": r.case.key,
                            "name": r.case.workload.name,
                            "metrics": [m.as_dict() for m in r.metrics],
                        }
                        for r in results
                    ],
                    "planning_cost_ms": list(cost.runs_ms),
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
        return 0
    print(
        f"library {library.name}: {len(library.drives)} x LTO-{library.drives[0].generation}, "
        f"{len(library.data_tapes)} tapes, {library.robots} robot; seed {args.seed}"
    )
    for result in results:
        print()
        print(table(result))
    print()
    print_targets(targets, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
