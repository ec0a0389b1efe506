"""Run the planner and the baselines side by side, judge the targets, and
format the comparison for people (a table) or machines (JSON)."""

from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

import rich.console
import rich.progress

from worker.core.planner import PlanPolicy
from worker.simulation.engine import Policy, RunResult, simulate
from worker.simulation.faults import NO_FAULTS, FaultPlan
from worker.simulation.metrics import Metrics, measure
from worker.simulation.model import SimLibrary
from worker.simulation.policies import baselines, planner
from worker.simulation.workloads import Workload, w1, w2, w4

PLANNER = "planner"


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    workload: Workload


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: Case
    runs: tuple[RunResult, ...]
    metrics: tuple[Metrics, ...]
    faults: FaultPlan = NO_FAULTS

    def of(self, policy: str) -> Metrics:
        return next(m for m in self.metrics if m.policy == policy)

    def baselines(self) -> list[Metrics]:
        return [m for m in self.metrics if m.policy != PLANNER]

    def best(self, attribute: str) -> Metrics:
        """The baseline best on this one metric (each metric may pick another)."""
        return min(self.baselines(), key=lambda m: _num(getattr(m, attribute)))


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    value: float
    limit: float
    detail: str
    #: True for a target the run is judged on; False for context (the scheduling
    #: goals), printed apart.
    judged: bool = True

    @property
    def met(self) -> bool:
        return not math.isnan(self.value) and self.value <= self.limit


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not math.isnan(value) else math.inf


WORKLOADS = ("w1-s0", "w1-s1.2", "w2-0.3", "w2-0.9", "w4")
#: Targets at 90 % load: mean and p99 latency at most these times the best baseline
#: (each metric's own best), and the mean at most this times the per-request floor.
W2_90_RATIO = 0.85
W2_90_P99_RATIO = 0.95
W2_90_FLOOR_RATIO = 1.6
#: At 30 % load: the mean no worse than the best baseline.
W2_30_RATIO = 1.0


def builtin_cases(
    library: SimLibrary, keys: Sequence[str], seed: int, quick: bool = False
) -> list[Case]:
    """The benchmark's workloads; `quick` shrinks them (600 requests, 4 h) for the test suite."""
    n = 600 if quick else 3000
    hours = 4.0 if quick else 24.0
    makers: dict[str, Callable[[], Workload]] = {
        "w1-s0": lambda: w1(library, 0.0, seed, n=n),
        "w1-s1.2": lambda: w1(library, 1.2, seed, n=n),
        "w2-0.3": lambda: w2(library, 0.3, seed, hours=hours),
        "w2-0.9": lambda: w2(library, 0.9, seed, hours=hours),
        "w4": lambda: w4(library, seed, hours=hours / 2),
    }
    unknown = [k for k in keys if k not in makers]
    if unknown:
        raise KeyError(f"unknown workload {unknown[0]!r}; choose from {', '.join(makers)}")
    return [Case(k, makers[k]()) for k in keys]


def policies(plan_policy: PlanPolicy | None = None) -> list[Policy]:
    return [planner(plan_policy), *baselines()]


def run_case(
    library: SimLibrary,
    case: Case,
    chosen: Sequence[Policy],
    *,
    seed: int,
    max_age_s: float,
    record_timeline: bool = False,
    progress: Callable[[str, float], None] | None = None,
    step: Callable[[], None] | None = None,
    faults: FaultPlan = NO_FAULTS,
) -> CaseResult:
    """Every policy on one workload, with the same seed (same robot and load draws)
    and the same faults (the same fault draws)."""
    runs: list[RunResult] = []
    for policy in chosen:
        label = f"{case.workload.name}: {policy.name}"

        def tick(fraction: float, label: str = label) -> None:
            if progress is not None:
                progress(label, fraction)

        runs.append(
            simulate(
                library,
                case.workload,
                policy,
                seed=seed,
                record_timeline=record_timeline,
                progress=tick,
                faults=faults,
            )
        )
        if step is not None:
            step()
    return CaseResult(case, tuple(runs), tuple(measure(r, max_age_s) for r in runs), faults)


