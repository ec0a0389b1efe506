"""`python -m worker.simulation.bench` (`make bench`): the benchmark at full size,
every policy on every workload, the targets met or missed, and the planning cost
of one round over 100,000 requests, 10,000 tapes and 64 drives."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

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
    TARGETS_HEADING,
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
from worker.simulation.seeds import (
    BaselineCache,
    code_fingerprint,
    realised_loads,
    run_seeds,
    summarise,
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
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="with --seeds: simulations run in this many processes (default: one per CPU)",
    )
    parser.add_argument(
        "--cache",
        default=".cache/bench",
        help="with --seeds: where baseline runs are kept, keyed by the code that ran them",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="with --seeds: rerun every baseline"
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


def _many(args: argparse.Namespace) -> int:
    """Paired over seeds: every policy sees the same trace and draws per seed."""
    seeds = list(range(args.seed, args.seed + args.seeds))
    cache = None
    if not args.no_cache:
        # Imported before hashing, so that the fingerprint covers what the runs use.
        cache = BaselineCache(Path(args.cache), code_fingerprint())
    show = not args.no_progress and sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if show:
            sys.stderr.write(f"\rsimulations {done}/{total}")
            sys.stderr.flush()

    started = time.monotonic()
    per_seed, cached = run_seeds(
        seeds, quick=args.quick, jobs=args.jobs, cache=cache, progress=progress
    )
    simulated_s = time.monotonic() - started
    if show:
        sys.stderr.write("\r" + " " * 40 + "\r")
    summary = summarise(per_seed)
    cost = measure_cost(requests=10_000, big_requests=100_000) if args.quick else measure_cost()
    runs = len(per_seed) * len(WORKLOADS) * len(policies())
    if args.json:
        print(
            json.dumps(
                {
                    "seeds": seeds,
                    "cpu": cost.cpu,
                    "simulations": runs,
                    "from_cache": cached,
                    "simulated_s": simulated_s,
                    "targets": [
                        {
                            "name": s.target.name,
                            "limit": s.target.limit,
                            "judged": s.target.judged,
                            "mean": s.mean,
                            "ci95": s.half_width,
                            "values": list(s.values),
                            "met_seeds": s.met_seeds,
                            "met": s.met,
                        }
                        for s in summary
                    ],
                    "realised_load": {
                        key: realised_loads(seeds, key, args.quick) for key in ("w2-0.3", "w2-0.9")
                    },
                    "planning_cost": cost.as_dict(),
                },
                indent=2,
            )
        )
        return 0
    print(
        f"targets over seeds {seeds[0]}..{seeds[-1]} on {cost.cpu}: mean ± half-width of "
        f"the 95% interval, each seed's value; met only if met on every seed"
    )
    print(
        f"({runs} simulations, {cached} baseline runs from the cache {args.cache}; "
        f"{simulated_s:.0f} s wall clock)"
    )
    for judged in (True, False):
        print(TARGETS_HEADING if judged else GOALS_HEADING)
        for s in summary:
            if s.target.judged is not judged:
                continue
            verdict = "met   " if s.met else "MISSED"
            print(
                f"  [{verdict}] {s.target.name}: {s.mean:.3g} ± {s.half_width:.2g} "
                f"(limit {s.target.limit:g}); per seed "
                f"{' '.join(f'{v:.3g}' for v in s.values)}; met in {s.met_seeds}/{len(seeds)}"
            )
    for key in ("w2-0.3", "w2-0.9"):
        loads = realised_loads(seeds, key, args.quick)
        print(
            f"  (context) {key}: the load each seed's trace offers (requests that came x "
            f"the drive time of a mount each / drive time): {' '.join(f'{x:.3f}' for x in loads)}"
        )
    print()
    print(render_cost(cost))
    for target in cost_targets(cost, judged=not args.quick):
        verdict = "met   " if target.met else "MISSED"
        print(f"  [{verdict}] {target.name}: {target.value:.3g} (limit {target.limit:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
