"""`--plot`: per-drive timelines (mount, locate, transfer, idle, unload, clean, down) of
the planner beside the best baseline of one workload, so a user sees where the
drive time goes. matplotlib is an optional dependency (the `plot` extra)."""

from __future__ import annotations

from pathlib import Path

from worker.simulation.report import PLANNER, CaseResult

COLOURS = {
    "mount": "#e69f00",
    "locate": "#56b4e9",
    "transfer": "#009e73",
    "idle": "#d9d9d9",
    "unload": "#d55e00",
    "clean": "#cc79a7",
    "down": "#000000",
}


def plot_timelines(result: CaseResult, path: Path) -> None:
    """Write a PNG: the planner on top, the baseline with the best mean latency below."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    best = result.best("mean_latency_s" if not result.case.workload.batch else "makespan_s")
    runs = [r for r in result.runs if r.policy in (PLANNER, best.policy)]
    fig, axes = plt.subplots(
        len(runs),
        1,
        figsize=(14, 2.0 + 0.45 * len(result.runs[0].timeline) * len(runs)),
        sharex=True,
        squeeze=False,
    )
    for ax, run in zip(axes[:, 0], runs, strict=True):
        for drive, segments in sorted(run.timeline.items()):
            for kind, colour in COLOURS.items():
                bars = [(s / 3600.0, (e - s) / 3600.0) for s, e, k in segments if k == kind]
                if bars:
                    ax.broken_barh(bars, (drive - 0.4, 0.8), facecolors=colour)
        metrics = next(m for m in result.metrics if m.policy == run.policy)
        ax.set_title(
            f"{run.policy}: {metrics.mounts} mounts, makespan {metrics.makespan_s / 3600:.2f} h, "
            f"mean latency {metrics.mean_latency_s:.0f} s, drive efficiency "
            f"{metrics.drive_efficiency:.0%}",
            fontsize=10,
        )
        ax.set_ylabel("drive")
        ax.set_yticks(sorted(run.timeline))
    axes[-1, 0].set_xlabel("hours")
    # Below the plots, clear of the titles; the blank background is a drive with no
    # tape in it, so it has its entry too.
    handles = [Patch(color=c, label=k) for k, c in COLOURS.items()]
    handles.append(Patch(facecolor="white", edgecolor="#808080", label="empty (no tape)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(f"{result.case.workload.name}: planner vs best baseline", fontsize=12)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