def judge(results: Sequence[CaseResult], max_age_s: float) -> list[Target]:
    """The targets, for whichever of the workloads were run."""
    found: list[Target] = []
    for result in results:
        mine = result.of(PLANNER)
        key = result.case.key
        if key.startswith("w1"):
            found.append(
                Target(
                    f"{mine.workload}: mounts / LB",
                    mine.mounts_ratio,
                    1.02,
                    f"{mine.mounts} mounts, LB {mine.lb_mounts}",
                )
            )
            found.append(
                Target(
                    f"{mine.workload}: makespan / LB",
                    mine.makespan_ratio,
                    1.10,
                    f"{mine.makespan_s / 3600:.2f} h, LB {mine.lb_makespan_s / 3600:.2f} h",
                )
            )
        elif key == "w2-0.9":
            for attribute, label, limit in (
                ("mean_latency_s", "mean", W2_90_RATIO),
                ("p99_latency_s", "p99", W2_90_P99_RATIO),
            ):
                best = result.best(attribute)
                ratio = getattr(mine, attribute) / getattr(best, attribute)
                found.append(
                    Target(
                        f"{mine.workload}: {label} latency / best baseline",
                        ratio,
                        limit,
                        f"{getattr(mine, attribute):.0f} s vs {getattr(best, attribute):.0f} s "
                        f"({best.policy})",
                    )
                )
            found.append(
                Target(
                    f"{mine.workload}: mean latency / per-request floor",
                    mine.latency_ratio,
                    W2_90_FLOOR_RATIO,
                    f"{mine.mean_latency_s:.0f} s vs {mine.lb_mean_latency_s:.0f} s",
                )
            )
            fcfs = [m for m in result.baselines() if m.policy.startswith(("B0", "B1", "B2"))]
            if fcfs:
                best_fcfs = min(fcfs, key=lambda m: m.mean_latency_s)
                found.append(
                    Target(
                        f"{mine.workload}: mean latency / best FCFS baseline (B0-B2, context)",
                        mine.mean_latency_s / best_fcfs.mean_latency_s,
                        0.5,
                        f"{mine.mean_latency_s:.0f} s vs {best_fcfs.mean_latency_s:.0f} s "
                        f"({best_fcfs.policy})",
                        judged=False,
                    )
                )
        elif key == "w2-0.3":
            best = result.best("mean_latency_s")
            found.append(
                Target(
                    f"{mine.workload}: mean latency / best baseline",
                    mine.mean_latency_s / best.mean_latency_s,
                    W2_30_RATIO,
                    f"{mine.mean_latency_s:.0f} s vs {best.mean_latency_s:.0f} s ({best.policy})",
                )
            )
        elif key == "w4":
            worst = max(mine.max_wait_by_pool.items(), key=lambda item: item[1], default=("-", 0.0))
            found.append(
                Target(
                    f"{mine.workload}: longest wait of any pool / max age (no pool starved)",
                    worst[1] / max_age_s,
                    1.0,
                    f"pool {worst[0]} waited {worst[1]:.0f} s at most",
                )
            )
        pools = ", ".join(f"{p} {w:.0f} s" for p, w in sorted(mine.max_wait_by_pool.items()))
        found.append(
            Target(
                f"{mine.workload}: requests past max age while younger ones were served",
                float(mine.starved),
                0.0,
                f"max wait {mine.max_wait_s:.0f} s, {mine.sla_violations} over {max_age_s:g} s"
                + (
                    " (all of one batch: nobody younger overtook them)"
                    if mine.sla_violations and not mine.starved
                    else ""
                )
                + f"; max wait by pool: {pools}",
            )
        )
        found.append(
            Target(
                f"{mine.workload}: robot utilisation (goal)",
                mine.robot_utilisation,
                0.8,
                f"{mine.mounts} mounts",
                judged=False,
            )
        )
        found.append(
            Target(
                f"{mine.workload}: remounts within 2 h / mounts (goal)",
                mine.remount_share,
                0.05,
                f"{mine.remounts_2h} remounts; best baseline "
                f"{result.best('remount_share').remount_share:.1%}",
                judged=False,
            )
        )
    return found


