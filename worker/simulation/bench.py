"""`python -m worker.simulation.bench` (`make bench`): the benchmark at full size,
every policy on every workload, the targets met or missed, and the planning cost
of one round over 100,000 requests, 10,000 tapes and 64 drives."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence

from worker.core.planner import PlanPolicy
from worker.simulation.cost import (
    GROWTH_RATIO_LIMIT,
    SORT_RATIO_LIMIT,
    Cost,
    measure_cost,
)
from worker.simulation.headroom import DRIVE_COUNTS, Headroom, headroom, render
from worker.simulation.model import profile_p2
from worker.simulation.policies import planner
from worker.simulation.report import (
    GOALS_HEADING,
    W2_90_P99_RATIO,
    W2_90_RATIO,
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
    parser.add_argument("--seed", type=int, default=1, help="the first seed")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="run this many seeds (seed, seed+1, ...) and summarise each target "
        "over them: mean, 95%% interval, how many seeds met it",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.seeds > 1:
        return _many(args)
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
            # The headroom figures need where each drive's time went.
            record_timeline=case.key == HEADROOM_CASE,
            progress=bar.update,
            step=bar.step,
        )
        for case in cases
    ]
    bar.close()
    found = _headroom(results, args.seed, args.quick)
    cost = measure_cost(requests=10_000, big_requests=100_000) if args.quick else measure_cost()
    targets = [*judge(results, max_age), *cost_targets(cost, judged=not args.quick)]
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
                    "planning_cost": cost.as_dict(),
                    "headroom": (
                        {**found.as_dict(), "target_ratio": W2_90_RATIO} if found else None
                    ),
                    "targets": [target_json(t) for t in targets],
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
    if found is not None:
        print()
        print(render(found, len(library.drives), W2_90_RATIO, W2_90_P99_RATIO))
    print()
    print(render_cost(cost))
    print()
    print_targets(targets, sys.stdout)
    return 0


def target_json(target: Target) -> dict[str, object]:
    """One target of `--json`: `judged` is false for context (the scheduling goals)."""
    return {
        "name": target.name,
        "value": target.value,
        "limit": target.limit,
        "met": target.met,
        "judged": target.judged,
        "detail": target.detail,
    }


def cost_targets(cost: Cost, judged: bool = True) -> list[Target]:
    """The planning cost, judged by ratios measured in the same run (`judged`
    False: the test suite's small sizes, printed as context only)."""
    base, big = cost.base, cost.big
    return [
        Target(
            f"planning cost: one round at {base.requests:,} requests / sorted() over 100,000 keys",
            cost.sort_ratio,
            SORT_RATIO_LIMIT,
            f"{base.median_ms:.1f} ms vs {cost.sort_ms:.1f} ms",
            judged=judged,
        ),
        Target(
            f"planning cost: one round at {big.requests:,} requests / at {base.requests:,}",
            cost.growth_ratio,
            GROWTH_RATIO_LIMIT,
            f"{big.median_ms:.1f} ms vs {base.median_ms:.1f} ms",
            judged=judged,
        ),
    ]


def render_cost(cost: Cost) -> str:
    lines = [
        f"planning cost on {cost.cpu} (CPU time, median of runs; "
        f"{cost.base.tapes:,} tapes, {cost.base.drives} drives):",
        f"  sorted() over 100,000 float keys: {cost.sort_ms:.1f} ms",
    ]
    for found in (cost.base, cost.big):
        lines.append(
            f"  {found.requests:>9,} requests: round {found.median_ms:.1f} ms "
            f"(runs {', '.join(f'{t:.0f}' for t in found.runs_ms)}), {found.actions} actions; "
            f"the queue built from scratch {found.build_ms:.0f} ms, "
            f"a round from a plain list {found.from_list_ms:.0f} ms"
        )
    return "\n".join(lines)


HEADROOM_CASE = "w2-0.9"


def _headroom(results: Sequence[CaseResult], seed: int, quick: bool) -> Headroom | None:
    """Why the 90 % load target is out of reach: the figures behind the verdict."""
    result = next((r for r in results if r.case.key == HEADROOM_CASE), None)
    if result is None:
        return None
    drives = len(result.runs[0].library.drives)
    counts = (drives, 2 * drives) if quick else DRIVE_COUNTS
    return headroom(result, planner(), seed=seed, drive_counts=counts)


def _run_targets(seed: int, quick: bool) -> list[Target]:
    library = profile_p2(seed)
    max_age = PlanPolicy().max_age_s
    cases = builtin_cases(library, WORKLOADS, seed, quick=quick)
    chosen = policies()
    results = [run_case(library, c, chosen, seed=seed, max_age_s=max_age) for c in cases]
    return judge(results, max_age)


def _many(args: argparse.Namespace) -> int:
    """Paired over seeds: every policy sees the same trace and draws per seed."""
    seeds = list(range(args.seed, args.seed + args.seeds))
    per_seed: list[list[Target]] = []
    for n, seed in enumerate(seeds):
        if not args.no_progress and sys.stderr.isatty():
            sys.stderr.write(f"\rseed {seed} ({n + 1}/{len(seeds)})")
            sys.stderr.flush()
        per_seed.append(_run_targets(seed, args.quick))
    if not args.no_progress and sys.stderr.isatty():
        sys.stderr.write("\r" + " " * 40 + "\r")
    summary = []
    for index, first in enumerate(per_seed[0]):
        values = [targets[index].value for targets in per_seed]
        met = sum(1 for targets in per_seed if targets[index].met)
        mean = statistics.fmean(values)
        half = (
            _T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
            if len(values) > 1
            else 0.0
        )
        summary.append((first, mean, half, met))
    cost = measure_cost(requests=10_000, big_requests=100_000) if args.quick else measure_cost()
    if args.json:
        print(
            json.dumps(
                {
                    "seeds": seeds,
                    "targets": [
                        {
                            "name": t.name,
                            "limit": t.limit,
                            "judged": t.judged,
                            "mean": mean,
                            "ci95": half,
                            "met_seeds": met,
                        }
                        for t, mean, half, met in summary
                    ],
                    "planning_cost": cost.as_dict(),
                },
                indent=2,
            )
        )
        return 0
    print(f"targets over seeds {seeds[0]}..{seeds[-1]} (mean, 95% interval):")
    print(render_cost(cost))
    for target in cost_targets(cost, judged=not args.quick):
        verdict = "met   " if target.met else "MISSED"
        print(f"  [{verdict}] {target.name}: {target.value:.3g} (limit {target.limit:g})")
    for judged in (True, False):
        if not judged:
            print(GOALS_HEADING)
        for target, mean, half, met in summary:
            if target.judged is not judged:
                continue
            verdict = "met   " if met == len(seeds) else ("MISSED" if met == 0 else "mixed ")
            print(
                f"  [{verdict}] {target.name}: {mean:.3g} ± {half:.2g} "
                f"(limit {target.limit:g}); met in {met}/{len(seeds)} seeds"
            )
    return 0


#: Student's t, 97.5th percentile, by degrees of freedom (for n <= 10 seeds).
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


if __name__ == "__main__":
    raise SystemExit(main())
