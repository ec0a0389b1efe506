"""What a planning round costs the daemon around `plan()`, and what an idle daemon with
a large backlog costs, measured side by side in one run.

1. A round in process: a real journal file with `--requests` pending requests over
   `--tapes` tapes and `--drives` drives (half of them held by ready requests, the
   rest idle with a tape), read into the state model; the reconciler's round up to
   its actions (leases, snapshot from the model, the kept queue, `plan()`, the next
   time-bound change) against `plan()` alone on the same input, median of `--runs`,
   after a tape changed (the tapes' views built again: the target's figure) and
   with the same tapes (a change of the requests alone). Target: the round at most
   1.5x `plan()`.
2. The daemon idle: a real daemon (subprocess, simulated library of `--tapes` tapes
   and `--drives` drives) on a journal prepared with `--idle` pending requests (each
   size in turn) that cannot be served (every drive is down); once its planning loop
   has come round a few times, the CPU seconds it uses over `--seconds` of wall
   time, from /proc/<pid>/stat.
   Targets: under 2% of one core at 50,000 pending, under 5% at 100,000.
3. The state model's load (the daemon's start-up, and its rebuild after a journal
   fault) from the journal of step 1, in CPU time, against a bare read of the same
   tables with plain sqlite3 in the same run.

    python -m tests.benchmarks.round_bench                  # full scale (make bench-round)
    python -m tests.benchmarks.round_bench --requests 5000  # smaller
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from drivers.definition import LibraryDefinition
from drivers.sim.library import SimulatedLibrary
from tests.integration.daemon import AUTH, Daemon, wait_until
from worker.core.planner import PlanPolicy, plan
from worker.core.requests import RequestState
from worker.runtime.executor import Executor
from worker.runtime.reconciler import Reconciler
from worker.settings import ExecutorSettings
from worker.simulation.cost import cpu_model
from worker.state.journal import DestinationWrite, Journal

ROUND_LIMIT = 1.5
#: Pending requests -> the most of one core an idle daemon may use.
IDLE_LIMITS = {50_000: 0.02, 100_000: 0.05}
POOLS = 10
START = 1_000_000.0


def definition(tapes: int, drives: int) -> LibraryDefinition:
    """A large library: `drives` LTO-9 drives, `tapes` LTO-9 tapes in slots 1..tapes
    (a quarter of them LTO-8), spread over POOLS pools."""
    return LibraryDefinition.model_validate(
        {
            "name": "bench",
            "slots": min(10_000, tapes + drives),
            "drives": [
                {"index": d, "device": f"/dev/nst{d}", "generation": "LTO-9"} for d in range(drives)
            ],
            "pools": [{"id": p + 1, "name": f"pool{p}"} for p in range(POOLS)],
            "tapes": [
                {
                    "barcode": f"T{i:06d}{'L8' if i % 4 == 0 else 'L9'}",
                    "slot": i + 1,
                    "pool": f"pool{i % POOLS}",
                }
                for i in range(tapes)
            ],
        }
    )


def definition_toml(library: LibraryDefinition) -> str:
    """The definition as the daemon reads it from a file."""
    lines = [f'name = "{library.name}"', f"slots = {library.slots}", ""]
    for drive in library.drives:
        lines += [
            "[[drives]]",
            f"index = {drive.index}",
            f'device = "{drive.device}"',
            f"generation = {drive.generation}",
            "",
        ]
    for pool in library.pools:
        lines += ["[[pools]]", f"id = {pool.id}", f'name = "{pool.name}"', ""]
    for tape in library.tapes:
        lines += [
            "[[tapes]]",
            f'barcode = "{tape.barcode}"',
            f"slot = {tape.slot}",
            f'pool = "{tape.pool}"',
            "",
        ]
    return "\n".join(lines)


async def prepare_journal(
    path: Path,
    library: LibraryDefinition,
    requests: int,
    *,
    held_drives: int = 0,
    drives_down: bool = False,
    seed: int = 0,
) -> None:
    """A journal of `requests` pending requests: a tenth pool writes, the rest reads
    of tapes picked Zipf-like; the first `held_drives` drives each hold a tape for a
    ready request; with `drives_down`, every drive is down."""
    rng = random.Random(seed)
    barcodes = [t.barcode for t in library.tapes]
    weights = [1.0 / (k + 1) for k in range(len(barcodes))]
    picks = rng.choices(barcodes, weights=weights, k=requests)
    journal = await Journal.open(path)
    try:
        await journal.sync_catalog(library, START)
        held = barcodes[:held_drives]
        async with journal.transaction() as tx:
            await tx.insert_destinations(
                [
                    DestinationWrite(
                        destination_id=i + 1,
                        task_id="1",
                        body={"folder_id": i + 1},
                        nested=None,
                        barcode=None if i % 10 == 0 else picks[i],
                        pool=f"pool{i % POOLS}" if i % 10 == 0 else None,
                        status="pending",
                        reason=None,
                    )
                    for i in range(requests)
                ]
                + [
                    DestinationWrite(requests + k + 1, "1", {}, None, b, None, "pending", None)
                    for k, b in enumerate(held)
                ],
                START,
            )
            for i in range(requests):
                await tx.add_request(
                    i + 1,
                    barcode=None if i % 10 == 0 else picks[i],
                    pool=f"pool{i % POOLS}" if i % 10 == 0 else None,
                    now=START + i * 0.001,
                    size_bytes=2 * 10**9,
                )
            for index, barcode in enumerate(held):
                await tx.move_tape(barcode, slot=None, drive=index, now=START, mounted=True)
                rid = await tx.add_request(
                    requests + index + 1, barcode=barcode, pool=None, now=START
                )
                await tx.set_request_state(rid, RequestState.MOUNTING, START, drive=index)
                await tx.make_ready(rid, index, START, 10**9)
        if drives_down:
            for drive in library.drives:
                await journal.operator_action(
                    "drive down",
                    who="bench",
                    reason="every drive down: nothing can be served",
                    now=START,
                    target=f"drive {drive.index}",
                    drive=drive.index,
                    drive_up=False,
                )
    finally:
        await journal.close()


@dataclass(frozen=True)
class RoundFigures:
    requests: int
    tapes: int
    drives: int
    actions: int
    #: Rounds after a tape changed: the tapes' views and free slots are built again.
    round_ms: tuple[float, ...]
    plan_ms: tuple[float, ...]
    #: Rounds after a change of the requests alone: the tapes' views are kept.
    kept_ms: tuple[float, ...] = ()
    #: Reading the state model from the journal file (the daemon's start-up), in CPU
    #: time, and its wall time (the database thread's waits included).
    load_ms: float = 0.0
    load_wall_s: float = 0.0
    #: The reference: the same tables read whole with plain sqlite3, as tuples.
    bare_read_ms: float = 0.0

    @property
    def ratio(self) -> float:
        return statistics.median(self.round_ms) / statistics.median(self.plan_ms)

    def lines(self) -> list[str]:
        verdict = "met" if self.ratio <= ROUND_LIMIT else "missed"
        return [
            f"round at {self.requests:,} pending / {self.tapes:,} tapes / {self.drives} drives "
            f"({self.actions} actions):",
            f"  plan() alone   median {statistics.median(self.plan_ms):8.1f} ms  "
            f"(min {min(self.plan_ms):.1f}, max {max(self.plan_ms):.1f})",
            f"  daemon round   median {statistics.median(self.round_ms):8.1f} ms  "
            f"(min {min(self.round_ms):.1f}, max {max(self.round_ms):.1f}) after a tape changed",
            f"  daemon round   median {statistics.median(self.kept_ms):8.1f} ms  "
            f"(min {min(self.kept_ms):.1f}, max {max(self.kept_ms):.1f}) with the same tapes "
            f"(ratio {statistics.median(self.kept_ms) / statistics.median(self.plan_ms):.2f})",
            f"  round / plan() = {self.ratio:.2f} (target <= {ROUND_LIMIT}): {verdict}",
            f"state model load from the journal: {self.load_ms / 1000:.2f} s of CPU "
            f"({self.load_wall_s:.2f} s wall); a bare read of its tables "
            f"{self.bare_read_ms / 1000:.2f} s of CPU; load / bare read = "
            f"{self.load_ms / max(self.bare_read_ms, 1e-3):.1f}",
        ]


def bare_read_ms(path: Path) -> float:
    """CPU milliseconds to read the destinations and requests tables whole with plain
    sqlite3 (tuples, one thread): what any load of them costs at least."""
    db = sqlite3.connect(path)
    try:
        started = time.process_time()
        db.execute("SELECT * FROM destinations").fetchall()
        db.execute("SELECT * FROM requests").fetchall()
        return (time.process_time() - started) * 1000.0
    finally:
        db.close()


async def _cpu_ms(work: Callable[[], Awaitable[object]]) -> float:
    started = time.process_time()
    await work()
    return (time.process_time() - started) * 1000.0


async def measure_round(
    requests: int = 100_000, tapes: int = 10_000, drives: int = 64, runs: int = 7
) -> RoundFigures:
    """The reconciler's round against `plan()` alone, on one journal, in one process."""
    library_definition = definition(tapes, drives)
    with tempfile.TemporaryDirectory(prefix="round-bench-") as folder:
        path = Path(folder) / "journal.sqlite3"
        await prepare_journal(path, library_definition, requests, held_drives=drives // 2)
        journal = await Journal.open(path)
        try:
            gc.collect()
            load_wall = time.perf_counter()
            load_ms = await _cpu_ms(journal.load_model)
            load_wall = time.perf_counter() - load_wall
            bare_ms = bare_read_ms(path)
            library = SimulatedLibrary.open(
                library_definition, state_file=Path(folder) / "sim.json", speed=1000.0
            )

            async def ignore(_: set[int]) -> None:
                return None

            now = START + requests * 0.001 + 1.0
            policy = PlanPolicy()
            executor = Executor(
                library, journal, ExecutorSettings(), hold_seconds=3600, on_change=ignore
            )
            reconciler = Reconciler(
                library_definition,
                library,
                journal,
                executor,
                policy,
                on_change=ignore,
                clock=lambda: now,
            )

            model = journal.model
            assert model is not None

            async def daemon_round() -> None:
                # What `round` does up to its actions (it would then hand them out).
                await reconciler.expire_leases()
                await reconciler.plan_round(now)

            async def round_after_a_tape_changed() -> None:
                # As the journal does when it applies a tape's change.
                model.tapes_version += 1
                await daemon_round()

            snapshot, pending = await reconciler.snapshot()

            async def plan_alone() -> None:
                plan(snapshot, pending, policy, now)

            actions, _ = await reconciler.plan_round(now)
            gc.collect()
            round_ms: list[float] = []
            kept_ms: list[float] = []
            plan_ms: list[float] = []
            # Interleaved, so that a busy moment of the machine lands on all.
            for _ in range(runs):
                plan_ms.append(await _cpu_ms(plan_alone))
                round_ms.append(await _cpu_ms(round_after_a_tape_changed))
                kept_ms.append(await _cpu_ms(daemon_round))
            await library.aclose()
        finally:
            await journal.close()
    return RoundFigures(
        requests,
        tapes,
        drives,
        len(actions),
        tuple(round_ms),
        tuple(plan_ms),
        tuple(kept_ms),
        load_ms=load_ms,
        load_wall_s=load_wall,
        bare_read_ms=bare_ms,
    )


@dataclass(frozen=True)
class IdleFigures:
    pending: int
    tapes: int
    drives: int
    wall_s: float
    cpu_s: float
    start_s: float
    limit: float | None

    @property
    def share(self) -> float:
        return self.cpu_s / self.wall_s

    def line(self) -> str:
        verdict = (
            ""
            if self.limit is None
            else f" (target < {self.limit:.0%}): {'met' if self.share < self.limit else 'missed'}"
        )
        return (
            f"idle daemon, {self.pending:,} pending / {self.tapes:,} tapes / {self.drives} drives "
            f"down: {self.cpu_s:.2f} CPU s in {self.wall_s:.1f} s = {self.share:.2%} of a core"
            f"{verdict}; start-up to listening {self.start_s:.1f} s"
        )


def _planning_rounds(daemon: Daemon) -> float:
    """How many times the daemon's planning loop came round, from its /metrics."""
    with httpx.Client(base_url=f"http://127.0.0.1:{daemon.http_port}", timeout=10) as client:
        text = client.get("/metrics", auth=AUTH).text
    for line in text.splitlines():
        if line.startswith("tapeworker_planning_rounds_total"):
            return float(line.split()[-1])
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_idle(
    pending: int,
    tapes: int = 10_000,
    drives: int = 64,
    seconds: float = 30.0,
    settled_rounds: int = 5,
) -> IdleFigures:
    """A real daemon on a prepared journal: its CPU share while nothing can be served."""
    library_definition = definition(tapes, drives)
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as folder:
        root = Path(folder)
        library_file = root / "library.toml"
        library_file.write_text(definition_toml(library_definition), encoding="utf-8")
        daemon = Daemon(root / "daemon", library=library_file)
        daemon.state_dir.mkdir(parents=True)
        asyncio.run(
            prepare_journal(
                daemon.state_dir / "journal.sqlite3",
                library_definition,
                pending,
                drives_down=True,
            )
        )
        started = time.monotonic()
        daemon.start()
        try:
            start_s = time.monotonic() - started
            process = daemon.process
            assert process is not None
            # Settled: the planning loop has come round a few times (the first round
            # plans the whole backlog once).
            wait_until(
                lambda: _planning_rounds(daemon) >= settled_rounds,
                timeout=120,
                what="the planning loop to come round",
            )
            cpu_before, wall_before = _cpu_seconds(process.pid), time.monotonic()
            end = wall_before + seconds
            wait_until(lambda: time.monotonic() >= end, timeout=seconds + 5, what="the idle period")
            if process.poll() is not None:
                raise AssertionError(f"the daemon stopped:\n{daemon.log_tail()}")
            cpu_after, wall_after = _cpu_seconds(process.pid), time.monotonic()
        finally:
            daemon.stop()
    return IdleFigures(
        pending,
        tapes,
        drives,
        wall_after - wall_before,
        cpu_after - cpu_before,
        start_s,
        IDLE_LIMITS.get(pending),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--tapes", type=int, default=10_000)
    parser.add_argument("--drives", type=int, default=64)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--idle", type=int, nargs="*", default=[50_000, 100_000])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
    figures = asyncio.run(measure_round(args.requests, args.tapes, args.drives, args.runs))
    print("\n".join(figures.lines()), flush=True)
    met = figures.ratio <= ROUND_LIMIT
    for pending in args.idle:
        idle = measure_idle(pending, args.tapes, args.drives, args.seconds)
        print(idle.line(), flush=True)
        met = met and (idle.limit is None or idle.share < idle.limit)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