_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("mounts", "mounts", "{:.0f}"),
    ("mounts_ratio", "/LB", "{:.2f}"),
    ("makespan_s", "makespan h", "{:.2f}"),
    ("makespan_ratio", "/LB", "{:.2f}"),
    ("mean_latency_s", "mean s", "{:.0f}"),
    ("p95_latency_s", "p95 s", "{:.0f}"),
    ("p99_latency_s", "p99 s", "{:.0f}"),
    ("max_latency_s", "max s", "{:.0f}"),
    ("latency_ratio", "mean/LB", "{:.2f}"),
    ("max_wait_s", "max wait", "{:.0f}"),
    ("drive_efficiency", "drive eff", "{:.1%}"),
    ("robot_utilisation", "robot", "{:.1%}"),
    ("remount_share", "remount<2h", "{:.1%}"),
    ("tapes_written", "tapes wr", "{:.0f}"),
    ("scratch_opened", "opened", "{:.0f}"),
    ("decision_ms", "ms/round", "{:.2f}"),
)


#: Shown when the run had faults.
_FAULT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("failed_moves", "moves failed", "{:.0f}"),
    ("retries", "retries", "{:.0f}"),
    ("drives_down", "drives down", "{:.0f}"),
    ("failed", "req failed", "{:.0f}"),
    ("unserved", "unserved", "{:.0f}"),
)


def _cell(metric: Metrics, attribute: str, fmt: str) -> str:
    value = getattr(metric, attribute)
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if attribute == "makespan_s":
        value = value / 3600.0
    return fmt.format(value)


#: Tables fit this many columns: wider ones continue in a second block of columns.
TABLE_WIDTH = 100


def table(result: CaseResult) -> str:
    columns = _COLUMNS + (_FAULT_COLUMNS if result.faults.active else ())
    header = ["policy", *(title for _, title, _ in columns)]
    rows = [header] + [[m.policy, *(_cell(m, a, f) for a, _, f in columns)] for m in result.metrics]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    # Columns go into blocks that fit the width, each repeating the policy column.
    blocks: list[list[int]] = [[]]
    used = widths[0]
    for i in range(1, len(header)):
        if blocks[-1] and used + 2 + widths[i] > TABLE_WIDTH:
            blocks.append([])
            used = widths[0]
        blocks[-1].append(i)
        used += 2 + widths[i]
    lines = [f"{result.case.workload.name} — {result.case.workload.description}"]
    for number, block in enumerate(blocks):
        if number:
            lines.append("")
        lines.extend(
            "  ".join([row[0].ljust(widths[0]), *(row[i].rjust(widths[i]) for i in block)])
            for row in rows
        )
    return "\n".join(lines)


GOALS_HEADING = "context (scheduling goals, FCFS-only comparison; not targets):"


TARGETS_HEADING = "targets:"


def print_targets(found: Sequence[Target], out: TextIO) -> None:
    for heading, judged in ((TARGETS_HEADING, True), (GOALS_HEADING, False)):
        group = [t for t in found if t.judged is judged]
        if not group:
            continue
        print(heading, file=out)
        for target in group:
            verdict = "met   " if target.met else "MISSED"
            line = (
                f"  [{verdict}] {target.name}: {target.value:.3g} "
                f"(limit {target.limit:g}) — {target.detail}"
            )
            print(textwrap.fill(line, TABLE_WIDTH, subsequent_indent=" " * 12), file=out)


class Progress:
    """A progress bar on stderr that fits the terminal and leaves no lines behind
    (rich redraws it in place and removes it at the end); only on a terminal, unless
    forced."""

    def __init__(self, total: int, out: TextIO = sys.stderr, force: bool = False) -> None:
        self.total = max(1, total)
        self.done = 0
        self.out = out
        self.enabled = force or out.isatty()
        self._bar: rich.progress.Progress | None = None
        self._task: rich.progress.TaskID | None = None
        self._shown: tuple[int, str] | None = None

    def update(self, label: str, fraction: float) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = rich.progress.Progress(
                rich.progress.BarColumn(bar_width=None),
                rich.progress.TaskProgressColumn(),
                rich.progress.TextColumn("{task.description}"),
                console=rich.console.Console(file=self.out, force_terminal=True),
                transient=True,
                expand=True,
                # We redraw when the figure or the label changes: updates come by the
                # thousand, and a drawing thread would make the output depend on timing.
                auto_refresh=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=self.total)
        assert self._task is not None
        shown = (int(100 * (self.done + fraction) / self.total), label)
        self._bar.update(self._task, completed=self.done + fraction, description=label)
        if shown != self._shown:
            self._shown = shown
            self._bar.refresh()

    def step(self) -> None:
        self.done += 1

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
