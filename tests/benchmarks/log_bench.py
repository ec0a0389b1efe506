"""What one of our log lines costs, in each format, against writing the same dict by hand.

The line is the one every intake event writes (`log.info("destination created", id=...,
barcode=..., task_id=...)`), at level info, into a real stream (a file) or a real
journald socket (a unix datagram socket bound in a temp dir and drained by a thread).
The reference, measured in the same run and the same rounds, is `json.dumps` of the
same dict and one write of it to the same stream (a send to the same socket), so the
ratio does not depend on the machine. CPU time of the logging thread is what counts:
a busy machine stretches the wall clock, not the work a line takes.

`--before DIR` loads DIR/worker/logging.py (another checkout) as a second pipeline and
measures it in the same rounds, so one run prints before and after side by side.

    .venv/bin/python -m tests.benchmarks.log_bench --lines 20000 --rounds 7
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TextIO

import structlog

import worker.logging

FORMATS = ("console", "json", "journald")
FIELDS = {"id": 123456, "barcode": "NOD400L8", "task_id": "7"}


@dataclass
class Figures:
    """Median microseconds of CPU a line, by (pipeline, format), and the reference's."""

    lines: int
    rounds: int
    cost_us: dict[tuple[str, str], float] = field(default_factory=dict)
    reference_us: dict[str, float] = field(default_factory=dict)
    ratio: dict[tuple[str, str], float] = field(default_factory=dict)
    filtered_us: dict[str, float] = field(default_factory=dict)

    def report(self) -> list[str]:
        out = [f"log line cost: {self.lines} lines a round, median of {self.rounds} rounds"]
        for (pipeline, fmt), cost in self.cost_us.items():
            out.append(
                f"  {pipeline:>6} {fmt:<8} {cost:6.2f} us a line, "
                f"{self.ratio[pipeline, fmt]:5.2f}x the reference "
                f"({self.reference_us[fmt]:.2f} us: json.dumps + one write)"
            )
        for pipeline, cost in self.filtered_us.items():
            out.append(f"  {pipeline:>6} a debug line below the level: {cost:.3f} us")
        for fmt in FORMATS:
            if ("before", fmt) in self.cost_us:
                gain = self.cost_us["before", fmt] / self.cost_us["now", fmt]
                out.append(f"  {fmt}: now {gain:.2f}x cheaper than before")
        return out


def _cpu_per_line(call: Callable[[], None], lines: int) -> float:
    start = time.thread_time_ns()
    for _ in range(lines):
        call()
    return (time.thread_time_ns() - start) / lines / 1000


@contextlib.contextmanager
def _journal(folder: Path) -> Iterator[Path]:
    """A bound datagram socket, drained so that senders never wait on a full queue."""
    path = folder / "journal.socket"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                sock.recv(1 << 20)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield path
    finally:
        stop.set()
        reader.join(timeout=5)
        sock.close()


@contextlib.contextmanager
def _stdout_to(path: Path) -> Iterator[TextIO]:
    saved = sys.stdout
    with path.open("w", encoding="utf-8") as stream:
        sys.stdout = stream
        try:
            yield stream
        finally:
            sys.stdout = saved


def _reference(fmt: str, stream: TextIO, sock: socket.socket) -> Callable[[], None]:
    if fmt == "journald":

        def send() -> None:
            sock.send(json.dumps({"event": "destination created", **FIELDS}).encode())

        return send

    def write() -> None:
        stream.write(json.dumps({"event": "destination created", **FIELDS}) + "\n")
        stream.flush()

    return write


def _pipeline(
    module: ModuleType, fmt: str, journal: Path
) -> tuple[Callable[[], None], Callable[[], None]]:
    """A line at the level and one below it, through a module-level style logger."""
    module.configure("info", fmt, journal_socket=journal)
    log = structlog.get_logger("tapeworker.destinations")

    def line() -> None:
        log.info("destination created", **FIELDS)

    def quiet() -> None:
        log.debug("destination created", **FIELDS)

    return line, quiet


def _load(source: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "tapeworker_logging_before", source / "worker" / "logging.py"
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"{source}: no worker/logging.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(lines: int, rounds: int, before: Path | None = None) -> Figures:
    """Alternate the reference and each pipeline round by round, then take medians."""
    pipelines: dict[str, ModuleType] = {"now": worker.logging}
    if before is not None:
        pipelines["before"] = _load(before)
    figures = Figures(lines=lines, rounds=rounds)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    costs: dict[tuple[str, str], list[float]] = {}
    references: dict[str, list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    filtered: dict[str, list[float]] = {}
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            _journal(Path(tmp)) as journal,
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
        ):
            sock.connect(str(journal))
            for _ in range(rounds):
                for fmt in FORMATS:
                    with _stdout_to(Path(tmp) / f"{fmt}.log") as stream:
                        for name, module in pipelines.items():
                            reference = _cpu_per_line(_reference(fmt, stream, sock), lines)
                            line, quiet = _pipeline(module, fmt, journal)
                            line()  # the first call binds and caches the logger
                            cost = _cpu_per_line(line, lines)
                            references.setdefault(fmt, []).append(reference)
                            costs.setdefault((name, fmt), []).append(cost)
                            ratios.setdefault((name, fmt), []).append(cost / reference)
                            if fmt == "json":
                                below = _cpu_per_line(quiet, lines)
                                filtered.setdefault(name, []).append(below)
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        worker.logging.reset()
    figures.reference_us = {k: statistics.median(v) for k, v in references.items()}
    figures.cost_us = {k: statistics.median(v) for k, v in costs.items()}
    figures.ratio = {k: statistics.median(v) for k, v in ratios.items()}
    figures.filtered_us = {k: statistics.median(v) for k, v in filtered.items()}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, default=20000, help="lines a round and format")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--before", type=Path, help="a checkout whose worker/logging.py to measure alongside"
    )
    args = parser.parse_args()
    figures = measure(args.lines, args.rounds, args.before)
    print("\n".join(figures.report()))


if __name__ == "__main__":
    main()
